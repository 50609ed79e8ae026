"""multipart/related bodies as DICOMweb sends them (RFC 2046): split as they arrive, and written anew.

WADO-RS answers a study as one such body of Part-10 objects, STOW-RS takes one. Parts are
split from an iterator of chunks so that a study passes through one instance at a time; a
part is held whole (an instance must be parsed whole to be rewritten).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from werkzeug.http import parse_options_header

CRLF = b"\r\n"
HEADERS_END = b"\r\n\r\n"
# A part's header block is a few short lines; more than this is no multipart body of ours.
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not the multipart/related it says it is; the message says where it breaks."""


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def boundary_of(content_type: str) -> tuple[str, str, bytes]:
    """The media type, the ``type`` parameter and the boundary of a multipart Content-Type."""
    media_type, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if not media_type.startswith("multipart/"):
        raise MultipartError(f"the Content-Type is {media_type or 'missing'}, not multipart/related")
    if not boundary or len(boundary) > 70:
        raise MultipartError("the multipart Content-Type names no boundary (or one over 70 characters)")
    return media_type, options.get("type", "").lower(), boundary.encode("latin-1")


def _headers(block: bytes, index: int) -> dict[str, str]:
    headers = {}
    for line in block.split(CRLF):
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise MultipartError(f"part {index + 1} has a header line without a colon")
        headers[name.strip().lower()] = value.strip()
    return headers


class _Reader:
    """A growing buffer over the chunks, searched without going over the same bytes twice."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.buffer = bytearray()

    def more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self.buffer += chunk
                return True
        return False

    def find(self, needle: bytes, limit: int | None = None) -> int:
        """The offset of ``needle`` in the buffer, reading on until it appears; -1 at the end (or past ``limit``)."""
        start = 0
        while True:
            found = self.buffer.find(needle, start)
            if found >= 0:
                return found
            if limit is not None and len(self.buffer) > limit:
                return -1
            start = max(0, len(self.buffer) - len(needle) + 1)
            if not self.more():
                return -1

    def take(self, count: int) -> bytes:
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        return taken

    def need(self, count: int) -> bool:
        while len(self.buffer) < count:
            if not self.more():
                return False
        return True


def _part_headers(reader: _Reader, index: int) -> dict[str, str]:
    """The headers at the start of the buffer, taken with the blank line that ends them."""
    if not reader.need(2):
        raise MultipartError(f"the body ends in the headers of part {index + 1}")
    if reader.buffer[:2] == CRLF:
        reader.take(2)
        return {}
    end = reader.find(HEADERS_END, MAX_HEADER_BYTES)
    if end < 0:
        raise MultipartError(f"part {index + 1} has no end to its headers")
    headers = _headers(reader.take(end), index)
    reader.take(len(HEADERS_END))
    return headers


def split(chunks: Iterable[bytes], boundary: bytes) -> Iterator[Part]:
    """The parts of a multipart body, one by one; MultipartError where it is not one."""
    reader = _Reader(chunks)
    dash_boundary = b"--" + boundary
    first = reader.find(dash_boundary)
    if first < 0 or (first > 0 and reader.buffer[first - 2 : first] != CRLF):
        raise MultipartError("the body does not start with its boundary")
    reader.take(first + len(dash_boundary))
    delimiter = CRLF + dash_boundary
    index = 0
    while True:
        if not reader.need(2):
            raise MultipartError(f"the body ends after part {index} without its closing boundary")
        if reader.buffer[:2] == b"--":
            return
        line_end = reader.find(CRLF, MAX_HEADER_BYTES)
        if line_end < 0 or reader.buffer[:line_end].strip(b" \t"):
            raise MultipartError(f"the boundary line before part {index + 1} is malformed")
        reader.take(line_end + 2)
        headers = _part_headers(reader, index)
        body_end = reader.find(delimiter)
        if body_end < 0:
            raise MultipartError(f"part {index + 1} is not followed by a boundary")
        body = reader.take(body_end)
        reader.take(len(delimiter))
        yield Part(headers, body)
        index += 1


@dataclass(frozen=True)
class Writer:
    """A new multipart/related body of one type, with a boundary no part contains."""

    part_type: str
    boundary: str = ""

    def __post_init__(self) -> None:
        if not self.boundary:
            object.__setattr__(self, "boundary", f"northanc-{secrets.token_hex(16)}")

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def part(self, body: bytes) -> bytes:
        if self.boundary.encode() in body:
            raise MultipartError("a part contains the boundary chosen at random: try again")
        head = f"--{self.boundary}\r\nContent-Type: {self.part_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body + CRLF

    def end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def body(self, parts: Iterable[bytes]) -> bytes:
        return b"".join(self.part(body) for body in parts) + self.end()
