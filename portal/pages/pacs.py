"""Pages: PACS administration (site admins), the PACS query page and the pulls' progress."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from nifti_archive.models import Role
from nifti_archive.pacs import peers
from portal.auth import db, project_role, site_admin

blueprint = Blueprint("pacs", __name__)


@blueprint.route("/admin/pacs")
@site_admin
def admin() -> Any:
    return render_template("pacs_admin.html", peers=peers.list_peers(db()))


@blueprint.route("/p/<project>/pacs")
@project_role(Role.EDITOR)
def query(project: str) -> Any:
    return render_template("pacs_query.html", peers=[p.name for p in peers.list_peers(db())])


@blueprint.route("/p/<project>/pulls")
@project_role(Role.VIEWER)
def pulls(project: str) -> Any:
    return render_template("pulls.html")
