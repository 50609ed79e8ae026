"""``nora worker``: a conversion worker outside Orthanc; ``nora --admin workers --slurm N``: N of them.

A worker needs only the settings that reach what is shared: the archive database, Orthanc's
REST API with its credentials, and the archive root (the same path on every host). It claims
requests from the queue in the database, reads their instances over Orthanc's REST API, and
converts and publishes them as the plugin's own worker threads do (``conversion.work_one``), so
that Orthanc may run with no conversion worker of its own (``conversion_workers = 0``).

Before it claims anything it checks that it can reach both the database and Orthanc: a worker
pointed at the wrong place stops with the reason and leaves the queue as it was. Killed, it
leaves one request claimed, which another worker takes up once the claim's lease has passed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from nifti_archive import hooks
from nifti_archive.archive import Archive
from nifti_archive.cli.parser import OneLineParser
from nifti_archive.errors import InvalidValue
from nifti_archive.ingest.conversion import work_one
from nifti_archive.ingest.placement import pseudonym_key
from nifti_archive.orthanc_api import OrthancApi, orthanc_for
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.slurm import slurm

log = logging.getLogger(__name__)
# How often an idle worker looks at the queue again.
IDLE_SECONDS = 1.0
# The queue's worker column.
MAX_NAME = 64
WORKER_SCRIPT = """#!/bin/bash
exec {nora} worker "$@"
"""


def build_worker_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="nora worker", description="Convert queued series outside Orthanc until stopped (SIGTERM "
                                                           "or SIGINT: after the conversion under way).")
    parser.add_argument("--once", action="store_true", help="stop when the queue has nothing left to claim")
    parser.add_argument("--name", help=f"the worker's name in the queue (default <host>:worker:<pid>; at most {MAX_NAME} "
                                       "characters)")
    return parser


def default_name() -> str:
    return f"{socket.gethostname()}:worker:{os.getpid()}"[:MAX_NAME]


def check_reachable(archive: Archive, api: OrthancApi) -> None:
    """The reason (an ArchiveError) why this worker cannot work, before it claims anything."""
    archive.check_schema()
    api.get("/system")
    # Placing a subject may need it in any project (pseudonyms, and names that clash): read at
    # start, not when the first such series has been claimed and converted.
    pseudonym_key(archive)


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker stopping on %s after the conversion under way", signal.Signals(signum).name)
        stop.set()

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def work(archive: Archive, api: OrthancApi, name: str, once: bool, stop: threading.Event) -> int:
    """Convert until ``stop`` is set (or, ``once``, the queue has nothing to claim); how many requests it took."""
    taken = 0
    while not stop.is_set():
        if work_one(archive, api, name):
            taken += 1
        elif once:
            break
        else:
            stop.wait(IDLE_SECONDS)
    return taken


def run_worker(archive: Archive, argv: Sequence[str], out: IO[str]) -> None:
    args = build_worker_parser().parse_args(list(argv))
    name = default_name() if args.name is None else args.name
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidValue(f"--name must have 1 to {MAX_NAME} characters")
    api = orthanc_for(archive.settings)
    check_reachable(archive, api)
    hooks.preload()
    out.write(f"worker {name}: converting from {archive.settings.orthanc_url} into {archive.settings.archive_root}\n")
    out.flush()
    stop = threading.Event()
    with _stopped_by_signals(stop):
        taken = work(archive, api, name, args.once, stop)
    out.write(f"worker {name}: took {taken} request(s)\n")


def submit_slurm_array(settings: Settings, count: int, partition: str | None, time_limit: str | None, once: bool) -> str:
    """Submit ``count`` workers as one Slurm job array; returns the job id."""
    if count < 1:
        raise InvalidValue("--slurm needs at least 1 worker")
    folder = settings.var_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "worker.sh"
    script.write_text(WORKER_SCRIPT.format(nora=shlex.quote(str(Path(sys.executable).with_name("nora")))))
    script.chmod(0o750)
    command = [
        "sbatch", "--parsable",
        f"--array=0-{count - 1}",
        "--job-name=northanc-workers",
        "--cpus-per-task=1",
        f"--output={folder / 'worker-%A_%a.out'}",
        f"--chdir={folder}",
        # The settings travel in the environment sbatch hands on, never on its command line.
        "--export=ALL",
        *([f"--partition={partition}"] if partition else []),
        *([f"--time={time_limit}"] if time_limit else []),
        str(script),
        *(["--once"] if once else []),
    ]
    # Resolved here: a compute node need not see this host's secrets folder to reach Orthanc.
    _username, password = settings.orthanc_credentials()
    environment = child_environment(settings, {"NORTHANC_ORTHANC_PASSWORD": password})
    return slurm(command, environment).strip().split(";")[0]


def add_admin_parser(areas: argparse._SubParsersAction[OneLineParser]) -> None:
    workers = areas.add_parser("workers", help="conversion workers outside Orthanc (nora worker), on a Slurm cluster")
    workers.add_argument("--slurm", type=int, metavar="N", required=True, help="submit N workers as one Slurm job array")
    workers.add_argument("--partition", help="the Slurm partition (default: the cluster's)")
    workers.add_argument("--time", help="each worker's time limit, in sbatch's form (minutes, or D-HH:MM:SS)")
    workers.add_argument("--once", action="store_true", help="each worker stops when the queue has nothing left to claim")


def run_admin_workers(archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    archive.check_schema()
    job = submit_slurm_array(archive.settings, args.slurm, args.partition, args.time, args.once)
    out.write(f"submitted {args.slurm} conversion worker(s) as Slurm job {job}; their output goes to "
              f"{archive.settings.var_dir / 'workers'}\n")
