"""The notebook hub (JupyterHub with its proxy) on free ports, started as its service starts it
(jobs/notebook_service.py: registered at the portal as its OAuth client); stopped afterwards."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from jobs import notebook_service
from nifti_archive.notebooks.servers import HUB_API_TOKEN
from nifti_archive.settings import Settings
from testbed.children import stop_child
from testbed.ports import free_port


@dataclass
class Hub:
    settings: Settings
    process: subprocess.Popen[bytes]
    started_in: float  # seconds from the command to the hub's API answering

    @property
    def url(self) -> str:
        return self.settings.notebook_hub_url

    @property
    def log(self) -> Path:
        return notebook_service.log_file(self.settings)

    def api(self, method: str, path: str, json: Any = None) -> requests.Response:
        """The hub's REST API as the portal calls it, with the portal's service token."""
        token = self.settings.read_secret(HUB_API_TOKEN)
        return requests.request(method, f"{self.url}hub/api/{path}", json=json, timeout=30,
                                headers={"Authorization": f"token {token}"})

    def stop(self) -> None:
        stop_child(self.process, timeout=notebook_service.STOP_TIMEOUT_SECONDS)


def on_free_ports(settings: Settings) -> Settings:
    """``settings`` with the hub, its API and its proxy's API on free ports (the portal that
    starts servers on the hub needs them too)."""
    return dataclasses.replace(settings, notebook_hub_url=f"http://127.0.0.1:{free_port()}/",
                               notebook_hub_api_port=free_port(), notebook_proxy_api_port=free_port())


def start_hub(settings: Settings, extra_env: dict[str, str] | None = None) -> Hub:
    """A hub with ``settings`` (its ports; the portal's address, where it sends users to log in)."""
    began = time.monotonic()
    process = notebook_service.start(settings, detach=False, extra_env=extra_env)
    try:
        notebook_service.wait_ready(settings, process)
    except BaseException:
        stop_child(process)
        raise
    return Hub(settings, process, time.monotonic() - began)
