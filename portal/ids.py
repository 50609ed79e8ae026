"""Record ids in URLs and request bodies: whole numbers the index can hold.

A larger number is no id of ours; it must answer 404 (in a URL) or 400 (in a body), not
overflow the database driver into a 500.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import IntegerConverter, Map

MAX_ID = 2**63 - 1


class IdConverter(IntegerConverter):
    """Flask's ``<int:...>`` with the index's upper bound."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_ID:
        raise ValueError(f"{text[:40]} is beyond the whole numbers this archive keeps")
    return value


class BoundedJSONProvider(DefaultJSONProvider):
    """Request bodies whose whole numbers fit the index: a larger one makes the body invalid
    JSON for the route (its 400 says what it expects) instead of overflowing the driver."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, parse_int=_bounded_int, **kwargs)
        except RecursionError as exc:
            # Flask answers a ValueError as invalid JSON (400); a recursion error would be a 500.
            raise ValueError("the JSON is nested too deeply") from exc
