"""Conversion workers outside Orthanc (`nora worker`): Orthanc's plugin only enqueues, workers on
"other hosts" (their own var folder; the database, Orthanc's REST API and the archive root shared)
convert, one of them is killed mid-conversion, and every series is still published exactly once."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nifti_archive.archive import Archive
from nifti_archive.ingest import conversion_queue
from nifti_archive.models import ConversionReason, ConversionRequest, ConversionState, File, Trash
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from testbed.northanc import NORA, Northanc, northanc_settings
from testbed.ports import free_port
from testbed.slurm import start_slurm
from tests.conftest import Nora, postgresql_everywhere
from tests.polling import wait_until
from tests.reference import input_files, references
from tests.test_ingest import GE_SERIES, MOSAIC, check_against_references

# Short, so that the killed worker's request is taken up within the test's seconds.
LEASE_SECONDS = 3


@pytest.fixture
def enqueuing_northanc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Northanc]:
    """Orthanc with a plugin that only enqueues; its index and the archive's in PostgreSQL."""
    settings = replace(northanc_settings(tmp_path / "var", **postgresql_everywhere(request)),
                       conversion_workers=0, conversion_lease_seconds=LEASE_SECONDS)
    running = Northanc.start(settings)
    yield running
    running.stop()


def other_host(northanc: Northanc, var: Path) -> Settings:
    """A worker host's settings: its own var folder, the shared database, Orthanc and archive root."""
    _username, password = northanc.settings.orthanc_credentials()
    return replace(northanc.settings, var_dir=var, log_dir=var / "log", orthanc_password=password)


def start_worker(northanc: Northanc, var: Path, name: str, with_key: bool = True) -> subprocess.Popen[str]:
    if with_key:
        (var / "secrets").mkdir(parents=True, exist_ok=True)
        shutil.copy2(northanc.settings.secrets_dir / "pseudonym_key", var / "secrets" / "pseudonym_key")
    return subprocess.Popen([str(NORA), "worker", "--name", name], env=child_environment(other_host(northanc, var)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def running_for(northanc: Northanc, worker: str) -> set[int]:
    with northanc.archive.sessions() as session:
        return set(session.scalars(select(ConversionRequest.id).where(
            ConversionRequest.state == ConversionState.RUNNING, ConversionRequest.worker == worker)))


@pytest.mark.postgres
def test_two_workers_convert_everything_once_though_one_is_killed_mid_series(
    enqueuing_northanc: Northanc, tmp_path: Path
) -> None:
    northanc = enqueuing_northanc
    keyless = start_worker(northanc, tmp_path / "host-0", "keyless", with_key=False)
    _out, err = keyless.communicate(timeout=60)
    assert keyless.returncode == 2 and "pseudonym_key" in err, "a host without the key stops before it claims"
    killed = start_worker(northanc, tmp_path / "host-1", "killed")
    survivor = start_worker(northanc, tmp_path / "host-2", "survivor")
    northanc.storescu(input_files("dcm_qa") + input_files("dcm_qa_nih"))
    wait_until(lambda: running_for(northanc, "killed"), 120, "the first worker to take a request", interval=0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    interrupted = running_for(northanc, "killed")
    assert len(interrupted) == 1, "killed while it held a request"

    expected = len(references("dcm_qa")) + len(references("dcm_qa_nih"))
    assert northanc.wait_for_conversions(expected) == {"done": expected}
    survivor.send_signal(signal.SIGTERM)
    out, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, err
    assert out.startswith("worker survivor: converting from ") and "took" in out

    with northanc.archive.sessions() as session:
        requests = session.scalars(select(ConversionRequest)).all()
        live = session.scalars(select(File).where(File.trash_id.is_(None))).all()
        trashed = session.scalar(select(func.count()).select_from(Trash))
    assert len({r.orthanc_series_id for r in requests}) == len(requests) == expected
    # The killed worker's request went to the survivor once its lease passed; none was converted twice.
    assert {(r.id, r.worker, r.attempts) for r in requests if r.id in interrupted} == {(interrupted.pop(), "survivor", 2)}
    assert {r.attempts for r in requests if r.worker == "killed"} <= {1}
    assert trashed == 0, "a second conversion of a series would have replaced the first"
    on_disk = {p for p in northanc.settings.archive_root.rglob("*") if p.is_file()}
    assert len(on_disk) == len(live), "no file beside the registered ones"
    assert check_against_references(northanc, "dcm_qa") == len(references("dcm_qa"))
    assert check_against_references(northanc, "dcm_qa_nih") == len(references("dcm_qa_nih"))


@pytest.mark.postgres
def test_a_slurm_array_of_workers_drains_the_queue(enqueuing_northanc: Northanc) -> None:
    northanc = enqueuing_northanc
    northanc.storescu(sorted(GE_SERIES.glob("*.dcm")))
    northanc.storescu(sorted(MOSAIC.glob("MR*")))
    wait_until(lambda: queued(northanc.archive) == 2, 60, "both series to be queued")
    cluster = start_slurm()
    try:
        submitted = northanc.nora("--admin", "workers", "--slurm", "2", "--once", SLURM_CONF=str(cluster.conf))
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.startswith("submitted 2 conversion worker(s) as Slurm job ")
        assert northanc.wait_for_conversions(2) == {"done": 2}

        def outputs() -> list[str] | None:
            texts = [p.read_text() for p in sorted((northanc.settings.var_dir / "workers").glob("worker-*.out"))]
            return texts if len(texts) == 2 and all("took" in text for text in texts) else None

        logs = wait_until(outputs, 60, "both array tasks to finish")
    finally:
        cluster.stop()
    assert sum(int(text.split("took ")[1].split()[0]) for text in logs) == 2
    refused = northanc.nora("--admin", "workers", "--slurm", "0")
    assert refused.returncode == 2 and "at least 1 worker" in refused.stderr


def queued(archive: Archive) -> int:
    with archive.sessions() as session:
        return conversion_queue.counts(session)[ConversionState.PENDING.value]


# What the worker checks before it claims is the same on either database: one is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_that_cannot_reach_orthanc_or_the_database_claims_nothing(archive: Archive, nora: Nora, tmp_path: Path) -> None:
    with archive.unit_of_work() as (session, _journal):
        conversion_queue.enqueue(session, "series-1", "hash-1", 1, "1.2.1", ConversionReason.SENT)
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = nora("worker", "--once", extra_env={"NORTHANC_ORTHANC_URL": nowhere, "NORTHANC_ORTHANC_PASSWORD": "x"})
    assert result.returncode == 2
    assert result.stderr.startswith(f"nora: error: cannot reach Orthanc at {nowhere}: ")
    with archive.sessions() as session:
        [request] = session.scalars(select(ConversionRequest)).all()
    assert (request.state, request.attempts, request.worker) == (ConversionState.PENDING, 0, "")

    empty = nora("worker", extra_env={"NORTHANC_DATABASE_URL": f"sqlite:///{tmp_path / 'elsewhere.sqlite'}",
                                       "NORTHANC_ORTHANC_PASSWORD": "x"})
    assert empty.returncode == 2 and "the archive is not initialised" in empty.stderr
    down = nora("worker", extra_env={"NORTHANC_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
                                      "NORTHANC_ORTHANC_PASSWORD": "x"})
    assert down.returncode == 2 and "cannot open the archive database" in down.stderr
    named = nora("worker", "--name", "x" * 65, extra_env={"NORTHANC_ORTHANC_PASSWORD": "x"})
    assert named.returncode == 2 and "--name must have 1 to 64 characters" in named.stderr
