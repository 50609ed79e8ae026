"""Filter bars compiled to SQLAlchemy conditions on the archive index.

Two levels: study rows (the subject/study table, one bar per column) and file rows (the
``--select`` command and job inputs). User text only ever reaches the database as a bound
LIKE parameter with an escape character, never as SQL.
"""

from __future__ import annotations

import re
from datetime import date
from enum import Enum

from sqlalchemy import ColumnElement, SQLColumnExpression, String, and_, cast, exists, or_, select, true

from nifti_archive.errors import FilterSyntaxError, PatternError
from nifti_archive.models import File, FileTag, JobRun, JobState, Study, StudyTag, Subject, SubjectIdentity, SubjectTag
from nifti_archive.query.filters import JOB_CODES, Attribute, Filter, Term
from nifti_archive.query.patterns import ESCAPE, parse_file_pattern


class Column(Enum):
    """The column a filter bar's plain terms search."""

    PATIENT_ID = "patient_id"
    PATIENT_NAME = "patient_name"
    STUDY_DATE = "study_date"
    STUDY_DESCRIPTION = "study_description"
    FILES = "files"


class Level(Enum):
    STUDY = "study"
    FILE = "file"


_DATE_RANGE = re.compile(r"(\d{4}-?\d{2}-?\d{2})?\.\.(\d{4}-?\d{2}-?\d{2})?")
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})?(\d{2})?")
_FULL_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}")


def _ilike(column: SQLColumnExpression[str], term: Term) -> ColumnElement[bool]:
    return column.ilike(term.pattern().like(trailing_wildcard=True), escape=ESCAPE)


def _parse_date(text: str, term: Term) -> date:
    digits = text.replace("-", "")
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise FilterSyntaxError(f"{text!r} is not a date (YYYY-MM-DD or YYYYMMDD)", term.position) from None


def _study_date(term: Term) -> ColumnElement[bool]:
    """Dates match by prefix (``2024``, ``2024-03``, ``20240312``) or by range (``2024-01-01..2024-06-30``)."""
    bounds = _DATE_RANGE.fullmatch(term.value)
    if bounds:
        low, high = bounds.groups()
        if low is None and high is None:
            raise FilterSyntaxError("a date range needs at least one end", term.position)
        conditions: list[ColumnElement[bool]] = [Study.study_date.is_not(None)]
        if low is not None:
            conditions.append(Study.study_date >= _parse_date(low, term))
        if high is not None:
            conditions.append(Study.study_date <= _parse_date(high, term))
        return and_(*conditions)
    if _FULL_DATE.fullmatch(term.value):
        _parse_date(term.value, term)  # a whole date must be a real one, not silently match nothing
    compact = _COMPACT_DATE.fullmatch(term.value)
    value = "-".join(part for part in compact.groups() if part) if compact else term.value
    pattern = Term(value, None, term.position).pattern()
    return cast(Study.study_date, String).like(pattern.like(trailing_wildcard=True), escape=ESCAPE)


def _job_state(term: Term) -> ColumnElement[bool]:
    state = JobState(JOB_CODES[term.value])
    same_study = JobRun.study_id == Study.id
    subject_level = and_(JobRun.study_id.is_(None), JobRun.subject_id == Study.subject_id)
    # A dismissed run is one its user has looked at and put away: it no longer marks the study.
    return exists().where(or_(same_study, subject_level), JobRun.state == state, JobRun.dismissed.is_(False))


class FilterCompiler:
    """Compiles a parsed filter for one bar.

    ``trailing_wildcard`` is NORA's implicit ``*`` at the end of every bar term; the command
    line's ``--select`` turns it off so that ``t1*/s0__.nii`` means exactly that.
    Queries using the study level must have Study and Subject in their FROM clause; the file
    level adds File.
    """

    def __init__(self, level: Level, column: Column, trailing_wildcard: bool = True) -> None:
        if level is Level.FILE and column is not Column.FILES:
            raise ValueError("file-level filters search files")
        self.level = level
        self.column = column
        self.trailing_wildcard = trailing_wildcard

    def compile(self, parsed: Filter | None) -> ColumnElement[bool]:
        if parsed is None:
            return true()
        return and_(*(or_(*(self._term(term) for term in group)) for group in parsed.groups))

    def _term(self, term: Term) -> ColumnElement[bool]:
        if term.attribute is None:
            return self._column_term(term)
        match term.attribute:
            case Attribute.STAG:
                return exists().where(StudyTag.study_id == Study.id, _ilike(StudyTag.tag, term))
            case Attribute.PTAG:
                return exists().where(SubjectTag.subject_id == Study.subject_id, _ilike(SubjectTag.tag, term))
            case Attribute.FTAG:
                if self.level is Level.FILE:
                    return exists().where(FileTag.file_id == File.id, _ilike(FileTag.tag, term))
                tagged = select(FileTag.file_id).join(File, File.id == FileTag.file_id)
                return exists(tagged.where(File.study_id == Study.id, File.trash_id.is_(None), _ilike(FileTag.tag, term)))
            case Attribute.SDESC:
                return _ilike(Study.description, term)
            case Attribute.JOB:
                return _job_state(term)
        raise AssertionError(term.attribute)  # pragma: no cover - the enum is exhaustive

    def _column_term(self, term: Term) -> ColumnElement[bool]:
        match self.column:
            case Column.PATIENT_ID:
                return _ilike(Subject.patient_id, term)
            case Column.PATIENT_NAME:
                return exists().where(SubjectIdentity.subject_id == Subject.id, _ilike(SubjectIdentity.patient_name, term))
            case Column.STUDY_DATE:
                return _study_date(term)
            case Column.STUDY_DESCRIPTION:
                return _ilike(Study.description, term)
            case Column.FILES:
                return self._file_term(term)
        raise AssertionError(self.column)  # pragma: no cover

    def _file_term(self, term: Term) -> ColumnElement[bool]:
        try:
            like = parse_file_pattern(term.value).like(self.trailing_wildcard)
        except PatternError as exc:
            raise FilterSyntaxError(str(exc), term.position) from exc
        if self.level is Level.FILE:
            return File.path.like(like, escape=ESCAPE)
        return exists().where(File.study_id == Study.id, File.trash_id.is_(None), File.path.like(like, escape=ESCAPE))
