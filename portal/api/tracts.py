"""REST API v1 for tractograms (the viewer's fibre tool): select streamlines, save a selection as
a new TCK of the study, save a track-density map.

Viewers look and select; editors save. The work is ``nifti_archive.tracts``'s; the definitions of
"passes through" are in ``nifti_archive.tracts.geometry``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, g, jsonify, request
from numpy.typing import NDArray

from nifti_archive.errors import InvalidValue
from nifti_archive.models import Role
from nifti_archive.tracts import store
from nifti_archive.tracts.geometry import Polylines, select
from portal.api.archive import file_json, file_project
from portal.auth import archive, db, project_role
from portal.ids import is_id

blueprint = Blueprint("api_tracts", __name__, url_prefix="/api/v1")
MAX_NAME = 64


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    return body


def _start(body: dict[str, Any], lines: Polylines) -> NDArray[np.bool_] | None:
    """The streamlines a selection starts from: those named by ``indices``, or all."""
    if "indices" not in body:
        return None
    start = np.zeros(lines.count, dtype=np.bool_)
    start[store.parse_indices(body["indices"], lines.count)] = True
    return start


@blueprint.route("/tracts/<int:file_id>/selection", methods=["POST"])
@project_role(Role.VIEWER, via=file_project)
def tract_selection(file_id: int) -> Any:
    """The streamlines kept after ``steps`` (sphere, points, waypoints, roi; keep or delete), from ``indices`` or all."""
    body = _json_body()
    source = store.tract_file(archive(), db(), g.project, file_id)
    steps = store.parse_steps(archive(), db(), g.project, body.get("steps", []))
    lines = store.polylines(source)
    kept = select(lines, steps, _start(body, lines))
    indices = np.flatnonzero(kept).tolist()
    return jsonify({"kept": indices, "count": len(indices), "total": lines.count})


@blueprint.route("/tracts/<int:file_id>/selections", methods=["POST"])
@project_role(Role.EDITOR, via=file_project)
def save_tract_selection(file_id: int) -> Any:
    """Save the streamlines ``indices`` (or those ``steps`` keep) as a new TCK beside the file, named ``name``."""
    body = _json_body()
    name = body.get("name", "selection")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidValue(f"name must be text of at most {MAX_NAME} characters")
    with archive().unit_of_work() as (session, journal):
        source = store.tract_file(archive(), session, g.project, file_id)
        steps = store.parse_steps(archive(), session, g.project, body.get("steps", []))
        if "indices" in body:
            indices = store.parse_indices(body["indices"], len(store.load_tractogram(source).streamlines))
        else:
            indices = np.flatnonzero(select(store.polylines(source), steps)).astype(np.int64)
        record = store.save_selection(archive(), session, journal, source, indices, name, steps)
        described = file_json(record, identity=False)
    return jsonify({"file": described, "streamlines": len(indices)}), 201


@blueprint.route("/tracts/<int:file_id>/density", methods=["POST"])
@project_role(Role.EDITOR, via=file_project)
def save_tract_density(file_id: int) -> Any:
    """Save the track-density map on ``reference_file_id``'s grid or the tracts' box at ``voxel_mm``, of ``indices`` or all."""
    body = _json_body()
    reference = body.get("reference_file_id")
    voxel = body.get("voxel_mm")
    if (reference is None) == (voxel is None):
        raise InvalidValue("name the grid: reference_file_id (an image) or voxel_mm (the tracts' bounding box)")
    if reference is not None and not is_id(reference):
        raise InvalidValue("reference_file_id must be the id of an image")
    if voxel is not None and (isinstance(voxel, bool) or not isinstance(voxel, int | float) or not 0.1 <= voxel <= 100):
        raise InvalidValue("voxel_mm must be a number from 0.1 to 100")
    with archive().unit_of_work() as (session, journal):
        source = store.tract_file(archive(), session, g.project, file_id)
        lines = store.polylines(source)
        kept = store.parse_indices(body["indices"], lines.count) if "indices" in body else None
        grid = (store.reference_grid(archive(), session, g.project, int(reference)) if reference is not None
                else store.box_grid(lines, float(voxel or 0)))
        record = store.save_density(archive(), session, journal, source, lines, grid, kept)
        described = file_json(record, identity=False)
    return jsonify({"file": described, "shape": list(grid.shape)}), 201
