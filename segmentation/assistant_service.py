"""Run the segmentation assistant: ``python -m segmentation.assistant_service
[start|stop|status|foreground]``.

It runs with the assistant's own Python (``settings.assistant_venv``, which ``setup.sh`` builds)
and our packages on its path; ``start`` waits until it answers the portal's token.

It runs the projects' models, and a registered TorchScript file is a user's code: so the
assistant runs in the jobs' sandbox as the jobs account, seeing the software, the NIfTI tree
and the models read-only and a folder of its own; not ``var/`` (secrets, the index database,
Orthanc's storage), nor the checkout. It keeps the machine's network: it listens on localhost.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

from jobs.runner import software
from jobs.sandbox import Sandbox, jobs_account, sandbox_argv
from nifti_archive.errors import ServiceUnavailable
from nifti_archive.permissions import PRIVATE_DIR, PROCESS_UMASK, secure_jobs_tree
from nifti_archive.processes import Service, service_main
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from segmentation.assistant.serve import TOKEN_VARIABLE
from segmentation.assistant_client import AssistantClient
from segmentation.model_registry import assistant_python
from segmentation.training import job as training_job

# Where our packages are (the sandbox shows only them of the checkout).
PACKAGES = Path(__file__).resolve().parent.parent
# torch and MONAI Label take a while to import on a cold disk.
READY_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 30


def command(settings: Settings) -> list[str]:
    if not settings.assistant_python.exists():
        raise ServiceUnavailable(
            f"the segmentation assistant's environment {settings.assistant_venv} is missing (run setup.sh)"
        )
    return [
        str(assistant_python(settings)), "-m", "segmentation.assistant.serve",
        "--archive", str(settings.archive_root),
        "--models", str(settings.models_dir),
        "--port", str(settings.assistant_port),
    ]


def _sandbox(settings: Settings, detach: bool) -> Sandbox:
    account = jobs_account(settings.jobs_user)
    for tree in (settings.archive_root, settings.models_dir):
        secure_jobs_tree(settings, tree)
    workdir = settings.var_dir / "assistant"
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(PRIVATE_DIR)
    os.chown(workdir, account.uid, account.gid)
    return Sandbox(
        account=account, software=software() + training_job.software(settings), project_dir=settings.archive_root,
        staging=workdir, api_socket=None, network=True, data=(settings.models_dir,), die_with_parent=not detach,
    )


def _environment(settings: Settings) -> dict[str, str]:
    """Built from nothing, like a job's: no database URL, no path to a secret but its own token."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(PACKAGES),
        "OMP_NUM_THREADS": str(os.cpu_count() or 1),
        TOKEN_VARIABLE: settings.read_secret("assistant_token"),
    }


def log_file(settings: Settings) -> Path:
    return settings.log_dir / "assistant.log"


def start(settings: Settings, detach: bool) -> subprocess.Popen[bytes]:
    """The assistant as a child process, its output in ``<log>/assistant.log``."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    argv = sandbox_argv(_sandbox(settings, detach), command(settings))
    with log_file(settings).open("ab") as output:
        return subprocess.Popen(argv, env=_environment(settings), start_new_session=detach,
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
