"""Benchmark of readings: concurrent readers stepping through a reading, case by case.

Run from the repository root:  .venv/bin/python -m bench.readings [--cases N] [--readers N]
[--steps N] [--database sqlite|postgresql|both]

The index is the embedded default (SQLite), PostgreSQL or each in turn, with ``--cases`` studies
of ten registered NIfTI files each (bench/select's ``fill``), served by gunicorn as ``setup.sh
run`` serves it. A reading over every study is started with ``--readers`` reader accounts, in
random order for each reader (order "full"), one stage, one repetition; identity, dates and
description are blinded, other readers' and the reader's earlier answers are shown. Its form has
a required radio whose answer becomes a study tag, a rating, a text and a number.

Each reader is a keep-alive client on loopback and all read at once: ``--steps`` times, "save and
next", that is PUT of slot n (complete, with answers and active time) then GET of slot n + 1 (the
next case's form and file list). The pair's latency is measured (and each half), beside the same
number of clients calling ``/api/v1/projects`` (authentication and one small query: the floor of
any API call) and the studies table API (bench/portal's queries), in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.common import on_databases, table
from bench.portal import TABLE_QUERIES, load, percentile
from bench.select import fill
from nifti_archive import accounts, db
from nifti_archive.archive import Archive
from nifti_archive.installation import write_secrets
from nifti_archive.models import Project, Role
from nifti_archive.readings import service
from nifti_archive.readings.config import parse_config
from nifti_archive.settings import Settings
from testbed.portal import start_portal

log = logging.getLogger("bench.readings")
FORM = {
    "title": "Benchmark",
    "items": [
        {"kind": "radio", "name": "finding", "options": ["none", "benign", "malignant"], "required": True, "useastag": True},
        {"kind": "rating", "name": "confidence", "min": 1, "max": 5},
        {"kind": "text", "name": "comment", "multiline": True},
        {"kind": "number", "name": "size"},
    ],
}
READING = {
    "name": "bench", "form": "bench", "cases": {"files": "*.nii*"}, "order": "full",
    "blinding": {"identity": True, "dates": True, "description": True, "other_readers": False, "own_earlier": False},
}


@dataclass
class Archived:
    archive: Archive
    token: str  # a viewer's, for the floor and the studies table
    readers: list[str]  # each reader's token
    reading_id: int


@dataclass
class Steps:
    pair: list[float] = field(default_factory=list)
    save: list[float] = field(default_factory=list)
    opened: list[float] = field(default_factory=list)
    elapsed: float = 0.0


def prepare(var: Path, database_url: str, cases: int, readers: int) -> Archived:
    settings = Settings(var_dir=var, database_url=database_url, archive_root=var / "archive", log_dir=var / "log")
    archive = Archive(settings)
    db.upgrade(archive.engine)
    fill(archive.engine, cases)
    write_secrets(settings)
    with archive.unit_of_work() as (session, _journal):
        project = session.query(Project).filter_by(name="bench").one()
        viewer, _password = accounts.create_user(session, "bench")
        accounts.grant_role(session, viewer, project, Role.VIEWER)
        token = accounts.create_token(session, viewer, "bench").secret
        tokens, names = [], []
        for number in range(readers):
            user, _password = accounts.create_user(session, f"reader{number:03d}")
            accounts.grant_role(session, user, project, Role.READER)
            tokens.append(accounts.create_token(session, user, "bench").secret)
            names.append(user.username)
        service.save_form(session, project, "bench", FORM, "bench")
        reading = service.save_reading(session, project, parse_config({**READING, "readers": names}), "bench", None)
        started = service.start_reading(session, project, reading)
        reading_id = reading.id
    log.info("%s: a reading of %d cases for %d readers", archive.engine.dialect.name, sum(started.values()), readers)
    return Archived(archive, token, tokens, reading_id)


def answers(rng: random.Random) -> dict[str, Any]:
    return {"finding": rng.choice(["none", "benign", "malignant"]), "confidence": rng.randint(1, 5),
            "comment": rng.choice(["", "unremarkable", "see the prior study"]), "size": round(rng.uniform(1, 30), 1)}


def read(base_url: str, tokens: list[str], reading_id: int, steps: int) -> Steps:
    """Every reader at once: open slot 0, then ``steps`` times save slot n (complete) and open slot n + 1."""
    parts = urlsplit(base_url)
    slots = f"/api/v1/projects/bench/readings/{reading_id}/slots/serious"
    measured = Steps()
    lock = threading.Lock()
    failures: list[str] = []

    def call(connection: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str],
             body: bytes | None = None) -> dict[str, Any]:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            failures.append(f"{method} {path}: {response.status} {data[:200]!r}")
            return {}
        decoded: dict[str, Any] = json.loads(data)
        return decoded

    def reader(number: int) -> None:
        rng = random.Random(number)
        headers = {"Authorization": f"Bearer {tokens[number]}", "Content-Type": "application/json"}
        connection = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=60)
        mine = Steps()
        call(connection, "GET", f"{slots}/0", headers)
        for index in range(steps):
            body = json.dumps({"answers": answers(rng), "active_ms": rng.randint(2000, 60000), "complete": True}).encode()
            start = time.perf_counter()
            saved = call(connection, "PUT", f"{slots}/{index}", headers, body)
            middle = time.perf_counter()
            opened = call(connection, "GET", f"{slots}/{index + 1}", headers)
            end = time.perf_counter()
            if failures:
                break
            if saved.get("next") != index + 1 or opened.get("index") != index + 1 or not opened["viewer"]["layers"]:
                failures.append(f"reader {number} step {index}: unexpected {saved} / {str(opened)[:200]}")
                break
            mine.save.append((middle - start) * 1000)
            mine.opened.append((end - middle) * 1000)
            mine.pair.append((end - start) * 1000)
        connection.close()
        with lock:
            measured.pair += mine.pair
            measured.save += mine.save
            measured.opened += mine.opened

    threads = [threading.Thread(target=reader, args=(number,)) for number in range(len(tokens))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    measured.elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} failed steps, e.g. {failures[0]}")
    return measured


def row(name: str, measure: str, samples: list[float], floor_p95: float, rate: float) -> list[str]:
    p95 = percentile(samples, 0.95)
    return [name, measure, f"{statistics.median(samples):.1f}", f"{p95:.1f}", f"{max(samples):.1f}", f"{p95 / floor_p95:.1f}",
            f"{rate:.0f}"]


def measure(name: str, database_url: str, var: Path, args: argparse.Namespace) -> list[list[str]]:
    """The table's rows for one database."""
    archived = prepare(var, database_url, args.cases, args.readers)
    portal = start_portal(archived.archive.settings, workers=args.workers)
    try:
        table_paths = [f"/api/v1/projects/bench/studies?{urlencode({**q, 'limit': 50})}" for q in TABLE_QUERIES]
        load(portal.url, archived.token, table_paths, 2, 5)  # warm every worker's connection and caches
        floor, floor_rate = load(portal.url, archived.token, ["/api/v1/projects"], args.readers, args.steps)
        studies, studies_rate = load(portal.url, archived.token, table_paths, args.readers, args.steps)
        steps = read(portal.url, archived.readers, archived.reading_id, args.steps)
    finally:
        portal.stop()
        archived.archive.close()
    floor_p95 = percentile(floor, 0.95)
    requests_rate = 2 * len(steps.pair) / steps.elapsed
    return [
        row(name, "GET /api/v1/projects (floor)", floor, floor_p95, floor_rate),
        row(name, "GET .../studies, filtered + paged", studies, floor_p95, studies_rate),
        row(name, "save and next: PUT slot n + GET slot n+1", steps.pair, floor_p95, requests_rate),
        row(name, "  PUT .../slots/serious/n (complete)", steps.save, floor_p95, requests_rate),
        row(name, "  GET .../slots/serious/n+1", steps.opened, floor_p95, requests_rate),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1_000, help="studies, all of them cases of the reading")
    parser.add_argument("--readers", type=int, default=20, help="readers reading at once (and clients of the floor)")
    parser.add_argument("--steps", type=int, default=50, help="'save and next' steps per reader (requests per floor client)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    args = parser.parse_args()
    if args.steps >= args.cases:
        parser.error("--steps must be fewer than --cases: each step opens the next case")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [["database", "measure", "p50 ms", "p95 ms", "max ms", "x floor (p95)", "req/s"]]
    rows += on_databases("bench-readings-", args.database, lambda name, url, var: measure(name, url, var, args))
    log.info("%d cases (order full), %d readers x %d steps, %d gunicorn workers\n%s", args.cases, args.readers, args.steps,
             args.workers, table(rows))


if __name__ == "__main__":
    main()
