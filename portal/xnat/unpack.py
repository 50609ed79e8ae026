"""The members of an uploaded zip or tar that a client asks to have extracted, read by the
importer's archive reader (one reader, with its limits on unpacked size and compression ratio,
for every archive a user hands in) and checked before anything is written: regular files
only, under names that stay below the resource, and not too many to index in one go.

A damaged archive, or a member whose bytes do not match its header, is a 400 that names it;
the archive is open only while its members are written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nifti_archive.errors import InvalidValue
from nifti_archive.ingest.importer import ImportReport, Member, check_archive, open_members

# Each member becomes an indexed file in one transaction; past this many, a bundle is a flood, not a resource.
MAX_MEMBERS = 10_000
DISPLAY = "the uploaded archive"


@dataclass(frozen=True)
class Extracted:
    name: str
    # Writes the member's bytes to the path it is given.
    save: Callable[[Path], object]


def _saver(member: Member) -> Callable[[Path], object]:
    def save(target: Path) -> None:
        with target.open("wb") as sink:
            member.copy_to(sink)

    return save


@contextmanager
def members(archive: Path, limit: int) -> Iterator[list[Extracted]]:
    """The files in a zip or (gzipped) tar that unpacks to at most ``limit`` bytes, readable until
    the block ends; 400 for anything else, a link, device or escaping name in it, or a likely zip bomb."""
    check_archive(archive, DISPLAY)
    report = ImportReport()
    with open_members(archive, limit, report, DISPLAY) as listed:
        if report.skipped:
            name, reason = report.skipped[0]
            if reason == "not a regular file":
                reason = "a link or device; only files are taken"
            raise InvalidValue(f"{name[:80]!r} in the archive: {reason}; nothing was extracted")
        if len(listed) > MAX_MEMBERS:
            raise InvalidValue(f"the archive holds {len(listed)} files, over the limit of {MAX_MEMBERS} for one upload")
        yield [Extracted(member.name, _saver(member)) for member in listed]
