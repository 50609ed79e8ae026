"""Writing a planned BIDS dataset to a folder, or as a zip stream.

A new dataset is built in a hidden folder beside the target and renamed into place, so an
interrupted export never looks complete. Exporting again into a dataset adds what is new:
files already there with the same content (images: already there) are left alone, new
files are built beside it and moved in, the tables last. Images and ``.bval``/``.bvec`` are
hard links to the archive's files where the file system allows, else copies (and the
report says why).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nifti_archive.bids.plan import REPORT, Entry
from nifti_archive.errors import InvalidValue

log = logging.getLogger(__name__)

DESCRIPTION_FILE = "dataset_description.json"
# Errors of os.link that mean "not here" (another mount, a file system or a kernel policy that
# refuses), as opposed to a fault that copying would hit too.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES})
_ZIP_CHUNK = 1 << 20


@dataclass
class Written:
    added: list[str] = field(default_factory=list)
    kept: int = 0
    copied: int = 0
    link_refused: str | None = None  # why images were copied instead of linked


def is_update(out: Path) -> bool:
    """Whether ``out`` is a dataset to add to (True) or a place for a new one (False); anything
    else is refused."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InvalidValue(f"{out} exists and is not a folder")
    if not out.parent.is_dir():
        raise InvalidValue(f"{out.parent} does not exist: create it first")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DESCRIPTION_FILE).is_file():
            raise InvalidValue(f"{out} is a folder with files that is not a BIDS dataset: give a new or empty folder")
        return True
    return False


def _present(target: Path, entry: Entry) -> bool:
    if not target.is_file():
        return False
    return entry.text is None or target.read_text() == entry.text


def _place(entry: Entry, staged: Path, copy: bool, written: Written) -> None:
    staged.parent.mkdir(parents=True, exist_ok=True)
    if entry.text is not None:
        staged.write_text(entry.text)
        return
    source = Path(str(entry.source))
    if not copy:
        try:
            os.link(source, staged)
            return
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            written.link_refused = written.link_refused or exc.strerror
    shutil.copy2(source, staged)
    written.copied += 1


def _report(lines: Sequence[str], written: Written) -> str:
    if written.link_refused:
        lines = [*lines, f"{written.copied} file(s) copied: the file system refused hard links ({written.link_refused})"]
    elif written.copied:
        lines = [*lines, f"{written.copied} file(s) copied, as asked"]
    return "".join(line + "\n" for line in lines)


def write_dataset(entries: Sequence[Entry], out: Path, copy: bool, report_lines: Sequence[str]) -> Written:
    updating = is_update(out)
    written = Written()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        # Data before the tables that list it, so that a dataset being updated never lists
        # files it does not have yet.
        for entry in [*entries, Entry(REPORT, text="")]:
            if entry.target == REPORT:
                entry = Entry(REPORT, text=_report(report_lines, written))
            if updating and _present(out / entry.target, entry):
                written.kept += 1
                continue
            _place(entry, staging / entry.target, copy, written)
            written.added.append(entry.target)
        if updating:
            for target in written.added:
                (out / target).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / target, out / target)
        else:
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the dataset from its group
            if out.exists():
                out.rmdir()
            os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if written.link_refused:
        log.warning("BIDS export to %s: %d file(s) copied, hard links refused (%s)", out, written.copied, written.link_refused)
    return written


class _Sink:
    """A write-only file object whose writes are collected for a streaming response."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


def zip_stream(entries: Sequence[Entry], folder: str, report_lines: Sequence[str]) -> Iterator[bytes]:
    """The dataset as a zip (all of it under ``folder``/), produced while it is sent."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as bundle:
        for entry in [*entries, Entry(REPORT, text="".join(line + "\n" for line in report_lines))]:
            name = f"{folder}/{entry.target}"
            if entry.text is not None:
                bundle.writestr(name, entry.text)
            else:
                with open(str(entry.source), "rb") as source, bundle.open(name, "w", force_zip64=True) as member:
                    while chunk := source.read(_ZIP_CHUNK):
                        member.write(chunk)
                        yield from sink.take()
            yield from sink.take()
    yield from sink.take()
