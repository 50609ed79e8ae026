"""What a notebook server is asked for, and the token it gets: the pure part of the hub's
spawners (jobs/notebook_hub.py), which run inside JupyterHub.

A request comes from the hub's REST API (a user's options); every value is checked here
before a spawner puts it on a command line or in a Slurm batch script. A server gets a token
like a job run's: its project only, expiring with the server's time limit, revoked when the
server stops.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive import accounts
from nifti_archive.archive import get_project
from nifti_archive.errors import Forbidden, InvalidValue, NotFound
from nifti_archive.models import ApiToken, Executor, TokenKind, User
from nifti_archive.notebooks import oauth
from nifti_archive.settings import Settings

# The hub's OAuth client at the portal, and the files of var/secrets the hub reads: that
# client's secret, the portal's token at the hub's REST API, the key of the hub's cookies.
HUB_CLIENT_ID = "jupyterhub"
HUB_CLIENT_SECRET = "notebook_hub_client_secret"
HUB_API_TOKEN = "notebook_hub_api_token"
HUB_COOKIE_SECRET = "notebook_hub_cookie_secret"
# User and server names as folder names: never a path separator, never a leading dot.
FOLDER_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,127}")
PARTITION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_MINUTES = 7 * 24 * 60
MAX_CPUS = 256
MAX_MEMORY_MB = 4 * 1024 * 1024


@dataclass(frozen=True)
class NotebookRequest:
    project: str
    executor: Executor = Executor.LOCAL
    time_minutes: int = 120
    cpus: int = 1
    memory_mb: int = 2000
    partition: str | None = None
    # An errored run of the project to debug: its jobs come as a notebook, arguments resolved.
    debug_run: int | None = None

    def options(self) -> dict[str, object]:
        """As the hub's user options (what ``parse_request`` reads back)."""
        return {"project": self.project, "executor": self.executor.value, "time_minutes": self.time_minutes,
                "cpus": self.cpus, "memory_mb": self.memory_mb,
                **({"partition": self.partition} if self.partition else {}),
                **({"debug_run": self.debug_run} if self.debug_run else {})}


def _whole(options: Mapping[str, object], key: str, default: int, most: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise InvalidValue(f"{key} must be a whole number from 1 to {most}, not {value!r}")
    return value


def parse_request(options: Mapping[str, object]) -> NotebookRequest:
    """A request from the hub's user options; unknown keys and malformed values are refused."""
    unknown = set(options) - {"project", "executor", "time_minutes", "cpus", "memory_mb", "partition", "debug_run"}
    if unknown:
        raise InvalidValue(f"unknown notebook options: {', '.join(sorted(unknown))}")
    project = options.get("project")
    if not isinstance(project, str) or not project:
        raise InvalidValue("a notebook is started for a project: name it (project)")
    executor = options.get("executor", Executor.LOCAL.value)
    if executor not in {e.value for e in Executor}:
        raise InvalidValue(f"executor is one of {', '.join(e.value for e in Executor)}, not {executor!r}")
    partition = options.get("partition")
    if partition is not None and (not isinstance(partition, str) or not PARTITION.fullmatch(partition)):
        raise InvalidValue(f"a partition is 1 to 64 letters, digits and _.- ; not {partition!r}")
    return NotebookRequest(
        project=project, executor=Executor(executor),
        time_minutes=_whole(options, "time_minutes", NotebookRequest.time_minutes, MAX_MINUTES),
        cpus=_whole(options, "cpus", NotebookRequest.cpus, MAX_CPUS),
        memory_mb=_whole(options, "memory_mb", NotebookRequest.memory_mb, MAX_MEMORY_MB),
        partition=partition or None,
        debug_run=_whole(options, "debug_run", 0, 2**62) if "debug_run" in options else None,
    )


@dataclass(frozen=True)
class ServerGrant:
    project_id: int
    token_id: int
    token: str


def grant_server(session: Session, username: str, request: NotebookRequest, server: str) -> ServerGrant:
    """The token of a user's notebook server on a project, once the user holds a role there
    (Forbidden otherwise, naming no project the user cannot see)."""
    user = session.scalar(select(User).where(User.username == username))
    try:
        project = get_project(session, request.project)
    except NotFound:
        project = None
    if user is None or project is None or accounts.role_on(session, user, project) is None:
        raise Forbidden(f"{username} holds no role on a project {request.project!r}")
    issued = accounts.create_token(session, user, f"notebook {server}", kind=TokenKind.JOB)
    issued.token.project_id = project.id
    issued.token.expires_at = datetime.now(UTC) + timedelta(minutes=request.time_minutes)
    session.flush()
    return ServerGrant(project.id, issued.token.id, issued.secret)


def revoke_server_token(session: Session, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)


def _write_secret(settings: Settings, name: str, value: str) -> None:
    settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = settings.secrets_dir / name
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as fh:
        fh.write(value + "\n")


def register_hub(session: Session, settings: Settings, hub_url: str) -> None:
    """Register the hub as the portal's OAuth client (its callback under ``hub_url``) and hand
    it the new secret in var/secrets, readable by the archive's account only; the hub's other
    secrets are made once."""
    secret = oauth.register_client(session, HUB_CLIENT_ID, hub_url.rstrip("/") + "/hub/oauth_callback")
    _write_secret(settings, HUB_CLIENT_SECRET, secret)
    for name in (HUB_API_TOKEN, HUB_COOKIE_SECRET):
        if not (settings.secrets_dir / name).exists():
            _write_secret(settings, name, secrets.token_hex(32))


def workdir(settings: Settings, username: str, server: str) -> Path:
    """Where a server's notebooks are kept (read-write for the jobs account, in the sandbox)."""
    for name in (username, server):
        if name and not FOLDER_NAME.fullmatch(name):
            raise InvalidValue(f"{name!r} cannot name a notebook folder")
    return settings.var_dir / "notebooks" / "work" / username / (server or "default")
