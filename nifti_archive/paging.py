"""Paging arguments of the listing APIs: ``offset`` and ``limit``, checked."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import InvalidValue


def parse_paging(args: Mapping[str, str], default_limit: int, most: int) -> tuple[int, int]:
    try:
        offset, limit = int(args.get("offset", 0)), int(args.get("limit", default_limit))
    except ValueError:
        raise InvalidValue("offset and limit must be whole numbers") from None
    if offset < 0 or not 1 <= limit <= most:
        raise InvalidValue(f"offset must be 0 or more and limit between 1 and {most}")
    return offset, limit
