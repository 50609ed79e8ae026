"""What ``nora``'s ROI and model actions do (segmentation.cli parses them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.model_check import sandboxed_copy
from nifti_archive import accounts
from nifti_archive.archive import Archive, get_project
from nifti_archive.cli.commands import acting_user, project_name
from nifti_archive.errors import Forbidden, InvalidValue, NotFound
from nifti_archive.ingest import conversion_queue
from nifti_archive.layout import split_psid
from nifti_archive.models import ConversionRequest, Executor, File, ModelState, Project, Role, SegmentationModel, User
from nifti_archive.query.selection import studies_by_name
from nifti_archive.waiting import DeadlinePassed, wait_until
from segmentation import model_registry, roi_actions, rois, seg_export
from segmentation.training import DEFAULT_EPOCHS
from segmentation.training import job as training_job
from segmentation.vocabulary import ConsensusMethod, Operation

POLL_SECONDS = 1.0


def _ids(text: str | None, what: str) -> list[int]:
    try:
        ids = [int(part) for part in (text or "").split(",") if part.strip()]
    except ValueError:
        raise InvalidValue(f"--{what} takes file ids separated by commas, not {text!r}") from None
    if not ids:
        raise InvalidValue(f"give --{what}")
    return ids


def _study_id(archive: Archive, project: Project, psid: str | None) -> int:
    subject, study = split_psid(psid or "")
    if not subject or not study:
        raise InvalidValue("name the study as SUBJECT#STUDY")
    with archive.sessions() as session:
        rows = session.execute(studies_by_name(project.id, subject, study)).all()
    if len(rows) != 1:
        raise NotFound(f"{psid} names {len(rows)} studies of project {project.name!r}; it must name one")
    return int(rows[0][0])


def _project(archive: Archive, request: Any) -> Project:
    with archive.sessions() as session:
        return get_project(session, project_name(request))


def _show(saved: rois.SavedRoi, out: IO[str]) -> None:
    roi = saved.roi
    out.write(f"saved ROI {roi.file_id}: {roi.label!r} by {roi.author}, version {roi.version}, {roi.file.path}\n")
    if roi.seg_instance_uid:
        out.write(f"DICOM SEG {roi.seg_instance_uid} (series {roi.seg_series_uid}) stored in Orthanc\n")
    if saved.seg_message:
        out.write(saved.seg_message + "\n")


def do_rois(archive: Archive, request: Any, out: IO[str]) -> None:
    project = _project(archive, request)
    study_id = _study_id(archive, project, request.args.rois)
    with archive.sessions() as session:
        found = rois.live_rois(session, study_id)
        wanted = select(File.id, File.path).where(File.id.in_([r.reference_file_id for r in found]))
        references = dict(session.execute(wanted).tuples().all())
        for roi in found:
            out.write(f"{roi.file_id}\t{roi.label}\t{roi.author}\tv{roi.version}\t{roi.origin.value}\t"
                      f"{references.get(roi.reference_file_id or 0, '-')}\t{roi.file.path}\n")


def do_roi_upload(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    if args.reference is None or not args.label:
        raise InvalidValue("--roi_upload needs --reference (the image's file id) and --label")
    project = _project(archive, request)
    with archive.sessions() as session:
        reference = session.get(File, args.reference)
        study_id = reference.study_id if reference else -1
    saved = roi_actions.upload_mask(archive, project, study_id, args.reference, Path(args.roi_upload), args.label,
                                    args.colour or "", acting_user(), seg_export.publisher(archive))
    _show(saved, out)


def do_roi_op(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    roi_text, operation = args.roi_op
    if not roi_text.isdigit():
        raise InvalidValue(f"--roi_op takes an ROI id first, not {roi_text!r}")
    saved = roi_actions.operate(
        archive, _project(archive, request), int(roi_text), Operation.named(operation), acting_user(), seg_export.publisher(archive),
        other_id=args.other, iterations=args.iterations or 1, min_voxels=args.min_voxels, label=args.label or "",
    )
    _show(saved, out)


def do_roi_stats(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    rows = roi_actions.statistics_rows(archive, _project(archive, request), _ids(args.images, "images"), _ids(args.roi_ids, "roi_ids"))
    roi_actions.write_statistics_csv(rows, out)


def do_roi_agreement(archive: Archive, request: Any, out: IO[str]) -> None:
    project = _project(archive, request)
    report = roi_actions.agreement_report(archive, project, _study_id(archive, project, request.args.study), request.args.roi_agreement)
    out.write(json.dumps(report, indent=2) + "\n")


def do_roi_consensus(archive: Archive, request: Any, out: IO[str]) -> None:
    project = _project(archive, request)
    method = ConsensusMethod.named(request.args.method or "majority")
    saved = roi_actions.consensus(archive, project, _study_id(archive, project, request.args.study), request.args.roi_consensus,
                                  method, acting_user(), seg_export.publisher(archive))
    _show(saved, out)


def do_roi_to_seg(archive: Archive, request: Any, out: IO[str]) -> None:
    saved = roi_actions.export_again(archive, _project(archive, request), request.args.roi_to_seg, acting_user(),
                                     seg_export.publisher(archive))
    _show(saved, out)


def do_roi_send(archive: Archive, request: Any, out: IO[str]) -> None:
    if not request.args.to_pacs:
        raise InvalidValue("--roi_send needs --to_pacs PEER")
    project = _project(archive, request)
    with archive.sessions() as session:
        roi = roi_actions.project_roi(session, project, request.args.roi_send)
    seg_export.send(archive, roi, request.args.to_pacs)
    out.write(f"sent DICOM SEG {roi.seg_instance_uid} to {request.args.to_pacs}\n")


def do_roi_from_seg(archive: Archive, request: Any, out: IO[str]) -> None:
    uid = request.args.roi_from_seg
    with archive.unit_of_work() as (session, _journal):
        wanted = select(ConversionRequest.orthanc_series_id).where(ConversionRequest.series_instance_uid == uid)
        series = sorted(set(session.scalars(wanted)))
        if not series:
            raise NotFound(f"no series {uid} has reached the archive's queue (send it to Orthanc first)")
        count = conversion_queue.reconvert(session, series)
    out.write(f"queued {count} request(s): the SEG's segments become ROIs once its source series is in the archive\n")


def _role(session: Session, project: Project) -> Role | None:
    """The acting user's role on the project: None for the installation's operator (no archive
    account of that name, as with --launch); an account without a role may not manage models."""
    user = session.scalar(select(User).where(User.username == acting_user()))
    if user is None:
        return None
    role = accounts.role_on(session, user, project)
    if role is None:
        raise Forbidden(f"{user.username} has no role in project {project.name!r}")
    return role


def _dice(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _describe(model: SegmentationModel) -> str:
    return f"model {model.name} v{model.version} ({model.label!r})"


def do_models(archive: Archive, request: Any, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name(request))
        training_job.settle(session, project)
        for model in model_registry.list_models(session, project):
            out.write(f"{model.name}\tv{model.version}\t{model.label}\t{model.kind.value}\t{model.state.value}\t"
                      f"val dice {_dice(model.val_dice)}\tbaseline {_dice(model.baseline_dice)}\t"
                      f"{'published' if model.published else 'unpublished'}\t{model.reason}\n")


def _wait_for_training(archive: Archive, project: str, model_id: int, seconds: int) -> SegmentationModel:
    def ended() -> SegmentationModel | None:
        with archive.unit_of_work() as (session, _journal):
            training_job.settle(session, get_project(session, project))
            model = session.get_one(SegmentationModel, model_id)
            return None if model.state is ModelState.TRAINING else model

    try:
        return wait_until(ended, seconds, "the training to end", interval=POLL_SECONDS)
    except DeadlinePassed as exc:
        raise InvalidValue(f"{exc}; it goes on: see nora --jobs and nora --models") from exc


def do_model_train(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    with archive.sessions() as session:
        role = _role(session, get_project(session, project_name(request)))
    submitted = training_job.submit(archive, project_name(request), args.model_train, args.epochs or DEFAULT_EPOCHS,
                                    args.name, Executor(args.executor), acting_user(), role)
    out.write(f"training {_describe(submitted.model)} on {submitted.cases} ROIs: run {submitted.run_id} of launch "
              f"{submitted.launch_id} on {submitted.executor.value} (its log: nora --jobs, or Gridstats)\n")
    if args.wait is None:
        return
    model = _wait_for_training(archive, project_name(request), submitted.model.id, args.wait)
    if model.state is not ModelState.READY:
        raise InvalidValue(f"{_describe(model)} failed: {model.reason}")
    out.write(f"{_describe(model)} is ready: validation dice {_dice(model.val_dice)}, baseline {_dice(model.baseline_dice)} "
              f"({model.train_count} training, {model.val_count} validation ROIs, {model.epochs} epochs)\n")


def do_model_register(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    if not args.label:
        raise InvalidValue("--model_register needs --label (the ROI label the model segments)")
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name(request))
        model_registry.check_may_manage(_role(session, project), project, "registering a model")
        source = Path(args.model_register)
        if not source.is_file():
            raise NotFound(f"no file {source}")
        with sandboxed_copy(archive.settings, archive.layout.project_dir(project.name), source) as (copy, wrap):
            model = model_registry.register_model(
                session, archive.settings, project, args.name or model_registry.default_name(args.label),
                args.label, copy, acting_user(), wrap,
            )
    # After the commit: a file that does not load is recorded as a failed version all the same.
    if model.state is not ModelState.READY:
        raise InvalidValue(f"{_describe(model)} does not load, recorded as failed and never offered: {model.reason}")
    out.write(f"registered {_describe(model)}: ready (nora --model_publish {model.name}:{model.version} offers it)\n")


def _name_and_version(text: str) -> tuple[str, int | None]:
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise InvalidValue(f"--model_publish takes NAME or NAME:VERSION, not {text!r}")
    return name, int(version) if version else None


def do_model_publish(archive: Archive, request: Any, out: IO[str]) -> None:
    name, version = _name_and_version(request.args.model_publish)
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name(request))
        model_registry.check_may_manage(_role(session, project), project, "publishing a model")
        model = model_registry.publish_model(session, project, name, version)
    out.write(f"{_describe(model)} is offered to the users of project {project.name} (no other version of {model.name} is)\n")


COMMANDS = {
    "rois": do_rois, "roi_upload": do_roi_upload, "roi_op": do_roi_op, "roi_stats": do_roi_stats,
    "roi_agreement": do_roi_agreement, "roi_consensus": do_roi_consensus, "roi_to_seg": do_roi_to_seg,
    "roi_send": do_roi_send, "roi_from_seg": do_roi_from_seg,
    "models": do_models, "model_train": do_model_train, "model_register": do_model_register, "model_publish": do_model_publish,
}
