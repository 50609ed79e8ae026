"""REST API v1 on the caller's notebook servers of a project (JupyterLab through the hub).

The portal asks the hub with its own service token; the page never sees it. Any member of the
project may start one: the server sees the project as a job does, read-only, with a token of
the member's role (at most editor). A job's or a notebook's own token starts none.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from jobs.notebook_debug import notebook_name
from nifti_archive.errors import InvalidValue
from nifti_archive.models import Role
from nifti_archive.notebooks.hub_api import HubClient
from nifti_archive.notebooks.servers import parse_request
from portal.auth import archive, current_user, project_role, refused_to_job_tokens

blueprint = Blueprint("api_notebooks", __name__, url_prefix="/api/v1")


def _username() -> str:
    user = current_user()
    assert user is not None, "project_role lets only logged-in users through"
    return user.username


@blueprint.route("/projects/<project>/notebooks")
@project_role(Role.VIEWER)
def notebooks(project: str) -> Any:
    """The caller's notebook server of the project, if any: ``{"notebooks": [...]}``."""
    found = HubClient(archive().settings).servers(_username())
    return jsonify({"notebooks": [server.as_json() for server in found if server.project == g.project.name]})


@blueprint.route("/projects/<project>/notebooks", methods=["POST"])
@project_role(Role.VIEWER)
@refused_to_job_tokens
def start(project: str) -> Any:
    """Start the caller's server: ``{"executor": "local"|"slurm", "time_minutes", "cpus",
    "memory_mb", "partition"}`` (all optional); 202 with where to open it once ready."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send JSON: the notebook's executor and resources")
    notebook = parse_request({**body, "project": g.project.name})
    server = HubClient(archive().settings).start(_username(), notebook)
    response = jsonify(server.as_json())
    response.status_code = 202
    return response


@blueprint.route("/projects/<project>/runs/<int:run_id>/notebook", methods=["POST"])
@project_role(Role.EDITOR)
@refused_to_job_tokens
def debug(project: str, run_id: int) -> Any:
    """Debug an errored run in the caller's notebook of the project: its jobs as a notebook, with
    the arguments and environment the runner gave them (the same body as a notebook's start)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send JSON: the notebook's executor and resources")
    notebook = parse_request({**body, "project": g.project.name, "debug_run": run_id})
    server = HubClient(archive().settings).start(_username(), notebook)
    response = jsonify({**server.as_json(), "url": server.url.removesuffix("/lab") + f"/lab/tree/{notebook_name(run_id)}"})
    response.status_code = 202
    return response


@blueprint.route("/projects/<project>/notebooks", methods=["DELETE"])
@project_role(Role.VIEWER)
def stop(project: str) -> Any:
    """Stop the caller's server of the project (a Slurm job is cancelled)."""
    HubClient(archive().settings).stop(_username(), g.project.name)
    return "", 204
