"""One entry of a drop folder through the importer of ``nora --import``, and then to done/ or failed/."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.catalog.projects import create_project
from nifti_archive.dropfolders.folders import extras_study
from nifti_archive.dropfolders.scan import (
    DONE_FOLDER,
    FAILED_FOLDER,
    MAX_DEPTH,
    NOTE_SUFFIX,
    REASON_SUFFIX,
    Entry,
    link_escapes,
    unique_name,
)
from nifti_archive.errors import InvalidPath, InvalidValue
from nifti_archive.ingest.importer import Importer, ImportOptions, ImportReport, naming_tags, open_members, read_header
from nifti_archive.ingest.routing import route
from nifti_archive.models import DropEntry, DropFolder, DropState, Project
from nifti_archive.orthanc_api import OrthancRest
from nifti_archive.pacs.senders import load_rules
from nifti_archive.settings import Settings

log = logging.getLogger(__name__)
# Every name ends with the empty suffix: whatever is not DICOM (an instrument's raw data, a PDF
# report) is attached to the study of the DICOM beside it, else to the folder's own study.
EVERY_EXTRA = frozenset({""})
# Files carry no called AET: only the routing rules on tags can place them.
NO_CALLED_AET = ""
# O_NOFOLLOW: a name swapped for a link after the survey fails to open instead of reading where it
# points; O_NONBLOCK: a name swapped for a pipe opens at once, and fstat then tells what it is.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


class NothingImported(Exception):
    """The importer found nothing to store; the message says what it skipped."""


def remember(session: Session, folder: DropFolder, entry: Entry, state: DropState, message: str = "") -> None:
    row = session.scalar(select(DropEntry).where(DropEntry.folder_id == folder.id, DropEntry.name == entry.name))
    if row is None:
        row = DropEntry(folder_id=folder.id, name=entry.name)
        session.add(row)
    row.size, row.mtime, row.files = entry.signature.size, entry.signature.mtime, entry.signature.count
    row.state, row.message = state, message


def routed_project(archive: Archive, path: Path) -> str:
    """The project the tag rules give the first DICOM file of the entry (the inbox when none does);
    NothingImported for an entry with no DICOM, which only a folder's own study could hold."""
    with open_members(path, archive.settings.import_max_bytes, ImportReport(), path.name) as members:
        dataset = next((d for d in (read_header(m.read()) for m in members) if d is not None), None)
    if dataset is None:
        raise NothingImported("no DICOM in it: a drop folder with --routing places entries by their DICOM tags; "
                              "files without DICOM need a folder declared with --project")
    with archive.unit_of_work() as (session, journal):
        name = route(load_rules(session), NO_CALLED_AET, naming_tags(dataset))
        if session.scalar(select(Project.id).where(Project.name == name)) is None:
            create_project(session, journal, archive.layout, name, "series no routing rule claimed")
    return name


def _copy_at(parent: int, name: str, target: Path, budget: list[int], depth: int = 0) -> None:
    """Copy ``name`` of the open folder ``parent`` to ``target``, deciding on what was opened, not on
    what a path showed earlier: the writer of the drop folder may change it at any moment."""
    try:
        handle = os.open(name, OPEN_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP and depth > 0:
            return  # a link inside a subfolder, which the importer never follows either
        raise
    try:
        info = os.fstat(handle)
        if stat.S_ISDIR(info.st_mode):
            if depth >= MAX_DEPTH:
                raise InvalidPath(f"folders nested deeper than {MAX_DEPTH}")
            target.mkdir()
            for inner in sorted(os.listdir(handle)):
                _copy_at(handle, inner, target / inner, budget, depth + 1)
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
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(handle)


def snapshot(folder: Path, entry: str, target: Path, limit: int) -> None:
    """A private copy of the entry at ``target``, read without following links: the importer then
    reads a tree nobody else can change, not the live folder where a file checked as regular may
    become a link to a secret (or a pipe) between the survey and the read."""
    where = folder / entry
    # A top-level link the survey let through points inside the folder: copy what it names, reached
    # from the folder down without following any further link.
    parts: tuple[str, ...] = (entry,)
    if where.is_symlink():
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
        _copy_at(parent, parts[-1], target, [limit])
    finally:
        os.close(parent)


def spool(settings: Settings) -> Path:
    """Where entries are copied for their import; what a poller killed meanwhile left there is only copies."""
    return settings.var_dir / "dropfolders"


def import_entry(archive: Archive, orthanc: OrthancRest, folder: DropFolder, entry: Entry) -> ImportReport:
    """Import the entry as ``nora --import`` does; raises NothingImported when nothing was stored."""
    where = spool(archive.settings)
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=where) as scratch:
        path = Path(scratch) / entry.name
        snapshot(Path(folder.path), entry.name, path, archive.settings.import_max_bytes)
        project = folder.project.name if folder.project else routed_project(archive, path)
        options = ImportOptions(project=project, extra_extensions=EVERY_EXTRA,
                                extras_study=extras_study(folder, entry.signature.mtime))
        report = Importer(archive, orthanc, options).run(path, display=entry.name)
    if not (report.stored or report.already_stored or report.extras):
        raise NothingImported("; ".join(f"{name}: {reason}" for name, reason in report.skipped) or "nothing to import")
    return report


def move_aside(folder: Path, name: str, subfolder: str, note: tuple[str, str] | None = None) -> str:
    """Move the entry into ``done/`` or ``failed/`` under a free name, with a note beside it
    (suffix and text); the name it got. A rename: the subfolder is on the same mount."""
    target_dir = folder / subfolder
    target_dir.mkdir(exist_ok=True)
    target = unique_name(name, lambda candidate: (target_dir / candidate).exists()
                         or (note is not None and (target_dir / (candidate + note[0])).exists()))
    (folder / name).rename(target_dir / target)
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


def finish(archive: Archive, folder: DropFolder, entry: Entry, note: tuple[str, str] | None = None) -> None:
    try:
        moved = move_aside(Path(folder.path), entry.name, DONE_FOLDER, note)
        log.info("drop folder %s: %r imported, moved to %s/%r", folder.name, entry.name, DONE_FOLDER, moved)
    except OSError as exc:
        refuse(archive, folder, entry, f"imported, but it could not be moved to {DONE_FOLDER}/ ({exc.strerror or exc})")
