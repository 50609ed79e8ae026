"""Pages: the projects list and a project's subject/study table (with tagging and upload)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from nifti_archive import accounts
from nifti_archive.catalog.projects import list_projects
from nifti_archive.models import Role
from nifti_archive.query.filter_sql import Column
from portal.access import may_see_identity
from portal.auth import current_user, db, logged_in, project_role

blueprint = Blueprint("projects", __name__)


@blueprint.route("/projects")
@logged_in
def index() -> Any:
    user = current_user()
    assert user is not None
    mine = [(p, accounts.role_on(db(), user, p)) for p in list_projects(db())]
    return render_template("projects.html", projects=[(p, r) for p, r in mine if r is not None])


@blueprint.route("/p/<project>")
@project_role(Role.VIEWER)
def table(project: str) -> Any:
    identity = may_see_identity(g.project, g.role)
    bars = [c for c in Column if c is not Column.FILES and (identity or c is not Column.PATIENT_NAME)]
    return render_template("table.html", bars=bars, identity=identity, can_edit=g.role.allows(Role.EDITOR),
                           is_admin=g.role.allows(Role.ADMIN))


@blueprint.route("/p/<project>/conversions")
@project_role(Role.VIEWER)
def conversions(project: str) -> Any:
    """Series held back from the archive (quarantined or failed), with why; admins release or discard."""
    return render_template("conversions.html", is_admin=g.role.allows(Role.ADMIN))


@blueprint.route("/p/<project>/upload")
@project_role(Role.EDITOR)
def upload(project: str) -> Any:
    return render_template("upload.html")
