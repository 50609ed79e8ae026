"""REST API v1 for readings: forms, configurations, a reader's slots, results, CSV and agreement.

Project admins configure and see every result. Assigned readers read: a reading they are not
assigned to does not exist for them (404), and what they receive names no study, subject or date
the reading blinds. The work is ``nifti_archive.readings``'s.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from sqlalchemy.orm import Session

from nifti_archive.errors import Forbidden, InvalidValue, NotFound
from nifti_archive.models import Reading, ReadingFormVersion, ReadingPhase, ReadingState, Role, User, as_utc
from nifti_archive.readings import results, service
from nifti_archive.readings.config import check_form_name, config_document, parse_config
from nifti_archive.readings.forms import form_document
from portal.access import may_see_identity
from portal.api.archive import send_study_file
from portal.auth import archive, current_user, db, project_role

blueprint = Blueprint("api_readings", __name__, url_prefix="/api/v1/projects/<project>")


def _user() -> User:
    user = current_user()
    assert user is not None, "project_role lets only logged-in users through"
    return user


def _is_admin() -> bool:
    return bool(g.role is Role.ADMIN)


def _phase(text: str) -> ReadingPhase:
    try:
        return ReadingPhase(text)
    except ValueError:
        raise NotFound(f"no phase {text!r}: a reading has a training and a serious phase") from None


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    return body


def _version_json(version: ReadingFormVersion) -> dict[str, Any]:
    return {"version": version.version, "saved_at": as_utc(version.saved_at).isoformat(), "saved_by": version.saved_by}


# -- forms -------------------------------------------------------------------------------------


@blueprint.route("/reading-forms")
@project_role(Role.READER)
def forms(project: str) -> Any:
    """The project's reading forms, each with its newest version."""
    listed = []
    for form in service.list_forms(db(), g.project):
        newest = service.form_version(db(), form)
        listed.append({"name": form.name, "title": service.parsed(newest).title, **_version_json(newest)})
    return jsonify({"forms": listed})


@blueprint.route("/reading-forms/<name>")
@project_role(Role.READER)
def form(project: str, name: str) -> Any:
    """A form's document (the newest, or ``?version=N``) and its versions."""
    found = service.find_form(db(), g.project, check_form_name(name))
    version = request.args.get("version", "")
    if version and not version.isdigit():
        raise InvalidValue("version must be a version number")
    shown = service.form_version(db(), found, int(version) if version else None)
    return jsonify({
        "name": found.name, "version": shown.version, "form": form_document(service.parsed(shown)),
        "versions": [_version_json(v) for v in service.form_versions(db(), found)],
    })


@blueprint.route("/reading-forms/<name>", methods=["PUT"])
@project_role(Role.ADMIN)
def save_form(project: str, name: str) -> Any:
    """Save a form document; a changed one becomes a new version (results keep theirs)."""
    document = request.get_json(silent=True)
    with archive().unit_of_work() as (work, _journal):
        saved, changed = service.save_form(work, g.project, name, document, _user().username)
        return jsonify({"name": name, "version": saved.version, "changed": changed})


# -- configuration -----------------------------------------------------------------------------


def _summary(session: Session, reading: Reading, user: User) -> dict[str, Any]:
    assigned = any(row.user_id == user.id for row in reading.readers)
    progress: dict[str, Any] = {"training": None, "serious": {"done": 0, "total": 0}}
    if assigned and reading.state is not ReadingState.DRAFT:
        where = service.position(session, reading, service.reader_of(session, reading, user))
        progress = {
            phase.value: {"done": p.done, "total": p.total} if p else None for phase, p in where.progress.items()
        }
    return {
        "id": reading.id, "name": reading.name, "state": reading.state.value, "form": reading.form.name,
        "instructions": reading.instructions, "instructions_url": reading.instructions_url,
        "can_configure": _is_admin(), "assigned": assigned, "progress": progress,
        "allow_restart_training": reading.allow_restart_training, "allow_restart_serious": reading.allow_restart_serious,
    }


@blueprint.route("/readings")
@project_role(Role.READER)
def readings(project: str) -> Any:
    """Readings: all of them for admins, the ones assigned to the caller for others; with progress."""
    user = _user()
    listed = service.readings_of(db(), g.project, user, _is_admin())
    return jsonify({"readings": [_summary(db(), reading, user) for reading in listed]})


def _config_json(session: Session, reading: Reading) -> dict[str, Any]:
    counts = service.case_counts(session, reading)
    return {
        **config_document(service.reading_config(session, reading)), "id": reading.id, "state": reading.state.value,
        "cases_chosen": {phase.value: count for phase, count in counts.items()},
    }


@blueprint.route("/readings", methods=["POST"])
@project_role(Role.ADMIN)
def create_reading(project: str) -> Any:
    """Create a reading (a draft until it starts): its form, cases, rules and readers."""
    config = parse_config(request.get_json(silent=True))
    with archive().unit_of_work() as (work, _journal):
        reading = service.save_reading(work, g.project, config, _user().username, None)
        return jsonify({"id": reading.id}), 201


@blueprint.route("/readings/<int:reading_id>")
@project_role(Role.ADMIN)
def reading_configuration(project: str, reading_id: int) -> Any:
    """A reading's configuration, its state and how many cases it chose."""
    return jsonify(_config_json(db(), service.get_reading(db(), g.project, reading_id)))


@blueprint.route("/readings/<int:reading_id>", methods=["PUT"])
@project_role(Role.ADMIN)
def change_reading(project: str, reading_id: int) -> Any:
    """Change a reading; once started, what decides its slots (cases, order, stages...) stays."""
    config = parse_config(request.get_json(silent=True))
    with archive().unit_of_work() as (work, _journal):
        reading = service.save_reading(work, g.project, config, _user().username, service.get_reading(work, g.project, reading_id))
        return jsonify(_config_json(work, reading))


@blueprint.route("/readings/<int:reading_id>/start", methods=["POST"])
@project_role(Role.ADMIN)
def start(project: str, reading_id: int) -> Any:
    """Choose the cases by the reading's filters and open it to its readers."""
    with archive().unit_of_work() as (work, _journal):
        reading = service.get_reading(work, g.project, reading_id)
        counts = service.start_reading(work, g.project, reading)
        return jsonify({"state": reading.state.value, "cases": {phase.value: n for phase, n in counts.items()}})


# -- reading -----------------------------------------------------------------------------------


def _assigned(session: Session, reading_id: int) -> tuple[Reading, service.Reader]:
    reading = service.get_reading(session, g.project, reading_id)
    return reading, service.reader_of(session, reading, _user())


@blueprint.route("/readings/<int:reading_id>/progress")
@project_role(Role.READER)
def progress(project: str, reading_id: int) -> Any:
    """Where the caller stands: the phase to read now and its first unfinished slot."""
    reading, reader = _assigned(db(), reading_id)
    where = service.position(db(), reading, reader)
    return jsonify({
        "name": reading.name, "state": reading.state.value,
        "phase": where.phase.value if where.phase else "done", "position": where.index,
        **{phase.value: {"done": p.done, "total": p.total} if p else None for phase, p in where.progress.items()},
        "instructions": reading.instructions, "instructions_url": reading.instructions_url,
    })


def _study_json(session: Session, reading: Reading, opened: service.OpenSlot) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if reading.blind_identity and reading.blind_dates and reading.blind_description:
        return shown
    subject, study = service.study_of(session, opened.study_id)
    if not reading.blind_identity:
        shown |= {"subject": subject.patient_id, "study": study.study_id}
    if not reading.blind_dates:
        shown["date"] = study.study_date.isoformat() if study.study_date else None
    if not reading.blind_description:
        shown["description"] = study.description
    return shown


def _slot_json(session: Session, reading: Reading, version: service.FormVersion, phase: ReadingPhase, opened: service.OpenSlot) -> Any:
    layout, layers = service.case_layers(session, reading, opened.study_id, opened.slot.stage)
    result = opened.result
    body: dict[str, Any] = {
        "phase": phase.value, "index": opened.index, "total": opened.total, "done": opened.done,
        "stage": {"index": opened.slot.stage, "name": service.stages_of(reading)[opened.slot.stage].name},
        "repetition": opened.slot.repetition, "label": f"case {opened.index + 1}",
        "form_version": version.version, "form": version.document,
        "answers": service.answers_of(result), "completed": bool(result and result.completed),
        "active_ms": result.active_ms if result else 0,
        "viewer": {"layout": layout, "layers": [
            {
                "url": url_for("api_readings.slot_file", project=g.project.name, reading_id=reading.id, phase=phase.value,
                               index=opened.index, layer=number),
                "name": f"image {number + 1}" if reading.blind_description else layer.path,
                "viewport": layer.viewport, "overlay": layer.overlay, "colormap": layer.colormap, "window": layer.window,
            }
            for number, layer in enumerate(layers)
        ]},
        "study": _study_json(session, reading, opened),
    }
    if not reading.blind_own_earlier:
        # The case's id would tell a repetition from a first reading: named only where the reader may know.
        body["case"] = opened.slot.case
        body["earlier"] = service.earlier_answers(opened)
    others = service.others_answers(opened)
    if others is not None:
        body["others"] = others
    return body


@blueprint.route("/readings/<int:reading_id>/slots/<phase>/<int:index>")
@project_role(Role.READER)
def slot(project: str, reading_id: int, phase: str, index: int) -> Any:
    """A slot of the caller's sequence: the case's form, answers so far, and what the viewer opens."""
    found = service.assigned(db(), g.project, reading_id, _user())
    opened = service.open_slot(db(), found.reading, found.reader, _phase(phase), index, with_others=True)
    return jsonify(_slot_json(db(), found.reading, found.version, _phase(phase), opened))


@blueprint.route("/readings/<int:reading_id>/slots/<phase>/<int:index>", methods=["PUT"])
@project_role(Role.READER)
def save_slot(project: str, reading_id: int, phase: str, index: int) -> Any:
    """Keep the answers to a slot: an autosave (``complete`` false) or the finished case."""
    body = _body()
    with archive().unit_of_work() as (work, _journal):
        saved = service.save_slot(
            work, service.assigned(work, g.project, reading_id, _user()), _phase(phase), index, body.get("answers", {}),
            body.get("active_ms", 0), body.get("complete", False),
        )
        following = index + 1 if index + 1 < saved.total else None
        return jsonify({"saved": True, "completed": saved.completed, "next": following, "done": saved.done})


@blueprint.route("/readings/<int:reading_id>/slots/<phase>/<int:index>/files/<int:layer>")
@project_role(Role.READER)
def slot_file(project: str, reading_id: int, phase: str, index: int, layer: int) -> Any:
    """An image the slot's viewer opens, under a name that tells nothing of the study."""
    reading, reader = _assigned(db(), reading_id)
    opened = service.open_slot(db(), reading, reader, _phase(phase), index)
    _layout, layers = service.case_layers(db(), reading, opened.study_id, opened.slot.stage)
    if not 0 <= layer < len(layers):
        raise NotFound(f"this case shows {len(layers)} images")
    subject, study = service.study_of(db(), opened.study_id)
    path = layers[layer].path
    suffix = ".nii.gz" if path.endswith(".gz") else ".nii"
    return send_study_file(
        archive().layout.study_dir(g.project.name, subject.patient_id, study.study_id), path, f"image-{layer + 1}{suffix}",
        blinded=True,
    )


@blueprint.route("/readings/<int:reading_id>/restart", methods=["POST"])
@project_role(Role.READER)
def restart(project: str, reading_id: int) -> Any:
    """Delete the caller's results of a phase and read it again, where the reading allows it."""
    body = _body()
    if body.get("confirm") is not True:
        raise InvalidValue('restarting deletes your results of that phase: send "confirm": true')
    phase = body.get("phase")
    if phase not in ("training", "serious"):
        raise InvalidValue("phase must be training or serious")
    with archive().unit_of_work() as (work, _journal):
        reading, reader = _assigned(work, reading_id)
        return jsonify({"deleted": service.restart(work, reading, reader, ReadingPhase(phase))})


# -- results -----------------------------------------------------------------------------------


def _visible_rows(reading_id: int) -> tuple[Reading, list[results.ResultRow]]:
    """Admins see every result; a reader their own, or everyone's where the reading shows them."""
    if _is_admin():
        reading = service.get_reading(db(), g.project, reading_id)
        return reading, results.result_rows(db(), reading)
    reading, reader = _assigned(db(), reading_id)
    if reading.blind_own_earlier:
        raise Forbidden("this reading blinds your earlier answers, so its results are for its administrators")
    everyone = not reading.blind_other_readers or reader.owner is None
    return reading, results.result_rows(db(), reading, None if everyone else reader.owner)


def _with_identity() -> bool:
    return _is_admin() and may_see_identity(g.project, g.role)


@blueprint.route("/readings/<int:reading_id>/results")
@project_role(Role.READER)
def reading_results(project: str, reading_id: int) -> Any:
    """The results table: one row per case, reader, stage and repetition."""
    reading, rows = _visible_rows(reading_id)
    items = results.answer_columns(db(), reading)
    return jsonify({
        "items": [{"name": item.name, "kind": item.kind.value, "label": item.label} for item in items],
        "rows": [row.as_json(_with_identity()) for row in rows],
    })


@blueprint.route("/readings/<int:reading_id>/results.csv")
@project_role(Role.READER)
def results_csv(project: str, reading_id: int) -> Any:
    """The results table as CSV, one column per form item."""
    reading, rows = _visible_rows(reading_id)
    text = results.results_csv(results.answer_columns(db(), reading), rows, _with_identity())
    return Response(text, mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="reading-{reading.id}-results.csv"',
    })


@blueprint.route("/readings/<int:reading_id>/agreement")
@project_role(Role.ADMIN)
def reading_agreement(project: str, reading_id: int) -> Any:
    """Agreement between readers and within each reader, per form item."""
    return jsonify(results.agreement(db(), service.get_reading(db(), g.project, reading_id)))
