"""The runs table the job monitor shows: search, state filter, sort and paging, in SQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import BatchLaunch, JobRun, JobState, Project, Study, Subject
from nifti_archive.query.paging import parse_paging

MAX_PAGE = 500
# The end of a log is what explains a failure; a job printing gigabytes must not fill the page.
LOG_TAIL_BYTES = 256 * 1024


class RunSort(Enum):
    ID = "id"
    STATE = "state"
    UPDATED = "updated"
    SUBJECT = "subject"
    BATCH = "batch"


_SORT_COLUMNS = {
    RunSort.ID: JobRun.id,
    RunSort.STATE: JobRun.state,
    RunSort.UPDATED: JobRun.updated_at,
    RunSort.SUBJECT: Subject.patient_id,
    RunSort.BATCH: BatchLaunch.name,
}


@dataclass(frozen=True)
class RunQuery:
    search: str = ""
    states: tuple[JobState, ...] = ()
    sort: RunSort = RunSort.ID
    descending: bool = True
    offset: int = 0
    limit: int = 100


def parse_run_query(args: Mapping[str, str]) -> RunQuery:
    try:
        states = tuple(JobState(s) for s in args.get("state", "").split(",") if s)
    except ValueError:
        raise InvalidValue(f"states are {', '.join(s.value for s in JobState)}") from None
    sort_text = args.get("sort", "-id")
    try:
        sort = RunSort(sort_text.lstrip("-"))
    except ValueError:
        raise InvalidValue(f"cannot sort runs by {sort_text!r}; sort by {', '.join(s.value for s in RunSort)}") from None
    offset, limit = parse_paging(args, 100, MAX_PAGE)
    return RunQuery(args.get("q", "").strip(), states, sort, sort_text.startswith("-"), offset, limit)


def run_table(session: Session, project: Project, query: RunQuery) -> tuple[int, list[dict[str, Any]]]:
    base = (
        select(JobRun.id)
        .join(Subject, Subject.id == JobRun.subject_id)
        .outerjoin(Study, Study.id == JobRun.study_id)
        .outerjoin(BatchLaunch, BatchLaunch.id == JobRun.launch_id)
        .where(JobRun.project_id == project.id, JobRun.dismissed.is_(False))
    )
    if query.states:
        base = base.where(JobRun.state.in_(query.states))
    if query.search:
        needle = query.search
        base = base.where(or_(
            Subject.patient_id.contains(needle, autoescape=True), Study.study_id.contains(needle, autoescape=True),
            BatchLaunch.name.contains(needle, autoescape=True), JobRun.message.contains(needle, autoescape=True),
        ))
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    column = _SORT_COLUMNS[query.sort]
    rows = session.execute(
        base.with_only_columns(JobRun, Subject.patient_id, Study.study_id, BatchLaunch.name, BatchLaunch.executor)
        .order_by(column.desc() if query.descending else column.asc(), JobRun.id.desc())
        .offset(query.offset).limit(query.limit)
    ).all()
    return total, [
        {
            "id": run.id, "launch_id": run.launch_id, "batch": batch, "subject": subject,
            # None for a run recorded before launches were.
            "executor": executor.value if executor else None,
            "study": study, "study_id": run.study_id, "state": run.state.value, "message": run.message,
            "executor_id": run.executor_id, "created_at": run.created_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        }
        for run, subject, study, batch, executor in rows
    ]


def run_log(session: Session, project: Project, run_id: int) -> str:
    run = session.get(JobRun, run_id)
    if run is None or run.project_id != project.id:
        raise NotFound(f"no run {run_id} in project {project.name!r}")
    if not run.log_path:
        return ""
    path = Path(run.log_path)
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return text if size <= LOG_TAIL_BYTES else f"[... {size - LOG_TAIL_BYTES} earlier bytes left out ...]\n{text}"
