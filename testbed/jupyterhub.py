"""The notebook hub (JupyterHub with its proxy) on free ports, with Northanc's configuration
(notebooks/jupyterhub_config.py), registered at the portal as its OAuth client; stopped afterwards."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from nifti_archive.archive import Archive
from nifti_archive.notebooks.servers import HUB_API_TOKEN, register_hub
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from testbed.children import stop_child
from testbed.ports import free_port

CONFIG = Path(__file__).resolve().parent.parent / "notebooks" / "jupyterhub_config.py"


@dataclass
class Hub:
    settings: Settings
    process: subprocess.Popen[bytes]
    log: Path
    started_in: float  # seconds from the command to the hub's API answering

    @property
    def url(self) -> str:
        return self.settings.notebook_hub_url

    def api(self, method: str, path: str, json: Any = None) -> requests.Response:
        """The hub's REST API as the portal calls it, with the portal's service token."""
        token = self.settings.read_secret(HUB_API_TOKEN)
        return requests.request(method, f"{self.url}hub/api/{path}", json=json, timeout=30,
                                headers={"Authorization": f"token {token}"})

    def stop(self) -> None:
        stop_child(self.process, timeout=60)


def on_free_ports(settings: Settings) -> Settings:
    """``settings`` with the hub, its API and its proxy's API on free ports (the portal that
    starts servers on the hub needs them too)."""
    return dataclasses.replace(settings, notebook_hub_url=f"http://127.0.0.1:{free_port()}/",
                               notebook_hub_api_port=free_port(), notebook_proxy_api_port=free_port())


def start_hub(archive: Archive, settings: Settings, extra_env: dict[str, str] | None = None) -> Hub:
    """A hub for ``archive`` with ``settings`` (its ports; the portal's address, where it sends
    users to log in)."""
    with archive.unit_of_work() as (session, _journal):
        register_hub(session, settings, settings.notebook_hub_url)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log = settings.log_dir / "jupyterhub.log"
    environment = child_environment(settings, extra_env)
    began = time.monotonic()
    with log.open("ab") as output:
        process = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(CONFIG)], env=environment,
                                   cwd=settings.var_dir, stdout=output, stderr=subprocess.STDOUT)
    hub = Hub(settings, process, log, 0.0)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited with status {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return hub.api("GET", "").status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(answers, 90, "the notebook hub's API to answer", interval=0.2)
    except BaseException:
        hub.stop()
        raise
    hub.started_in = time.monotonic() - began
    return hub
