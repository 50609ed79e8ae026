"""Helpers the benchmarks share: timing and printing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


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
