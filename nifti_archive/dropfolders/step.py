"""One entry of a drop folder through the importer of ``nora --import``, and then to done/ or failed/.

Two pollers may watch one folder (a second service started by mistake, or hosts sharing the
archive database and the mount). On one host the folder's lock in var/ lets one at a time work on
it; across hosts, an entry's row is claimed before its import by a conditional write, which only
one of them can make from what it saw.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.db import rows_changed
from nifti_archive.dropfolders.folders import extras_study
from nifti_archive.dropfolders.scan import (
    DONE_FOLDER,
    FAILED_FOLDER,
    MAX_DEPTH,
    NOTE_SUFFIX,
    REASON_SUFFIX,
    Entry,
    Remembered,
    link_escapes,
    unique_name,
)
from nifti_archive.errors import InvalidPath, InvalidValue
from nifti_archive.ingest.importer import Importer, ImportOptions, ImportReport
from nifti_archive.models import DropEntry, DropFolder, DropState, utcnow
from nifti_archive.orthanc_api import OrthancRest
from nifti_archive.settings import Settings

log = logging.getLogger(__name__)
# Every name ends with the empty suffix: whatever is not DICOM (an instrument's raw data, a PDF
# report) is attached to the study of the DICOM beside it, else to the folder's own study.
EVERY_EXTRA = frozenset({""})
# O_NOFOLLOW: a name swapped for a link after the survey fails to open instead of reading where it
# points; O_NONBLOCK: a name swapped for a pipe opens at once, and fstat then tells what it is.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


# A file as it was read: device, inode, size and mtime (ns). Moved to done/ only while it still is.
Stamp = tuple[int, int, int, int]
# The files of an entry its import read, by their path in the entry ("" for an entry that is one file).
Taken = dict[str, Stamp]


class NothingImported(Exception):
    """The importer found nothing to store; the message says what it skipped."""


@dataclass(frozen=True)
class Imported:
    report: ImportReport
    # None: the entry is a link, moved as a whole.
    taken: Taken | None


def poller_id(settings: Settings) -> str:
    """Who claims an entry: one poller at a time per host and var/ (the folder's lock sees to it)."""
    return f"{socket.gethostname()}:{settings.var_dir.resolve()}"


def remember(session: Session, folder: DropFolder, entry: Entry, state: DropState, message: str = "") -> None:
    row = session.scalar(select(DropEntry).where(DropEntry.folder_id == folder.id, DropEntry.name == entry.name))
    if row is None:
        row = DropEntry(folder_id=folder.id, name=entry.name)
        session.add(row)
    row.size, row.mtime, row.files = entry.signature.size, entry.signature.mtime, entry.signature.count
    row.state, row.message = state, message


def claim(archive: Archive, folder_id: int, entry: Entry, seen: Remembered | None, poller: str) -> bool:
    """Mark the entry importing by ``poller`` (kept as the row's message), if its row is still what
    ``seen`` says (None: no row); False when another poller claimed or finished it meanwhile."""
    values = {"size": entry.signature.size, "mtime": entry.signature.mtime, "files": entry.signature.count,
              "state": DropState.IMPORTING, "message": poller, "updated_at": utcnow()}
    try:
        with archive.unit_of_work() as (session, _journal):
            if seen is None:
                session.add(DropEntry(folder_id=folder_id, name=entry.name, **values))
                session.flush()
                return True
            return rows_changed(session.execute(update(DropEntry).where(
                DropEntry.folder_id == folder_id, DropEntry.name == entry.name, DropEntry.state == seen.state,
                DropEntry.size == seen.signature.size, DropEntry.mtime == seen.signature.mtime,
                DropEntry.files == seen.signature.count, DropEntry.message == seen.message,
            ).values(**values))) == 1
    except IntegrityError:  # the row another poller made since
        return False


def _stamp(info: os.stat_result) -> Stamp:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _copy_at(parent: int, name: str, target: Path, budget: list[int], taken: Taken, relative: str = "",
             depth: int = 0) -> None:
    """Copy ``name`` of the open folder ``parent`` to ``target``, deciding on what was opened, not on
    what a path showed earlier: the writer of the drop folder may change it at any moment. Each
    file read is stamped in ``taken`` under its ``relative`` path."""
    try:
        handle = os.open(name, OPEN_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP and depth > 0:
            # A link inside a subfolder, which the importer never follows either: it goes with the entry.
            taken[relative] = _stamp(os.lstat(name, dir_fd=parent))
            return
        raise
    try:
        info = os.fstat(handle)
        if stat.S_ISDIR(info.st_mode):
            if depth >= MAX_DEPTH:
                raise InvalidPath(f"folders nested deeper than {MAX_DEPTH}")
            target.mkdir()
            for inner in sorted(os.listdir(handle)):
                _copy_at(handle, inner, target / inner, budget, taken, f"{relative}/{inner}".lstrip("/"), depth + 1)
        elif not stat.S_ISREG(info.st_mode):
            raise InvalidPath(f"{name} became a link, pipe or device after it was checked")
        elif info.st_nlink > 1:
            # Another name of the same file, which may be one of the archive's own secrets on this mount.
            raise InvalidPath(f"{name} is a hard link (a second name of a file that may lie outside the drop folder)")
        else:
            budget[0] -= info.st_size
            if budget[0] < 0:
                raise InvalidValue("the entry is larger than the import limit (import_max_bytes)")
            with os.fdopen(os.dup(handle), "rb") as source, target.open("xb") as copy:
                shutil.copyfileobj(source, copy)
            taken[relative] = _stamp(info)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(handle)


def snapshot(folder: Path, entry: str, target: Path, limit: int) -> Taken | None:
    """A private copy of the entry at ``target``, read without following links: the importer then
    reads a tree nobody else can change, not the live folder where a file checked as regular may
    become a link to a secret (or a pipe) between the survey and the read. The files copied, or
    None for an entry that is a link."""
    where = folder / entry
    # A top-level link the survey let through points inside the folder: copy what it names, reached
    # from the folder down without following any further link.
    parts: tuple[str, ...] = (entry,)
    link = where.is_symlink()
    if link:
        if link_escapes(folder, where):
            raise InvalidPath("a symbolic link pointing out of the drop folder")
        parts = Path(os.path.realpath(where)).relative_to(os.path.realpath(folder)).parts
        if not parts:
            raise InvalidPath("a symbolic link to the drop folder itself")
    parent = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            os.close(parent)
            parent = inner
        taken: Taken = {}
        _copy_at(parent, parts[-1], target, [limit], taken)
    finally:
        os.close(parent)
    return None if link else taken


def spool(settings: Settings) -> Path:
    """The folders' locks, and beside each the copies of its entries being imported."""
    return settings.var_dir / "dropfolders"


@contextlib.contextmanager
def folder_lock(settings: Settings, folder_id: int) -> Iterator[bool]:
    """The folder's lock, taken without waiting: False while another poller of this host holds it.
    Its holder clears the copies a poller killed in the middle of an import left."""
    spool(settings).mkdir(parents=True, exist_ok=True)
    with (spool(settings) / f"{folder_id}.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        shutil.rmtree(spool(settings) / str(folder_id), ignore_errors=True)
        yield True


def import_entry(archive: Archive, orthanc: OrthancRest, folder: DropFolder, entry: Entry) -> Imported:
    """Import the entry as ``nora --import`` does, each series to the folder's project or where
    the routing rules send it; raises NothingImported when nothing was stored."""
    where = spool(archive.settings) / str(folder.id)
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        path = Path(scratch) / entry.name
        taken = snapshot(Path(folder.path), entry.name, path, archive.settings.import_max_bytes)
        options = ImportOptions(project=folder.project.name if folder.project else None, extra_extensions=EVERY_EXTRA,
                                extras_study=extras_study(folder, entry.signature.mtime))
        report = Importer(archive, orthanc, options).run(path, display=entry.name)
    if not (report.stored or report.already_stored or report.extras):
        reasons = "; ".join(f"{name}: {reason}" for name, reason in report.skipped) or "nothing to import"
        if folder.project is None and not report.series:
            reasons += ("; a drop folder with --routing places files by the tags of the DICOM beside them: "
                        "files without DICOM need a folder declared with --project")
        raise NothingImported(reasons)
    return Imported(report, taken)


def _unchanged(path: Path, stamp: Stamp) -> bool:
    try:
        return _stamp(path.lstat()) == stamp
    except OSError:
        return False


def _move_taken(source: Path, target: Path, taken: Taken) -> bool:
    """Move the files of ``taken`` that are still as they were read from ``source`` to ``target``;
    whether any was. What was written since stays, with its folders, for the next pass."""
    if "" in taken:
        if not _unchanged(source, taken[""]):
            return False
        source.rename(target)
        return True
    moved = False
    for relative, stamp in sorted(taken.items()):
        if _unchanged(source / relative, stamp):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (source / relative).rename(target / relative)
            moved = True
    for directory, _folders, _files in os.walk(source, topdown=False):
        with contextlib.suppress(OSError):  # not empty: it holds what came later
            os.rmdir(directory)
    return moved


def move_aside(folder: Path, name: str, subfolder: str, note: tuple[str, str] | None = None,
               taken: Taken | None = None) -> str | None:
    """Move the entry into ``done/`` or ``failed/`` under a free name, with a note beside it
    (suffix and text): all of it, or only the files of ``taken``. The name it got; None when none
    of its files was left as it was read. Renames: the subfolder is on the same mount."""
    target_dir = folder / subfolder
    target_dir.mkdir(exist_ok=True)
    target = unique_name(name, lambda candidate: (target_dir / candidate).exists()
                         or (note is not None and (target_dir / (candidate + note[0])).exists()))
    if taken is None:
        (folder / name).rename(target_dir / target)
    elif not _move_taken(folder / name, target_dir / target, taken):
        return None
    if note is not None:
        (target_dir / (target + note[0])).write_text(note[1] + "\n")
    return target


def note_of(report: ImportReport) -> tuple[str, str] | None:
    if not report.skipped:
        return None
    return NOTE_SUFFIX, "\n".join(f"skipped {name}: {reason}" for name, reason in report.skipped)


def refuse(archive: Archive, folder: DropFolder, entry: Entry, reason: str) -> None:
    """To failed/ with a reason file; left in place and reported when even that is impossible."""
    where = Path(folder.path)
    try:
        moved = move_aside(where, entry.name, FAILED_FOLDER, (REASON_SUFFIX, reason))
        log.warning("drop folder %s: %r failed (%s); moved to %s/%r", folder.name, entry.name, reason, FAILED_FOLDER, moved)
    except OSError as exc:
        reason = f"{reason}; it could not be moved to {FAILED_FOLDER}/ ({exc.strerror or exc}) and is left in place"
        log.warning("drop folder %s: %r failed: %s", folder.name, entry.name, reason)
    with archive.unit_of_work() as (session, _journal):
        remember(session, session.get_one(DropFolder, folder.id), entry, DropState.FAILED, reason)


def finish(archive: Archive, folder: DropFolder, entry: Entry, note: tuple[str, str] | None = None,
           taken: Taken | None = None) -> None:
    """To done/: what the import read (``taken``), or the whole entry when that is not known (an
    entry imported before a restart, unchanged since)."""
    try:
        moved = move_aside(Path(folder.path), entry.name, DONE_FOLDER, note, taken)
        if moved is None:
            log.info("drop folder %s: %r changed during its import; left for the next pass", folder.name, entry.name)
        elif os.path.lexists(Path(folder.path) / entry.name):
            log.info("drop folder %s: %r imported, moved to %s/%r; files written during its import wait for the "
                     "next pass", folder.name, entry.name, DONE_FOLDER, moved)
        else:
            log.info("drop folder %s: %r imported, moved to %s/%r", folder.name, entry.name, DONE_FOLDER, moved)
    except OSError as exc:
        refuse(archive, folder, entry, f"imported, but it could not be moved to {DONE_FOLDER}/ ({exc.strerror or exc})")
