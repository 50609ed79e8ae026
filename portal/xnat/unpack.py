"""The members of an uploaded zip or tar that a client asks to have extracted, checked before
anything is written: regular files only, under names the caller's resource may hold."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nifti_archive.errors import InvalidValue


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


def members(archive: Path) -> list[Member]:
    """The files in a zip or (gzipped) tar; 400 for anything else, or a link or device in it."""
    if zipfile.is_zipfile(archive):
        bundle = zipfile.ZipFile(archive)
        return [Member(info.filename, _copier(lambda info=info: bundle.open(info)))  # type: ignore[misc]  # bound per member
                for info in bundle.infolist() if not info.is_dir()]
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
    return found
