"""Helpers the benchmarks share: timing, printing, and running on each database."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.postgres import start_postgres


def median_ms(work: Callable[[], Any], repeat: int, warmup: int = 2) -> tuple[float, Any]:
    """Median wall time of ``work`` in milliseconds, after warm-up runs; also its last result."""
    result = None
    for _ in range(warmup):
        result = work()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), result


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) for row in rows)


def on_databases(prefix: str, which: str, measure: Callable[[str, str, Path], list[list[str]]]) -> list[list[str]]:
    """``measure(name, database_url, var)``'s rows on SQLite, PostgreSQL or both (``which``), each in
    a folder of its own under one temporary folder, with a PostgreSQL server started for the run."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = start_postgres() if which != "sqlite" else None
    rows: list[list[str]] = []
    try:
        for name in ["sqlite", "postgresql"] if which == "both" else [which]:
            url = server.create_database("bench") if server and name == "postgresql" else f"sqlite:///{work / 'archive.sqlite'}"
            rows += measure(name, url, work / name)
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return rows
