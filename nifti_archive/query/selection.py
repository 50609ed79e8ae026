"""Selecting files and studies of a project with patterns and filter bars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from nifti_archive.layout import Location
from nifti_archive.models import File, Project, Study, Subject
from nifti_archive.query.filter_sql import Column, FilterCompiler, Level
from nifti_archive.query.filters import parse_filter
from nifti_archive.query.patterns import ESCAPE, parse_value_pattern


class SelectedFile(NamedTuple):
    file_id: int
    study_pk: int
    subject: str
    study: str
    path: str

    def location(self, project: str) -> Location:
        return Location(project, self.subject, self.study, self.path)


def file_selection(project_id: int, expression: str, trailing_wildcard: bool = False) -> Select[tuple[int, int, str, str, str]]:
    """Live files of a project matching a file-search expression.

    The expression is the file-search bar's language: file patterns (OR), ``&``, and
    attribute terms such as ``STAG:control``; ``trailing_wildcard`` adds NORA's implicit
    ``*`` to every term (the bar does, ``--select`` does not).
    """
    condition = FilterCompiler(Level.FILE, Column.FILES, trailing_wildcard).compile(parse_filter(expression))
    return (
        select(File.id, Study.id, Subject.patient_id, Study.study_id, File.path)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == project_id, File.trash_id.is_(None), condition)
        .order_by(Subject.patient_id, Study.study_id, File.path)
    )


def select_files(session: Session, project: Project, expression: str, trailing_wildcard: bool = False) -> list[SelectedFile]:
    # Executed on the connection, as a Core statement: the ORM's row processing would cost
    # more than the query itself when a pattern matches ten thousand files.
    rows = session.connection().execute(file_selection(project.id, expression, trailing_wildcard))
    return list(map(SelectedFile._make, rows))


def study_selection(project_id: int, bars: Mapping[Column, str]) -> Select[tuple[Study]]:
    """Live studies of a project passing every filter bar (one bar per table column)."""
    conditions = [FilterCompiler(Level.STUDY, column).compile(parse_filter(text)) for column, text in bars.items()]
    # Subject.trash_id is implied by Study.trash_id (a trashed subject's studies are trashed
    # with it) but stated: it lets the partial index on live subjects' ids give the table's
    # order, so a page is read in index order instead of sorting the whole project.
    return (
        select(Study)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == project_id, Subject.trash_id.is_(None), Study.trash_id.is_(None), *conditions)
        .order_by(Subject.patient_id, Study.study_id)
    )


def studies_by_name(project_id: int, subject_pattern: str, study_pattern: str) -> Select[tuple[int, str, str]]:
    """Live studies whose subject id and study id match two patterns: (study pk, subject, study)."""
    return (
        select(Study.id, Subject.patient_id, Study.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(
            Subject.project_id == project_id,
            Study.trash_id.is_(None),
            Subject.patient_id.like(parse_value_pattern(subject_pattern).like(), escape=ESCAPE),
            Study.study_id.like(parse_value_pattern(study_pattern).like(), escape=ESCAPE),
        )
        .order_by(Subject.patient_id, Study.study_id)
    )
