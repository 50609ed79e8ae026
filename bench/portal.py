"""Benchmark of the portal: the filtered study table under concurrent clients.

Run from the repository root:  .venv/bin/python -m bench.portal [--studies N] [--clients N]
[--database sqlite|postgresql|both]

The index is the embedded default (SQLite), PostgreSQL or each in turn, with ``--studies``
studies of ten files each, served by gunicorn as ``setup.sh run`` serves it. The table API's
latency is measured with ``--clients`` concurrent keep-alive clients on loopback, beside the
same clients calling ``/api/v1/projects`` (authentication and one small query: the floor of any
API call), on each database. The archive also holds a 256x256x176 volume in a study of its own,
for bench/viewer.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import random
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import nibabel as nib
import numpy as np

from bench.common import on_databases, table
from bench.select import fill
from nifti_archive import accounts, db
from nifti_archive.archive import Archive
from nifti_archive.catalog.registration import add_files, ensure_study
from nifti_archive.installation import write_secrets
from nifti_archive.models import Project, Role
from nifti_archive.settings import Settings
from testbed.portal import start_portal

log = logging.getLogger("bench.portal")
PASSWORD = "benchmark password"
TABLE_QUERIES = [
    {"f_patient_id": "P0012"},
    {"f_study_description": "*brain"},
    {"f_files": "STAG:control"},
    {"f_files": "t1*/s0*.nii & STAG:control"},
    {"sort": "-study_description", "offset": "9000"},
    {"f_study_description": "MRI", "sort": "-patient_id", "offset": "2000"},
]
VOLUME_SHAPE = (256, 256, 176)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def load(base_url: str, token: str, paths: list[str], clients: int, per_client: int) -> tuple[list[float], float]:
    """Latencies (ms) of ``clients`` threads each sending ``per_client`` requests; and requests per second."""
    parts = urlsplit(base_url)
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
        mine = []
        for _ in range(per_client):
            path = rng.choice(paths)
            start = time.perf_counter()
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            response.read()
            mine.append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                failures.append(f"{path}: {response.status}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]}")
    return latencies, len(latencies) / elapsed


def phantom(path: Path) -> None:
    """A 256x256x176 int16 volume with a bright ellipsoid, 1 mm voxels, LAS like many scanners write."""
    grid = np.indices(VOLUME_SHAPE, dtype=np.float32)
    centre = (np.array(VOLUME_SHAPE, dtype=np.float32) - 1) / 2
    radius = np.array([100, 120, 80], dtype=np.float32)
    inside = sum(((grid[i] - centre[i]) / radius[i]) ** 2 for i in range(3)) <= 1
    data = (inside * 800 + np.random.default_rng(3).integers(0, 60, VOLUME_SHAPE)).astype(np.int16)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [128, -128, -88]
    nib.save(nib.Nifti1Image(data, affine), path)


def prepare(var: Path, database_url: str, studies: int) -> tuple[Archive, str, int]:
    settings = Settings(var_dir=var, database_url=database_url, archive_root=var / "archive", log_dir=var / "log")
    archive = Archive(settings)
    db.upgrade(archive.engine)
    fill(archive.engine, studies)
    write_secrets(settings)
    with archive.unit_of_work() as (session, _journal):
        project = session.query(Project).filter_by(name="bench").one()
        user, _password = accounts.create_user(session, "bench")
        accounts.set_password(user, PASSWORD)
        accounts.grant_role(session, user, project, Role.VIEWER)
        token = accounts.create_token(session, user, "bench").secret
        study = ensure_study(session, project, "VIEWER", "S1")
        target = archive.layout.study_dir("bench", "VIEWER", "S1") / "t1" / "t1.nii.gz"
        target.parent.mkdir(parents=True)
        phantom(target)
        add_files(session, archive.layout, project, [target])
        study_id = study.id
    return archive, token, study_id


def measure(name: str, database_url: str, var: Path, args: argparse.Namespace) -> list[list[str]]:
    """The table's rows for one database."""
    archive, token, _study_id = prepare(var, database_url, args.studies)
    portal = start_portal(archive.settings, workers=args.workers)
    try:
        table_paths = [f"/api/v1/projects/bench/studies?{urlencode({**q, 'limit': 50})}" for q in TABLE_QUERIES]
        load(portal.url, token, table_paths, 2, 5)  # warm every worker's connection and caches
        floor, floor_rate = load(portal.url, token, ["/api/v1/projects"], args.clients, args.requests)
        latencies, rate = load(portal.url, token, table_paths, args.clients, args.requests)
    finally:
        portal.stop()
        archive.close()
    floor_p95 = percentile(floor, 0.95)
    return [
        [name, "GET /api/v1/projects (floor)", f"{statistics.median(floor):.1f}", f"{floor_p95:.1f}", "1.0", f"{floor_rate:.0f}"],
        [name, "GET .../studies, filtered + paged", f"{statistics.median(latencies):.1f}", f"{percentile(latencies, 0.95):.1f}",
         f"{percentile(latencies, 0.95) / floor_p95:.1f}", f"{rate:.0f}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [["database", "measure", "p50 ms", "p95 ms", "x floor (p95)", "req/s"]]
    rows += on_databases("bench-portal-", args.database, lambda name, url, var: measure(name, url, var, args))
    log.info("%d studies, %d clients x %d requests, %d gunicorn workers\n%s", args.studies, args.clients, args.requests,
             args.workers, table(rows))


if __name__ == "__main__":
    main()
