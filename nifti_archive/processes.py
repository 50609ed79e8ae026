"""Processes: the Python that children run (ours, even from inside Orthanc's embedded
interpreter), and the pid files of the services ``setup.sh run`` leaves running."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

SERVICE_ACTIONS = ("start", "stop", "status", "foreground")


def python_executable() -> str:
    return os.environ.get("NORTHANC_PYTHON") or sys.executable


def running_pid(pid_file: Path) -> int | None:
    """The pid in the file, if that process is alive."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_service(pid_file: Path, timeout: float) -> None:
    pid = running_pid(pid_file)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(pid_file) and time.monotonic() < deadline:
        time.sleep(0.2)


def service_action(program: str, description: str | None) -> str:
    """The action a service's ``python -m ... [start|stop|status|foreground]`` was asked for."""
    parser = argparse.ArgumentParser(prog=program, description=description)
    parser.add_argument("action", choices=SERVICE_ACTIONS, default="start", nargs="?")
    return str(parser.parse_args().action)
