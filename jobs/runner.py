"""One run: a batch's jobs, in order, for one study or subject. ``python -m jobs.runner RUN_ID``.

Every executor starts this same program, so a run behaves alike on the local machine and
on Slurm. Outputs are written into a staging folder and moved into the study only when
every job of the batch succeeded, then registered with their tags; a failing job leaves
nothing in the archive, only its log. Values reach scripts as environment variables
(``$f1``, ``$o1``, ...) and positional arguments, never inside a shell string.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, get_project
from nifti_archive.errors import ArchiveError
from nifti_archive.layout import Location
from nifti_archive.models import File, JobRun, JobState, Project, Study, StudyTag, Subject
from nifti_archive.registration import add_files
from nifti_archive.settings import load_settings
from nifti_archive.tags import TagLevel, add_tags
from nifti_archive.trash import delete_files

from . import runs
from .arguments import Output, Resolved, StudyListing, resolve
from .slurm_executor import task_run_id
from .spec import Batch, Job

log = logging.getLogger("jobs.runner")


class JobFailed(Exception):
    pass


# The job process running now, for the stop signal to take down with the runner.
_current: list[subprocess.Popen[bytes]] = []


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _on_terminate(_signal: int, _frame: object) -> None:
    for process in list(_current):
        _stop(process)
    raise SystemExit(143)


def run_dir(archive: Archive, run_id: int) -> Path:
    return archive.settings.var_dir / "jobs" / f"run-{run_id}"


def _listings(session: Session, archive: Archive, project: Project, subject: Subject) -> list[StudyListing]:
    studies = session.scalars(select(Study).where(Study.subject_id == subject.id, Study.trash_id.is_(None))).all()
    listings = []
    for study in studies:
        files = session.scalars(
            select(File.path).where(File.study_id == study.id, File.trash_id.is_(None)).order_by(File.path)
        ).all()
        tags = session.scalars(select(StudyTag.tag).where(StudyTag.study_id == study.id)).all()
        folder = archive.layout.study_dir(project.name, subject.patient_id, study.study_id)
        listings.append(StudyListing(study.study_id, study.study_date, study.description, frozenset(tags), tuple(files), folder))
    return listings


def _command(job: Job, resolved: Resolved) -> list[str]:
    if job.job == "bash":
        return ["bash", "-c", job.script, f"nora-{job.job}", *resolved.argv()]
    if job.job == "python":
        return [sys.executable, "-c", job.script, *resolved.argv()]
    return [sys.executable, "-m", "jobs.library", job.job]


def _environment(archive: Archive, project: Project, resolved: Resolved) -> dict[str, str]:
    settings = archive.settings
    env = {
        **os.environ,
        **resolved.environment(),
        "NORA_PROJECT": project.name,
        "NORTHANC_VAR": str(settings.var_dir),
        "NORTHANC_DATABASE_URL": settings.database_url,
        "NORTHANC_ARCHIVE_ROOT": str(settings.archive_root),
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _run_jobs(archive: Archive, project: Project, batch: Batch, own: StudyListing | None,
              listings: list[StudyListing], workdir: Path, log_file) -> list[Output]:  # type: ignore[no-untyped-def]
    outputs: list[Output] = []
    staging = workdir / "staging"
    for index, job in enumerate(batch.jobs, start=1):
        resolved = resolve(job, own, listings, staging)
        for output in resolved.outputs:
            (output.staged if output.is_folder else output.staged.parent).mkdir(parents=True, exist_ok=True)
        log_file.write(f"--- job {index} ({job.job})\n")
        log_file.flush()
        # Its own process group, so that a time limit or a cancel stops everything it started.
        process = subprocess.Popen(
            _command(job, resolved), env=_environment(archive, project, resolved), cwd=workdir,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        _current.append(process)
        try:
            returncode = process.wait(timeout=batch.resources.time_minutes * 60)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise JobFailed(f"job {index} ({job.job}) exceeded its time limit of {batch.resources.time_minutes:g} min") from None
        finally:
            _current.remove(process)
        if returncode != 0:
            raise JobFailed(f"job {index} ({job.job}) exited with status {returncode}; see the log")
        missing = [o.path for o in resolved.outputs if not o.staged.exists()]
        if missing:
            raise JobFailed(f"job {index} ({job.job}) did not write {', '.join(missing)}")
        outputs.extend(resolved.outputs)
    return outputs


def _publish(archive: Archive, project_name: str, subject_id: str, outputs: list[Output]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name)
        for output in outputs:
            location = Location(project.name, subject_id, output.study, output.path)
            target = archive.layout.file_path(location)
            staged_files = sorted(p for p in output.staged.rglob("*") if p.is_file()) if output.is_folder else [output.staged]
            targets = [target / p.relative_to(output.staged) for p in staged_files] if output.is_folder else [target]
            registered = [t for t in targets if t.exists()]
            if registered:
                delete_files(session, journal, archive.layout, project, registered, "job output replaced")
            for source, destination in zip(staged_files, targets):
                journal.move(source, destination)
            added = add_files(session, archive.layout, project, targets)
            if output.tag:
                add_tags(session, TagLevel.FILE, [f.id for f in added], [output.tag])


def execute(archive: Archive, run_id: int) -> JobState:
    workdir = run_dir(archive, run_id)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "log.txt"
    with archive.unit_of_work() as (session, _journal):
        slurm_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        executor_id = "_".join(slurm_task) if all(slurm_task) else str(os.getpid())  # type: ignore[arg-type]
        if not runs.claim(session, run_id, log_path=str(log_path), executor_id=executor_id):
            return session.get_one(JobRun, run_id).state  # cancelled, or taken by another executor
    try:
        with archive.sessions() as session:
            run = session.get_one(JobRun, run_id)
            batch = runs.batch_of(session, run)
            project = session.get_one(Project, run.project_id)
            subject = session.get_one(Subject, run.subject_id)
            listings = _listings(session, archive, project, subject)
            own_study = session.get(Study, run.study_id) if run.study_id else None
        own = next((s for s in listings if own_study and s.study_id == own_study.study_id), None)
        with log_path.open("a") as log_file:
            outputs = _run_jobs(archive, project, batch, own, listings, workdir, log_file)
        _publish(archive, project.name, subject.patient_id, outputs)
        state, message = JobState.DONE, ""
    except (JobFailed, ArchiveError, OSError) as exc:
        state, message = JobState.ERROR, str(exc)
        with log_path.open("a") as log_file:
            log_file.write(f"--- failed: {message}\n")
    finally:
        shutil.rmtree(workdir / "staging", ignore_errors=True)
    with archive.unit_of_work() as (session, _journal):
        if session.get_one(JobRun, run_id).state is JobState.RUNNING:  # not cancelled meanwhile
            runs.set_state(session, run_id, state, message)
    return state


def main() -> int:
    """``RUN_ID``, or ``--task-list FILE`` for a Slurm array task (its line SLURM_ARRAY_TASK_ID)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.argv[1] == "--task-list":
        run_id = task_run_id(Path(sys.argv[2]), int(os.environ["SLURM_ARRAY_TASK_ID"]))
    else:
        run_id = int(sys.argv[1])
    signal.signal(signal.SIGTERM, _on_terminate)
    archive = Archive(load_settings())
    try:
        return 0 if execute(archive, run_id) is JobState.DONE else 1
    finally:
        archive.close()


if __name__ == "__main__":
    sys.exit(main())
