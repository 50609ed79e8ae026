"""Writing a planned BIDS dataset to a folder, or as a zip stream.

A new dataset is built in a hidden folder beside the target and renamed into place, so an
interrupted export never looks complete. Exporting again into a dataset adds what is new and
replaces what changed: a text file whose content differs, an image (or ``.bval``/``.bvec``)
whose size or modification time is not the archive file's (a series converted again); the
rest is left alone. New and changed files are built beside the dataset and moved in, the
tables last.

Images are copies by default: a dataset is something people edit, and an edit must never reach
the archive (on Linux, Python's copy has the kernel move the bytes, with sendfile, never
through this process). Hard links are asked for (``link``) to save the space; a link is
the archive's own file, so it is made read-only (the mode belongs to the file, the archive's
copy included: the archive replaces files, it never writes into them) and the report says not
to edit such a dataset in place. Where the file system refuses a link, the file is copied and
the report says why.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nifti_archive.bids.plan import REPORT, Entry
from nifti_archive.errors import InvalidValue
from nifti_archive.zipstream import Entry as ZipEntry
from nifti_archive.zipstream import file_pieces, zipped

log = logging.getLogger(__name__)

DESCRIPTION_FILE = "dataset_description.json"
# Errors of os.link that mean "not here" (another mount, a file system or a kernel policy that
# refuses), as opposed to a fault that copying would hit too.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES})
_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


@dataclass
class Written:
    added: list[str] = field(default_factory=list)
    # Already in the dataset, now different in the archive: written again.
    replaced: list[str] = field(default_factory=list)
    kept: int = 0
    copied: int = 0
    linked: int = 0
    link_refused: str | None = None  # why images were copied although links were asked for


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


def _same_file(target: Path, source: Path) -> bool:
    """Whether ``target`` still holds what ``source`` holds: a link to it, or a copy that kept its
    size and modification time (copies keep the archive file's time)."""
    mine, theirs = target.stat(), source.stat()
    return (mine.st_ino, mine.st_dev) == (theirs.st_ino, theirs.st_dev) or (
        (mine.st_size, mine.st_mtime_ns) == (theirs.st_size, theirs.st_mtime_ns))


def _present(target: Path, entry: Entry) -> bool:
    if not target.is_file():
        return False
    if entry.text is not None:
        return target.read_text() == entry.text
    return _same_file(target, Path(str(entry.source)))


def _linked(source: Path, staged: Path, written: Written) -> bool:
    try:
        os.link(source, staged)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        written.link_refused = written.link_refused or exc.strerror
        return False
    mode = stat.S_IMODE(staged.stat().st_mode)
    if mode & _WRITE_BITS:
        try:
            os.chmod(staged, mode & ~_WRITE_BITS)
        except PermissionError:
            # Not the file's owner: a link the exporting user might still write through is no link to hand out.
            staged.unlink()
            written.link_refused = written.link_refused or "the archive's file is writable and not yours to make read-only"
            return False
    written.linked += 1
    return True


def _place(entry: Entry, staged: Path, link: bool, written: Written) -> None:
    staged.parent.mkdir(parents=True, exist_ok=True)
    if entry.text is not None:
        staged.write_text(entry.text)
        return
    source = Path(str(entry.source))
    if link and _linked(source, staged, written):
        return
    shutil.copy2(source, staged)
    # A copy is the user's to edit, whatever the archive file's mode.
    os.chmod(staged, stat.S_IMODE(staged.stat().st_mode) | stat.S_IWUSR)
    written.copied += 1


def _report(lines: Sequence[str], written: Written, link: bool) -> str:
    if link:
        lines = [*lines, "images are hard links to the archive's files, read-only: do not edit them in place "
                         "(copy a file before changing it)"]
    if written.link_refused:
        lines = [*lines, f"{written.copied} file(s) copied: hard links were refused ({written.link_refused})"]
    if written.replaced:
        lines = [*lines, f"{len(written.replaced)} file(s) replaced: changed in the archive since the last export"]
    return "".join(line + "\n" for line in lines)


def write_dataset(entries: Sequence[Entry], out: Path, link: bool, report_lines: Sequence[str]) -> Written:
    updating = is_update(out)
    written = Written()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        # Data before the tables that list it, so that a dataset being updated never lists
        # files it does not have yet.
        for entry in [*entries, Entry(REPORT, text="")]:
            if entry.target == REPORT:
                entry = Entry(REPORT, text=_report(report_lines, written, link))
            there = out / entry.target
            if updating and _present(there, entry):
                written.kept += 1
                continue
            _place(entry, staging / entry.target, link, written)
            if updating and there.is_file() and entry.text is None:
                written.replaced.append(entry.target)
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


def _zip_entry(entry: Entry, folder: str, now: datetime) -> ZipEntry:
    name = f"{folder}/{entry.target}"
    if entry.text is not None:
        return ZipEntry(name, [entry.text.encode()], now)
    source = str(entry.source)
    return ZipEntry(name, file_pieces(source), datetime.fromtimestamp(os.stat(source).st_mtime))


def zip_stream(entries: Sequence[Entry], folder: str, report_lines: Sequence[str]) -> Iterator[bytes]:
    """The dataset as a zip (all of it under ``folder``/), produced while it is sent."""
    now = datetime.now()
    report = Entry(REPORT, text="".join(line + "\n" for line in report_lines))
    return zipped(_zip_entry(entry, folder, now) for entry in [*entries, report])
