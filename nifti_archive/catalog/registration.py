"""Indexing files, and the subjects and studies they belong to.

Every ``File`` row is made by ``register_file`` (conversions, imports, uploads, NORA's
``--add``, job outputs, released quarantine), and every subject and study by ``ensure_study``,
which also records who a subject really is where the caller knows it (a DICOM PatientID).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.catalog.tags import TagLevel, add_tags, check_tags
from nifti_archive.errors import Conflict, InvalidPath
from nifti_archive.layout import ArchiveLayout, Location
from nifti_archive.models import File, FileKind, Project, Study, Subject, SubjectIdentity

# By the end of the name, case aside. FreeSurfer's surfaces have no extension: they are named by
# the surface after the hemisphere (lh.pial, rh.white, lh.sphere.reg; sub-01.lh.inflated too), and
# only those surfaces' names count (not lh.orig or lh.curv: ``.orig`` ends backups' names as well,
# and a curvature is no mesh).
_KINDS = {
    ".nii.gz": FileKind.NIFTI, ".nii": FileKind.NIFTI, ".json": FileKind.JSON, ".bval": FileKind.BVAL,
    ".bvec": FileKind.BVEC, ".dcm": FileKind.DICOM,
    ".nrrd": FileKind.NRRD, ".nhdr": FileKind.NRRD, ".mgh": FileKind.MGH, ".mgz": FileKind.MGH,
    ".gii": FileKind.GIFTI, ".stl": FileKind.STL, ".obj": FileKind.OBJ,
    ".pial": FileKind.FREESURFER_SURFACE, ".white": FileKind.FREESURFER_SURFACE,
    ".inflated": FileKind.FREESURFER_SURFACE, ".sphere": FileKind.FREESURFER_SURFACE,
    ".sphere.reg": FileKind.FREESURFER_SURFACE, ".smoothwm": FileKind.FREESURFER_SURFACE,
    ".tck": FileKind.TCK, ".trk": FileKind.TRK,
}


@dataclass(frozen=True)
class Identity:
    """Who a subject really is, as its DICOM says; kept apart from the subject (``SubjectIdentity``)."""

    real_patient_id: str = ""
    patient_name: str = ""


@dataclass(frozen=True)
class StudyDetails:
    """What a study made for a DICOM study records of it."""

    study_date: date | None = None
    description: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""


@dataclass(frozen=True)
class Provenance:
    """Where a file came from: the series and converter that made it, why it was published
    although held back (``note``), or the file it was derived from."""

    source_series_uid: str | None = None
    orthanc_series_id: str | None = None
    instance_count: int | None = None
    converter: str | None = None
    converter_version: str | None = None
    converter_flags: str | None = None
    note: str | None = None
    derived_from_id: int | None = None


def file_kind(path: str) -> FileKind:
    """A file's kind as its name tells."""
    lowered = path.lower()
    return next((kind for suffix, kind in _KINDS.items() if lowered.endswith(suffix)), FileKind.OTHER)


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


def _identify(session: Session, subject: Subject, identity: Identity) -> None:
    """Record who a subject is, where nobody has yet (a subject made by hand, or by an import's ids)."""
    known = session.get(SubjectIdentity, subject.id)
    if known is None:
        session.add(SubjectIdentity(
            subject_id=subject.id, patient_name=identity.patient_name, real_patient_id=identity.real_patient_id
        ))
    elif not known.real_patient_id:
        known.real_patient_id = identity.real_patient_id
        known.patient_name = known.patient_name or identity.patient_name
    session.flush()


def ensure_study(
    session: Session,
    project: Project,
    patient_id: str,
    study_id: str,
    *,
    identity: Identity | None = None,
    details: StudyDetails | None = None,
) -> Study:
    """The live study ``study_id`` of subject ``patient_id``, created (with its subject) where missing.

    ``identity`` is recorded for the subject unless it has a real PatientID already; ``details``
    describe a study made here (a study found keeps what it has)."""
    subject = live_subject(session, project, patient_id)
    if subject is None:
        subject = Subject(project_id=project.id, patient_id=patient_id)
        session.add(subject)
        session.flush()
    if identity is not None:
        _identify(session, subject, identity)
    study = live_study(session, subject, study_id)
    if study is None:
        described = details or StudyDetails()
        study = Study(
            subject_id=subject.id,
            study_id=study_id,
            study_date=described.study_date,
            description=described.description,
            accession_number=described.accession_number,
            study_instance_uid=described.study_instance_uid,
        )
        session.add(study)
        session.flush()
    return study


def check_unregistered(session: Session, study: Study, path: str, shown: str) -> None:
    """Refuses a path a live file of the study has already; called before anything moves there."""
    taken = session.scalar(
        select(File.id).where(File.study_id == study.id, File.path == path, File.trash_id.is_(None))
    )
    if taken is not None:
        raise Conflict(f"{shown} is already registered in its study; delete it first")


def register_file(
    session: Session,
    study: Study,
    path: str,
    real: Path,
    *,
    kind: FileKind | None = None,
    provenance: Provenance | None = None,
) -> File:
    """Index the file lying at ``real`` as ``path`` of ``study``: its kind (by its name unless
    given), size, checksum and provenance."""
    origin = provenance or Provenance()
    record = File(
        study_id=study.id,
        path=path,
        kind=kind if kind is not None else file_kind(path),
        size=real.stat().st_size,
        sha256=sha256_of(real),
        source_series_uid=origin.source_series_uid,
        orthanc_series_id=origin.orthanc_series_id,
        instance_count=origin.instance_count,
        converter=origin.converter,
        converter_version=origin.converter_version,
        converter_flags=origin.converter_flags,
        provenance_note=origin.note,
        derived_from_id=origin.derived_from_id,
    )
    session.add(record)
    session.flush()
    return record


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
        check_unregistered(session, study, location.path, str(path))
        added.append(register_file(session, study, location.path, layout.file_path(location)))
    add_tags(session, TagLevel.FILE, [f.id for f in added], tag_list)
    return added
