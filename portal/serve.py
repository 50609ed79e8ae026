"""Run the portal under gunicorn: ``python -m portal.serve [start|stop|status|foreground]``.

``start`` leaves it running in the background (the pid in ``<var>/run/portal.pid``) and waits
until it answers; ``foreground`` is for a service manager.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

from nifti_archive.permissions import PROCESS_UMASK
from nifti_archive.processes import Service, child_environment, service_main
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until

READY_TIMEOUT_SECONDS = 60
SOCKET_UMASK = 0o111
STOP_TIMEOUT_SECONDS = 30


def gunicorn_command(settings: Settings) -> list[str]:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.portal_socket.parent.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.portal_host}:{settings.portal_port}",
        # Batch jobs have no network: the runner binds this socket into their sandbox. It is
        # 0666 so that the jobs account may connect there; on the machine it lies in var/, which
        # only the archive's own account can enter, and its callers still need an API token.
        "--bind", f"unix:{settings.portal_socket}",
        "--umask", str(SOCKET_UMASK),
        "--workers", str(settings.portal_workers),
        # Uploads and downloads take long; a worker must not be killed in the middle of one.
        "--timeout", "600",
        "--access-logfile", str(settings.log_dir / "portal-access.log"),
        # NORA's URL call carries an API token in its query string: it never reaches the log.
        "--logger-class", "portal.access_log.RedactingLogger",
        # The application's own log (unexpected errors with their traces) joins gunicorn's.
        "--capture-output",
        "--error-logfile", str(settings.log_dir / "portal.log"),
        "portal.app:create_app()",
    ]


def address(settings: Settings) -> str:
    return f"http://{settings.portal_host}:{settings.portal_port}"


def wait_ready(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    """Wait until the portal serves its log-in page."""

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the portal exited with status {process.returncode}; see {settings.log_dir / 'portal.log'}")
        try:
            with urllib.request.urlopen(address(settings) + "/login", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    wait_until(answers, READY_TIMEOUT_SECONDS, f"the portal to answer at {address(settings)}", interval=0.2)


def start(settings: Settings, detach: bool) -> subprocess.Popen[bytes]:
    """The portal as a child process with these settings in its environment."""
    return subprocess.Popen(
        gunicorn_command(settings), env=child_environment(settings), start_new_session=detach,
        umask=PROCESS_UMASK,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _pid_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "portal.pid"


def main() -> int:
    return service_main("python -m portal.serve", __doc__, lambda settings: Service(
        "the portal", _pid_file(settings), partial(start, settings), partial(wait_ready, settings),
        f"at {address(settings)} (log {settings.log_dir / 'portal.log'})", STOP_TIMEOUT_SECONDS,
    ))


if __name__ == "__main__":
    sys.exit(main())
