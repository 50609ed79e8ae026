"""Run the segmentation assistant: ``python -m segmentation.assistant_service
[start|stop|status|foreground]``.

It runs with the assistant's own Python (``settings.assistant_venv``, which ``setup.sh`` builds)
and our checkout on its path; ``start`` waits until it answers the portal's token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

from nifti_archive.errors import ServiceUnavailable
from nifti_archive.permissions import PROCESS_UMASK
from nifti_archive.processes import Service, child_environment, service_main
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from segmentation.assistant_client import AssistantClient

CHECKOUT = Path(__file__).resolve().parent.parent
# torch and MONAI Label take a while to import on a cold disk.
READY_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 30


def command(settings: Settings) -> list[str]:
    if not settings.assistant_python.exists():
        raise ServiceUnavailable(
            f"the segmentation assistant's environment {settings.assistant_venv} is missing (run setup.sh)"
        )
    return [
        str(settings.assistant_python), "-m", "segmentation.assistant.serve",
        "--archive", str(settings.archive_root),
        "--models", str(settings.models_dir),
        "--port", str(settings.assistant_port),
        "--token-file", str(settings.secrets_dir / "assistant_token"),
    ]


def log_file(settings: Settings) -> Path:
    return settings.log_dir / "assistant.log"


def start(settings: Settings, detach: bool) -> subprocess.Popen[bytes]:
    """The assistant as a child process, its output in ``<log>/assistant.log``."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    environment = child_environment(settings, {"PYTHONPATH": str(CHECKOUT), "OMP_NUM_THREADS": str(os.cpu_count() or 1)})
    with log_file(settings).open("ab") as output:
        return subprocess.Popen(command(settings), env=environment, cwd=CHECKOUT, start_new_session=detach,
                                umask=PROCESS_UMASK, stdin=subprocess.DEVNULL, stdout=output, stderr=output)


def wait_ready(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    client = AssistantClient(settings)

    def answers() -> bool:
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"the segmentation assistant exited with status {process.returncode}; see {log_file(settings)}"
            )
        try:
            client.info()
            return True
        except ServiceUnavailable:
            return False

    wait_until(answers, READY_TIMEOUT_SECONDS, f"the segmentation assistant to answer at {client.base}", interval=0.5)


def _pid_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "assistant.pid"


def main() -> int:
    return service_main("python -m segmentation.assistant_service", __doc__, lambda settings: Service(
        "the segmentation assistant", _pid_file(settings), partial(start, settings), partial(wait_ready, settings),
        f"on port {settings.assistant_port} (log {log_file(settings)})", STOP_TIMEOUT_SECONDS,
    ))


if __name__ == "__main__":
    sys.exit(main())
