"""Actions other packages add to ``nora`` (the jobs package adds --launch and friends).

They are found through the ``northanc.nora`` entry-point group, so that this package never
imports the packages built on it. An extension module provides ``ACTIONS`` (destination
names of its action flags), ``WAITING_ACTIONS`` (those that take --wait), optionally
``FILTER_ACTIONS`` (those that take --filter),
``add_arguments(actions, parser)``, ``check(args, action)`` for its modifiers, and
``COMMANDS`` (action name -> function(archive, request, out)).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

GROUP = "northanc.nora"


def load() -> list[ModuleType]:
    return [entry.load() for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name)]
