"""REST API v1 for a project's held-back conversions: the reasons, and a project admin's release or discard."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from nifti_archive.errors import InvalidValue
from nifti_archive.ingest import quarantine
from nifti_archive.models import ConversionRequest, Project, Role, Study, Subject
from portal.auth import archive, current_user, db, project_role

blueprint = Blueprint("api_conversions", __name__, url_prefix="/api/v1")


def _json(request_row: ConversionRequest, places: dict[int, tuple[str, str]]) -> dict[str, Any]:
    subject, study = places.get(request_row.study_id or 0, ("", ""))
    return {
        "id": request_row.id, "state": request_row.state.value, "reason": request_row.message,
        "series_instance_uid": request_row.series_instance_uid, "instances": request_row.instance_count,
        "study_id": request_row.study_id, "subject": subject, "study": study, "series_folder": request_row.series_folder,
        "updated_at": request_row.updated_at.isoformat(),
    }


@blueprint.route("/projects/<project>/conversions")
@project_role(Role.VIEWER)
def held(project: str) -> Any:
    """The project's quarantined and failed series, newest first, with why (``study_id`` narrows to one study)."""
    rows = quarantine.held_in_project(db(), g.project)
    wanted = request.args.get("study_id")
    if wanted is not None:
        if not wanted.isdigit():
            raise InvalidValue(f"study_id must be a number, not {wanted!r}")
        rows = [r for r in rows if r.study_id == int(wanted)]
    study_ids = {r.study_id for r in rows if r.study_id}
    places = {
        study_id: (patient_id, name)
        for study_id, patient_id, name in db().execute(
            select(Study.id, Subject.patient_id, Study.study_id).join(Subject, Subject.id == Study.subject_id)
            .where(Study.id.in_(study_ids))
        )
    } if study_ids else {}
    return jsonify({"conversions": [_json(r, places) for r in rows]})


def _reason() -> str:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        raise InvalidValue('send JSON {"reason": "why"}: it is kept with the files and in the audit log')
    return str(body["reason"])


def _username() -> str:
    user = current_user()
    return user.username if user else ""


@blueprint.route("/projects/<project>/conversions/<int:request_id>/release", methods=["POST"])
@project_role(Role.ADMIN)
def release(project: str, request_id: int) -> Any:
    """Publish a quarantined series anyway: who and why go to the audit log and the files' provenance."""
    reason = _reason()
    with archive().unit_of_work() as (work, journal):
        decision = quarantine.release(work, journal, archive(), work.get_one(Project, g.project.id), request_id, _username(), reason)
    return jsonify({"id": decision.request_id, "state": decision.state.value, "files": decision.files})


@blueprint.route("/projects/<project>/conversions/<int:request_id>/discard", methods=["POST"])
@project_role(Role.ADMIN)
def discard(project: str, request_id: int) -> Any:
    """Throw a quarantined conversion away; the originals stay in Orthanc and a retry converts them again."""
    reason = _reason()
    with archive().unit_of_work() as (work, _journal):
        decision = quarantine.discard(work, archive(), work.get_one(Project, g.project.id), request_id, _username(), reason)
    quarantine.remove_discarded(archive(), g.project.name, decision.request_id)
    return jsonify({"id": decision.request_id, "state": decision.state.value, "files": decision.files})
