"""Things other packages do when the archive changes, found through entry points.

The ``northanc.hooks`` group maps an event name to a function; ``series_converted`` is
called with (archive, project name, study primary key) after a conversion was published.
The jobs package uses it to start a project's autoexec batch. A failing hook is logged and
never undoes or blocks the conversion.

The ``northanc.converters`` group maps a DICOM modality to the function that converts a
series of it instead of dcm2niix (the segmentation package's DICOM SEG → ROIs). It is called
with (archive, Orthanc client, series info, request id), finishes the request itself and
returns (state, message, target) like a conversion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger(__name__)
GROUP = "northanc.hooks"
CONVERTERS = "northanc.converters"


@cache
def _entries(group: str) -> tuple[EntryPoint, ...]:
    # Scanning the installed distributions takes milliseconds; they do not change while we run.
    return tuple(entry_points(group=group))


@cache
def _hooks(event: str) -> tuple[Callable[..., None], ...]:
    return tuple(entry.load() for entry in _entries(GROUP) if entry.name == event)


def preload() -> None:
    """Import the hooks and find the converters now: a long-running process (Orthanc's plugin)
    calls this at start, so that its first conversion does not pay for the imports."""
    for entry in _entries(GROUP):
        _hooks(entry.name)
    _entries(CONVERTERS)


def fire(event: str, *args: Any) -> None:
    for hook in _hooks(event):
        try:
            hook(*args)
        except Exception:  # a hook's failure is its own; the archive's work is done
            log.exception("hook %s for %s failed", getattr(hook, "__name__", hook), event)


@cache
def converter_for(modality: str) -> Callable[..., Any] | None:
    """The converter another package registered for series of this modality, if any."""
    found = [entry for entry in _entries(CONVERTERS) if entry.name == modality]
    return found[0].load() if found else None
