"""Run Orthanc with the Northanc plugin: ``python -m orthanc_plugin.serve [start|stop|status|foreground]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from nifti_archive.processes import running_pid, service_action, stop_service
from nifti_archive.settings import load_settings
from orthanc_plugin.deployment import start_orthanc

log = logging.getLogger("northanc.serve")
STOP_TIMEOUT_SECONDS = 60


def _pid_file() -> Path:
    return load_settings().var_dir / "orthanc" / "orthanc.pid"


def main() -> int:
    action = service_action("python -m orthanc_plugin.serve", __doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    pid = running_pid(_pid_file())
    if action == "status":
        log.info("Orthanc is %s", f"running (pid {pid})" if pid else "stopped")
        return 0 if pid else 1
    if action == "stop":
        if pid:
            log.info("stopping Orthanc (pid %d)", pid)
        stop_service(_pid_file(), STOP_TIMEOUT_SECONDS)
        return 0
    if pid:
        log.info("Orthanc is already running (pid %d)", pid)
        return 0
    orthanc = start_orthanc(settings, detach=action == "start")
    _pid_file().write_text(str(orthanc.process.pid))
    orthanc.wait_ready()
    log.info(
        "Orthanc with the Northanc plugin: HTTP %s (user %s, password in %s), DICOM %s on port %d; log %s",
        settings.orthanc_url, settings.orthanc_username, settings.secrets_dir / "orthanc_password",
        settings.orthanc_aet, settings.orthanc_dicom_port, orthanc.log_path,
    )
    if action == "foreground":
        return orthanc.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
