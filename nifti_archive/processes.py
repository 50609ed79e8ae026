"""Processes: the Python that children run (ours, even from inside Orthanc's embedded
interpreter), and the pid files of the services ``setup.sh run`` leaves running."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nifti_archive.settings import Settings, load_settings
from nifti_archive.waiting import DeadlinePassed, wait_until

log = logging.getLogger(__name__)
SERVICE_ACTIONS = ("start", "stop", "status", "foreground")


def python_executable() -> str:
    return os.environ.get("NORTHANC_PYTHON") or sys.executable


def child_environment(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process of ours: this one's, then what makes ``load_settings`` there give
    ``settings``, our Python (inside Orthanc ``sys.executable`` is Orthanc), then ``extra``."""
    return {
        **os.environ,
        **settings.as_environment(),
        "NORTHANC_PYTHON": python_executable(),
        **(extra or {}),
    }


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
    # A service started detached leads its own process group: the group takes its children with
    # it (a sandbox's processes, which bwrap does not pass the signal on to).
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_until(lambda: running_pid(pid_file) is None, timeout, f"process {pid} to stop", interval=0.2)
    except DeadlinePassed:
        log.warning("process %d did not stop within %g s", pid, timeout)


def service_action(program: str, description: str | None) -> str:
    """The action a service's ``python -m ... [start|stop|status|foreground]`` was asked for."""
    parser = argparse.ArgumentParser(prog=program, description=description)
    parser.add_argument("action", choices=SERVICE_ACTIONS, default="start", nargs="?")
    return str(parser.parse_args().action)


@dataclass(frozen=True)
class Service:
    """A server process of the stack, as ``python -m ... [start|stop|status|foreground]`` runs it."""

    name: str
    pid_file: Path
    start: Callable[[bool], subprocess.Popen[bytes]]
    wait_ready: Callable[[subprocess.Popen[bytes]], None]
    # Where it answers, for the messages.
    where: str
    stop_timeout: float


def run_service(action: str, service: Service) -> int:
    """Do ``action`` for ``service``: its exit status (``foreground`` waits for the process)."""
    pid = running_pid(service.pid_file)
    if action == "status":
        log.info("%s is %s", service.name, f"running (pid {pid}) {service.where}" if pid else "stopped")
        return 0 if pid else 1
    if action == "stop":
        stop_service(service.pid_file, service.stop_timeout)
        return 0
    if pid:
        log.info("%s is already running (pid %d) %s", service.name, pid, service.where)
        return 0
    process = service.start(action == "start")
    service.pid_file.parent.mkdir(parents=True, exist_ok=True)
    service.pid_file.write_text(str(process.pid))
    service.wait_ready(process)
    log.info("%s answers %s", service.name, service.where)
    return process.wait() if action == "foreground" else 0


def service_main(program: str, description: str | None, service_of: Callable[[Settings], Service]) -> int:
    """A service's ``main``: the action asked for, done for the service of the installation's settings."""
    action = service_action(program, description)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_service(action, service_of(load_settings()))
