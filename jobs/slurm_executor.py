"""The Slurm executor, through Slurm's own command line (sbatch, squeue, scancel).

pyslurm cannot drive Debian's Slurm 22.05 (its PyPI releases follow Slurm 25.11), so this
speaks the command line as submitit and dask-jobqueue do. A launch is one job array: a
thousand studies are one ``sbatch``. Each task runs ``python -m jobs.runner --task-list
FILE``, which picks its run id by ``SLURM_ARRAY_TASK_ID`` and reports its own state to the
database; ``sync`` marks runs that Slurm ended without a report (time limit, node failure,
scancel) as errors. No user text ever reaches a shell: the batch script is fixed and takes
its values from the environment and its arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs import runs
from jobs.spec import Resources
from nifti_archive.models import BatchLaunch, Executor, JobRun, JobState
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.slurm import SlurmUnavailable as SlurmUnavailable  # what jobs.service catches
from nifti_archive.slurm import slurm

TASK_SCRIPT = """#!/bin/bash
exec "$NORTHANC_PYTHON" -m jobs.runner --task-list "$1"
"""


def submit(settings: Settings, launch_id: int, run_ids: Sequence[int], resources: Resources) -> str:
    """One array job for all runs; returns the Slurm job id."""
    folder = settings.var_dir / "jobs" / f"launch-{launch_id}"
    folder.mkdir(parents=True, exist_ok=True)
    task_list = folder / "runs.txt"
    task_list.write_text("".join(f"{run_id}\n" for run_id in run_ids))
    script = folder / "task.sh"
    script.write_text(TASK_SCRIPT)
    script.chmod(0o755)
    command = [
        "sbatch", "--parsable",
        f"--array=0-{len(run_ids) - 1}",
        f"--job-name=northanc-{launch_id}",
        f"--cpus-per-task={resources.cpus}",
        f"--mem={resources.memory_mb}M",
        f"--time={math.ceil(resources.time_minutes)}",
        f"--output={folder / 'slurm-%A_%a.out'}",
        f"--chdir={folder}",
        # The runner is trusted and needs the settings: sbatch hands its own environment on (never
        # on this command line, where ps and sacct would show it); the jobs it sandboxes get none of it.
        "--export=ALL",
    ]
    if resources.queue:
        command.append(f"--partition={resources.queue}")
    job_id = slurm([*command, str(script), str(task_list)], child_environment(settings)).strip().split(";")[0]
    return job_id


def task_run_id(task_list: Path, task_index: int) -> int:
    return int(task_list.read_text().split()[task_index])


def record_submission(session: Session, run_ids: Sequence[int], job_id: str) -> None:
    session.execute(
        update(JobRun),
        [{"id": run_id, "executor_id": f"{job_id}_{index}"} for index, run_id in enumerate(run_ids)],
    )


def sync(session: Session) -> int:
    """Runs Slurm no longer knows but the database still thinks active become errors."""
    active = session.scalars(
        select(JobRun)
        .join(BatchLaunch, BatchLaunch.id == JobRun.launch_id)
        .where(BatchLaunch.executor == Executor.SLURM, JobRun.state.in_(runs.ACTIVE), JobRun.executor_id != "")
    ).all()
    if not active:
        return 0
    # All of the cluster's tasks: asking by job id fails once Slurm has forgotten the job.
    alive = set(slurm(["squeue", "-h", "-r", "-o", "%i"]).split())
    ended = [run for run in active if run.executor_id not in alive]
    for run in ended:
        session.refresh(run)
        if run.state in runs.ACTIVE:
            runs.set_state(
                session, run.id, JobState.ERROR,
                "Slurm ended the task without a report (time limit, node failure or scancel); see its log",
            )
    return len(ended)


def cancel(run_ids_by_executor: Sequence[str]) -> None:
    if run_ids_by_executor:
        slurm(["scancel", *run_ids_by_executor])
