"""Run the notebook hub (JupyterHub and its proxy): ``python -m jobs.notebook_service
[start|stop|status|foreground]``.

Each start registers the hub at the portal as its OAuth client with a new secret (the portal
keeps its hash; the hub reads it from var/secrets). ``start`` leaves it running in the
background (the pid in ``<var>/run/notebook-hub.pid``) and waits until its API answers.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import requests

from nifti_archive.archive import Archive
from nifti_archive.notebooks.servers import HUB_API_TOKEN, register_hub
from nifti_archive.permissions import PROCESS_UMASK
from nifti_archive.processes import Service, child_environment, service_main
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until

CONFIG = Path(__file__).resolve().parent.parent / "notebooks" / "jupyterhub_config.py"
READY_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 60


def log_file(settings: Settings) -> Path:
    return settings.log_dir / "jupyterhub.log"


def start(settings: Settings, detach: bool, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The hub as a child process, registered at the portal first."""
    archive = Archive(settings)
    try:
        with archive.unit_of_work() as (session, _journal):
            register_hub(session, settings, settings.notebook_hub_url)
    finally:
        archive.close()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with log_file(settings).open("ab") as output:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(CONFIG)], env=child_environment(settings, extra_env),
            cwd=settings.var_dir, start_new_session=detach, umask=PROCESS_UMASK, stdout=output, stderr=subprocess.STDOUT,
        )


def api_answers(settings: Settings) -> bool:
    try:
        answer = requests.get(settings.notebook_hub_url.rstrip("/") + "/hub/api/", timeout=5,
                              headers={"Authorization": f"token {settings.read_secret(HUB_API_TOKEN)}"})
    except requests.RequestException:
        return False
    return answer.status_code == 200


def wait_ready(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the notebook hub exited with status {process.returncode}; see {log_file(settings)}")
        return api_answers(settings)

    wait_until(answers, READY_TIMEOUT_SECONDS, f"the notebook hub to answer at {settings.notebook_hub_url}", interval=0.2)


def _pid_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "notebook-hub.pid"


def main() -> int:
    return service_main("python -m jobs.notebook_service", __doc__, lambda settings: Service(
        "the notebook hub", _pid_file(settings), partial(start, settings), partial(wait_ready, settings),
        f"at {settings.notebook_hub_url} (log {log_file(settings)})", STOP_TIMEOUT_SECONDS,
    ))


if __name__ == "__main__":
    sys.exit(main())
