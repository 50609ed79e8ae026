"""The members of an uploaded zip or tar that a client asks to have extracted, checked before
anything is written: regular files only, under names the caller's resource may hold, within the
import's limits on unpacked size and compression ratio, and not too many to index in one go."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nifti_archive.errors import InvalidValue
from nifti_archive.ingest.importer import check_sizes

# Each member becomes an indexed file in one transaction; past this many, a bundle is a flood, not a resource.
MAX_MEMBERS = 10_000


@dataclass(frozen=True)
class Member:
    name: str
    # Writes the member's bytes to the path it is given.
    save: Callable[[Path], object]


def _copier(opener: Callable[[], object]) -> Callable[[Path], object]:
    def save(target: Path) -> None:
        with opener() as source, target.open("wb") as sink:  # type: ignore[attr-defined]  # zip and tar members are both readable files
            shutil.copyfileobj(source, sink)

    return save


def _check_count(count: int) -> None:
    if count > MAX_MEMBERS:
        raise InvalidValue(f"the archive holds {count} files, over the limit of {MAX_MEMBERS} for one upload")


def members(archive: Path, limit: int) -> list[Member]:
    """The files in a zip or (gzipped) tar that unpacks to at most ``limit`` bytes; 400 for
    anything else, a link or device in it, or a likely zip bomb."""
    display = "the uploaded archive"
    if zipfile.is_zipfile(archive):
        bundle = zipfile.ZipFile(archive)
        infos = [info for info in bundle.infolist() if not info.is_dir()]
        _check_count(len(infos))
        check_sizes([(info.file_size, info.compress_size) for info in infos], limit, display)
        return [Member(info.filename, _copier(lambda info=info: bundle.open(info)))  # type: ignore[misc]  # bound per member
                for info in infos]
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError:
        raise InvalidValue("extract=true needs a zip or a tar (optionally gzipped)") from None
    found = []
    for info in tar.getmembers():
        if info.isdir():
            continue
        if not info.isfile():
            raise InvalidValue(f"{info.name[:80]!r} in the archive is a link or device; only files are taken")
        found.append(Member(info.name, _copier(lambda info=info: tar.extractfile(info))))  # type: ignore[misc]  # bound per member
    _check_count(len(found))
    check_sizes([(sum(info.size for info in tar.getmembers() if info.isfile()), archive.stat().st_size)], limit, display)
    return found
