"""REST API v1: a project as a BIDS dataset, a zip streamed while it is built."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, request

from nifti_archive.bids.dataset import zip_stream
from nifti_archive.bids.export import plan_project
from nifti_archive.models import Role
from portal.auth import archive, db, project_role

blueprint = Blueprint("api_exports", __name__, url_prefix="/api/v1")


# Editors, not viewers: a viewer may look at every study, but taking the whole project away in
# one request is a decision of those who manage its data. The names in it are the ones viewers
# see (pseudonyms in a pseudonymised project), never the real identities admins may reveal.
@blueprint.route("/projects/<project>/bids.zip")
@project_role(Role.EDITOR)
def bids_zip(project: str) -> Any:
    """The project (or the studies ``filter`` selects, in the file-search bar's language) as a BIDS
    dataset mapped by the project's BIDS rules; series that could not be mapped are listed in
    its sourcedata/northanc/report.txt."""
    plan = plan_project(db(), archive().layout, g.project, request.args.get("filter", ""))
    folder = f"{g.project.name}_bids"
    return Response(
        zip_stream(plan.entries, folder, plan.report_lines()), mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{folder}.zip"'},
    )
