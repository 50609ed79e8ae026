"""Benchmark of launching batches: ``.venv/bin/python -m bench.launch [--studies N] [--local-runs M]``.

(1) Slurm: a launch of a trivial generic job over N studies, to all runs queued (one job
    array), beside N separate `sbatch` calls in the same run; once as the library call that
    `nora --launch` makes, once as the whole `nora` process (Python start included).
(2) Local executor: M trivial runs from launch to all done, beside a bare loop of M
    `bash -c true` subprocesses as the floor.
Starts its own single-node Slurm; needs root (munged, slurmd).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.common import table
from bench.select import fill
from jobs import runs, slurm_executor
from nifti_archive.archive import Archive, get_project
from nifti_archive.installation import initialise
from nifti_archive.models import Executor, JobRun, JobState
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from testbed.slurm import SlurmCluster, start_slurm

log = logging.getLogger("bench.launch")
TRIVIAL = {"name": "trivial", "jobs": [{"job": "bash", "script": "true"}],
           "resources": {"cpus": 1, "memory_mb": 10, "time_minutes": 5}}


def archive_with(studies: int, var: Path) -> Archive:
    settings = Settings(var_dir=var, database_url=f"sqlite:///{var / 'index.sqlite'}", archive_root=var / "archive",
                        log_dir=var / "log", local_job_slots=2)
    archive = Archive(settings)
    initialise(archive)
    fill(archive.engine, studies)
    return archive


def nora(archive: Archive, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("nora")), "-p", "bench", *args],
                   env=child_environment(archive.settings, env), check=True,
                   capture_output=True)
    return time.perf_counter() - start


def launch_in_process(archive: Archive, cluster: SlurmCluster) -> float:
    """What `nora --launch --executor slurm` does after it has started: runs in the index, one sbatch."""
    os.environ["SLURM_CONF"] = str(cluster.conf)
    start = time.perf_counter()
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, "bench")
        record, run_ids = runs.launch(session, project, TRIVIAL, Executor.SLURM, "bench")
    job_id = slurm_executor.submit(archive.settings, record.id, run_ids, runs.parse_batch(TRIVIAL).resources)
    with archive.unit_of_work() as (session, _journal):
        slurm_executor.record_submission(session, run_ids, job_id)
    return time.perf_counter() - start


def wait_all(archive: Archive, states: tuple[JobState, ...], total: int, timeout: float) -> None:
    def finished() -> bool:
        with archive.sessions() as session:
            return session.scalar(select(func.count()).select_from(JobRun).where(JobRun.state.in_(states))) == total

    wait_until(finished, timeout, f"{total} runs to finish", interval=0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--local-runs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    cluster = start_slurm()
    rows = [["what", "seconds", "per item ms", "ratio"]]
    try:
        slurm_archive = archive_with(args.studies, work / "slurm")
        subprocess.run(["scontrol", "update", "PartitionName=DPXproc", "State=DOWN"], env=cluster.env, check=True)
        launch = nora(slurm_archive, cluster.env, "--launch", json.dumps(TRIVIAL), "--executor", "slurm")
        in_process = launch_in_process(slurm_archive, cluster)
        start = time.perf_counter()
        for _ in range(args.studies):
            subprocess.run(["sbatch", "--parsable", "-p", "DPXproc", "--wrap", "true", f"--chdir={work}"],
                           env=cluster.env, check=True, capture_output=True)
        separate = time.perf_counter() - start
        subprocess.run(["scancel", "--partition=DPXproc"], env=cluster.env, check=True)
        rows.append([f"launch on Slurm, {args.studies} studies, to all queued (one array)", f"{in_process:.2f}",
                     f"{1000 * in_process / args.studies:.2f}", f"{separate / in_process:.0f}x faster"])
        rows.append(["  the same as a whole `nora --launch` process", f"{launch:.2f}",
                     f"{1000 * launch / args.studies:.1f}", f"{separate / launch:.0f}x faster"])
        rows.append([f"{args.studies} separate sbatch calls", f"{separate:.2f}", f"{1000 * separate / args.studies:.1f}", ""])

        local_archive = archive_with(args.local_runs // 2 * 2, work / "local")
        start = time.perf_counter()
        nora(local_archive, {}, "--launch", json.dumps(TRIVIAL))
        wait_all(local_archive, (JobState.DONE,), args.local_runs // 2 * 2, timeout=3600)
        local = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.local_runs):
            subprocess.run(["bash", "-c", "true"], check=True)
        floor = time.perf_counter() - start
        rows.append([f"local executor, {args.local_runs} trivial runs to done (2 slots)", f"{local:.1f}",
                     f"{1000 * local / args.local_runs:.0f}", f"{local / floor:.0f}x the floor"])
        rows.append([f"bare subprocess loop, {args.local_runs} x bash -c true (floor)", f"{floor:.2f}",
                     f"{1000 * floor / args.local_runs:.1f}", ""])
        log.info("%s", table(rows))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
