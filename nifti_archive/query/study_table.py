"""The subject/study table: one page of a project's studies through its filter bars, sorted.

The table is what the portal shows and what ``/api/v1/.../studies`` returns. A page is the
page's studies, then the tags, job states and held-back series (quarantined or failed
conversions) of just those studies. Next pages are asked for with a cursor (``after``: the sort
key of the last row shown), which seeks in the order's index instead of counting rows off.

Counting a filter and finding where a deep ``offset`` starts cost a pass over the project, so
both are cached in the process, for one version of the project's table: triggers raise
``Project.table_version`` in the same transaction as any change that can move a study into or
out of a filter or along an order (migration 0017), so a cached figure is never read after the
change that outdates it has committed.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    CompoundSelect,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    func,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from nifti_archive.catalog.analyses import is_analysis
from nifti_archive.db import planned_for_parameters
from nifti_archive.errors import FilterSyntaxError, InvalidValue
from nifti_archive.ingest.quarantine import held_counts
from nifti_archive.models import ConversionRequest, File, JobRun, JobState, Project, Study, StudyTag, Subject, SubjectIdentity, SubjectTag
from nifti_archive.query.filter_sql import Column, FilterCompiler, Level
from nifti_archive.query.filters import parse_filter
from nifti_archive.query.paging import decode_cursor, encode_cursor, parse_paging
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
_SORT_COLUMNS: dict[SortKey, InstrumentedAttribute[Any]] = {
    SortKey.PATIENT_ID: Subject.patient_id,
    SortKey.PATIENT_NAME: _IDENTITY.patient_name,
    SortKey.STUDY_ID: Study.study_id,
    SortKey.STUDY_DATE: Study.study_date,
    SortKey.STUDY_DESCRIPTION: Study.description,
}
# Sorted with nulls as the smallest value on both databases (SQLite's own order), so that a cursor
# compares the same way the order runs.
_NULLABLE = {SortKey.PATIENT_NAME, SortKey.STUDY_DATE}


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: just after the row with this sort value, subject and study id; and
    that row's place in the table when the page before it was read (shown, never trusted)."""

    sort: str
    value: str | date | None
    patient_id: str
    study_id: str
    position: int

    def token(self) -> str:
        value = self.value.isoformat() if isinstance(self.value, date) else self.value
        return encode_cursor([self.sort, value, self.patient_id, self.study_id, self.position])

    @classmethod
    def parse(cls, token: str, sort: SortKey, descending: bool) -> Cursor:
        sort_text, value, patient_id, study_id, position = decode_cursor(token, 5)
        expected = ("-" if descending else "") + sort.value
        if sort_text != expected:
            raise InvalidValue(f"this cursor pages the table sorted by {sort_text!r}, not {expected!r}; start again without 'after'")
        if not isinstance(patient_id, str) or not isinstance(study_id, str) or not isinstance(position, int) or position < 0:
            raise InvalidValue("malformed cursor 'after': use the 'next' of the previous page, or start again without it")
        if value is None and sort not in _NULLABLE or isinstance(value, int):
            raise InvalidValue("malformed cursor 'after': use the 'next' of the previous page, or start again without it")
        if sort is SortKey.STUDY_DATE and value is not None:
            try:
                return cls(sort_text, date.fromisoformat(value), patient_id, study_id, position)
            except ValueError:
                raise InvalidValue(f"the cursor's date {value!r} is not a date") from None
        return cls(sort_text, value, patient_id, study_id, position)


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
    # Where the page starts instead of ``offset``: the previous page's ``next``.
    after: Cursor | None = None


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
            "analysis": is_analysis(self.subject),
        }


@dataclass(frozen=True)
class TablePage:
    total: int
    rows: list[StudyRow]
    # The first row's place in the table.
    offset: int
    # The cursor of the page after this one; None on the last page.
    next: str | None


def parse_table_query(args: Mapping[str, str], with_identity: bool) -> TableQuery:
    """The table's request arguments: one filter bar per column (``f_<column>``), ``sort``
    (a column, ``-`` in front for descending), ``offset`` or ``after`` (a cursor), and ``limit``."""
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
    after = None
    if "after" in args:
        if offset:
            raise InvalidValue("give either offset or after, not both")
        after = Cursor.parse(args["after"], sort, descending)
    return TableQuery(bars, sort, descending, offset, limit, with_identity, after)


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
# A row's place in an order: its sort value, subject id and study id.
_Key = tuple[Any, str, str]


class _Recent(Generic[_K, _V]):
    """The ``size`` most recently used entries. Locked: a portal may serve requests in threads."""

    def __init__(self, size: int) -> None:
        self._entries: OrderedDict[_K, _V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def items(self) -> list[tuple[_K, _V]]:
        with self._lock:
            return list(self._entries.items())


# Keyed by project, table version and filter bars: each version's figures are never changed, only
# forgotten, so a figure read is a figure of that version whatever else runs.
_COUNTS: _Recent[Hashable, int] = _Recent(1024)
# Keyed as the counts plus the order: positions in the table -> the key of the row just before.
_BOUNDARIES: _Recent[Hashable, _Recent[int, _Key]] = _Recent(256)
_BOUNDARIES_PER_ORDER = 64
# Page statements by project, filter bars, order and shape (_page_statement).
_STATEMENTS: _Recent[Hashable, Select[tuple[Any, ...]]] = _Recent(256)
# Where each sort column is in a page row of study_page.
_ROW_SORT_VALUE = {
    SortKey.PATIENT_ID: 2, SortKey.STUDY_ID: 3, SortKey.STUDY_DATE: 4, SortKey.STUDY_DESCRIPTION: 5, SortKey.PATIENT_NAME: 7,
}


def _ordering(query: TableQuery) -> list[ColumnElement[Any]]:
    column = _SORT_COLUMNS[query.sort]
    first = column.desc() if query.descending else column.asc()
    if query.sort in _NULLABLE:
        first = first.nulls_last() if query.descending else first.nulls_first()
    return [first, Subject.patient_id.asc(), Study.study_id.asc()]


def _after(query: TableQuery, value_is_null: bool) -> ColumnElement[bool]:
    """The rows after a key (bound as ``after_value``, ``after_patient``, ``after_study``) in the
    query's order. The range on the sort column comes first and alone, so that the database seeks
    to it in the column's index."""
    column = _SORT_COLUMNS[query.sort]
    value = bindparam("after_value", type_=column.type)
    tie = tuple_(Subject.patient_id, Study.study_id) > tuple_(bindparam("after_patient", type_=String()),
                                                             bindparam("after_study", type_=String()))
    if value_is_null:
        # Nulls are the smallest value: first going up, last going down.
        return and_(column.is_(None), tie) if query.descending else or_(column.is_not(None), tie)
    if query.descending:
        after = and_(column <= value, or_(column < value, tie))
        return or_(after, column.is_(None)) if query.sort in _NULLABLE else after
    return and_(column >= value, or_(column > value, tie))


def _page_statement(project_id: int, query: TableQuery, bars: Hashable, start: bool | None) -> Select[tuple[Any, ...]]:
    """The statement of a page of this shape (``start``: None from the top, else whether the key
    it starts after has a null sort value), with its start key, ``skip`` and ``rows`` to bind.
    Built once per shape: making and hashing a statement costs more Python than running it."""
    key = (project_id, bars, query.sort, query.descending, query.with_identity, start)
    statement = _STATEMENTS.get(key)
    if statement is None:
        columns = [
            Study.id, Subject.id, Subject.patient_id, Study.study_id, Study.study_date, Study.description,
            Study.accession_number if query.with_identity else null(),
            _IDENTITY.patient_name if query.with_identity else null(),
        ]
        statement = _filtered(project_id, query).with_only_columns(*columns).order_by(*_ordering(query))
        if start is not None:
            statement = statement.where(_after(query, start))
        statement = statement.offset(bindparam("skip", type_=Integer())).limit(bindparam("rows", type_=Integer()))
        _STATEMENTS.put(key, statement)
    return statement


def _filtered(project_id: int, query: TableQuery) -> Select[tuple[Study]]:
    filtered = study_selection(project_id, query.bars).order_by(None)
    if query.with_identity:
        filtered = filtered.outerjoin(_IDENTITY, _IDENTITY.subject_id == Subject.id)
    return filtered


def _row_key(query: TableQuery, row: Sequence[Any]) -> _Key:
    return row[_ROW_SORT_VALUE[query.sort]], row[2], row[3]


def _nearest_boundary(boundaries: _Recent[int, _Key] | None, offset: int) -> tuple[int, _Key | None]:
    """The known position at or before ``offset`` closest to it, and the key of the row before it."""
    best: tuple[int, _Key | None] = (0, None)
    for position, key in boundaries.items() if boundaries else []:
        if best[0] < position <= offset:
            best = (position, key)
    return best


def study_page(session: Session, project: Project, query: TableQuery) -> TablePage:
    """A page of the table. ``project`` must have been read for this page (as a request reads it
    to decide access): its ``table_version``, read before anything the page reads, names the
    cached figures, so that one cached under it can only be newer than it."""
    # Core statements on the session's connection: ORM row processing would cost as much as
    # the queries themselves, and a table page is asked for with every keystroke in a bar.
    connection = session.connection()
    version, created_at = project.table_version, project.created_at
    # The database and the project's creation name the project in every index this process opens.
    bars = tuple(sorted((column.value, text) for column, text in query.bars.items()))
    filter_key = (str(connection.engine.url), project.id, created_at, version, bars)
    total = _COUNTS.get(filter_key)
    if total is None:
        counted = _filtered(project.id, query).with_only_columns(Study.id).subquery()
        with planned_for_parameters(connection):
            total = connection.scalar(select(func.count()).select_from(counted)) or 0
        _COUNTS.put(filter_key, total)
    order_key = (*filter_key, query.sort, query.descending)
    boundaries = _BOUNDARIES.get(order_key)
    start: _Key | None
    if query.after is not None:
        offset, start, skip = query.after.position, (query.after.value, query.after.patient_id, query.after.study_id), 0
    else:
        offset = query.offset
        known, start = _nearest_boundary(boundaries, offset)
        skip = offset - known
    # With rows to skip, the row before the page is read too: its key is where this offset starts.
    lead = 1 if skip else 0
    statement = _page_statement(project.id, query, bars, None if start is None else start[0] is None)
    bound: dict[str, Any] = {"skip": skip - lead, "rows": query.limit + lead + 1}
    if start is not None:
        bound.update(after_value=start[0], after_patient=start[1], after_study=start[2])
    with planned_for_parameters(connection):
        fetched = connection.execute(statement, bound).all()
    page = fetched[lead:lead + query.limit]
    # Positions only from this process's own reads by offset: a cursor's is the client's word.
    if query.after is None:
        if boundaries is None:
            boundaries = _Recent(_BOUNDARIES_PER_ORDER)
            _BOUNDARIES.put(order_key, boundaries)
        if lead and fetched:
            boundaries.put(offset, _row_key(query, fetched[0]))
        if page:
            boundaries.put(offset + len(page), _row_key(query, page[-1]))
    following = None
    if len(fetched) > lead + query.limit:
        value, patient_id, study_id = _row_key(query, page[-1])
        sort_text = ("-" if query.descending else "") + query.sort.value
        following = Cursor(sort_text, value, patient_id, study_id, offset + len(page)).token()
    return TablePage(total, _rows(session, query, page), offset, following)


def _among(column: InstrumentedAttribute[int] | InstrumentedAttribute[int | None], ids: str, dialect: str) -> ColumnElement[bool]:
    # On PostgreSQL one array parameter rather than a list of fifty: planning a statement costs
    # per parameter, and its text stays the same whatever the page's number of subjects.
    if dialect == "postgresql":
        return column == any_(bindparam(ids, type_=ARRAY(Integer)))
    return column.in_(bindparam(ids, expanding=True))


@functools.cache
def _details(dialect: str) -> CompoundSelect[tuple[str, int, str | None, int]]:
    """The page's tags, live file counts, job states and held-back series in one statement (one
    round trip to the database instead of five), for the ``study_ids`` and ``subject_ids`` bound:
    rows of (kind, owner id, tag or state, count)."""
    # Kinds and the empty texts are written into the SQL: parameters in a UNION's select list
    # would leave PostgreSQL to guess their types.
    kind: dict[str, ColumnElement[str]] = {
        name: literal_column(f"'{name}'") for name in ("study_tag", "subject_tag", "files", "jobs", "held")
    }
    one: ColumnElement[int] = literal_column("1")
    held = held_counts().where(_among(ConversionRequest.study_id, "study_ids", dialect)).subquery()
    return union_all(
        select(kind["study_tag"], StudyTag.study_id, StudyTag.tag, one).where(_among(StudyTag.study_id, "study_ids", dialect)),
        select(kind["subject_tag"], SubjectTag.subject_id, SubjectTag.tag, one)
        .where(_among(SubjectTag.subject_id, "subject_ids", dialect)),
        select(kind["files"], File.study_id, null(), func.count())
        .where(_among(File.study_id, "study_ids", dialect), File.trash_id.is_(None)).group_by(File.study_id),
        select(kind["jobs"], JobRun.study_id, JobRun.state, func.count())
        .where(_among(JobRun.study_id, "study_ids", dialect), JobRun.dismissed.is_(False), JobRun.state != JobState.CANCELLED)
        .group_by(JobRun.study_id, JobRun.state),
        select(kind["held"], *held.c),
    ).order_by(literal_column("1"), literal_column("2"), literal_column("3"))


def _rows(session: Session, query: TableQuery, page: Sequence[Any]) -> list[StudyRow]:
    """The page's rows with their tags, file counts, job states and held-back series."""
    study_ids = [row[0] for row in page]
    subject_ids = list({row[1] for row in page})
    tags: dict[str, dict[int, list[str]]] = {"study_tag": defaultdict(list), "subject_tag": defaultdict(list)}
    counts: dict[str, dict[int, dict[str, int]]] = {"files": defaultdict(dict), "jobs": defaultdict(dict), "held": defaultdict(dict)}
    if study_ids:
        connection = session.connection()
        bound = {"study_ids": study_ids, "subject_ids": subject_ids}
        for kind, owner, label, count in connection.execute(_details(connection.dialect.name), bound):
            if kind in tags:
                tags[kind][owner].append(label)
            else:
                counts[kind][owner][label or ""] = count
    return [
        StudyRow(
            study_pk, subject_pk, subject, study, study_date, description,
            (accession or "") if query.with_identity else None,
            (name or "") if query.with_identity else None,
            tags["subject_tag"].get(subject_pk, []), tags["study_tag"].get(study_pk, []),
            counts["files"].get(study_pk, {}).get("", 0), counts["jobs"].get(study_pk, {}), counts["held"].get(study_pk, {}),
        )
        for study_pk, subject_pk, subject, study, study_date, description, accession, name in page
    ]
