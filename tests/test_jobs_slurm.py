"""Batches on a real single-node Slurm (Debian's slurm-wlm and munge), one array per launch."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nifti_archive.archive import Archive
from nifti_archive.models import JobState
from testbed.ports import free_port
from testbed.slurm import SlurmCluster, start_slurm
from tests.conftest import Nora
from tests.polling import wait_until
from tests.test_jobs_local import COUNT_BYTES, ok, project, runs  # noqa: F401  (project is a fixture)


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_slurm()
    yield cluster
    cluster.stop()


def on_slurm(nora: Nora, cluster: SlurmCluster, *args: str):  # type: ignore[no-untyped-def]
    return nora(*args, extra_env={"SLURM_CONF": str(cluster.conf)})


def test_one_array_per_launch_failures_kept_and_rerun(nora: Nora, archive: Archive, project: Path, slurm: SlurmCluster) -> None:  # noqa: F811
    batch = {**COUNT_BYTES, "resources": {"queue": "DPXproc", "cpus": 1, "memory_mb": 100, "time_minutes": 5}}
    out = ok(on_slurm(nora, slurm, "-p", "demo", "--launch", json.dumps(batch), "--executor", "slurm", "--wait", "180"))
    assert "3 run(s) on slurm" in out and "2 run(s) done or cancelled, 1 in error" in out
    tasks = {run.executor_id for run in runs(archive).values()}
    assert len({task.split("_")[0] for task in tasks}) == 1 and len(tasks) == 3  # one sbatch, three array tasks
    assert (project / "P1/S1/stats/size.txt").exists() and not (project / "P2/S1/stats").exists()
    failed = [line for line in ok(on_slurm(nora, slurm, "-p", "demo", "--jobs")).splitlines() if "\terror\t" in line]
    assert len(failed) == 1 and "no flag for" in Path(failed[0].split("\t")[4]).read_text()
    (project / "P2/S1/ok.flag").write_text("")
    out = ok(on_slurm(nora, slurm, "-p", "demo", "--rerun", "--wait", "180", "--throwerror"))
    assert "queued 1 errored run(s) again" in out and (project / "P2/S1/stats/size.txt").exists()


def test_cancel_on_slurm(nora: Nora, archive: Archive, project: Path, slurm: SlurmCluster) -> None:  # noqa: F811
    sleeper = {"jobs": [{"job": "bash", "script": 'sleep 120; echo done > "$o1"', "args": {"o1": {"type": "OUT", "value": "slept.txt"}}}]}
    ok(nora("--admin", "project", "set", "demo", "--queue", "DPXimport"))  # the batch names no queue
    ok(on_slurm(nora, slurm, "-p", "demo", "--launch", json.dumps(sleeper), "--executor", "slurm"))
    wait_until(lambda: any(r.state is JobState.RUNNING for r in runs(archive).values()), 120, "no task started")
    partitions = subprocess.run(["squeue", "-h", "-o", "%P"], env=slurm.env, capture_output=True, text=True, check=False).stdout
    assert set(partitions.split()) == {"DPXimport"}
    assert "cancelled 3 run(s)" in ok(on_slurm(nora, slurm, "-p", "demo", "--cancel"))
    wait_until(lambda: not slurm_tasks_left(slurm), 60, "Slurm still has tasks after scancel")
    assert {r.state for r in runs(archive).values()} == {JobState.CANCELLED}
    assert not list(project.rglob("slept.txt"))


def slurm_tasks_left(cluster: SlurmCluster) -> str:
    return subprocess.run(["squeue", "-h"], env=cluster.env, capture_output=True, text=True, check=False).stdout.strip()


def test_unreachable_slurm_is_a_clear_error(nora: Nora, archive: Archive, project: Path, tmp_path: Path, slurm: SlurmCluster) -> None:  # noqa: F811
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={free_port()}", slurm.conf.read_text()))
    result = nora("-p", "demo", "--launch", json.dumps(COUNT_BYTES), "--executor", "slurm", extra_env={"SLURM_CONF": str(dead)})
    assert result.returncode == 2 and "sbatch failed" in result.stderr and "Traceback" not in result.stderr
    assert {r.state for r in runs(archive).values()} == {JobState.ERROR}
