"""Recoverable deletes: ``--del``, ``--del_pat``, ``--restore`` and ``--purge``.

A delete moves what it names into ``<project>/.trash/<entry id>/`` (keeping the
subject/study/path layout below it) and marks the rows with the entry's id. Restore reads
the rows back to know what to move: a subject that was deleted as a whole goes back as one
folder, a study as one folder, single files one by one.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from nifti_archive.archive import FileJournal
from nifti_archive.catalog.registration import live_study, live_subject
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.layout import ArchiveLayout, Location, split_psid
from nifti_archive.models import File, MarkerSet, Project, Study, Subject, Trash

log = logging.getLogger(__name__)

PURGED_PREFIX = "purged-"


@dataclass(frozen=True)
class TrashSummary:
    id: int
    deleted_at: datetime
    deleted_by: str
    summary: str
    files: int


def new_entry(session: Session, project: Project, summary: str, deleted_by: str) -> Trash:
    entry = Trash(project_id=project.id, summary=summary, deleted_by=deleted_by)
    session.add(entry)
    session.flush()
    return entry


def delete_files(
    session: Session, journal: FileJournal, layout: ArchiveLayout, project: Project, paths: list[Path], deleted_by: str
) -> Trash:
    records: list[tuple[File, Location]] = []
    for path in paths:
        location = layout.locate(path)
        if location.project != project.name:
            raise InvalidValue(f"{path} belongs to project {location.project!r}, not {project.name!r}")
        record = session.scalar(
            select(File)
            .join(Study, Study.id == File.study_id)
            .join(Subject, Subject.id == Study.subject_id)
            .where(
                Subject.project_id == project.id,
                Subject.patient_id == location.subject,
                Study.study_id == location.study,
                File.path == location.path,
                File.trash_id.is_(None),
            )
        )
        if record is None:
            raise NotFound(f"{path} is not a registered file of project {project.name!r}")
        records.append((record, location))
    entry = new_entry(session, project, f"{len(records)} file(s): {', '.join(loc.path for _, loc in records[:3])}", deleted_by)
    for record, location in records:
        journal.move(layout.file_path(location), layout.in_trash(entry.id, location))
        record.trash_id = entry.id
    return entry


def parse_psid(psid: str) -> tuple[str, str | None]:
    """NORA's ``patient`` or ``patient#study`` (an analysis: ``ANALYSIS#name`` or ``ANALYSIS#name#analysis``)."""
    subject, study = split_psid(psid)
    if not subject or study == "":
        raise InvalidValue(f"invalid subject/study reference {psid!r}: use PATIENT or PATIENT#STUDY")
    return subject, study


def delete_subjects_or_studies(
    session: Session, journal: FileJournal, layout: ArchiveLayout, project: Project, psids: list[str], deleted_by: str
) -> Trash:
    targets: list[tuple[Subject, Study | None]] = []
    for psid in psids:
        subject_id, study_id = parse_psid(psid)
        subject = live_subject(session, project, subject_id)
        if subject is None:
            raise NotFound(f"no subject {subject_id!r} in project {project.name!r}")
        study = None
        if study_id is not None:
            study = live_study(session, subject, study_id)
            if study is None:
                raise NotFound(f"no study {study_id!r} for subject {subject_id!r} in project {project.name!r}")
        targets.append((subject, study))
    entry = new_entry(session, project, "subjects/studies: " + ", ".join(psids[:5]), deleted_by)
    for subject, study in targets:
        if study is None:
            _trash_subject(session, journal, layout, project, subject, entry)
        elif study.trash_id is None:  # its subject may already have gone in this same command
            _trash_study(session, journal, layout, project, subject, study, entry)
    return entry


def _trash_study(
    session: Session,
    journal: FileJournal,
    layout: ArchiveLayout,
    project: Project,
    subject: Subject,
    study: Study,
    entry: Trash,
) -> None:
    source = layout.study_dir(project.name, subject.patient_id, study.study_id)
    journal.move(source, layout.trash_dir(project.name, entry.id) / subject.patient_id / study.study_id)
    session.execute(
        update(File).where(File.study_id == study.id, File.trash_id.is_(None)).values(trash_id=entry.id)
    )
    study.trash_id = entry.id


def _trash_subject(
    session: Session, journal: FileJournal, layout: ArchiveLayout, project: Project, subject: Subject, entry: Trash
) -> None:
    if subject.trash_id is not None:
        return
    journal.move(
        layout.subject_dir(project.name, subject.patient_id),
        layout.trash_dir(project.name, entry.id) / subject.patient_id,
    )
    live_studies = select(Study.id).where(Study.subject_id == subject.id, Study.trash_id.is_(None))
    session.execute(
        update(File).where(File.study_id.in_(live_studies), File.trash_id.is_(None)).values(trash_id=entry.id)
    )
    session.execute(
        update(Study).where(Study.subject_id == subject.id, Study.trash_id.is_(None)).values(trash_id=entry.id)
    )
    subject.trash_id = entry.id


def list_trash(session: Session, project: Project) -> list[TrashSummary]:
    counts = select(File.trash_id, func.count().label("n")).group_by(File.trash_id).subquery()
    rows = session.execute(
        select(Trash, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.trash_id == Trash.id)
        .where(Trash.project_id == project.id)
        .order_by(Trash.id)
    )
    return [TrashSummary(t.id, t.deleted_at, t.deleted_by, t.summary, n) for t, n in rows]


def _entry(session: Session, project: Project, trash_id: int) -> Trash:
    entry = session.get(Trash, trash_id)
    if entry is None or entry.project_id != project.id:
        raise NotFound(f"no trash entry {trash_id} in project {project.name!r} (see --trash)")
    return entry


def restore(session: Session, journal: FileJournal, layout: ArchiveLayout, project: Project, trash_id: int) -> int:
    """Bring one trash entry back; returns the number of files restored."""
    entry = _entry(session, project, trash_id)
    trash_dir = layout.trash_dir(project.name, entry.id)
    subjects = list(session.scalars(select(Subject).where(Subject.trash_id == entry.id)))
    for subject in subjects:
        if live_subject(session, project, subject.patient_id) is not None:
            raise Conflict(f"cannot restore subject {subject.patient_id!r}: a live subject has that id again")
        journal.move(trash_dir / subject.patient_id, layout.subject_dir(project.name, subject.patient_id))
    restored_subject_ids = {s.id for s in subjects}
    studies = list(session.scalars(select(Study).where(Study.trash_id == entry.id)))
    for study in studies:
        if study.subject_id in restored_subject_ids:
            continue
        subject = session.get_one(Subject, study.subject_id)
        _require_live(subject.trash_id, f"subject {subject.patient_id!r}")
        if live_study(session, subject, study.study_id) is not None:
            raise Conflict(f"cannot restore study {subject.patient_id}#{study.study_id}: a live study has that id again")
        journal.move(
            trash_dir / subject.patient_id / study.study_id,
            layout.study_dir(project.name, subject.patient_id, study.study_id),
        )
    moved_study_ids = {s.id for s in studies}
    files = session.execute(
        select(File, Study, Subject)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(File.trash_id == entry.id)
    ).all()
    for record, study, subject in files:
        if study.id in moved_study_ids:
            continue
        _require_live(study.trash_id, f"study {subject.patient_id}#{study.study_id}")
        location = Location(project.name, subject.patient_id, study.study_id, record.path)
        clash = session.scalar(
            select(File.id).where(File.study_id == study.id, File.path == record.path, File.trash_id.is_(None))
        )
        if clash is not None:
            raise Conflict(f"cannot restore {location.path} in {location.psid}: a live file has that path again")
        journal.move(layout.in_trash(entry.id, location), layout.file_path(location))
    for marker_set in session.scalars(select(MarkerSet).where(MarkerSet.trash_id == entry.id)):
        clash = session.scalar(select(MarkerSet.id).where(
            MarkerSet.study_id == marker_set.study_id, MarkerSet.name == marker_set.name, MarkerSet.trash_id.is_(None)))
        if clash is not None:
            raise Conflict(f"cannot restore marker set {marker_set.name!r}: a live set has that name again")
    for model in (Subject, Study, File, MarkerSet):
        session.execute(update(model).where(model.trash_id == entry.id).values(trash_id=None))
    session.delete(entry)
    session.flush()
    _remove_if_empty(trash_dir)
    return len(files)


def _require_live(trash_id: int | None, what: str) -> None:
    if trash_id is not None:
        raise Conflict(f"cannot restore into {what}: it is in trash entry {trash_id}; restore that first")


def _remove_if_empty(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True) if folder.exists() else []:
        if path.is_dir():
            try:
                path.rmdir()
            except OSError:
                return
    if folder.exists():
        try:
            folder.rmdir()
        except OSError:
            log.warning("%s is not empty after restore; left in place", folder)


def purge(
    session: Session, journal: FileJournal, layout: ArchiveLayout, project: Project, older_than_days: int
) -> list[Path]:
    """Delete trash entries older than the given age for good.

    The rows go in this transaction; the folders are renamed aside here and returned, for
    the caller to remove once the transaction has committed.
    """
    if older_than_days < 0:
        raise InvalidValue("--older-than must not be negative")
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    entries = list(
        session.scalars(select(Trash).where(Trash.project_id == project.id, Trash.deleted_at <= cutoff).order_by(Trash.id))
    )
    doomed: list[Path] = []
    for entry in entries:
        for model in (MarkerSet, File, Study, Subject):
            session.execute(delete(model).where(model.trash_id == entry.id))
        session.delete(entry)
        folder = layout.trash_dir(project.name, entry.id)
        if folder.exists():
            aside = folder.with_name(PURGED_PREFIX + folder.name)
            journal.move(folder, aside)
            doomed.append(aside)
    session.flush()
    return doomed


def remove_purged(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            log.warning("could not remove %s; remove it by hand", folder)
