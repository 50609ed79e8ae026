"""REST API v1 for the viewer: CT windows, autoloader presets, a study's autoload, shared links."""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import Blueprint, g, jsonify, request, url_for
from sqlalchemy import select

from nifti_archive.catalog.viewer_documents import CT_WINDOWS, check_preset_name, parse_preset, parse_state, resolve_preset
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import File, FileKind, Role, SharedLink, Study, Subject, ViewerPreset
from portal.api.archive import project_study
from portal.auth import archive, current_user, db, logged_in, project_role

blueprint = Blueprint("api_viewer", __name__, url_prefix="/api/v1")


def _preset(name: str) -> ViewerPreset:
    preset = db().scalar(select(ViewerPreset).where(ViewerPreset.project_id == g.project.id, ViewerPreset.name == name))
    if preset is None:
        raise NotFound(f"no viewer preset {name!r} in project {g.project.name!r}")
    return preset


@blueprint.route("/ct-windows")
@logged_in
def ct_windows() -> Any:
    """The CT windows behind the viewer's keys 1-6 (presets name them by key): width and level in Hounsfield units."""
    return jsonify({"ct_windows": [
        {"key": key, "name": name, "width": width, "level": level} for key, (name, width, level) in CT_WINDOWS.items()
    ]})


@blueprint.route("/projects/<project>/presets")
@project_role(Role.VIEWER)
def presets(project: str) -> Any:
    """The project's autoloader presets."""
    rows = db().scalars(select(ViewerPreset).where(ViewerPreset.project_id == g.project.id).order_by(ViewerPreset.name))
    return jsonify({"presets": [{"name": p.name, "preset": json.loads(p.spec)} for p in rows]})


@blueprint.route("/projects/<project>/presets/<name>", methods=["PUT"])
@project_role(Role.EDITOR)
def save_preset(project: str, name: str) -> Any:
    """Save an autoloader preset: layout, and per viewport a file pattern, overlays and windowing."""
    check_preset_name(name)
    document = request.get_json(silent=True)
    parse_preset(document)
    with archive().unit_of_work() as (work, _journal):
        preset = work.scalar(select(ViewerPreset).where(ViewerPreset.project_id == g.project.id, ViewerPreset.name == name))
        if preset is None:
            preset = ViewerPreset(project_id=g.project.id, name=name, spec="")
            work.add(preset)
        preset.spec = json.dumps(document)
    return jsonify({"saved": name})


@blueprint.route("/projects/<project>/studies/<int:study_id>/autoload")
@project_role(Role.VIEWER)
def autoload(project: str, study_id: int) -> Any:
    """What a preset (``preset``) opens for one study: per viewport the matching file and overlays."""
    _subject, study = project_study(study_id)
    preset = parse_preset(json.loads(_preset(request.args.get("preset", "")).spec))
    files: dict[str, tuple[int, FileKind]] = {
        path: (file_id, kind)
        for path, file_id, kind in db().execute(
            select(File.path, File.id, File.kind).where(File.study_id == study.id, File.trash_id.is_(None)))
    }
    state = resolve_preset(preset, list(files))
    for viewport in state["viewports"]:
        for layer in [viewport["base"], *viewport["overlays"]]:
            if layer:
                file_id, kind = files[layer["path"]]
                # The kind tells the viewer how to open the file: a volume, a mesh or a tractogram.
                layer.update(file_id=file_id, kind=kind.value)
    return jsonify(state)


def _check_files_in_project(file_ids: set[int]) -> dict[int, dict[str, Any]]:
    rows = db().execute(
        select(File.id, File.path, Study.id, Study.study_id, Subject.patient_id, File.kind)
        .join(Study, Study.id == File.study_id).join(Subject, Subject.id == Study.subject_id)
        .where(File.id.in_(file_ids), File.trash_id.is_(None), Subject.project_id == g.project.id)
    ).all()
    found = {
        row[0]: {"path": row[1], "study_id": row[2], "study": row[3], "subject": row[4], "kind": row[5].value}
        for row in rows
    }
    missing = file_ids - set(found)
    if missing:
        raise NotFound(f"no file with id {', '.join(map(str, sorted(missing)))} in this project")
    return found


@blueprint.route("/projects/<project>/links", methods=["POST"])
@project_role(Role.VIEWER)
def create_link(project: str) -> Any:
    """Save the viewer's state and return a link to it; opening the link needs a role on the project."""
    state = parse_state(request.get_json(silent=True))
    _check_files_in_project(state.file_ids())
    user = current_user()
    key = secrets.token_urlsafe(12)
    with archive().unit_of_work() as (work, _journal):
        work.add(SharedLink(key=key, project_id=g.project.id, created_by=user.id if user else None, state=json.dumps(state.as_json())))
    url = url_for("viewer.viewer", project=g.project.name, link=key, _external=True)
    return jsonify({"key": key, "url": url}), 201


@blueprint.route("/projects/<project>/links/<key>")
@project_role(Role.VIEWER)
def link(project: str, key: str) -> Any:
    """A saved viewer state, its files named (a file deleted since is reported, not silently dropped)."""
    record = db().get(SharedLink, key)
    if record is None or record.project_id != g.project.id:
        raise NotFound("no such link in this project")
    state = json.loads(record.state)
    ids = {layer["file_id"] for viewport in state["viewports"] for layer in viewport}
    try:
        state["files"] = {str(k): v for k, v in _check_files_in_project(ids).items()}
    except NotFound as exc:
        raise InvalidValue(f"this link shows files that were deleted since: {exc}") from None
    return jsonify(state)
