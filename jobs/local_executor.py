"""The embedded default executor: a dispatcher process that runs queued local runs, a
limited number at a time, each as ``python -m jobs.runner RUN_ID``.

State lives in the database, not in the dispatcher: if it dies, the next launch starts
another one, which finds the queued runs where they were. One dispatcher at a time holds a
lock; every launch starts one, and it leaves at once if the lock is taken. A dispatcher with
nothing left to do lets the lock go and looks once more before it exits, so a launch that
came in meanwhile is never stranded. ``python -m jobs.local_executor`` runs one.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import select

from nifti_archive.archive import Archive
from nifti_archive.models import BatchLaunch, Executor, JobRun, JobState
from nifti_archive.processes import child_environment, python_executable
from nifti_archive.settings import Settings, load_settings

log = logging.getLogger("jobs.local")
POLL_SECONDS = 0.2


def _lock_path(settings: Settings) -> Path:
    return settings.var_dir / "jobs" / "local-dispatcher.lock"


def _queued(archive: Archive, exclude: Collection[int], limit: int) -> list[int]:
    with archive.sessions() as session:
        return list(
            session.scalars(
                select(JobRun.id)
                .join(BatchLaunch, BatchLaunch.id == JobRun.launch_id)
                .where(JobRun.state == JobState.QUEUED, BatchLaunch.executor == Executor.LOCAL, JobRun.id.not_in(exclude))
                .order_by(JobRun.id)
                .limit(limit)
            )
        )


def _run_queue(archive: Archive) -> None:
    slots = max(1, archive.settings.local_job_slots)
    started: dict[int, subprocess.Popen[bytes]] = {}
    while True:
        for run_id, process in list(started.items()):
            if process.poll() is not None:
                del started[run_id]
        with archive.sessions() as session:
            cancelled = set(
                session.scalars(select(JobRun.id).where(JobRun.id.in_(started), JobRun.state == JobState.CANCELLED))
            ) if started else set()
        queued = _queued(archive, started, max(0, slots - len(started)))
        for run_id in cancelled:
            started[run_id].terminate()  # the runner stops its job's process group, then itself
        for run_id in queued:
            started[run_id] = subprocess.Popen([python_executable(), "-m", "jobs.runner", str(run_id)])
        if not started and not queued:
            return
        time.sleep(POLL_SECONDS)


def dispatch(archive: Archive) -> None:
    lock_path = _lock_path(archive.settings)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another dispatcher has the queue
            _run_queue(archive)
            fcntl.flock(lock, fcntl.LOCK_UN)
            if not _queued(archive, (), 1):
                return


def start_dispatcher(settings: Settings) -> None:
    """Start a dispatcher in the background (it leaves at once if one is running)."""
    subprocess.Popen(
        [python_executable(), "-m", "jobs.local_executor"], env=child_environment(settings), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    archive = Archive(load_settings())
    try:
        dispatch(archive)
    finally:
        archive.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
