"""REST API v1 for the viewer's navigation tool: apply a manual alignment or warp to moving images.

Applying writes new files into the study (editors); previewing writes nothing (anyone who may
read the study). The work is ``segmentation.navigation_actions``'s.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from nifti_archive.models import Role
from portal.api.archive import project_study
from portal.auth import archive, project_role
from segmentation import navigation_actions

blueprint = Blueprint("api_navigation", __name__, url_prefix="/api/v1")


@blueprint.route("/projects/<project>/studies/<int:study_id>/navigation/apply", methods=["POST"])
@project_role(Role.EDITOR)
def apply(project: str, study_id: int) -> Any:
    """Apply a transform to the ``moving`` images: ``mode`` (rigid, affine, displacements, keypoints),
    ``transform`` {translation, rotation_deg, scale, centre}, ``stages`` (warps), ``fixed``,
    ``interpolation``; each moving image gets new files (the originals stay as they are)."""
    project_study(study_id)
    parsed = navigation_actions.parse_request(request.get_json(silent=True))
    applied = navigation_actions.apply(archive(), g.project, study_id, parsed)
    return jsonify({"files": navigation_actions.describe(applied)}), 201


@blueprint.route("/projects/<project>/studies/<int:study_id>/navigation/preview", methods=["POST"])
@project_role(Role.VIEWER)
def preview(project: str, study_id: int) -> Any:
    """The first moving image as ``apply`` would write it (NIfTI-1, uncompressed); nothing is stored."""
    project_study(study_id)
    parsed = navigation_actions.parse_request(request.get_json(silent=True))
    content = navigation_actions.preview(archive(), g.project, study_id, parsed)
    return Response(content, mimetype="application/octet-stream",
                    headers={"Content-Disposition": 'attachment; filename="preview.nii"'})
