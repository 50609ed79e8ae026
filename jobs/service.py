"""Launching, starting, cancelling and rerunning runs: what the command line and the portal share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobs import runs, slurm_executor
from jobs.listings import analysis_listings, subject_listings
from jobs.local_executor import start_dispatcher
from jobs.spec import GENERIC_JOBS, Batch, Level, Resources, SpecError, parse_batch
from jobs.validation import Target, TargetCheck, check_targets, spec_problems
from nifti_archive.archive import Archive, get_project
from nifti_archive.errors import Forbidden, InvalidValue
from nifti_archive.models import BatchLaunch, Executor, JobState, Project, Role


def sync(archive: Archive) -> None:
    """Bring the runs' states up to date; asks Slurm only while some Slurm run is still active."""
    with archive.unit_of_work() as (session, _journal):
        slurm_executor.sync(session)


def parse_executor(text: str) -> Executor:
    """An executor as the command line or a JSON body names it."""
    try:
        return Executor(text)
    except ValueError:
        raise InvalidValue(f"unknown executor {text!r}; executors are {', '.join(e.value for e in Executor)}") from None


def start(archive: Archive, executor: Executor, launch_id: int, run_ids: Sequence[int], resources: Resources) -> None:
    # The Slurm executor speaks Slurm's command line: pyslurm's releases follow Slurm 25.11 and
    # cannot drive Debian's 22.05 (see slurm_executor.py).
    if executor is Executor.LOCAL:
        start_dispatcher(archive.settings)
        return
    try:
        job_id = slurm_executor.submit(archive.settings, launch_id, list(run_ids), resources)
    except slurm_executor.SlurmUnavailable as exc:
        with archive.unit_of_work() as (session, _journal):
            for run_id in run_ids:
                runs.set_state(session, run_id, JobState.ERROR, str(exc))
        raise
    with archive.unit_of_work() as (session, _journal):
        slurm_executor.record_submission(session, list(run_ids), job_id)


def check_generic_jobs(project: Project, batch: Batch, role: Role | None) -> None:
    """Generic scripts run whatever their author wrote, so a project may keep them to its admins;
    ``role`` None is the installation's operator (the command line), who may launch anything."""
    generic = sorted({job.job for job in batch.jobs if job.job in GENERIC_JOBS})
    if generic and role is not None and not role.allows(project.generic_jobs_role):
        raise Forbidden(
            f"{' and '.join(generic)} jobs need the {project.generic_jobs_role.value} role in project {project.name!r}"
            " (its generic_jobs_role setting); predefined jobs need editor"
        )


def check_network(project: Project, batch: Batch) -> None:
    """A batch that needs the network is refused where it would not get it, not run without it."""
    if batch.resources.network and not project.job_network_allowed:
        raise Forbidden(
            f"the batch asks for the network, which project {project.name!r} does not give its jobs"
            f" (a project admin allows it: nora --admin project set {project.name} --job-network yes)"
        )


def launch(
    archive: Archive,
    project_name: str,
    document: dict[str, Any],
    executor: Executor,
    launched_by: str,
    expression: str = "",
    psid: str | None = None,
    study_ids: Sequence[int] | None = None,
    role: Role | None = None,
) -> tuple[BatchLaunch, list[int]]:
    """Queue one run per selected study and hand them to their executor; ``role`` is the
    launching user's role on the project (None: the command line's operator)."""
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        batch = parse_batch(document)
        check_generic_jobs(project, batch, role)
        check_network(project, batch)
        record, run_ids = runs.launch(session, project, document, executor, launched_by, expression, psid, study_ids)
        resources = runs.resources_for(project, batch)
    if not run_ids:
        raise InvalidValue("the filter selects no study: nothing launched")
    start(archive, record.executor, record.id, run_ids, resources)
    return record, run_ids


@dataclass(frozen=True)
class Validation:
    level: Level
    problems: list[SpecError]
    targets: list[TargetCheck]

    @property
    def valid(self) -> bool:
        return not self.problems and all(target.ok for target in self.targets)


def validate(
    archive: Archive, project_name: str, document: Any, expression: str = "", study_ids: Sequence[int] | None = None
) -> Validation:
    """What a launch of ``document`` on these studies would resolve, launching nothing; the
    studies are chosen as a launch chooses them (ids, or a file-search filter)."""
    problems = spec_problems(document)
    level = Level.of(document)
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        pairs = runs.studies_by_ids(session, project, study_ids) if study_ids is not None else runs.selected_studies(
            session, project, expression)
        if not pairs:
            problems.append(SpecError("studies", "the filter selects no study: nothing would run"))
        if problems:
            return Validation(level, problems, [])
        batch = parse_batch(document)
        listings = subject_listings(session, archive.layout, project, (subject for subject, _study in pairs))
        analyses = analysis_listings(session, archive.layout, project, batch.analyses())
    if batch.level is Level.SUBJECT:
        targets = [Target(listings[s].patient_id, None, listings[s].studies, analyses) for s in dict.fromkeys(s for s, _ in pairs)]
    else:
        targets = [
            Target(listings[s].patient_id, next(own for own in listings[s].studies if own.pk == study), listings[s].studies, analyses)
            for s, study in pairs
        ]
    return Validation(level, [], check_targets(batch, targets))


def cancel(archive: Archive, project_name: str, run_ids: Sequence[int] | None) -> int:
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        on_slurm = runs.slurm_tasks(session, project, run_ids, Executor.SLURM)
        count = runs.cancel(session, project, run_ids)
    slurm_executor.cancel(on_slurm)
    return count


def rerun_errored(archive: Archive, project_name: str, role: Role | None = None) -> list[int]:
    """Queue the project's errored runs again; a rerun launches their batches anew, so it is
    held to the same rule on generic jobs as a launch (``role`` None: the command line)."""
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        for batch in runs.errored_batches(session, project):
            check_generic_jobs(project, batch, role)
        run_ids = runs.rerun_errored(session, project)
        groups = runs.by_launch(session, run_ids)
    for launch_id, (executor, resources, ids) in groups.items():
        start(archive, executor, launch_id, ids, resources)
    return run_ids
