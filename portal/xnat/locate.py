"""The project, subject and study an XNAT path names, by accession id or label; None where it
names nothing live (the access decorators then answer 404, as for a project without a role)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

from flask import g
from sqlalchemy import ColumnElement, Row, Select, and_, select
from sqlalchemy.orm import Session

from nifti_archive.catalog.analyses import analysis_subjects
from nifti_archive.models import Project, Study, Subject
from portal.xnat.ids import Level, accession, experiment_label, parse_accession, parse_experiment_label


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
    # An analysis (ANALYSIS#name) is the project's, not a participant: XNAT has no place for it.
    return select(Project, Subject).join(Subject, Subject.project_id == Project.id).where(
        Subject.trash_id.is_(None), ~analysis_subjects())


def _subject_readings(text: str, in_project: bool) -> list[ColumnElement[bool]]:
    """What a subject name may mean, in the order tried: the subject whose key an accession id
    names, then (inside a project, where labels are unique) the subject labelled so."""
    key = parse_accession(Level.SUBJECT, text)
    readings = [Subject.id == key] if key is not None else []
    return [*readings, Subject.patient_id == text] if in_project else readings


def _study_readings(text: str, in_project: bool) -> list[ColumnElement[bool]]:
    key = parse_accession(Level.EXPERIMENT, text)
    readings = [Study.id == key] if key is not None else []
    parts = parse_experiment_label(text) if in_project else None
    if parts is not None:
        readings.append(and_(Subject.patient_id == parts[0], Study.study_id == parts[1]))
    return readings


def _first_resolved(session: Session, query: Select[Any], readings: list[list[ColumnElement[bool]]]) -> Row[Any] | None:
    """The one row of the first combination of readings that finds any: a name that looks like
    an id but names no live record is read as a label."""
    for clauses in product(*readings):
        rows = session.execute(query.where(*clauses).limit(2)).all()
        if rows:
            return rows[0] if len(rows) == 1 else None
    return None


def find_subject(session: Session, kwargs: dict[str, Any]) -> Located | None:
    query = _live()
    if "project" in kwargs:
        query = query.where(Project.name == kwargs["project"])
    row = _first_resolved(session, query, [_subject_readings(str(kwargs["subject"]), "project" in kwargs)])
    return Located(row[0], row[1]) if row is not None else None


def find_study(session: Session, kwargs: dict[str, Any]) -> Located | None:
    in_project = "project" in kwargs
    query = _live().add_columns(Study).join(Study, Study.subject_id == Subject.id).where(Study.trash_id.is_(None))
    if in_project:
        query = query.where(Project.name == kwargs["project"])
    readings = [_study_readings(str(kwargs["experiment"]), in_project)]
    if "subject" in kwargs:
        readings.append(_subject_readings(str(kwargs["subject"]), in_project))
    row = _first_resolved(session, query, readings)
    return Located(row[0], row[1], row[2]) if row is not None else None


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
