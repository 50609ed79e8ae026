"""Paging arguments of the listing APIs: ``offset`` and ``limit``, checked; and the opaque cursor
a listing hands out for its next page (``after``)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence

from nifti_archive.errors import InvalidValue

# The database's integers are 64-bit; a larger offset would overflow its driver.
MAX_OFFSET = 2**62
# A cursor holds a few short values; anything longer was not made here.
MAX_CURSOR_LENGTH = 2048

CursorValue = str | int | None


def parse_paging(args: Mapping[str, str], default_limit: int, most: int) -> tuple[int, int]:
    try:
        offset, limit = int(args.get("offset", 0)), int(args.get("limit", default_limit))
    except ValueError:
        raise InvalidValue("offset and limit must be whole numbers") from None
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= most:
        raise InvalidValue(f"offset must be 0 to {MAX_OFFSET} and limit between 1 and {most}")
    return offset, limit


def encode_cursor(values: Sequence[CursorValue]) -> str:
    """The values as one URL-safe token; what they mean is the listing's business, not the client's."""
    text = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(token: str, length: int) -> list[CursorValue]:
    """A token of ``encode_cursor``: ``length`` strings, whole numbers or nulls, else a 400 that says so."""
    malformed = InvalidValue("malformed cursor 'after': use the 'next' of the previous page, or start again without it")
    if len(token) > MAX_CURSOR_LENGTH:
        raise malformed
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise malformed from None
    if not isinstance(values, list) or len(values) != length:
        raise malformed
    if not all(v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
        raise malformed
    return values
