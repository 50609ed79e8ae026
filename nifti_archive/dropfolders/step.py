"""One entry of a drop folder through the importer of ``nora --import``, and then to done/ or failed/."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.catalog.projects import create_project
from nifti_archive.dropfolders.folders import extras_study
from nifti_archive.dropfolders.scan import DONE_FOLDER, FAILED_FOLDER, NOTE_SUFFIX, REASON_SUFFIX, Entry, unique_name
from nifti_archive.ingest.importer import Importer, ImportOptions, ImportReport, naming_tags, open_members, read_header
from nifti_archive.ingest.routing import route
from nifti_archive.models import DropEntry, DropFolder, DropState, Project
from nifti_archive.orthanc_api import OrthancRest
from nifti_archive.pacs.senders import load_rules

log = logging.getLogger(__name__)
# Every name ends with the empty suffix: whatever is not DICOM (an instrument's raw data, a PDF
# report) is attached to the study of the DICOM beside it, else to the folder's own study.
EVERY_EXTRA = frozenset({""})
# Files carry no called AET: only the routing rules on tags can place them.
NO_CALLED_AET = ""


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


def import_entry(archive: Archive, orthanc: OrthancRest, folder: DropFolder, entry: Entry) -> ImportReport:
    """Import the entry as ``nora --import`` does; raises NothingImported when nothing was stored."""
    path = Path(folder.path) / entry.name
    project = folder.project.name if folder.project else routed_project(archive, path)
    options = ImportOptions(project=project, extra_extensions=EVERY_EXTRA,
                            extras_study=extras_study(folder, entry.signature.mtime))
    report = Importer(archive, orthanc, options).run(path, display=path.name)
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
        log.warning("drop folder %s: %s failed (%s); moved to %s/%s", folder.name, entry.name, reason, FAILED_FOLDER, moved)
    except OSError as exc:
        reason = f"{reason}; it could not be moved to {FAILED_FOLDER}/ ({exc.strerror or exc}) and is left in place"
        log.warning("drop folder %s: %s failed: %s", folder.name, entry.name, reason)
    with archive.unit_of_work() as (session, _journal):
        remember(session, session.get_one(DropFolder, folder.id), entry, DropState.FAILED, reason)


def finish(archive: Archive, folder: DropFolder, entry: Entry, note: tuple[str, str] | None = None) -> None:
    try:
        moved = move_aside(Path(folder.path), entry.name, DONE_FOLDER, note)
        log.info("drop folder %s: %s imported, moved to %s/%s", folder.name, entry.name, DONE_FOLDER, moved)
    except OSError as exc:
        refuse(archive, folder, entry, f"imported, but it could not be moved to {DONE_FOLDER}/ ({exc.strerror or exc})")
