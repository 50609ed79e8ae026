"""REST API v1 on PACS peers: administration (site admins), queries, reveal, pulls (project editors)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import select

from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import AuditEvent, PacsPeer, PullCohort, PullRow, RetrieveMethod, Role
from nifti_archive.orthanc_api import orthanc_for
from nifti_archive.pacs import peers, pull_queue
from nifti_archive.pacs.cohort import cohort_row, parse_cohort
from nifti_archive.pacs.query import parse_query
from nifti_archive.pacs.results import group_by_patient, page
from nifti_archive.query.paging import parse_paging
from portal.access import may_see_identity
from portal.auth import archive, current_user, db, logged_in, project_role, site_admin

blueprint = Blueprint("api_pacs", __name__, url_prefix="/api/v1")
QUERY_FIELDS = ("patient_name", "patient_id", "study_date", "modality", "accession_number", "study_description")
MAX_PATIENTS_PAGE = 200


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    return body


def _peer_json(peer: PacsPeer, full: bool) -> dict[str, Any]:
    return peers.peer_json(peer) if full else {"name": peer.name}


@blueprint.route("/pacs")
@logged_in
def peer_list() -> Any:
    """The PACS peers (names; their addresses and rights for site admins)."""
    user = current_user()
    return jsonify({"peers": [_peer_json(p, bool(user and user.is_site_admin)) for p in peers.list_peers(db())]})


def _flag(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidValue(f"{name} must be true or false")
    return value


def _save(name: str, body: dict[str, Any], replace: bool) -> Any:
    port = body.get("port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidValue("port must be a number")
    answer = peers.save_peer_registered(
        archive(), orthanc_for(archive().settings), name, str(body.get("aet", "")), str(body.get("host", "")), port,
        peers.parse_retrieve(str(body.get("retrieve", RetrieveMethod.MOVE.value))), replace=replace,
        allow_query=_flag(body, "allow_query"), allow_retrieve=_flag(body, "allow_retrieve"),
    )
    return jsonify(answer), 200 if replace else 201


@blueprint.route("/pacs", methods=["POST"])
@site_admin
def add_peer() -> Any:
    """Add a PACS: ``{"name", "aet", "host" (its IP address), "port", "retrieve": "move"|"get",
    "allow_query", "allow_retrieve"}`` (both false unless given); Orthanc learns it at once."""
    body = _body()
    return _save(str(body.get("name", "")), body, replace=False)


@blueprint.route("/pacs/<name>", methods=["PUT"])
@site_admin
def edit_peer(name: str) -> Any:
    """Change a PACS's AET, host, port, retrieve method, or what it may ask of Northanc
    (``allow_query``: C-FIND; ``allow_retrieve``: C-MOVE and C-GET; left as they were when not given)."""
    return _save(name, _body(), replace=True)


@blueprint.route("/pacs/<name>", methods=["DELETE"])
@site_admin
def remove_peer(name: str) -> Any:
    """Remove a PACS (and its modality in Orthanc)."""
    peers.remove_peer_registered(archive(), orthanc_for(archive().settings), name)
    return jsonify({"removed": name})


@blueprint.route("/pacs/<name>/echo", methods=["POST"])
@site_admin
def echo(name: str) -> Any:
    """C-ECHO: whether the PACS answers."""
    peers.echo(orthanc_for(archive().settings), peers.get_peer(db(), name))
    return jsonify({"echo": "ok", "peer": name})


@blueprint.route("/projects/<project>/pacs/<peer>/query", methods=["POST"])
@project_role(Role.EDITOR)
def query(project: str, peer: str) -> Any:
    """C-FIND at study level; the answers grouped by patient, identities as the caller's role may see them."""
    body = _body()
    values = {name: str(body[name]) for name in QUERY_FIELDS if body.get(name)}
    parsed = parse_query(values, confirm_broad=body.get("confirm") is True)
    answers = peers.find(orthanc_for(archive().settings), peers.get_peer(db(), peer), parsed)
    identities = may_see_identity(g.project, g.role)
    grouped = group_by_patient(answers, identities)
    offset, limit = parse_paging({k: str(v) for k, v in body.items() if k in ("offset", "limit")}, 50, MAX_PATIENTS_PAGE)
    return jsonify({"patients": page(grouped, offset, limit), "patient_count": len(grouped), "study_count": len(answers),
                    "offset": offset, "limit": limit, "identities": identities})


@blueprint.route("/projects/<project>/pacs/<peer>/studies/<study_uid>/series")
@project_role(Role.EDITOR)
def series(project: str, peer: str, study_uid: str) -> Any:
    """The series of one study on the PACS."""
    found = peers.study_series(orthanc_for(archive().settings), peers.get_peer(db(), peer), study_uid)
    keys = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "NumberOfSeriesRelatedInstances")
    return jsonify({"series": [{key: s.get(key, "") for key in keys} for s in found]})


@blueprint.route("/projects/<project>/pacs/<peer>/reveal", methods=["POST"])
@project_role(Role.EDITOR)
def reveal(project: str, peer: str) -> Any:
    """The real patient name and id of one study: an explicit act, written to the audit log."""
    study_uid = str(_body().get("study_instance_uid", ""))
    answers = peers.find(orthanc_for(archive().settings), peers.get_peer(db(), peer),
                        parse_query({"study_instance_uid": study_uid}))
    if not answers:
        raise NotFound(f"{peer} has no study {study_uid}")
    user = current_user()
    with archive().unit_of_work() as (work, _journal):
        work.add(AuditEvent(username=user.username if user else "", project_id=g.project.id, action="reveal-identity",
                            detail=json.dumps({"peer": peer, "study_instance_uid": study_uid})))
    return jsonify({"patient_name": answers[0].get("PatientName", ""), "patient_id": answers[0].get("PatientID", "")})


@blueprint.route("/projects/<project>/pulls", methods=["POST"])
@project_role(Role.EDITOR)
def start_pull(project: str) -> Any:
    """Pull studies into the project: JSON ``{"peer", "studies": [uids], "modality", "series_description"}``,
    or a cohort CSV as multipart ``cohort`` with a ``peer`` field. Runs in the background."""
    if request.files.get("cohort"):
        peer = request.form.get("peer", "")
        try:
            rows = parse_cohort(request.files["cohort"].read().decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise InvalidValue("the cohort is not a UTF-8 text file") from None
        source = pull_queue.uploaded_source(request.files["cohort"].filename)
    else:
        body = _body()
        peer, uids = str(body.get("peer", "")), body.get("studies")
        if not isinstance(uids, list) or not uids or not all(isinstance(u, str) for u in uids):
            raise InvalidValue("studies must be a non-empty list of StudyInstanceUIDs")
        choice = {"modality": str(body.get("modality", "")), "series_description": str(body.get("series_description", ""))}
        rows = [cohort_row(number, {"study_instance_uid": uid, **choice}) for number, uid in enumerate(uids, start=1)]
        source = pull_queue.portal_source(f"{len(uids)} studies chosen")
    user = current_user()
    with archive().unit_of_work() as (work, _journal):
        cohort = pull_queue.create_cohort(work, g.project.name, peer, source, user.username if user else "", rows)
        cohort_id = cohort.id
    pull_queue.start_background(archive().settings, cohort_id)
    return jsonify({"pull": cohort_id, "rows": len(rows)}), 202


def _cohort(cohort_id: int) -> PullCohort:
    cohort = db().get(PullCohort, cohort_id)
    if cohort is None or cohort.project_id != g.project.id:
        raise NotFound(f"no pull {cohort_id} in this project")
    return cohort


@blueprint.route("/projects/<project>/pulls")
@project_role(Role.VIEWER)
def pulls(project: str) -> Any:
    """The project's pulls with their progress."""
    cohorts = db().scalars(select(PullCohort).where(PullCohort.project_id == g.project.id).order_by(PullCohort.id.desc()))
    return jsonify({"pulls": [
        {"id": c.id, "source": c.source, "created_by": c.created_by, "created_at": c.created_at.isoformat(),
         "progress": pull_queue.progress(db(), c.id)}
        for c in cohorts
    ]})


@blueprint.route("/projects/<project>/pulls/<int:cohort_id>")
@project_role(Role.VIEWER)
def pull(project: str, cohort_id: int) -> Any:
    """One pull: every row's state, attempts and message."""
    _cohort(cohort_id)
    rows = db().scalars(select(PullRow).where(PullRow.cohort_id == cohort_id).order_by(PullRow.line))
    return jsonify({"id": cohort_id, "progress": pull_queue.progress(db(), cohort_id), "rows": [
        {"line": r.line, "accession_number": r.accession_number, "patient_id": r.patient_id, "study_date": r.study_date,
         "study_instance_uid": r.study_instance_uid, "state": r.state.value, "attempts": r.attempts,
         "series": r.series_count, "message": r.message}
        for r in rows
    ]})


@blueprint.route("/projects/<project>/pulls/<int:cohort_id>/report")
@project_role(Role.VIEWER)
def pull_report(project: str, cohort_id: int) -> Any:
    """The pull's report as CSV."""
    _cohort(cohort_id)
    return Response(pull_queue.report(db(), cohort_id), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=pull-{cohort_id}.report.csv"})

