"""A zip written as it is sent: entries are read and passed on in pieces, so a download (an XNAT
session, a BIDS dataset) starts at once and never sits in memory or on disk."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime


class _Outbox(io.RawIOBase):
    """Where the zip writer puts its bytes until the response takes them; not seekable, so the
    writer uses data descriptors rather than going back to patch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self._pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]  # RawIOBase's buffer type
        self._pieces.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        taken = b"".join(self._pieces)
        self._pieces.clear()
        return taken


@dataclass(frozen=True)
class Entry:
    name: str
    pieces: Iterable[bytes]
    modified: datetime


def zipped(entries: Iterable[Entry]) -> Iterator[bytes]:
    """The zip of ``entries``, stored (NIfTI is gzip already, DICOM barely shrinks), in pieces."""
    outbox = _Outbox()
    with zipfile.ZipFile(outbox, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=entry.modified.timetuple()[:6])
            with archive.open(info, "w", force_zip64=True) as target:
                for piece in entry.pieces:
                    target.write(piece)
                    yield outbox.take()
            yield outbox.take()
    yield outbox.take()


def file_pieces(path: str, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while block := source.read(size):
            yield block
