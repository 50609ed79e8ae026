"""REST API v1 on processing: job definitions, saved batches, launches, runs, logs, cancel, rerun."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from jobs import library, monitor, runs, service
from jobs.spec import GENERIC_JOBS, PREDEFINED_JOBS
from nifti_archive.errors import InvalidValue
from nifti_archive.models import Executor, Project, Role
from portal.auth import archive, current_user, db, logged_in, project_role, refused_to_job_tokens

blueprint = Blueprint("api_jobs", __name__, url_prefix="/api/v1")


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    return body


@blueprint.route("/job-definitions")
@logged_in
def job_definitions() -> Any:
    """The jobs a batch may use: generic ones take a script, predefined ones their arguments."""
    return jsonify({
        "generic": sorted(GENERIC_JOBS),
        "predefined": sorted(PREDEFINED_JOBS),
        "documentation": library.__doc__,
        "executors": [executor.value for executor in Executor],
    })


@blueprint.route("/projects/<project>/batches")
@project_role(Role.VIEWER)
def batches(project: str) -> Any:
    """The project's saved batches."""
    saved = runs.saved_batches(db(), g.project)
    return jsonify({"batches": [{"name": s.name, "updated_at": s.updated_at.isoformat()} for s in saved]})


@blueprint.route("/projects/<project>/batches/<name>")
@project_role(Role.VIEWER)
def batch(project: str, name: str) -> Any:
    """One saved batch's specification."""
    return jsonify(runs.saved_batch(db(), g.project, name))


@blueprint.route("/projects/<project>/batches/<name>", methods=["PUT"])
@project_role(Role.EDITOR)
@refused_to_job_tokens
def save_batch(project: str, name: str) -> Any:
    """Save (or replace) a batch after validating it."""
    if not name.strip() or len(name) > 128:
        raise InvalidValue("a batch name has 1 to 128 characters")
    document = _json_body()
    with archive().unit_of_work() as (work, _journal):
        runs.save_batch(work, work.get_one(Project, g.project.id), name, document)
    return jsonify({"saved": name})


@blueprint.route("/projects/<project>/launches", methods=["POST"])
@project_role(Role.EDITOR)
@refused_to_job_tokens
def launch(project: str) -> Any:
    """Launch ``batch`` (a specification) or ``saved`` (a name) on ``studies`` (ids) or ``filter``."""
    body = _json_body()
    if ("batch" in body) == ("saved" in body):
        raise InvalidValue("give either batch (a specification) or saved (the name of a saved batch)")
    document = body["batch"] if "batch" in body else runs.saved_batch(db(), g.project, str(body["saved"]))
    if not isinstance(document, dict):
        raise InvalidValue("batch must be a JSON object")
    studies = body.get("studies")
    if studies is not None and (not isinstance(studies, list) or not all(isinstance(s, int) for s in studies) or not studies):
        raise InvalidValue("studies must be a non-empty list of study ids")
    if studies is None and not isinstance(body.get("filter"), str):
        raise InvalidValue("choose the studies: studies (ids) or filter (a file-search filter, '' for all)")
    user = current_user()
    assert user is not None
    record, run_ids = service.launch(
        archive(), g.project.name, document, service.parse_executor(str(body.get("executor", Executor.LOCAL.value))), user.username,
        body.get("filter") or "", None, studies, g.role,
    )
    return jsonify({"launch": record.id, "name": record.name, "executor": record.executor.value, "runs": run_ids}), 201


@blueprint.route("/projects/<project>/runs")
@project_role(Role.VIEWER)
def run_list(project: str) -> Any:
    """The project's runs: ``q`` searches subject, study, batch and message; ``state``, ``sort``, paging."""
    query = monitor.parse_run_query(request.args)
    service.sync(archive())
    total, rows = monitor.run_table(db(), g.project, query)
    return jsonify({"total": total, "runs": rows})


@blueprint.route("/projects/<project>/runs/<int:run_id>/log")
@project_role(Role.VIEWER)
def run_log(project: str, run_id: int) -> Any:
    """The end of a run's log."""
    return jsonify({"run": run_id, "log": monitor.run_log(db(), g.project, run_id)})


@blueprint.route("/projects/<project>/runs/cancel", methods=["POST"])
@project_role(Role.EDITOR)
def cancel(project: str) -> Any:
    """Cancel queued or running runs: ``{"runs": [ids]}``."""
    run_ids = _json_body().get("runs")
    if not isinstance(run_ids, list) or not run_ids or not all(isinstance(r, int) for r in run_ids):
        raise InvalidValue("runs must be a non-empty list of run ids")
    return jsonify({"cancelled": service.cancel(archive(), g.project.name, run_ids)})


@blueprint.route("/projects/<project>/runs/rerun", methods=["POST"])
@project_role(Role.EDITOR)
@refused_to_job_tokens
def rerun(project: str) -> Any:
    """Queue every errored run of the project again."""
    return jsonify({"queued": service.rerun_errored(archive(), g.project.name, g.role)})
