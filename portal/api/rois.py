"""REST API v1 for ROIs and markers: list, upload a mask, delete, operations, statistics,
agreement and consensus, DICOM SEG export and sending, marker sets.

Viewers read; editors draw and save (their own versions); project admins also delete others'
versions. The work is ``segmentation``'s: the same functions ``nora`` calls.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.errors import InvalidValue
from nifti_archive.models import File, MarkerSet, Project, Role, Study, Subject
from portal.api import assistant
from portal.api.archive import file_project, project_study
from portal.auth import archive, current_user, db, project_role
from portal.ids import is_id
from segmentation import markers, roi_actions, rois, seg_export
from segmentation.vocabulary import ConsensusMethod, Operation

blueprint = Blueprint("api_rois", __name__, url_prefix="/api/v1")
MASK_FIELD = "mask"
GZIP_MAGIC = b"\x1f\x8b"


def _username() -> str:
    user = current_user()
    assert user is not None, "project_role lets only logged-in users through"
    return user.username


def _may_delete_others() -> bool:
    user = current_user()
    return g.role is Role.ADMIN or bool(user and user.is_site_admin)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    return body


def _ids(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(is_id(v) for v in value):
        raise InvalidValue(f"{what} must be a non-empty list of ids")
    return [int(v) for v in value]


def _optional_int(body: dict[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 10_000_000):
        raise InvalidValue(f"{name} must be a non-negative whole number")
    return value


def _described(session: Session, roi_list: list[Any]) -> list[dict[str, Any]]:
    reference_ids = {roi.reference_file_id for roi in roi_list if roi.reference_file_id}
    paths = dict(session.execute(select(File.id, File.path).where(File.id.in_(reference_ids))).tuples().all())
    return [rois.describe(roi, paths.get(roi.reference_file_id)) for roi in roi_list]


def _saved(saved: rois.SavedRoi) -> Any:
    [described] = _described(db(), [saved.roi])
    return jsonify({"roi": described, "seg_message": saved.seg_message}), 201


def marker_project(session: Session, kwargs: dict[str, Any]) -> Project | None:
    return session.scalar(
        select(Project)
        .join(Subject, Subject.project_id == Project.id)
        .join(Study, Study.subject_id == Subject.id)
        .join(MarkerSet, MarkerSet.study_id == Study.id)
        .where(MarkerSet.id == kwargs["set_id"], MarkerSet.trash_id.is_(None))
    )


@blueprint.route("/projects/<project>/studies/<int:study_id>/rois")
@project_role(Role.VIEWER)
def study_rois(project: str, study_id: int) -> Any:
    """The study's ROIs: every author's live version of every label."""
    project_study(study_id)
    return jsonify({"rois": _described(db(), rois.live_rois(db(), study_id))})


@blueprint.route("/projects/<project>/studies/<int:study_id>/rois", methods=["POST"])
@project_role(Role.EDITOR)
def upload_roi(project: str, study_id: int) -> Any:
    """Save a mask (multipart ``mask``: NIfTI on the grid of ``reference_file_id``) as your version of ``label``;
    ``assistant`` lists the segmentation assistant's proposals it holds (then its origin is algorithm)."""
    project_study(study_id)
    proposals = assistant.accepted(request.form.get("assistant", ""), db(), g.project)
    upload = request.files.get(MASK_FIELD)
    if upload is None:
        raise InvalidValue(f"send the mask as the multipart field {MASK_FIELD!r} (a NIfTI file)")
    reference = request.form.get("reference_file_id", "")
    # ASCII digits only ("²".isdigit() is true, int() refuses it) and an id the index can hold.
    if not (reference.isascii() and reference.isdigit() and is_id(int(reference))):
        raise InvalidValue("reference_file_id must name the image the mask was drawn on")
    spool = archive().settings.var_dir / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as scratch:
        staged = Path(scratch) / "mask.upload"
        upload.save(staged)
        # nibabel goes by the suffix; scripts name their files anyhow, so the content decides.
        with staged.open("rb") as head:
            suffix = ".nii.gz" if head.read(2) == GZIP_MAGIC else ".nii"
        staged = staged.rename(staged.with_name(f"mask{suffix}"))
        saved = roi_actions.upload_mask(
            archive(), g.project, study_id, int(reference), staged, request.form.get("label", ""),
            request.form.get("colour", ""), _username(), seg_export.publisher(archive()),
            proposals,
        )
    return _saved(saved)


@blueprint.route("/rois/<int:file_id>")
@project_role(Role.VIEWER, via=file_project)
def roi_info(file_id: int) -> Any:
    """One ROI version: label, colour, author, reference, SEG UIDs (the mask is ``/files/{id}/content``)."""
    [described] = _described(db(), [roi_actions.project_roi(db(), g.project, file_id)])
    return jsonify({"roi": described})


@blueprint.route("/rois/<int:file_id>", methods=["DELETE"])
@project_role(Role.EDITOR, via=file_project)
def delete_roi(file_id: int) -> Any:
    """Move an ROI version to the trash: your own, or anyone's as a project admin."""
    with archive().unit_of_work() as (session, journal):
        roi = roi_actions.project_roi(session, g.project, file_id)
        trash_id = rois.delete_roi(archive(), session, journal, roi, _username(), _may_delete_others())
    return jsonify({"trash_id": trash_id})


@blueprint.route("/rois/<int:file_id>/operations", methods=["POST"])
@project_role(Role.EDITOR, via=file_project)
def roi_operation(file_id: int) -> Any:
    """Erode, dilate, open, close, union, intersection, difference or remove_salt; the result is your new version."""
    body = _json_body()
    operation = Operation.named(str(body.get("operation", "")))
    other = body.get("other")
    if other is not None and not is_id(other):
        raise InvalidValue("other must be the id of a second ROI")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise InvalidValue("label must be text")
    iterations = _optional_int(body, "iterations", 1)
    saved = roi_actions.operate(
        archive(), g.project, file_id, operation, _username(), seg_export.publisher(archive()),
        other_id=int(other) if other is not None else None, iterations=1 if iterations is None else iterations,
        min_voxels=_optional_int(body, "min_voxels", None), label=label,
    )
    return _saved(saved)


@blueprint.route("/projects/<project>/studies/<int:study_id>/roi-statistics", methods=["POST"])
@project_role(Role.VIEWER)
def roi_statistics(project: str, study_id: int) -> Any:
    """Median, quartiles, mean, std, volume (and area) of every image × ROI pair; ``?format=csv`` for a download."""
    project_study(study_id)
    body = _json_body()
    rows = roi_actions.statistics_rows(archive(), g.project, _ids(body.get("images"), "images"), _ids(body.get("rois"), "rois"))
    if request.args.get("format") == "csv":
        stream = io.StringIO()
        roi_actions.write_statistics_csv(rows, stream)
        return Response(stream.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="roi-statistics-study-{study_id}.csv"'})
    return jsonify({"rows": rows})


@blueprint.route("/projects/<project>/studies/<int:study_id>/rois/agreement")
@project_role(Role.VIEWER)
def roi_agreement(project: str, study_id: int) -> Any:
    """Dice, 95th-percentile Hausdorff distance (mm) and volume difference between the versions of ``label``."""
    project_study(study_id)
    return jsonify(roi_actions.agreement_report(archive(), g.project, study_id, request.args.get("label", "")))


@blueprint.route("/projects/<project>/studies/<int:study_id>/rois/consensus", methods=["POST"])
@project_role(Role.EDITOR)
def roi_consensus(project: str, study_id: int) -> Any:
    """A consensus ROI of every version of ``label`` (``method``: majority or staple), saved as your version."""
    project_study(study_id)
    body = _json_body()
    saved = roi_actions.consensus(
        archive(), g.project, study_id, str(body.get("label", "")),
        ConsensusMethod.named(str(body.get("method", "majority"))), _username(),
        seg_export.publisher(archive()),
    )
    return _saved(saved)


@blueprint.route("/rois/<int:file_id>/seg", methods=["POST"])
@project_role(Role.EDITOR, via=file_project)
def roi_to_seg(file_id: int) -> Any:
    """Write the ROI as a DICOM SEG again (a new instance of its SEG series), stored in Orthanc."""
    saved = roi_actions.export_again(archive(), g.project, file_id, _username(), seg_export.publisher(archive()))
    return _saved(saved)


@blueprint.route("/rois/<int:file_id>/send", methods=["POST"])
@project_role(Role.EDITOR, via=file_project)
def roi_send(file_id: int) -> Any:
    """Send the ROI's DICOM SEG to a PACS peer (C-STORE from Orthanc)."""
    peer = str(_json_body().get("peer", ""))
    roi = roi_actions.project_roi(db(), g.project, file_id)
    seg_export.send(archive(), roi, peer)
    return jsonify({"sent": roi.seg_instance_uid, "peer": peer})


@blueprint.route("/projects/<project>/studies/<int:study_id>/markers")
@project_role(Role.VIEWER)
def marker_sets(project: str, study_id: int) -> Any:
    """The study's marker sets, points in world mm (RAS+)."""
    project_study(study_id)
    return jsonify({"marker_sets": [markers.describe(s) for s in markers.live_sets(db(), study_id)]})


@blueprint.route("/projects/<project>/studies/<int:study_id>/markers", methods=["POST"])
@project_role(Role.EDITOR)
def create_marker_set(project: str, study_id: int) -> Any:
    """A new marker set: ``name`` and ``points`` [{x, y, z, name}]."""
    body = _json_body()
    name = body.get("name", "")
    if not isinstance(name, str):
        raise InvalidValue("name must be text")
    with archive().unit_of_work() as (session, _journal):
        _subject, study = project_study(study_id)
        created = markers.create(session, session.merge(study), name, markers.parse_points(body.get("points", [])), _username())
        described = markers.describe(created)
    return jsonify({"marker_set": described}), 201


@blueprint.route("/markers/<int:set_id>", methods=["PUT"])
@project_role(Role.EDITOR, via=marker_project)
def update_marker_set(set_id: int) -> Any:
    """Rename a marker set or replace its points: your own, or anyone's as a project admin."""
    body = _json_body()
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidValue("name must be text")
    points = markers.parse_points(body["points"]) if "points" in body else None
    with archive().unit_of_work() as (session, _journal):
        updated = markers.update(session, markers.live_set(session, set_id), name, points, _username(), _may_delete_others())
        described = markers.describe(updated)
    return jsonify({"marker_set": described})


@blueprint.route("/markers/<int:set_id>", methods=["DELETE"])
@project_role(Role.EDITOR, via=marker_project)
def delete_marker_set(set_id: int) -> Any:
    """Move a marker set to the trash: your own, or anyone's as a project admin."""
    with archive().unit_of_work() as (session, _journal):
        marker_set = markers.live_set(session, set_id)
        trash_id = markers.delete(session, session.merge(g.project), marker_set, _username(), _may_delete_others())
    return jsonify({"trash_id": trash_id})
