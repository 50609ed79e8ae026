"""Page: a JupyterLab notebook for the project (locally or on Slurm), and the caller's running one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from nifti_archive.models import Role
from nifti_archive.notebooks.servers import MAX_CPUS, MAX_MEMORY_MB, MAX_MINUTES, NotebookRequest
from portal.auth import project_role

blueprint = Blueprint("notebooks", __name__)


@blueprint.route("/p/<project>/notebooks")
@project_role(Role.VIEWER)
def notebooks(project: str) -> Any:
    return render_template("notebooks.html", defaults=NotebookRequest(project), max_cpus=MAX_CPUS,
                           max_memory_mb=MAX_MEMORY_MB, max_minutes=MAX_MINUTES)
