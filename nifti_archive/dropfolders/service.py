"""Run the drop folder poller with the stack: ``python -m nifti_archive.dropfolders.service
[start|stop|status|foreground]``. ``start`` waits for its first pass over the folders."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

from nifti_archive.dropfolders.folders import heartbeat_file, pid_file
from nifti_archive.errors import ServiceUnavailable
from nifti_archive.permissions import PROCESS_UMASK
from nifti_archive.processes import Service, child_environment, python_executable, service_main
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until

# The first pass imports whatever waits in the folders already: that may take a while.
READY_TIMEOUT_SECONDS = 120
# A pass finishes the entry it is importing before it stops.
STOP_TIMEOUT_SECONDS = 120


def log_file(settings: Settings) -> Path:
    return settings.log_dir / "dropfolders.log"


def start(settings: Settings, detach: bool) -> subprocess.Popen[bytes]:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    heartbeat_file(settings).unlink(missing_ok=True)
    with log_file(settings).open("ab") as output:
        return subprocess.Popen([python_executable(), "-m", "nifti_archive.dropfolders.poller"],
                                env=child_environment(settings), start_new_session=detach, umask=PROCESS_UMASK,
                                stdin=subprocess.DEVNULL, stdout=output, stderr=output)


def wait_ready(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    def passed() -> bool:
        if process.poll() is not None:
            raise ServiceUnavailable(f"the drop folder poller exited with status {process.returncode}; see {log_file(settings)}")
        return heartbeat_file(settings).exists()

    wait_until(passed, READY_TIMEOUT_SECONDS, "the drop folder poller's first pass", interval=0.2)


def main() -> int:
    return service_main("python -m nifti_archive.dropfolders.service", __doc__, lambda settings: Service(
        "the drop folder poller", pid_file(settings), partial(start, settings), partial(wait_ready, settings),
        f"(log {log_file(settings)})", STOP_TIMEOUT_SECONDS,
    ))


if __name__ == "__main__":
    sys.exit(main())
