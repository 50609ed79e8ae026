"""The notebook hub's REST API as the portal calls it, with the portal's service token (a
secret of var/secrets that never reaches a page): users' servers started, listed, stopped.

A user's server for a project is named after the project, so a user has at most one per
project; the hub's spawner checks the user's role again before it starts anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from nifti_archive.errors import ConfigError, Conflict, Forbidden, InvalidValue, NotFound, ServiceUnavailable
from nifti_archive.notebooks.servers import HUB_API_TOKEN, NotebookRequest
from nifti_archive.settings import Settings

TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class NotebookServer:
    project: str
    executor: str
    ready: bool
    pending: str | None  # "spawn" or "stop" while the hub is at it
    started: str | None
    url: str  # where the browser opens it (JupyterLab)

    def as_json(self) -> dict[str, Any]:
        return {"project": self.project, "executor": self.executor, "ready": self.ready, "pending": self.pending,
                "started": self.started, "url": self.url}


class HubClient:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.notebook_hub_url.rstrip("/") + "/"
        try:
            self._token = settings.read_secret(HUB_API_TOKEN)
        except ConfigError:
            raise ServiceUnavailable("notebooks are not set up on this installation (no notebook hub)") from None

    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        try:
            return requests.request(method, f"{self.base}hub/api/{path}", json=body, timeout=TIMEOUT_SECONDS,
                                    headers={"Authorization": f"token {self._token}"})
        except requests.RequestException:
            raise ServiceUnavailable("the notebook hub does not answer") from None

    @staticmethod
    def _refusal(answer: requests.Response) -> str:
        try:
            return str(answer.json().get("message", answer.reason))
        except ValueError:
            return str(answer.reason)

    def _user(self, username: str) -> dict[str, Any] | None:
        answer = self._call("GET", f"users/{quote(username, safe='')}")
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise ServiceUnavailable(f"the notebook hub refused to list servers: {self._refusal(answer)}")
        user: dict[str, Any] = answer.json()
        return user

    def servers(self, username: str) -> list[NotebookServer]:
        user = self._user(username)
        found = []
        for name, model in sorted(((user or {}).get("servers") or {}).items()):
            options = model.get("user_options") or {}
            found.append(NotebookServer(
                project=str(options.get("project", name)), executor=str(options.get("executor", "local")),
                ready=bool(model.get("ready")), pending=model.get("pending"), started=model.get("started"),
                url=f"{self.base}user/{quote(username, safe='')}/{quote(name, safe='')}/lab",
            ))
        return found

    def start(self, username: str, request: NotebookRequest) -> NotebookServer:
        if self._user(username) is None:
            created = self._call("POST", f"users/{quote(username, safe='')}")
            if created.status_code not in (201, 409):
                raise ServiceUnavailable(f"the notebook hub refused the user: {self._refusal(created)}")
        answer = self._call("POST", f"users/{quote(username, safe='')}/servers/{quote(request.project, safe='')}",
                            request.options())
        if answer.status_code == 400:
            if "already running" in self._refusal(answer) or "pending" in self._refusal(answer):
                raise Conflict(f"your notebook for {request.project} is already running or starting")
            raise InvalidValue(self._refusal(answer))
        if answer.status_code == 403:
            raise Forbidden(self._refusal(answer))
        if answer.status_code == 404:
            raise NotFound(self._refusal(answer))
        if answer.status_code not in (201, 202):
            raise ServiceUnavailable(f"the notebook hub could not start the server: {self._refusal(answer)}")
        return next(server for server in self.servers(username) if server.project == request.project)

    def stop(self, username: str, project: str) -> None:
        answer = self._call("DELETE", f"users/{quote(username, safe='')}/servers/{quote(project, safe='')}",
                            {"remove": True})
        if answer.status_code == 404:
            return
        if answer.status_code not in (202, 204):
            raise ServiceUnavailable(f"the notebook hub could not stop the server: {self._refusal(answer)}")
