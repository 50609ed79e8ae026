"""REST API v1 on a project's analyses (``ANALYSIS#<name>``: results spanning studies).

A job's token may create one: that is where a run puts what it made of many studies (a
trained model, a group statistic), and creating a folder starts no work.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from nifti_archive.catalog.analyses import AnalysisSummary, create_analysis, list_analyses
from nifti_archive.errors import InvalidValue
from nifti_archive.models import Project, Role
from portal.auth import archive, current_user, db, project_role

blueprint = Blueprint("api_analyses", __name__, url_prefix="/api/v1")


@blueprint.route("/projects/<project>/analyses")
@project_role(Role.VIEWER)
def analyses(project: str) -> Any:
    """The project's analyses: name, study id, files, tags."""
    return jsonify({"analyses": [item.as_json() for item in list_analyses(db(), g.project)]})


@blueprint.route("/projects/<project>/analyses", methods=["POST"])
@project_role(Role.EDITOR)
def create(project: str) -> Any:
    """Create an analysis: ``{"name": "..."}``; its folder is ``<project>/ANALYSIS#<name>/analysis/``."""
    body = request.get_json(silent=True)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise InvalidValue('send JSON: {"name": "<analysis name>"}')
    user = current_user()
    assert user is not None, "project_role lets only logged-in users through"
    with archive().unit_of_work() as (work, journal):
        study = create_analysis(work, journal, archive().layout, work.get_one(Project, g.project.id), name, user.username)
        created = AnalysisSummary(name, study.subject_id, study.id, study.created_at, files=0, subject_tags=[], study_tags=[])
    return jsonify(created.as_json()), 201
