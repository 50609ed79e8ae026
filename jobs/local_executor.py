"""The embedded default executor: a dispatcher process that runs queued local runs, a
limited number at a time, in workers it forks.

The dispatcher loads the runner (Python, SQLAlchemy, the archive's code) once; each worker is
forked from it and runs the runs it is sent over a pipe, one at a time, as ``python -m
jobs.runner RUN_ID`` would, without paying the imports and the database set-up for each
(most of a second), and with the statements it compiled for the previous one. What a fork
copies is dealt with on both sides: the dispatcher holds no database connection when it
forks (SQLite's rule, and SQLAlchemy's for pools), a worker closes the descriptors it
inherited (the lock, the other workers' pipes and pidfds) and always leaves with
``os._exit``, never through the dispatcher's own cleanup. A job sees none of it: bwrap gets
the standard streams alone and an environment built from nothing (jobs/runner.py,
jobs/sandbox.py). A worker's report or end wakes the dispatcher at once, so the next run
starts without waiting for a poll. A cancel sends the worker the runner's stop signal,
once; the worker stops the job's process group and leaves. A worker that ends while a run
of its own is unfinished (killed, crashed) has that run marked as an error. Workers leave
when the queue is empty.

State lives in the database, not in the dispatcher: if it dies, the next launch starts
another one, which finds the queued runs where they were. One dispatcher at a time holds a
lock; every launch starts one unless the lock is taken, and a dispatcher leaves at once if
it is. A dispatcher with nothing left to do lets the lock go and looks once more before it
exits, so a launch that came in meanwhile is never stranded. ``python -m jobs.local_executor``
runs one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from select import POLLIN, poll
from typing import NoReturn

from sqlalchemy import select

from jobs import runner
from nifti_archive.archive import Archive
from nifti_archive.models import BatchLaunch, Executor, JobRun, JobState
from nifti_archive.processes import child_environment, python_executable
from nifti_archive.settings import Settings, load_settings

log = logging.getLogger("jobs.local")
# How often a busy dispatcher looks for new runs and cancels; a child's end wakes it at once.
POLL_SECONDS = 0.2
# A run id on a worker's pipes.
RUN_ID = struct.Struct("q")


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


def _cancelled(archive: Archive, run_ids: Collection[int]) -> list[int]:
    if not run_ids:
        return []
    with archive.sessions() as session:
        return list(session.scalars(select(JobRun.id).where(JobRun.id.in_(run_ids), JobRun.state == JobState.CANCELLED)))


@dataclass
class Worker:
    """A forked child that runs the runs it is sent, one at a time, until its orders end."""

    pid: int
    pidfd: int
    orders: int  # run ids to it
    reports: int  # the run ids it has ended
    run_id: int | None = None
    # Sent the stop signal (its run was cancelled): it ends with that run, and gets no other.
    stopping: bool = False

    def descriptors(self) -> tuple[int, int, int]:
        return self.pidfd, self.orders, self.reports


def _serve(archive: Archive, orders: int, reports: int, inherited: Iterable[int]) -> NoReturn:
    """The worker: each run it is sent, in this process, then ``os._exit`` whatever happens, so
    that it never returns into the dispatcher's loop nor runs its cleanup (the lock, the database)."""
    status = os.EX_SOFTWARE
    try:
        for fd in inherited:
            os.close(fd)
        try:
            while order := os.read(orders, RUN_ID.size):
                runner.run(archive, *RUN_ID.unpack(order))
                os.write(reports, order)
        finally:
            archive.close()  # the connections this worker opened: the dispatcher held none when it forked
        status = 0
    except SystemExit as stop:  # the runner's stop signal: its job's process group is gone
        status = stop.code if isinstance(stop.code, int) else os.EX_SOFTWARE
    except BaseException:
        log.exception("the runner failed")
    finally:
        logging.shutdown()
        sys.stdout.flush()
        os._exit(status)


def _fork(archive: Archive, inherited: list[int]) -> Worker:
    orders_out, orders_in = os.pipe2(os.O_CLOEXEC)
    reports_out, reports_in = os.pipe2(os.O_CLOEXEC)
    # Flushed here, or a worker's own flush would write the dispatcher's pending output again.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _serve(archive, orders_out, reports_in, [*inherited, orders_in, reports_out])
    os.close(orders_out)
    os.close(reports_in)
    return Worker(pid, os.pidfd_open(pid), orders_in, reports_out)


def _exit_status(worker: Worker) -> int | None:
    """The worker's exit status (minus the signal that killed it), once it has ended."""
    pid, status = os.waitpid(worker.pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if pid else None


def _ended(archive: Archive, worker: Worker, status: int) -> None:
    for fd in worker.descriptors():
        os.close(fd)
    if worker.run_id is None:
        return
    how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
    if runner.abandon(archive, worker.run_id, str(worker.pid), f"the runner {how} before the run ended"):
        log.warning("run %d: its runner %s before it ended; marked as an error", worker.run_id, how)


def _wait(workers: Iterable[Worker], seconds: float) -> list[int]:
    """The descriptors that became readable (a worker's end or report) within ``seconds``."""
    poller = poll()
    for worker in workers:
        poller.register(worker.pidfd, POLLIN)
        poller.register(worker.reports, POLLIN)
    return [fd for fd, _event in poller.poll(seconds * 1000)]


def _run_queue(archive: Archive, lock: int) -> None:
    slots = max(1, archive.settings.local_job_slots)
    workers: dict[int, Worker] = {}
    ready: list[int] = []
    while True:
        for worker in [w for w in workers.values() if w.reports in ready]:
            if os.read(worker.reports, RUN_ID.size):  # nothing: the worker has ended, its run with it
                worker.run_id = None
        for worker in list(workers.values()):
            status = _exit_status(worker)
            if status is not None:
                del workers[worker.pid]
                _ended(archive, worker, status)
        busy = {w.run_id: w for w in workers.values() if w.run_id is not None}
        for run_id in _cancelled(archive, [run_id for run_id, w in busy.items() if not w.stopping]):
            # Once: the runner stops its job's process group, then cleans up, which a second
            # signal would cut short.
            os.kill(busy[run_id].pid, signal.SIGTERM)
            busy[run_id].stopping = True
        idle = [w for w in workers.values() if w.run_id is None and not w.stopping]
        queued = _queued(archive, list(busy), len(idle) + max(0, slots - len(workers)))
        if len(queued) > len(idle):
            # No connection of the pool may exist in two processes: the workers open their own.
            archive.engine.dispose()
        for run_id in queued:
            worker = idle.pop() if idle else _fork(archive, [lock, *(fd for w in workers.values() for fd in w.descriptors())])
            workers[worker.pid] = worker
            try:
                os.write(worker.orders, RUN_ID.pack(run_id))
            except BrokenPipeError:
                continue  # it has just ended; the run stays queued for the next one
            worker.run_id = run_id
        if not busy and not queued:
            for worker in workers.values():
                os.close(worker.orders)  # the end of its orders: it leaves
                os.waitpid(worker.pid, 0)
                os.close(worker.pidfd)
                os.close(worker.reports)
            return
        ready = _wait(workers.values(), POLL_SECONDS)


def dispatch(archive: Archive) -> None:
    lock_path = _lock_path(archive.settings)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another dispatcher has the queue
            _run_queue(archive, lock.fileno())
            fcntl.flock(lock, fcntl.LOCK_UN)
            if not _queued(archive, (), 1):
                return


def _dispatcher_running(settings: Settings) -> bool:
    """Whether something holds the lock: a dispatcher, which looks at the queue again before it
    leaves, or a launch about to start one, which will find the queue as it is now."""
    lock_path = _lock_path(settings)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def start_dispatcher(settings: Settings) -> None:
    """Start a dispatcher in the background, unless one is running: call it after the runs are
    committed."""
    if _dispatcher_running(settings):
        return
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
