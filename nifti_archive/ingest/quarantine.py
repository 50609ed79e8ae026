"""Quarantined series a project admin can act on: see why, publish anyway, or throw away.

A series that looked incomplete was converted into ``<project>/.quarantine/<request>/`` and
its request remembers the study and series folder it would have gone to. Releasing moves
those files there and registers them like any conversion, with the reason and the releasing
user in the file's provenance note and in the audit log; an earlier conversion of the series
goes to the trash as a re-conversion would send it. When the rest of the series reaches
Orthanc later, the normal re-conversion replaces the released files (same Orthanc series).
Discarding removes the derived files only: the originals stay in Orthanc, and ``--retry``
converts them again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, FileJournal
from nifti_archive.catalog.registration import check_unregistered, register_file
from nifti_archive.catalog.trash import delete_files
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.ingest import conversion_queue, converter
from nifti_archive.ingest.conversion import NO_CONVERTER, QUARANTINE_FOLDER, output_kind, provenance
from nifti_archive.layout import Location
from nifti_archive.models import AuditEvent, ConversionRequest, ConversionState, File, FileKind, Project, Study, Subject

# What the studies table counts per study: series held back, and series whose conversion failed.
HELD = (ConversionState.QUARANTINED, ConversionState.FAILED)
MAX_REASON = 1000


@dataclass(frozen=True)
class Decision:
    """What a project admin did with a quarantined series."""

    request_id: int
    state: ConversionState
    target: str
    files: int


def quarantine_dir(archive: Archive, project: str, request_id: int) -> Path:
    return archive.layout.project_dir(project) / QUARANTINE_FOLDER / str(request_id)


def _held_request(session: Session, project: Project, request_id: int) -> ConversionRequest:
    request = session.get(ConversionRequest, request_id)
    # Another project's request is as unknown as a missing one: its existence is not ours to tell.
    if request is None or request.project_id != project.id:
        raise NotFound(f"no conversion request {request_id} in project {project.name!r}")
    if request.state is not ConversionState.QUARANTINED:
        raise InvalidValue(f"conversion request {request_id} is {request.state.value}, not quarantined")
    return request


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidValue("say why (--reason): it is kept with the files and in the audit log")
    if len(reason) > MAX_REASON:
        raise InvalidValue(f"the reason is longer than {MAX_REASON} characters")
    return reason


def _audit(session: Session, project: Project, username: str, action: str, request: ConversionRequest, reason: str) -> None:
    session.add(AuditEvent(
        username=username, project_id=project.id, action=action,
        detail=f"conversion request {request.id} (series {request.series_instance_uid}): {reason}",
    ))


def release(
    session: Session, journal: FileJournal, archive: Archive, project: Project, request_id: int, username: str, reason: str
) -> Decision:
    """Publish a quarantined series where its conversion would have put it."""
    reason = _check_reason(reason)
    request = _held_request(session, project, request_id)
    study = session.get(Study, request.study_id) if request.study_id else None
    if study is None or study.trash_id is not None or not request.series_folder:
        raise InvalidValue(f"conversion request {request_id} has no live study to go to; use --retry {request_id} to convert it again")
    subject = session.get_one(Subject, study.subject_id)
    source = quarantine_dir(archive, project.name, request_id)
    held = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else []
    if not held:
        raise InvalidValue(f"conversion request {request_id} has no files in quarantine; use --retry {request_id}")
    earlier = session.scalars(
        select(File).where(File.orthanc_series_id == request.orthanc_series_id, File.trash_id.is_(None))
    ).all()
    if earlier:
        earlier_paths = [
            archive.layout.file_path(Location(project.name, subject.patient_id, study.study_id, f.path)) for f in earlier
        ]
        delete_files(session, journal, archive.layout, project, earlier_paths, f"replaced by release of request {request_id}")
    note = f"released from quarantine by {username}: {reason} (held back because: {request.message})"
    relatives = [f"{request.series_folder}/{path.name}" for path in held]
    for relative in relatives:
        check_unregistered(session, study, relative, relative)
    for path, relative in zip(held, relatives, strict=True):
        target = archive.layout.file_path(Location(project.name, subject.patient_id, study.study_id, relative))
        journal.move(path, target)
        kind = output_kind(path.name)
        made_by = NO_CONVERTER if kind is FileKind.DICOM_ONLY else converter.NAME
        origin = provenance(request.series_instance_uid, request.orthanc_series_id, request.instance_count, made_by, note)
        register_file(session, study, relative, target, kind=kind, provenance=origin)
    request.state = ConversionState.RELEASED
    conversion_queue.wake_waiting(session, request.series_instance_uid)
    request.target = f"{project.name}/{subject.patient_id}/{study.study_id}/{request.series_folder}"
    _audit(session, project, username, "release-quarantined-series", request, reason)
    session.flush()
    return Decision(request_id, request.state, request.target, len(held))


def discard(session: Session, archive: Archive, project: Project, request_id: int, username: str, reason: str) -> Decision:
    """Throw a quarantined conversion away; the caller removes the folder once the transaction commits."""
    reason = _check_reason(reason)
    request = _held_request(session, project, request_id)
    request.state = ConversionState.DISCARDED
    _audit(session, project, username, "discard-quarantined-series", request, reason)
    session.flush()
    folder = quarantine_dir(archive, project.name, request_id)
    count = sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
    return Decision(request_id, request.state, str(folder), count)


def remove_discarded(archive: Archive, project: str, request_id: int) -> None:
    shutil.rmtree(quarantine_dir(archive, project, request_id), ignore_errors=True)


def held_counts() -> Select[tuple[int | None, ConversionState, int]]:
    """Rows (study id, state, series) of studies' quarantined or failed series (the table's badge),
    for the caller to narrow to its studies."""
    return (
        select(ConversionRequest.study_id, ConversionRequest.state, func.count())
        .where(ConversionRequest.state.in_(HELD))
        .group_by(ConversionRequest.study_id, ConversionRequest.state)
    )


def held_in_project(session: Session, project: Project) -> list[ConversionRequest]:
    """The project's quarantined and failed requests, newest first, with their reasons."""
    return list(session.scalars(
        select(ConversionRequest)
        .where(ConversionRequest.project_id == project.id, ConversionRequest.state.in_(HELD))
        .order_by(ConversionRequest.id.desc())
    ))
