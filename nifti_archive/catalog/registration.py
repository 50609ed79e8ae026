"""Registering files that already lie in a project's tree (NORA's ``--add``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.catalog.tags import TagLevel, add_tags, check_tags
from nifti_archive.errors import Conflict, InvalidPath
from nifti_archive.layout import ArchiveLayout, Location
from nifti_archive.models import File, Project, Study, Subject

_KINDS = {".nii.gz": "nifti", ".nii": "nifti", ".json": "json", ".bval": "bval", ".bvec": "bvec", ".dcm": "dicom"}


def file_kind(path: str) -> str:
    lowered = path.lower()
    return next((kind for suffix, kind in _KINDS.items() if lowered.endswith(suffix)), "other")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def live_subject(session: Session, project: Project, patient_id: str) -> Subject | None:
    return session.scalar(
        select(Subject).where(
            Subject.project_id == project.id, Subject.patient_id == patient_id, Subject.trash_id.is_(None)
        )
    )


def live_study(session: Session, subject: Subject, study_id: str) -> Study | None:
    return session.scalar(
        select(Study).where(Study.subject_id == subject.id, Study.study_id == study_id, Study.trash_id.is_(None))
    )


def ensure_study(session: Session, project: Project, patient_id: str, study_id: str) -> Study:
    """The live study of that subject, created (with its subject) where missing."""
    subject = live_subject(session, project, patient_id)
    if subject is None:
        subject = Subject(project_id=project.id, patient_id=patient_id)
        session.add(subject)
        session.flush()
    study = live_study(session, subject, study_id)
    if study is None:
        study = Study(subject_id=subject.id, study_id=study_id)
        session.add(study)
        session.flush()
    return study


def _locate_in_project(layout: ArchiveLayout, project: Project, path: Path) -> Location:
    location = layout.locate(path)
    if location.project != project.name:
        raise InvalidPath(f"{path} belongs to project {location.project!r}, not {project.name!r}")
    real = layout.file_path(location)
    if not real.is_file():
        raise InvalidPath(f"{path} is not a regular file")
    return location


def add_files(
    session: Session, layout: ArchiveLayout, project: Project, paths: Sequence[Path], tags: Iterable[str] = ()
) -> list[File]:
    """Index files found in the project's tree; every path is checked before anything is written."""
    tag_list = check_tags(tags)
    locations = [_locate_in_project(layout, project, Path(p)) for p in paths]
    seen: set[Location] = set()
    for path, location in zip(paths, locations, strict=True):
        if location in seen:
            raise Conflict(f"{path} is named twice")
        seen.add(location)
    added: list[File] = []
    for path, location in zip(paths, locations, strict=True):
        study = ensure_study(session, project, location.subject, location.study)
        existing = session.scalar(
            select(File.id).where(File.study_id == study.id, File.path == location.path, File.trash_id.is_(None))
        )
        if existing is not None:
            raise Conflict(f"{path} is already registered")
        real = layout.file_path(location)
        record = File(
            study_id=study.id,
            path=location.path,
            kind=file_kind(location.path),
            size=real.stat().st_size,
            sha256=sha256_of(real),
        )
        session.add(record)
        added.append(record)
    session.flush()
    add_tags(session, TagLevel.FILE, [f.id for f in added], tag_list)
    return added
