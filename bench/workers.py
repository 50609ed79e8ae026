"""Benchmark of conversion workers: Orthanc's own threads against `nora worker` processes, and the
queue's claim overhead.

Run from the repository root:  .venv/bin/python -m bench.workers

Conversion throughput, on a PostgreSQL server the benchmark starts (the archive's index and
Orthanc's both in it): four copies of both test data sets (tests/data, with new UIDs) are sent
with storescu to a Northanc whose plugin only enqueues; the queued requests are held back while the workers start, then released
at once, and the time runs from the release to the last request finished (the workers' own
timestamps in the queue). Three ways: the plugin's in-process worker threads (as many as the
cores, the default), one external worker and two external workers (each its own var folder, as
on another host, reading instances over Orthanc's REST API).

Claim overhead: 10,000 queued requests, 8 processes claiming (and finishing) them at once until
none is left; the time of each claim_next and finish call, on PostgreSQL and, for comparison,
on SQLite; and one process alone on PostgreSQL, the floor without contention.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from bench.common import table
from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.ingest import conversion_queue
from nifti_archive.models import ConversionReason, ConversionRequest, ConversionState, utcnow
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from testbed.northanc import NORA, Northanc, by_transfer_syntax, northanc_settings
from testbed.pacs import renamed_study
from testbed.postgres import PostgresServer, start_postgres
from tests.reference import input_files, references

log = logging.getLogger("bench.workers")

DATA_SETS = ("dcm_qa", "dcm_qa_nih")
QUEUED = 10_000
CLAIMERS = 8
COPIES = 4
LEASE = timedelta(minutes=5)
# Orthanc's own workers by default: one per core.
IN_PROCESS_WORKERS = os.cpu_count() or 2


@dataclass(frozen=True)
class Throughput:
    label: str
    seconds: float
    series: int
    instances: int
    busy: float  # share of the machine's CPU time in use during the run

    def row(self) -> list[str]:
        return [self.label, f"{self.seconds:.2f}", f"{self.series / self.seconds:.2f}",
                f"{self.instances / self.seconds:.1f}", f"{self.busy:.0%}"]


def cpu_ticks() -> tuple[int, int]:
    """Busy and total jiffies of all cores since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def fresh_databases(server: PostgresServer, template: str) -> dict[str, str]:
    name = uuid.uuid4().hex[:12]
    archive_url = server.create_database(f"a_{name}", template=template)
    server.create_database(f"o_{name}")
    return {"database_url": archive_url, "orthanc_database_url": server.libpq_url(f"o_{name}")}


def hold(archive: Archive) -> int:
    """Queued requests out of reach of the workers until ``release``; how many."""
    with archive.unit_of_work() as (session, _journal):
        return db.rows_changed(session.execute(
            update(ConversionRequest).where(ConversionRequest.state == ConversionState.PENDING)
            .values(state=ConversionState.WAITING, waiting_for="bench")
        ))


def release(archive: Archive) -> datetime:
    with archive.unit_of_work() as (session, _journal):
        session.execute(update(ConversionRequest).where(ConversionRequest.waiting_for == "bench")
                        .values(state=ConversionState.PENDING, waiting_for=""))
    return utcnow()


def queued(archive: Archive, series: int) -> bool:
    with archive.sessions() as session:
        return conversion_queue.counts(session)[ConversionState.PENDING.value] == series


def start_worker(settings: Settings, var: Path, name: str) -> subprocess.Popen[str]:
    """A `nora worker` as on another host; returns once it has checked its settings and waits for work."""
    _username, password = settings.orthanc_credentials()
    host = replace(settings, var_dir=var, log_dir=var / "log", orthanc_password=password)
    process = subprocess.Popen([str(NORA), "worker", "--name", name], env=child_environment(host),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    if not first.startswith(f"worker {name}: converting"):
        raise RuntimeError(f"worker {name} did not start: {first}{process.stderr.read() if process.stderr else ''}")
    return process


def throughput(label: str, settings: Settings, series: int, instances: int, files: list[Path], external: int) -> Throughput:
    northanc = Northanc.start(replace(settings, conversion_workers=0))
    workers: list[subprocess.Popen[str]] = []
    try:
        northanc.storescu(by_transfer_syntax(files))
        wait_until(lambda: queued(northanc.archive, series), 300, "every series queued", interval=0.2)
        hold(northanc.archive)
        if external:
            workers = [start_worker(settings, settings.var_dir.parent / f"{settings.var_dir.name}-host{n}", f"w{n}")
                       for n in range(external)]
        else:
            northanc.orthanc.stop()
            northanc.settings = replace(settings, conversion_workers=IN_PROCESS_WORKERS)
            northanc.restart()
        busy_before, total_before = cpu_ticks()
        start = release(northanc.archive)
        counts = northanc.wait_for_conversions(series, timeout=900)
        busy_after, total_after = cpu_ticks()
        if counts != {"done": series}:
            raise RuntimeError(f"not every series converted: {counts}")
        with northanc.archive.sessions() as session:
            end = session.scalar(select(func.max(ConversionRequest.updated_at)))
        assert end is not None
        seconds = (end.astimezone() - start.astimezone()).total_seconds()
        return Throughput(label, seconds, series, instances, (busy_after - busy_before) / max(1, total_after - total_before))
    finally:
        for worker in workers:
            worker.terminate()
            worker.communicate(timeout=120)
        northanc.stop()


def copies(files: list[Path], folder: Path) -> list[Path]:
    """COPIES copies of the data sets' DICOM files with new UIDs (one patient per copy), written under ``folder``."""
    written = []
    for copy in range(COPIES):
        target = folder / f"copy{copy}"
        target.mkdir(parents=True)
        for index, data in enumerate(renamed_study(files, f"COPY{copy}")):
            path = target / f"{index:05d}.dcm"
            path.write_bytes(data)
            written.append(path)
    return written


def _claimer(url: str, name: str, barrier: Barrier, results: Any) -> None:
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)
    claims, finishes = [], []
    barrier.wait()
    while True:
        start = time.perf_counter()
        claim = conversion_queue.claim_next(sessions, name, LEASE)
        claimed = time.perf_counter()
        if claim is None:
            break
        with sessions() as session, session.begin():
            conversion_queue.finish(session, claim.request_id, ConversionState.DONE)
        claims.append((claimed - start) * 1000)
        finishes.append((time.perf_counter() - claimed) * 1000)
    engine.dispose()
    results.put((claims, finishes))


def claim_overhead(label: str, url: str, claimers: int) -> list[str]:
    engine = db.make_engine(url)
    now = utcnow()
    with db.make_sessionmaker(engine)() as session, session.begin():
        session.execute(insert(ConversionRequest), [
            {"orthanc_series_id": f"series-{n}", "instances_hash": f"{n:064x}", "instance_count": 1,
             "series_instance_uid": f"1.2.{n}", "state": ConversionState.PENDING, "reason": ConversionReason.SENT,
             "attempts": 0, "message": "", "target": "", "worker": "", "created_at": now, "updated_at": now}
            for n in range(QUEUED)
        ])
    engine.dispose()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(claimers + 1), context.Queue()
    processes = [context.Process(target=_claimer, args=(url, f"claimer-{n}", barrier, results)) for n in range(claimers)]
    for process in processes:
        process.start()
    barrier.wait()
    start = time.perf_counter()
    collected = [results.get(timeout=900) for _ in processes]
    seconds = time.perf_counter() - start
    for process in processes:
        process.join()
    claims = [ms for mine, _ in collected for ms in mine]
    finishes = [ms for _, mine in collected for ms in mine]
    if len(claims) != QUEUED:
        raise RuntimeError(f"{len(claims)} claims for {QUEUED} requests")

    def percentile(samples: list[float], q: int) -> str:
        return f"{statistics.quantiles(samples, n=100)[q - 1]:.2f}"

    return [f"{label}, {claimers} claimer(s)", f"{len(claims):,}", percentile(claims, 50), percentile(claims, 95), percentile(finishes, 50),
            percentile(finishes, 95), f"{len(claims) / seconds:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    server = start_postgres()
    try:
        files = copies([f for name in DATA_SETS for f in input_files(name)], work / "data")
        series = COPIES * sum(len(references(name)) for name in DATA_SETS)
        instances = len(files)
        template = "bench_template"
        engine = db.make_engine(server.create_database(template))
        db.upgrade(engine)
        engine.dispose()
        runs: list[tuple[str, int]] = [(f"Orthanc's {IN_PROCESS_WORKERS} in-process worker threads", 0),
                                       ("1 external worker (nora worker)", 1), ("2 external workers", 2)]
        measured = [throughput(label, northanc_settings(work / f"run{index}", **fresh_databases(server, template)),
                               series, instances, files, external)
                    for index, (label, external) in enumerate(runs)]
        rows = [[f"conversion, {COPIES} x both data sets, PostgreSQL", "seconds", "series/s", "instances/s", "CPU busy"]]
        rows += [run.row() for run in measured]
        one, two = measured[1], measured[2]
        sqlite_url = f"sqlite:///{work / 'claims.sqlite'}"
        sqlite_engine = db.make_engine(sqlite_url)
        db.upgrade(sqlite_engine)
        sqlite_engine.dispose()
        overhead: list[Callable[[], list[str]]] = [
            lambda: claim_overhead("postgresql", server.create_database("claims1", template=template), 1),
            lambda: claim_overhead("postgresql", server.create_database("claims8", template=template), CLAIMERS),
            lambda: claim_overhead("sqlite", sqlite_url, CLAIMERS),
        ]
        claims = [[f"queue of {QUEUED:,}", "requests", "claim p50 ms", "claim p95 ms", "finish p50 ms", "finish p95 ms",
                   "requests/s"]]
        claims += [measure() for measure in overhead]
        log.info("%s cores; %d series, %d instances\n%s\n2 external workers / 1 = %.2f\n\n%s", os.cpu_count(), series,
                 instances, table(rows), one.seconds / two.seconds, table(claims))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
