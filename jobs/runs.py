"""Launching batches and keeping their runs' state in the archive database.

A launch stores the validated specification and creates one queued run per study (or per
subject, at subject level; or one covering all, at project level); executors only ever see run ids. The filter language's JOB:
terms read the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from jobs.spec import Batch, Level, Resources, parse_batch
from nifti_archive.catalog.analyses import analysis_subjects
from nifti_archive.catalog.trash import parse_psid
from nifti_archive.db import rows_changed
from nifti_archive.errors import Conflict, NotFound
from nifti_archive.models import BatchLaunch, Executor, JobRun, JobState, Project, RunStudy, SavedBatch, Study, Subject
from nifti_archive.query.filter_sql import Column, FilterCompiler
from nifti_archive.query.filter_sql import Level as FilterLevel
from nifti_archive.query.filters import parse_filter

ACTIVE = (JobState.QUEUED, JobState.RUNNING)


def selected_studies(session: Session, project: Project, expression: str) -> list[tuple[int, int]]:
    """(subject pk, study pk) of live studies passing a file-search filter ('' selects all); analyses
    are targets of arguments (analysis:NAME), not studies a filter runs a batch on."""
    condition = FilterCompiler(FilterLevel.STUDY, Column.FILES).compile(parse_filter(expression))
    rows = session.execute(
        select(Subject.id, Study.id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == project.id, Study.trash_id.is_(None), ~analysis_subjects(), condition)
        .order_by(Subject.patient_id, Study.study_id)
    )
    return [(subject, study) for subject, study in rows]


def studies_by_ids(session: Session, project: Project, study_ids: Sequence[int]) -> list[tuple[int, int]]:
    """(subject pk, study pk) of the given live studies; an id outside the project is an error."""
    wanted = set(study_ids)
    rows = session.execute(
        select(Subject.id, Study.id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == project.id, Study.trash_id.is_(None), Study.id.in_(wanted))
        .order_by(Subject.patient_id, Study.study_id)
    ).all()
    missing = wanted - {study for _subject, study in rows}
    if missing:
        raise NotFound(f"no study with id {', '.join(map(str, sorted(missing)))} in project {project.name!r}")
    return [(subject, study) for subject, study in rows]


def studies_of_psid(session: Session, project: Project, psid: str) -> list[tuple[int, int]]:
    subject_id, study_id = parse_psid(psid)
    query = (
        select(Subject.id, Study.id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == project.id, Subject.trash_id.is_(None), Study.trash_id.is_(None),
               Subject.patient_id == subject_id)
    )
    if study_id is not None:
        query = query.where(Study.study_id == study_id)
    pairs = [(subject, study) for subject, study in session.execute(query.order_by(Study.study_id))]
    if not pairs:
        raise NotFound(f"no study {psid!r} in project {project.name!r}")
    return pairs


def launch(
    session: Session,
    project: Project,
    document: dict[str, object],
    executor: Executor,
    launched_by: str,
    expression: str = "",
    psid: str | None = None,
    study_ids: Sequence[int] | None = None,
) -> tuple[BatchLaunch, list[int]]:
    """Queue one run per selected study (or subject): by file-search filter, one PATIENT[#STUDY],
    or a list of study ids (the portal's checked rows). Returns the launch and the new runs' ids."""
    batch = parse_batch(document)
    record = BatchLaunch(
        project_id=project.id, name=batch.name, spec=json.dumps(document), executor=executor, launched_by=launched_by
    )
    session.add(record)
    session.flush()
    if study_ids is not None:
        pairs = studies_by_ids(session, project, study_ids)
    elif psid:
        pairs = studies_of_psid(session, project, psid)
    else:
        pairs = selected_studies(session, project, expression)
    if batch.level is Level.SUBJECT:
        targets: list[tuple[int, int | None]] = [(subject, None) for subject in dict.fromkeys(s for s, _ in pairs)]
    elif batch.level is Level.PROJECT:
        # One run, filed under the first study's subject, covering them all.
        targets = [(pairs[0][0], None)] if pairs else []
    else:
        targets = [(subject, study) for subject, study in pairs]
    if not targets:
        return record, []
    now = datetime.now(UTC)
    rows = [
        {"project_id": project.id, "subject_id": subject, "study_id": study, "state": JobState.QUEUED,
         "launch_id": record.id, "created_at": now, "updated_at": now}
        for subject, study in targets
    ]
    # One multi-row INSERT ... RETURNING: a thousand studies must not cost a thousand round trips.
    run_ids = session.scalars(insert(JobRun).returning(JobRun.id, sort_by_parameter_order=True), rows).all()
    if batch.level is Level.PROJECT:
        session.execute(insert(RunStudy), [{"run_id": run_ids[0], "study_id": study} for _subject, study in pairs])
    return record, list(run_ids)


def batch_of(session: Session, run: JobRun) -> Batch:
    launch_record = session.get_one(BatchLaunch, run.launch_id)
    return parse_batch(json.loads(launch_record.spec))


def set_state(session: Session, run_id: int, state: JobState, message: str = "", **values: object) -> None:
    now = datetime.now(UTC)
    if state is JobState.RUNNING:
        values.setdefault("started_at", now)
    elif state not in ACTIVE:
        values.setdefault("finished_at", now)
    session.execute(update(JobRun).where(JobRun.id == run_id).values(state=state, message=message, **values))


def claim(session: Session, run_id: int, **values: object) -> bool:
    """Queued -> running, for exactly one caller even when two executors race for the run."""
    now = datetime.now(UTC)
    result = session.execute(
        update(JobRun)
        .where(JobRun.id == run_id, JobRun.state == JobState.QUEUED)
        .values(state=JobState.RUNNING, started_at=now, message="", **values)
    )
    return bool(rows_changed(result))


def cancel(session: Session, project: Project, run_ids: Sequence[int] | None) -> int:
    query = update(JobRun).where(JobRun.project_id == project.id, JobRun.state.in_(ACTIVE))
    if run_ids:
        query = query.where(JobRun.id.in_(run_ids))
    now = datetime.now(UTC)
    return rows_changed(session.execute(query.values(state=JobState.CANCELLED, finished_at=now)))


def errored_batches(session: Session, project: Project) -> list[Batch]:
    """The batches of the project's errored runs that a rerun would start again."""
    specs = session.scalars(
        select(BatchLaunch.spec).distinct().join(JobRun, JobRun.launch_id == BatchLaunch.id)
        .where(JobRun.project_id == project.id, JobRun.state == JobState.ERROR, JobRun.dismissed.is_(False))
    )
    return [parse_batch(json.loads(spec)) for spec in specs]


def rerun_errored(session: Session, project: Project, launch_id: int | None = None) -> list[int]:
    """Errored runs (of one launch, or of the project) queued again; returns their ids. Runs
    recorded before launches were (no launch_id) have no batch to run again."""
    query = select(JobRun.id).where(JobRun.project_id == project.id, JobRun.state == JobState.ERROR,
                                    JobRun.dismissed.is_(False), JobRun.launch_id.is_not(None))
    if launch_id is not None:
        query = query.where(JobRun.launch_id == launch_id)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(JobRun).where(JobRun.id.in_(ids)).values(state=JobState.QUEUED, message="", executor_id="", finished_at=None)
        )
    return ids


def slurm_tasks(session: Session, project: Project, run_ids: Sequence[int] | None, executor: Executor) -> list[str]:
    """The executor ids of active runs of that executor (all of the project's, or these)."""
    query = (
        select(JobRun.executor_id)
        .join(BatchLaunch, BatchLaunch.id == JobRun.launch_id)
        .where(JobRun.project_id == project.id, JobRun.state.in_(ACTIVE), BatchLaunch.executor == executor, JobRun.executor_id != "")
    )
    if run_ids:
        query = query.where(JobRun.id.in_(run_ids))
    return list(session.scalars(query))


def resources_for(project: Project, batch: Batch) -> Resources:
    """The batch's resources, in the project's default queue where the batch names none."""
    if batch.resources.queue is None and project.default_queue:
        return replace(batch.resources, queue=project.default_queue)
    return batch.resources


def by_launch(session: Session, run_ids: Sequence[int]) -> dict[int, tuple[Executor, Resources, list[int]]]:
    """Runs grouped by their launch, with its executor and resources, to hand them back to it."""
    groups: dict[int, tuple[Executor, Resources, list[int]]] = {}
    for run_id in run_ids:
        launch_id = session.get_one(JobRun, run_id).launch_id
        if launch_id is None:
            raise NotFound(f"run {run_id} has no launch to hand it to")
        if launch_id not in groups:
            record = session.get_one(BatchLaunch, launch_id)
            resources = resources_for(session.get_one(Project, record.project_id), parse_batch(json.loads(record.spec)))
            groups[launch_id] = (record.executor, resources, [])
        groups[launch_id][2].append(run_id)
    return groups


def dismiss(session: Session, project: Project, run_ids: Sequence[int] | None) -> int:
    """Put errored runs away (all of the project's, or these); their logs stay."""
    query = update(JobRun).where(JobRun.project_id == project.id, JobRun.state == JobState.ERROR, JobRun.dismissed.is_(False))
    if run_ids:
        query = query.where(JobRun.id.in_(run_ids))
    return rows_changed(session.execute(query.values(dismissed=True)))


def save_batch(session: Session, project: Project, name: str, document: dict[str, object]) -> SavedBatch:
    parse_batch(document)
    saved = session.scalar(select(SavedBatch).where(SavedBatch.project_id == project.id, SavedBatch.name == name))
    if saved is None:
        saved = SavedBatch(project_id=project.id, name=name, spec="")
        session.add(saved)
    saved.spec = json.dumps(document)
    session.flush()
    return saved


def saved_batches(session: Session, project: Project) -> list[SavedBatch]:
    return list(session.scalars(select(SavedBatch).where(SavedBatch.project_id == project.id).order_by(SavedBatch.name)))


def _saved(session: Session, project: Project, name: str) -> SavedBatch:
    saved = session.scalar(select(SavedBatch).where(SavedBatch.project_id == project.id, SavedBatch.name == name))
    if saved is None:
        raise NotFound(f"no saved batch {name!r} in project {project.name!r}")
    return saved


def saved_batch(session: Session, project: Project, name: str) -> dict[str, Any]:
    return dict(json.loads(_saved(session, project, name).spec))


def rename_batch(session: Session, project: Project, name: str, new_name: str) -> None:
    """Rename a saved batch; the project's autoexec setting follows it."""
    saved = _saved(session, project, name)
    if new_name != name and session.scalar(
        select(SavedBatch.id).where(SavedBatch.project_id == project.id, SavedBatch.name == new_name)
    ):
        raise Conflict(f"project {project.name!r} already has a saved batch {new_name!r}")
    saved.name = new_name
    if project.autoexec_batch == name:
        project.autoexec_batch = new_name


def delete_batch(session: Session, project: Project, name: str) -> None:
    """Delete a saved batch; launches keep their own copy of the spec, so no run loses it."""
    saved = _saved(session, project, name)
    if project.autoexec_batch == name:
        raise Conflict(f"{name!r} is project {project.name!r}'s autoexec batch; choose another first (nora --admin project set --autoexec)")
    session.delete(saved)


def runs_of(session: Session, project: Project, states: Sequence[JobState] | None = None) -> list[JobRun]:
    query = select(JobRun).where(JobRun.project_id == project.id, JobRun.dismissed.is_(False)).order_by(JobRun.id)
    if states:
        query = query.where(JobRun.state.in_(states))
    return list(session.scalars(query))
