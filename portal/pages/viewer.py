"""Pages: the NiiVue viewer, NORA's URL calls and scripted import at the site root, NiiVue itself."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, send_from_directory, url_for
from sqlalchemy import select

from nifti_archive.catalog.viewer_documents import CT_WINDOWS, LAYOUTS
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import Project, Role, User, ViewerPreset
from nifti_archive.query.selection import studies_by_name
from portal.api.archive import identity_for_call, run_import, uploaded_archive
from portal.auth import authorize, csrf_exempt, current_user, db, log_in, project_role, public
from portal.pages.account import ask_to_switch

blueprint = Blueprint("viewer", __name__)
NIIVUE = "@niivue/niivue/dist"
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
    return render_template(
        "viewer.html", study=study_pk, link=request.args.get("link", ""), preset=request.args.get("preset", ""),
        presets=list(presets), layouts=LAYOUTS, ct_windows=CT_WINDOWS, can_edit=g.role.allows(Role.EDITOR),
    )


@blueprint.route("/vendor/niivue.js")
@public
def niivue() -> Any:
    folder = current_app.extensions["northanc.frontend"] / NIIVUE
    return send_from_directory(folder, "index.js", mimetype="text/javascript", max_age=3600)


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
