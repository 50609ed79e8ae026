"""The subject/study table: one page of a project's studies through its filter bars, sorted.

The table is what the portal shows and what ``/api/v1/.../studies`` returns. A page is three
indexed queries whatever the project's size: the count, the page's studies, then the tags, job
states and held-back series (quarantined or failed conversions) of just those studies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum

from sqlalchemy import Connection, func, null, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from nifti_archive.errors import FilterSyntaxError, InvalidValue
from nifti_archive.ingest.quarantine import held_by_study
from nifti_archive.models import File, JobRun, JobState, Project, Study, StudyTag, Subject, SubjectIdentity, SubjectTag
from nifti_archive.query.filter_sql import Column, FilterCompiler, Level
from nifti_archive.query.filters import parse_filter
from nifti_archive.query.paging import parse_paging
from nifti_archive.query.selection import study_selection

MAX_PAGE = 500


class SortKey(Enum):
    PATIENT_ID = "patient_id"
    PATIENT_NAME = "patient_name"
    STUDY_ID = "study_id"
    STUDY_DATE = "study_date"
    STUDY_DESCRIPTION = "study_description"


# Joined for the name column; aliased because the name filter correlates SubjectIdentity itself.
_IDENTITY = aliased(SubjectIdentity)
_SORT_COLUMNS = {
    SortKey.PATIENT_ID: Subject.patient_id,
    SortKey.PATIENT_NAME: _IDENTITY.patient_name,
    SortKey.STUDY_ID: Study.study_id,
    SortKey.STUDY_DATE: Study.study_date,
    SortKey.STUDY_DESCRIPTION: Study.description,
}


@dataclass(frozen=True)
class TableQuery:
    bars: Mapping[Column, str] = field(default_factory=dict)
    sort: SortKey = SortKey.PATIENT_ID
    descending: bool = False
    offset: int = 0
    limit: int = 50
    # Whether the rows carry the subjects' real names and the studies' accession numbers
    # (see Project.pseudonymise and roles).
    with_identity: bool = False


@dataclass(frozen=True)
class StudyRow:
    study_pk: int
    subject_pk: int
    subject: str
    study: str
    study_date: date | None
    description: str
    accession_number: str | None
    patient_name: str | None
    subject_tags: list[str]
    study_tags: list[str]
    file_count: int
    jobs: dict[str, int]
    # Series of the study held back from the archive, by state (quarantined, failed).
    held: dict[str, int]

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.study_pk,
            "subject_id": self.subject_pk,
            "subject": self.subject,
            "study": self.study,
            "study_date": self.study_date.isoformat() if self.study_date else None,
            "description": self.description,
            "accession_number": self.accession_number,
            "patient_name": self.patient_name,
            "subject_tags": self.subject_tags,
            "study_tags": self.study_tags,
            "file_count": self.file_count,
            "jobs": self.jobs,
            "held": self.held,
        }


@dataclass(frozen=True)
class TablePage:
    total: int
    rows: list[StudyRow]


def parse_table_query(args: Mapping[str, str], with_identity: bool) -> TableQuery:
    """The table's request arguments: one filter bar per column (``f_<column>``), ``sort``
    (a column, ``-`` in front for descending), ``offset`` and ``limit``."""
    known = {f"f_{column.value}" for column in Column}
    unknown = sorted(name for name in args if name.startswith("f_") and name not in known)
    if unknown:
        # A misspelt bar would otherwise answer the whole table, as if the filter had matched everything.
        raise InvalidValue(f"no filter bar {unknown[0]!r}; the bars are {', '.join(sorted(known))}")
    bars = {column: args[f"f_{column.value}"] for column in Column if args.get(f"f_{column.value}", "").strip()}
    for column, text in bars.items():
        try:
            FilterCompiler(Level.STUDY, column).compile(parse_filter(text))
        except FilterSyntaxError as exc:
            exc.column = column.value  # the bar to show the error at
            raise
    if Column.PATIENT_NAME in bars and not with_identity:
        raise InvalidValue("this project's patient names are not shown to your role; filter on the patient id")
    sort_text = args.get("sort", SortKey.PATIENT_ID.value)
    descending = sort_text.startswith("-")
    try:
        sort = SortKey(sort_text.lstrip("-"))
    except ValueError:
        raise InvalidValue(f"cannot sort by {sort_text!r}; sort by {', '.join(k.value for k in SortKey)}") from None
    if sort is SortKey.PATIENT_NAME and not with_identity:
        raise InvalidValue("this project's patient names are not shown to your role")
    offset, limit = parse_paging(args, 50, MAX_PAGE)
    return TableQuery(bars, sort, descending, offset, limit, with_identity)


def _tags_by_owner(
    connection: Connection, owner: InstrumentedAttribute[int], tag: InstrumentedAttribute[str], ids: Sequence[int]
) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for owner_id, name in connection.execute(select(owner, tag).where(owner.in_(ids)).order_by(tag)):
        found[owner_id].append(name)
    return found


def study_page(session: Session, project: Project, query: TableQuery) -> TablePage:
    # Core statements on the session's connection: ORM row processing would cost as much as
    # the queries themselves, and a table page is asked for with every keystroke in a bar.
    connection = session.connection()
    filtered = study_selection(project.id, query.bars).order_by(None)
    if query.with_identity:
        filtered = filtered.outerjoin(_IDENTITY, _IDENTITY.subject_id == Subject.id)
    total = connection.scalar(select(func.count()).select_from(filtered.with_only_columns(Study.id).subquery())) or 0
    order = _SORT_COLUMNS[query.sort]
    ordering = [order.desc() if query.descending else order.asc(), Subject.patient_id, Study.study_id]
    columns = [
        Study.id, Subject.id, Subject.patient_id, Study.study_id, Study.study_date, Study.description,
        Study.accession_number if query.with_identity else null(),
        _IDENTITY.patient_name if query.with_identity else null(),
    ]
    page = connection.execute(
        filtered.with_only_columns(*columns).order_by(*ordering).offset(query.offset).limit(query.limit)
    ).all()
    study_ids = [row[0] for row in page]
    subject_ids = list({row[1] for row in page})
    study_tags = _tags_by_owner(connection, StudyTag.study_id, StudyTag.tag, study_ids)
    subject_tags = _tags_by_owner(connection, SubjectTag.subject_id, SubjectTag.tag, subject_ids)
    file_counts: dict[int, int] = {
        study_id: count
        for study_id, count in connection.execute(
            select(File.study_id, func.count()).where(File.study_id.in_(study_ids), File.trash_id.is_(None)).group_by(File.study_id)
        )
    }
    jobs: dict[int, dict[str, int]] = defaultdict(dict)
    job_rows = connection.execute(
        select(JobRun.study_id, JobRun.state, func.count())
        .where(JobRun.study_id.in_(study_ids), JobRun.dismissed.is_(False), JobRun.state != JobState.CANCELLED)
        .group_by(JobRun.study_id, JobRun.state)
    )
    for study_id, state, count in job_rows:
        jobs[study_id][state.value] = count
    held = held_by_study(session, study_ids)
    rows = [
        StudyRow(
            study_pk, subject_pk, subject, study, study_date, description,
            (accession or "") if query.with_identity else None,
            (name or "") if query.with_identity else None,
            subject_tags.get(subject_pk, []), study_tags.get(study_pk, []), file_counts.get(study_pk, 0), jobs.get(study_pk, {}),
            dict(held.get(study_pk, {})),
        )
        for study_pk, subject_pk, subject, study, study_date, description, accession, name in page
    ]
    return TablePage(total, rows)
