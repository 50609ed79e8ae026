"""Run Orthanc with the Northanc plugin: ``python -m orthanc_plugin.serve [start|stop|status|foreground]``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from nifti_archive.settings import load_settings

from .deployment import start_orthanc

log = logging.getLogger("northanc.serve")
STOP_TIMEOUT_SECONDS = 60


def _pid_file():  # type: ignore[no-untyped-def]
    return load_settings().var_dir / "orthanc" / "orthanc.pid"


def _running_pid() -> int | None:
    try:
        pid = int(_pid_file().read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m orthanc_plugin.serve", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status", "foreground"], default="start", nargs="?")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    pid = _running_pid()
    if args.action == "status":
        log.info("Orthanc is %s", f"running (pid {pid})" if pid else "stopped")
        return 0 if pid else 1
    if args.action == "stop":
        if pid:
            os.kill(pid, signal.SIGTERM)
            log.info("stopping Orthanc (pid %d)", pid)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while _running_pid() and time.monotonic() < deadline:
                time.sleep(0.2)
        return 0
    if pid:
        log.info("Orthanc is already running (pid %d)", pid)
        return 0
    orthanc = start_orthanc(settings, detach=args.action == "start")
    _pid_file().write_text(str(orthanc.process.pid))
    orthanc.wait_ready()
    log.info(
        "Orthanc with the Northanc plugin: HTTP %s (user %s, password in %s), DICOM %s on port %d; log %s",
        settings.orthanc_url, settings.orthanc_username, settings.secrets_dir / "orthanc_password",
        settings.orthanc_aet, settings.orthanc_dicom_port, orthanc.log_path,
    )
    if args.action == "foreground":
        return orthanc.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
