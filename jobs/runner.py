"""One run: a batch's jobs, in order, for one study or subject. ``python -m jobs.runner RUN_ID``.

Every executor starts this same program, so a run behaves alike on the local machine and
on Slurm. The runner is trusted (it claims the run, reads the listings and publishes); each
job runs in a sandbox as the unprivileged jobs account (jobs/sandbox.py) and reaches the
archive only through the portal's API with a token issued for this run, revoked when it
ends. Outputs are written into a staging folder and moved into the study only when every
job of the batch succeeded, then registered with their tags; a failing job leaves nothing
in the archive, only its log. Values reach scripts as environment variables (``$f1``,
``$o1``, ...) and positional arguments, never inside a shell string.

Only training runs import segmentation.training.job (the archive's ROI machinery, half a
second of imports): every other run starts without it. The local dispatcher's workers, forked
from it, call ``run`` for each run they are sent (jobs/local_executor.py); the dispatcher
marks a run whose worker died before ending it with ``abandon``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from select import POLLIN, poll
from typing import TextIO

from sqlalchemy import and_, or_, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

import nifti_archive
import segmentation
from jobs import runs
from jobs.argument_types import ArgType
from jobs.arguments import Analyses, Output, Resolved, StudyListing, resolve
from jobs.listings import analysis_listings, run_listings
from jobs.sandbox import JobsAccount, Sandbox, gpu_devices, job_environment, jobs_account, sandbox_argv
from jobs.slurm_executor import task_run_id
from jobs.spec import Batch, Job, Level
from nifti_archive import accounts
from nifti_archive.archive import Archive, get_project
from nifti_archive.catalog.registration import add_files
from nifti_archive.catalog.tags import TagLevel, add_tags
from nifti_archive.catalog.trash import delete_files
from nifti_archive.db import rows_changed
from nifti_archive.errors import ArchiveError
from nifti_archive.layout import Location
from nifti_archive.models import BatchLaunch, JobRun, JobState, ModelState, Project, Study
from nifti_archive.settings import load_settings
from segmentation.training import CHECKPOINT, SEGAPPLY, SEGTRAIN, TRAIN

log = logging.getLogger("jobs.runner")
# A run's token outlives its jobs' time limits by this much: the runner's own work around them.
TOKEN_MARGIN = timedelta(minutes=2)
# poll() takes an int of milliseconds: a time limit of up to 30 days is waited for a day at a time.
POLL_LIMIT_SECONDS = 24 * 3600


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


def _wait(process: subprocess.Popen[bytes], seconds: float) -> int:
    """The job's exit status, as soon as it ends (its pidfd wakes the runner, where
    ``Popen.wait(timeout)`` sleeps up to 50 ms between looks); TimeoutExpired after ``seconds``."""
    deadline = time.monotonic() + seconds
    pidfd = os.pidfd_open(process.pid)
    try:
        poller = poll()
        poller.register(pidfd, POLLIN)
        while not poller.poll(max(0.0, min(deadline - time.monotonic(), POLL_LIMIT_SECONDS)) * 1000):
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(process.args, seconds)
    finally:
        os.close(pidfd)
    return process.wait()


def run_dir(archive: Archive, run_id: int) -> Path:
    return archive.settings.var_dir / "jobs" / f"run-{run_id}"


def _command(job: Job, resolved: Resolved) -> list[str]:
    if job.job == "bash":
        return ["bash", "-c", job.script, f"nora-{job.job}", *resolved.argv()]
    if job.job == "python":
        return [sys.executable, "-c", job.script, *resolved.argv()]
    return [sys.executable, "-m", "jobs.library", job.job]


def software() -> tuple[Path, ...]:
    """What a job needs to run Python and ``nora``: the environment and our packages, never the
    whole checkout (``var/`` lives in it by default)."""
    packages = {Path(nifti_archive.__file__).parent, Path(__file__).parent, Path(segmentation.__file__).parent}
    environment = Path(sys.prefix)
    return tuple(sorted(packages if environment == Path("/usr") else {environment, *packages}))


def _check_staged(staging: Path, owner: int, group: int) -> None:
    """Hand the staging tree to ``owner``, after making sure it holds only plain folders and
    files: the runner is root, and a link planted by a job must not make it write, chown or
    publish anything outside (symbolic links), or publish a file of another tree (hard links)."""
    for folder, dirs, files in os.walk(staging):
        for name in (*dirs, *files):
            path = Path(folder) / name
            status = path.lstat()
            plain_file = stat.S_ISREG(status.st_mode) and status.st_nlink == 1
            if not (plain_file or stat.S_ISDIR(status.st_mode)):
                raise JobFailed(f"the job left {path.relative_to(staging)} in its outputs, which is not a plain file or folder")
            os.lchown(path, owner, group)
    os.lchown(staging, owner, group)


def _run_jobs(archive: Archive, run_id: int, project: Project, batch: Batch, own: StudyListing | None,
              listings: list[StudyListing], analyses: Analyses, workdir: Path, log_file: TextIO, sandbox: Sandbox,
              token: str, user: str) -> list[Output]:
    outputs: list[Output] = []
    # A pipeline: a later job's FILE argument may name what an earlier one wrote.
    written: dict[tuple[str, str, str], Path] = {}
    staging = sandbox.staging
    for index, job in enumerate(batch.jobs, start=1):
        # A job over all the run's studies resolves its FILE arguments in each of them itself.
        placed = replace(job, args=tuple(a for a in job.args if a.type is not ArgType.FILE)) if batch.level is Level.PROJECT else job
        resolved = resolve(placed, own, listings, staging, written, analyses)
        if job.job == TRAIN:
            from segmentation.training import job as segtrain

            folder = Path(resolved.values["p1"])
            for line in segtrain.prepare_from_files(archive, run_id, project, job, listings, folder, staging, workdir, user):
                log_file.write(line + "\n")
        elif job.job == SEGTRAIN:
            from segmentation.training import job as segtrain

            segtrain.prepare(archive, run_id, job, staging, workdir)
        elif job.job == SEGAPPLY:
            from segmentation.training import apply_job

            apply_job.prepare(archive, project, str(job.arg("s1").value), Path(resolved.values["f1"]), index, staging, workdir)
        for output in resolved.outputs:
            (output.staged if output.is_folder else output.staged.parent).mkdir(parents=True, exist_ok=True)
        _check_staged(staging, sandbox.account.uid, sandbox.account.gid)
        log_file.write(f"--- job {index} ({job.job})\n")
        log_file.flush()
        # Which job of the batch this is: a predefined job finds the config the runner wrote for it.
        values = {**resolved.environment(), "NORTHANC_JOB_INDEX": str(index)}
        environment = job_environment(values, project.name, Path(sys.executable).parent, archive.settings.archive_root, token)
        # Its own process group, so that a time limit or a cancel stops everything it started;
        # bwrap's own pid namespace ends with it, taking along whatever the job left running.
        # Only the standard streams cross into it: every other descriptor of the runner (the
        # database, the dispatcher's lock when the runner is its child) is closed.
        process = subprocess.Popen(
            sandbox_argv(sandbox, _command(job, resolved)), env=environment, cwd=workdir, close_fds=True,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        _current.append(process)
        try:
            returncode = _wait(process, batch.resources.time_minutes * 60)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise JobFailed(f"job {index} ({job.job}) exceeded its time limit of {batch.resources.time_minutes:g} min") from None
        finally:
            _current.remove(process)
        _check_staged(staging, os.getuid(), os.getgid())
        if returncode != 0:
            raise JobFailed(f"job {index} ({job.job}) exited with status {returncode}; see the log")
        missing = [o.path for o in resolved.outputs if not o.staged.exists()]
        if missing:
            raise JobFailed(f"job {index} ({job.job}) did not write {', '.join(missing)}")
        outputs.extend(resolved.outputs)
        written.update({(o.subject, o.study, o.path): o.staged for o in resolved.outputs if not o.is_folder})
    return outputs


def _publish(archive: Archive, project_name: str, outputs: list[Output]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name)
        for output in outputs:
            location = Location(project.name, output.subject, output.study, output.path)
            target = archive.layout.file_path(location)
            staged_files = sorted(p for p in output.staged.rglob("*") if p.is_file()) if output.is_folder else [output.staged]
            targets = [target / p.relative_to(output.staged) for p in staged_files] if output.is_folder else [target]
            registered = [t for t in targets if t.exists()]
            if registered:
                delete_files(session, journal, archive.layout, project, registered, "job output replaced")
            for source, destination in zip(staged_files, targets, strict=True):
                journal.move(source, destination)
            added = add_files(session, archive.layout, project, targets)
            if output.tag:
                add_tags(session, TagLevel.FILE, [f.id for f in added], [output.tag])


def _trains(batch: Batch) -> bool:
    return any(job.job in (SEGTRAIN, TRAIN) for job in batch.jobs)


def _applications(batch: Batch) -> list[int]:
    """The places (from 1) of the batch's segapply jobs."""
    return [index for index, job in enumerate(batch.jobs, start=1) if job.job == SEGAPPLY]


def _sandbox(archive: Archive, project: Project, batch: Batch, staging: Path, account: JobsAccount) -> Sandbox:
    # Training and applying a model run in the assistant's environment, on the GPUs where there are some.
    modelling = _trains(batch) or bool(_applications(batch))
    trainer: tuple[Path, ...] = ()
    if modelling:
        from segmentation.training import job as segtrain

        trainer = segtrain.software(archive.settings)
    return Sandbox(
        account=account,
        software=software() + trainer,
        project_dir=archive.layout.project_dir(project.name),
        staging=staging,
        api_socket=archive.settings.portal_socket,
        network=batch.resources.network and project.job_network_allowed,
        devices=gpu_devices() if modelling else (),
    )


def _take_in_model(archive: Archive, run_id: int, workdir: Path, sandbox: Sandbox, log_file: TextIO) -> None:
    """The trusted end of a training: its model checked in the sandbox (as the account that made
    it, so it gets the staged files back first), then stored as the version it trained."""
    from segmentation.training import job as segtrain

    _check_staged(sandbox.staging, sandbox.account.uid, sandbox.account.gid)
    model = segtrain.finish(archive, run_id, workdir, sandbox.staging, lambda argv: sandbox_argv(sandbox, argv))
    if model.state is not ModelState.READY:
        raise JobFailed(f"the trained model does not load: {model.reason}")
    (workdir / CHECKPOINT).unlink(missing_ok=True)
    log_file.write(f"--- model {model.name} v{model.version} is ready (not yet offered: nora --model_publish publishes it)\n")


def _issue_token(archive: Archive, project_id: int, run_id: int, launched_by: str, batch: Batch) -> str:
    lifetime = timedelta(minutes=batch.resources.time_minutes * len(batch.jobs)) + TOKEN_MARGIN
    for attempt in range(2):
        try:
            with archive.unit_of_work() as (session, _journal):
                project = session.get_one(Project, project_id)
                issued = accounts.issue_run_token(session, project, run_id, launched_by, lifetime, archive.settings.jobs_user)
                return issued.secret
        except (IntegrityError, OperationalError):
            # Two runs creating the service account at once: the second sees it on its next try.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _log_failure(log_path: Path, message: str) -> None:
    with log_path.open("a") as log_file:
        log_file.write(f"--- failed: {message}\n")


def _release(archive: Archive, run_id: int, end: tuple[JobState, str] | None = None) -> None:
    """Give up what a run holds while it runs (its staging folder, its token) and record its
    ``end`` in the same transaction, unless a cancel ended it meanwhile."""
    workdir = run_dir(archive, run_id)
    unfinished = workdir / "staging" / CHECKPOINT
    if unfinished.exists():
        unfinished.replace(workdir / CHECKPOINT)  # a training's rerun resumes from it
    shutil.rmtree(workdir / "staging", ignore_errors=True)
    with archive.unit_of_work() as (session, _journal):
        accounts.revoke_run_tokens(session, run_id)
        if end and session.get_one(JobRun, run_id).state is JobState.RUNNING:
            runs.set_state(session, run_id, *end)


def _failure(run_id: int, exc: Exception) -> str:
    if isinstance(exc, SQLAlchemyError):
        # The run must not stay "running" for ever; the details go to the runner's own log.
        log.exception("run %d: the archive database failed", run_id)
        return "the archive database failed while the run was prepared or published"
    return str(exc)


def _attempt(archive: Archive, run_id: int, workdir: Path, log_path: Path) -> tuple[JobState, str]:
    """The claimed run's jobs and the publication of their outputs: its end and message."""
    training = False
    try:
        with archive.sessions() as session:
            run = session.get_one(JobRun, run_id)
            batch = runs.batch_of(session, run)
            training = _trains(batch)
            project = session.get_one(Project, run.project_id)
            listings = run_listings(session, archive.layout, project, run, batch.level)
            analyses = analysis_listings(session, archive.layout, project, batch.analyses())
            own_study = session.get(Study, run.study_id) if run.study_id else None
            launched_by = session.get_one(BatchLaunch, run.launch_id).launched_by
        own = next((s for s in listings if own_study and s.study_id == own_study.study_id), None)
        staging = workdir / "staging"
        staging.mkdir(exist_ok=True)
        sandbox = _sandbox(archive, project, batch, staging, jobs_account(archive.settings.jobs_user))
        token = _issue_token(archive, project.id, run_id, launched_by, batch)
        with log_path.open("a") as log_file:
            outputs = _run_jobs(archive, run_id, project, batch, own, listings, analyses, workdir, log_file, sandbox, token,
                                launched_by)
            if training:
                _take_in_model(archive, run_id, workdir, sandbox, log_file)
        if outputs:
            _publish(archive, project.name, outputs)
        applied = _applications(batch)
        if applied:
            from segmentation.training import apply_job

            with log_path.open("a") as log_file:
                for index in applied:
                    _check_staged(staging, os.getuid(), os.getgid())
                    log_file.write(apply_job.finish(archive, run_id, index, workdir, staging, launched_by) + "\n")
        return JobState.DONE, ""
    except (JobFailed, ArchiveError, OSError, SQLAlchemyError) as exc:
        message = _failure(run_id, exc)
        _log_failure(log_path, message)
        if training:
            from segmentation.training import job as segtrain

            segtrain.failed(archive, run_id, message)
        return JobState.ERROR, message


def execute(archive: Archive, run_id: int) -> JobState:
    workdir = run_dir(archive, run_id)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "log.txt"
    with archive.unit_of_work() as (session, _journal):
        array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        executor_id = f"{array_job}_{task}" if array_job and task else str(os.getpid())
        if not runs.claim(session, run_id, log_path=str(log_path), executor_id=executor_id):
            return session.get_one(JobRun, run_id).state  # cancelled, or taken by another executor
    try:
        state, message = _attempt(archive, run_id, workdir, log_path)
    except BaseException:
        _release(archive, run_id)  # stopped by a cancel, which recorded the run's end
        raise
    _release(archive, run_id, (state, message))
    return state


def run(archive: Archive, run_id: int) -> int:
    """The run in this process, stopped (its job first) by SIGTERM; 0 when it is done, 1 when
    it ended otherwise (in error, cancelled, or taken by another executor), its state recorded."""
    signal.signal(signal.SIGTERM, _on_terminate)
    return 0 if execute(archive, run_id) is JobState.DONE else 1


def abandon(archive: Archive, run_id: int, executor_id: str, message: str) -> bool:
    """A run that its runner, now ended without recording an end (killed, crashed), left running
    or still queued is an error, its token revoked and its staging removed: it must neither stay
    running nor be started again and again. False when the run had ended otherwise (a cancel)."""
    unfinished = or_(JobRun.state == JobState.QUEUED, and_(JobRun.state == JobState.RUNNING, JobRun.executor_id == executor_id))
    with archive.unit_of_work() as (session, _journal):
        changed = rows_changed(session.execute(
            update(JobRun)
            .where(JobRun.id == run_id, unfinished)
            .values(state=JobState.ERROR, message=message, finished_at=datetime.now(UTC))
        ))
        log_path = session.get_one(JobRun, run_id).log_path
    if not changed:
        return False
    if log_path:
        _log_failure(Path(log_path), message)
    _release(archive, run_id)
    return True


def main() -> int:
    """``RUN_ID``, or ``--task-list FILE`` for a Slurm array task (its line SLURM_ARRAY_TASK_ID)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.argv[1] == "--task-list":
        run_id = task_run_id(Path(sys.argv[2]), int(os.environ["SLURM_ARRAY_TASK_ID"]))
    else:
        run_id = int(sys.argv[1])
    archive = Archive(load_settings())
    try:
        return run(archive, run_id)
    finally:
        archive.close()


if __name__ == "__main__":
    sys.exit(main())
