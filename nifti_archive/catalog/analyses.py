"""A project's analyses: results that span studies (a trained model, a group statistic).

NORA keeps them in folders named ``ANALYSIS#<name>``; here an analysis is the subject of that
id with one study, ``analysis``, so ``<root>/<project>/ANALYSIS#<name>/analysis/`` holds its
files, and registration, tags, provenance, selection and the trash treat it as any study.
DICOM never lands in one: ids that ingest, imports and drop folders make are folder ids, which
cannot hold the ``#`` (layout.check_folder_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from nifti_archive.archive import FileJournal
from nifti_archive.catalog.registration import ensure_study, live_study, live_subject
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.layout import ANALYSIS_PREFIX as ANALYSIS_PREFIX
from nifti_archive.layout import ANALYSIS_STUDY as ANALYSIS_STUDY
from nifti_archive.layout import ArchiveLayout, analysis_name_problem
from nifti_archive.models import AuditEvent, File, Project, Study, StudyTag, Subject, SubjectTag

CREATE_ACTION = "create-analysis"


@dataclass(frozen=True)
class AnalysisSummary:
    """One live analysis as listings show it."""

    name: str
    subject_id: int
    study_id: int
    created_at: datetime
    files: int
    subject_tags: list[str]
    study_tags: list[str]

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name, "subject": ANALYSIS_PREFIX + self.name, "subject_id": self.subject_id,
            "study_id": self.study_id, "created_at": self.created_at.isoformat(), "files": self.files,
            "subject_tags": self.subject_tags, "study_tags": self.study_tags,
        }


def check_analysis_name(name: str) -> str:
    """``name``, if it can name an analysis (and so a folder); else InvalidValue saying why."""
    problem = analysis_name_problem(name)
    if problem is not None:
        raise InvalidValue(f"invalid analysis name {name!r}: {problem}")
    return name


def analysis_subject_id(name: str) -> str:
    """The subject id (and folder) of the analysis ``name``: ``ANALYSIS#<name>``."""
    return ANALYSIS_PREFIX + check_analysis_name(name)


def is_analysis(patient_id: str) -> bool:
    """Whether a subject id is an analysis's."""
    return patient_id.startswith(ANALYSIS_PREFIX)


def analysis_subjects() -> ColumnElement[bool]:
    """The condition on ``Subject`` that holds for analyses (negated: for subjects that are patients)."""
    return Subject.patient_id.startswith(ANALYSIS_PREFIX, autoescape=True)


def _live_analyses(session: Session, project: Project) -> list[Subject]:
    return list(session.scalars(
        select(Subject)
        .where(Subject.project_id == project.id, Subject.trash_id.is_(None), analysis_subjects())
        .order_by(Subject.patient_id)
    ))


def create_analysis(
    session: Session, journal: FileJournal, layout: ArchiveLayout, project: Project, name: str, created_by: str
) -> Study:
    """A new analysis of the project: its subject, its study and its folder; who made it goes to the audit log."""
    subject_id = analysis_subject_id(name)
    # Names differing only in case would share a folder on a case-insensitive file system (a share, an export).
    taken = next((s.patient_id for s in _live_analyses(session, project) if s.patient_id.casefold() == subject_id.casefold()), None)
    if taken is not None:
        raise Conflict(f"project {project.name!r} has the analysis {taken.removeprefix(ANALYSIS_PREFIX)!r} already")
    journal.make_dir(layout.study_dir(project.name, subject_id, ANALYSIS_STUDY))
    study = ensure_study(session, project, subject_id, ANALYSIS_STUDY)
    session.add(AuditEvent(username=created_by, project_id=project.id, action=CREATE_ACTION, detail=subject_id))
    session.flush()
    return study


def analysis_study(session: Session, project: Project, name: str) -> Study:
    """The study holding the files of the live analysis ``name``."""
    subject = live_subject(session, project, analysis_subject_id(name))
    study = live_study(session, subject, ANALYSIS_STUDY) if subject is not None else None
    if study is None:
        raise NotFound(f"no analysis {name!r} in project {project.name!r}")
    return study


def list_analyses(session: Session, project: Project) -> list[AnalysisSummary]:
    """The project's live analyses by name, with their live files counted and their tags."""
    subjects = _live_analyses(session, project)
    if not subjects:
        return []
    by_subject = {s.id: s for s in subjects}
    studies = {
        study.subject_id: study for study in session.scalars(
            select(Study).where(Study.subject_id.in_(by_subject), Study.study_id == ANALYSIS_STUDY, Study.trash_id.is_(None))
        )
    }
    study_ids = [study.id for study in studies.values()]
    counts: dict[int, int] = {
        study_id: count for study_id, count in session.execute(
            select(File.study_id, func.count()).where(File.study_id.in_(study_ids), File.trash_id.is_(None)).group_by(File.study_id)
        )
    }
    subject_tags: dict[int, list[str]] = {}
    for owner, tag in session.execute(select(SubjectTag.subject_id, SubjectTag.tag).where(SubjectTag.subject_id.in_(by_subject))):
        subject_tags.setdefault(owner, []).append(tag)
    study_tags: dict[int, list[str]] = {}
    for owner, tag in session.execute(select(StudyTag.study_id, StudyTag.tag).where(StudyTag.study_id.in_(study_ids))):
        study_tags.setdefault(owner, []).append(tag)
    return [
        AnalysisSummary(
            name=subject.patient_id.removeprefix(ANALYSIS_PREFIX), subject_id=subject.id, study_id=study.id,
            created_at=study.created_at, files=counts.get(study.id, 0),
            subject_tags=sorted(subject_tags.get(subject.id, [])), study_tags=sorted(study_tags.get(study.id, [])),
        )
        for subject in subjects
        if (study := studies.get(subject.id)) is not None
    ]
