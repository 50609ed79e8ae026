"""Stopping the server processes the tests and benchmarks start."""

from __future__ import annotations

import subprocess

STOP_SECONDS = 20.0


def stop_child(process: subprocess.Popen[bytes], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout`` seconds; always reaped."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
