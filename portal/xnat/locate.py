"""The project, subject and study an XNAT path names, by accession id or label; None where it
names nothing live (the access decorators then answer 404, as for a project without a role)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import g
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from nifti_archive.models import Project, Study, Subject
from portal.xnat.ids import Level, accession, experiment_label, parse_accession


@dataclass(frozen=True)
class Located:
    project: Project
    subject: Subject
    study: Study | None = None

    @property
    def subject_id(self) -> str:
        return accession(Level.SUBJECT, self.subject.id)

    @property
    def experiment_id(self) -> str:
        assert self.study is not None
        return accession(Level.EXPERIMENT, self.study.id)

    @property
    def experiment_label(self) -> str:
        assert self.study is not None
        return experiment_label(self.subject.patient_id, self.study.study_id)


def _live() -> Select[tuple[Project, Subject]]:
    return select(Project, Subject).join(Subject, Subject.project_id == Project.id).where(Subject.trash_id.is_(None))


def _subject_clause(text: str, query: Select[Any]) -> Select[Any]:
    key = parse_accession(Level.SUBJECT, text)
    return query.where(Subject.id == key) if key is not None else query.where(Subject.patient_id == text)


def find_subject(session: Session, kwargs: dict[str, Any]) -> Located | None:
    query = _subject_clause(str(kwargs["subject"]), _live())
    if "project" in kwargs:
        query = query.where(Project.name == kwargs["project"])
    elif parse_accession(Level.SUBJECT, str(kwargs["subject"])) is None:
        return None  # a label means something only inside a project
    row = session.execute(query.limit(2)).all()
    return Located(row[0][0], row[0][1]) if len(row) == 1 else None


def find_study(session: Session, kwargs: dict[str, Any]) -> Located | None:
    text = str(kwargs["experiment"])
    query = select(Project, Subject, Study).join(Subject, Subject.project_id == Project.id).join(
        Study, Study.subject_id == Subject.id).where(Subject.trash_id.is_(None), Study.trash_id.is_(None))
    key = parse_accession(Level.EXPERIMENT, text)
    if key is not None:
        query = query.where(Study.id == key)
    elif "project" in kwargs:
        query = query.where(Subject.patient_id + "_" + Study.study_id == text)
    else:
        return None
    if "project" in kwargs:
        query = query.where(Project.name == kwargs["project"])
    if "subject" in kwargs:
        query = _subject_clause(str(kwargs["subject"]), query)
    rows = session.execute(query.limit(2)).all()
    return Located(*rows[0]) if len(rows) == 1 else None


def subject_project(session: Session, kwargs: dict[str, Any]) -> Project | None:
    """Resolver for the access decorators: the subject's project; the subject is kept for the view."""
    g.xnat_located = find_subject(session, kwargs)
    return g.xnat_located.project if g.xnat_located else None


def study_project(session: Session, kwargs: dict[str, Any]) -> Project | None:
    """Resolver for the access decorators: the study's project; the study is kept for the view."""
    g.xnat_located = find_study(session, kwargs)
    return g.xnat_located.project if g.xnat_located else None


def located() -> Located:
    found: Located = g.xnat_located
    return found
