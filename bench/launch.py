"""Benchmark of launching batches: ``.venv/bin/python -m bench.launch [--studies N] [--local-runs M]``.

(1) Slurm: a launch of a trivial generic job over N studies, to all runs queued (one job
    array), beside N separate `sbatch` calls in the same run; once as the library call that
    `nora --launch` makes, once as the whole `nora` process (Python start included).
    ``--studies 0`` leaves this part out.
(2) Local executor: M trivial runs from launch to all done (the dispatcher's start
    included), once as the library call, once as the whole `nora` process; beside a bare loop
    of M `bash -c true` subprocesses as the floor, and a loop of the same job in its sandbox
    (bwrap, setpriv) as the job itself. The overhead per run is (launch to done - floor) / M.
Starts its own single-node Slurm; needs root (munged, slurmd) and the jobs account.
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
from typing import Any

from sqlalchemy import func, select

from bench.common import table
from bench.select import fill
from jobs import runs, service, slurm_executor
from jobs.runner import software
from jobs.sandbox import Sandbox, jobs_account, sandbox_argv
from jobs.spec import parse_batch
from nifti_archive.archive import Archive, get_project
from nifti_archive.installation import initialise
from nifti_archive.models import Executor, JobRun, JobState
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from testbed.slurm import SlurmCluster, start_slurm

log = logging.getLogger("bench.launch")
TRIVIAL: dict[str, Any] = {"name": "trivial", "jobs": [{"job": "bash", "script": "true"}],
           "resources": {"cpus": 1, "memory_mb": 10, "time_minutes": 5}}


def archive_with(studies: int, var: Path) -> Archive:
    settings = Settings(var_dir=var, database_url=f"sqlite:///{var / 'index.sqlite'}", archive_root=var / "archive",
                        log_dir=var / "log", local_job_slots=2)
    archive = Archive(settings)
    initialise(archive)
    fill(archive.engine, studies)
    # What jobs see of their project (read-only); the index alone has no files.
    archive.layout.project_dir("bench").mkdir()
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
    job_id = slurm_executor.submit(archive.settings, record.id, run_ids, parse_batch(TRIVIAL).resources)
    with archive.unit_of_work() as (session, _journal):
        slurm_executor.record_submission(session, run_ids, job_id)
    return time.perf_counter() - start


def wait_done(archive: Archive, total: int) -> None:
    """Until ``total`` runs are done; a run in error ends the benchmark with its message."""
    def ended() -> bool:
        with archive.sessions() as session:
            failed = session.scalar(select(JobRun.message).where(JobRun.state == JobState.ERROR).limit(1))
            if failed is not None:
                raise RuntimeError(f"a trivial run failed: {failed}")
            return session.scalar(select(func.count()).select_from(JobRun).where(JobRun.state == JobState.DONE)) == total

    # Polled often: the last run's end is part of what is measured.
    wait_until(ended, 600, f"{total} runs to be done", interval=0.02)


def loop(argv: list[str], env: dict[str, str] | None, times: int) -> float:
    start = time.perf_counter()
    for _ in range(times):
        subprocess.run(argv, env=env, check=True)
    return time.perf_counter() - start


def sandboxed(archive: Archive, work: Path) -> list[str]:
    """The trivial job in the sandbox a run gives it: bwrap, setpriv, bash -c true."""
    staging = work / "staging"
    staging.mkdir()
    account = jobs_account(archive.settings.jobs_user)
    os.chown(staging, account.uid, account.gid)
    sandbox = Sandbox(account=account, software=software(), project_dir=archive.layout.project_dir("bench"), staging=staging,
                      api_socket=archive.settings.portal_socket)
    return sandbox_argv(sandbox, ["bash", "-c", "true"])


def local_rows(runs_wanted: int, work: Path) -> list[list[str]]:
    archive = archive_with(runs_wanted, work)
    start = time.perf_counter()
    service.launch(archive, "bench", TRIVIAL, Executor.LOCAL, "bench")
    wait_done(archive, runs_wanted)
    in_process = time.perf_counter() - start
    start = time.perf_counter()
    nora(archive, {}, "--launch", json.dumps(TRIVIAL))
    wait_done(archive, 2 * runs_wanted)
    whole = time.perf_counter() - start
    job = loop(sandboxed(archive, work), {"PATH": "/usr/bin:/bin"}, runs_wanted)
    floor = loop(["bash", "-c", "true"], None, runs_wanted)
    archive.close()
    per_run = 1000 / runs_wanted
    overhead = per_run * (in_process - floor)
    log.info("local executor: %.0f ms per run beyond the floor (%.0f ms beyond the job in its sandbox); target 50 ms",
             overhead, per_run * (in_process - job))
    return [
        [f"local executor, {runs_wanted} trivial runs, launch call to all done (2 slots)", f"{in_process:.2f}",
         f"{per_run * in_process:.1f}", f"{in_process / floor:.1f}x the floor"],
        ["  the same from a whole `nora --launch` process", f"{whole:.2f}", f"{per_run * whole:.1f}", f"{whole / floor:.1f}x the floor"],
        [f"the job alone, {runs_wanted} x bash -c true in its sandbox (bwrap, setpriv)", f"{job:.2f}", f"{per_run * job:.1f}",
         f"{job / floor:.1f}x the floor"],
        [f"bare loop, {runs_wanted} x bash -c true (floor)", f"{floor:.2f}", f"{per_run * floor:.1f}", ""],
    ]


def slurm_rows(studies: int, work: Path) -> list[list[str]]:
    cluster = start_slurm()
    try:
        slurm_archive = archive_with(studies, work)
        subprocess.run(["scontrol", "update", "PartitionName=DPXproc", "State=DOWN"], env=cluster.env, check=True)
        launch = nora(slurm_archive, cluster.env, "--launch", json.dumps(TRIVIAL), "--executor", "slurm")
        in_process = launch_in_process(slurm_archive, cluster)
        start = time.perf_counter()
        for _ in range(studies):
            subprocess.run(["sbatch", "--parsable", "-p", "DPXproc", "--wrap", "true", f"--chdir={work}"],
                           env=cluster.env, check=True, capture_output=True)
        separate = time.perf_counter() - start
        subprocess.run(["scancel", "--partition=DPXproc"], env=cluster.env, check=True)
        slurm_archive.close()
    finally:
        cluster.stop()
    return [
        [f"launch on Slurm, {studies} studies, to all queued (one array)", f"{in_process:.2f}",
         f"{1000 * in_process / studies:.2f}", f"{separate / in_process:.0f}x faster"],
        ["  the same as a whole `nora --launch` process", f"{launch:.2f}", f"{1000 * launch / studies:.1f}",
         f"{separate / launch:.0f}x faster"],
        [f"{studies} separate sbatch calls", f"{separate:.2f}", f"{1000 * separate / studies:.1f}", ""],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--local-runs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    rows = [["what", "seconds", "per item ms", "ratio"]]
    try:
        if args.studies:
            rows += slurm_rows(args.studies, work / "slurm")
        rows += local_rows(args.local_runs // 2 * 2, work / "local")  # two studies per subject
        log.info("%s", table(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
