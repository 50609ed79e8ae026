"""Paging arguments of the listing APIs: ``offset`` and ``limit``, checked."""

from __future__ import annotations

from collections.abc import Mapping

from nifti_archive.errors import InvalidValue

# The database's integers are 64-bit; a larger offset would overflow its driver.
MAX_OFFSET = 2**62


def parse_paging(args: Mapping[str, str], default_limit: int, most: int) -> tuple[int, int]:
    try:
        offset, limit = int(args.get("offset", 0)), int(args.get("limit", default_limit))
    except ValueError:
        raise InvalidValue("offset and limit must be whole numbers") from None
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= most:
        raise InvalidValue(f"offset must be 0 to {MAX_OFFSET} and limit between 1 and {most}")
    return offset, limit
