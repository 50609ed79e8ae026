"""Pages: the batchtool (compose, save, launch batches) and gridstats (monitor runs)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from nifti_archive.models import Role
from portal.auth import project_role

blueprint = Blueprint("jobs", __name__)


@blueprint.route("/p/<project>/batchtool")
@project_role(Role.VIEWER)
def batchtool(project: str) -> Any:
    return render_template("batchtool.html", can_edit=g.role.allows(Role.EDITOR))


@blueprint.route("/p/<project>/gridstats")
@project_role(Role.VIEWER)
def gridstats(project: str) -> Any:
    return render_template("gridstats.html", can_edit=g.role.allows(Role.EDITOR))
