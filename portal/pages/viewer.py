"""Pages: the NiiVue viewer, NORA's URL calls and scripted import at the site root, NiiVue itself."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import or_, select

from nifti_archive.catalog.viewer_documents import CT_WINDOWS, LAYOUTS
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import File, Project, Role, Study, Subject, User, ViewerPreset
from nifti_archive.query.selection import studies_by_name
from portal.api.archive import identity_for_call, run_import, uploaded_archive
from portal.auth import authorize, csrf_exempt, current_user, db, log_in, project_role, public
from portal.pages.account import ask_to_switch

blueprint = Blueprint("viewer", __name__)
NIIVUE = "@niivue/niivue/dist/index.js"
# NiiVue 0.69.0 recomputes the base image's gradient volume (a blur and a Sobel pass over every
# voxel) whenever it refreshes the base image: on each image opened, overlay added or window
# changed. Only its lit render shaders (illumination, gradient opacity) sample that volume; the
# multiplanar slices and the plain 3D render never do, and without a GPU (WebGL in software) the
# two passes take seconds of CPU. The served copy computes it when a shader that samples it is
# in use, and refreshes when gradient opacity turns such a shader on. Its TCK reader records where
# each streamline ends but not where the first begins, while the tract mesh reads that list as
# every streamline's start followed by the last one's end (as its TRK reader writes it), so a TCK
# lost its first streamline: the served copy records the first start too. Each edit names text that
# must occur exactly once in the installed NiiVue: another version fails loudly here.
NIIVUE_EDITS = (
    ("      this.volumeTexture = outTexture;\n      this.gradientTexture = gradientGL({",
     "      this.volumeTexture = outTexture;\n      if (this.renderShader === this.renderGradientShader"
     " || this.renderShader === this.renderGradientValuesShader) this.gradientTexture = gradientGL({"),
    ("    this.renderShader.use(this.gl);\n    if (this.gradientTextureAmount > 0) {\n      this.refreshLayers(this.volumes[0], 0);",
     "    this.renderShader.use(this.gl);\n    if (this.gradientTextureAmount > 0 || gradientOpacity > 0) {\n"
     "      this.refreshLayers(this.volumes[0], 0);"),
    ("    offsetPt0[0] = 0;\n    while (pos + 12 < len4) {",
     "    offsetPt0[noffset++] = 0;\n    while (pos + 12 < len4) {"),
)
# The keys of NORA's URL call; user and token authenticate, the rest choose what to show.
CALL_KEYS = {"pid", "sid", "selmode", "preset", "user", "token", "cmd"}


def _parse_call(text: str) -> dict[str, Any]:
    try:
        call = json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise InvalidValue('call must be JSON, e.g. {"pid": "P01", "sid": "S1", "preset": "t1"}') from None
    if not isinstance(call, dict) or set(call) - CALL_KEYS:
        raise InvalidValue(f"call is a JSON object with the keys {', '.join(sorted(CALL_KEYS))}")
    return call


@blueprint.route("/", methods=["GET"])
@public
def root() -> Any:
    """NORA's URL call: ``/?project=P&call={"pid":..,"sid":..,"preset":..,"user":..,"token":..}``.

    Answers with a redirect to a URL without the token. The token opens a session bound to it
    (revoking the token ends it); a session of another user is replaced only once its owner
    confirms, on a page of ours.
    """
    call = _parse_call(request.args.get("call", ""))
    project_name = request.args.get("project")
    arguments: dict[str, Any] = {k: str(call[k]) for k in ("pid", "sid", "preset") if call.get(k)}
    target = url_for("viewer.viewer", project=project_name, **arguments) if project_name else url_for("projects.index")
    if call.get("user") or call.get("token"):
        identity = identity_for_call(call)
        user = current_user()
        if user is not None and user.id != identity.user_id:
            return redirect(ask_to_switch(identity, target))
        if user is None:
            log_in(db().get_one(User, identity.user_id), identity.token_id)
    elif current_user() is None:
        return redirect(url_for("account.login", next=request.full_path))
    return redirect(target)


@blueprint.route("/p/<project>/viewer")
@project_role(Role.VIEWER)
def viewer(project: str) -> Any:
    study_pk = request.args.get("study", type=int)
    pid = request.args.get("pid")
    if pid and study_pk is None:
        found = db().execute(studies_by_name(g.project.id, pid, request.args.get("sid") or "*")).first()
        if found is None:
            raise NotFound(f"no study {pid}{'#' + request.args['sid'] if request.args.get('sid') else ''} in {project}")
        study_pk = found[0]
    presets = db().scalars(select(ViewerPreset.name).where(ViewerPreset.project_id == g.project.id).order_by(ViewerPreset.name))
    link, preset = request.args.get("link", ""), request.args.get("preset", "")
    return render_template(
        "viewer.html", study=study_pk, link=link, preset=preset, presets=list(presets), layouts=LAYOUTS,
        ct_windows=CT_WINDOWS, can_edit=g.role.allows(Role.EDITOR),
        volume=first_volume(g.project.id, study_pk) if study_pk is not None and not link and not preset else None,
    )


def first_volume(project_id: int, study_pk: int) -> int | None:
    """The file the viewer opens first in a study without a preset (its first NIfTI by path): named in
    the page, the browser fetches it while the page's code loads."""
    return db().scalar(
        select(File.id).join(Study, Study.id == File.study_id).join(Subject, Subject.id == Study.subject_id)
        .where(File.study_id == study_pk, Subject.project_id == project_id, File.trash_id.is_(None),
               or_(File.path.like("%.nii"), File.path.like("%.nii.gz")))
        .order_by(File.path).limit(1)
    )


@functools.cache
def _edited_niivue(path: Path, _stamp: tuple[int, int]) -> tuple[bytes, str]:
    """The installed NiiVue bundle with NIIVUE_EDITS applied, and its digest (an ETag)."""
    text = path.read_text(encoding="utf-8")
    for old, new in NIIVUE_EDITS:
        if text.count(old) != 1:
            raise RuntimeError(f"{path} is not the NiiVue the viewer was written for: {old!r} occurs {text.count(old)} times")
        text = text.replace(old, new)
    body = text.encode("utf-8")
    return body, hashlib.sha256(body).hexdigest()


def edited_niivue(node_modules: Path) -> tuple[bytes, str]:
    path = node_modules / NIIVUE
    status = path.stat()
    return _edited_niivue(path, (status.st_size, status.st_mtime_ns))


@blueprint.route("/vendor/niivue.js")
@public
def niivue() -> Any:
    body, digest = edited_niivue(current_app.extensions["northanc.frontend"])
    response = Response(body, mimetype="text/javascript")
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    response.set_etag(digest)
    return response.make_conditional(request)


@blueprint.route("/", methods=["POST"])
@public
@csrf_exempt
def nora_call() -> Any:
    """NORA's scripted upload: ``?project=P``, form ``call={"cmd":"import","user":..,"token":..}`` and ``thefile``."""
    call = _parse_call(request.form.get("call", ""))
    if call.get("cmd") != "import":
        raise InvalidValue('the only call taken here is {"cmd": "import", ...}')
    user = db().get_one(User, identity_for_call(call).user_id)
    project_name = request.args.get("project", "")
    record = authorize(user, db().scalar(select(Project).where(Project.name == project_name)), Role.EDITOR)
    return jsonify(run_import(record.name, uploaded_archive())), 202
