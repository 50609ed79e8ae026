"""REST API v1 on processing: job definitions, saved batches, validation, launches, runs, logs, cancel, rerun."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from jobs import library, monitor, runs, service
from jobs.argument_types import PREFIX
from jobs.catalogue import CATALOGUE, Category, JobDefinition
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


def _definition(definition: JobDefinition) -> dict[str, Any]:
    return {
        "name": definition.name, "category": definition.category.value, "title": definition.title, "help": definition.help,
        "script": definition.script,
        "args": [{"name": a.name, "type": a.type.value, "help": a.help, "required": a.required, "default": a.default,
                  "options": list(a.options)} for a in definition.args],
    }


@blueprint.route("/job-definitions")
@logged_in
def job_definitions() -> Any:
    """The batchtool's menu: each job's category, help and typed arguments (generic ones take a script)."""
    return jsonify({
        "jobs": [_definition(definition) for definition in CATALOGUE.values()],
        "categories": [category.value for category in Category],
        "arg_types": {prefix: arg_type.value for arg_type, prefix in PREFIX.items()},
        "generic": sorted(GENERIC_JOBS),
        "predefined": sorted(PREDEFINED_JOBS),
        "documentation": library.__doc__,
        "executors": [executor.value for executor in Executor],
    })


@blueprint.route("/projects/<project>/batches")
@project_role(Role.VIEWER)
def batches(project: str) -> Any:
    """The project's saved batches; ``autoexec`` is the one run on every newly converted study."""
    saved = runs.saved_batches(db(), g.project)
    autoexec = g.project.autoexec_batch
    return jsonify({
        "batches": [{"name": s.name, "updated_at": s.updated_at.isoformat(), "autoexec": s.name == autoexec} for s in saved],
        "autoexec": autoexec,
    })


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
    _batch_name(name)
    document = _json_body()
    with archive().unit_of_work() as (work, _journal):
        runs.save_batch(work, work.get_one(Project, g.project.id), name, document)
    return jsonify({"saved": name})


def _batch_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise InvalidValue("a batch name has 1 to 128 characters")
    return name


@blueprint.route("/projects/<project>/batches/<name>", methods=["DELETE"])
@project_role(Role.EDITOR)
@refused_to_job_tokens
def delete_batch(project: str, name: str) -> Any:
    """Delete a saved batch (the launches made from it keep their copy)."""
    with archive().unit_of_work() as (work, _journal):
        runs.delete_batch(work, work.get_one(Project, g.project.id), name)
    return jsonify({"deleted": name})


@blueprint.route("/projects/<project>/batches/<name>/rename", methods=["POST"])
@project_role(Role.EDITOR)
@refused_to_job_tokens
def rename_batch(project: str, name: str) -> Any:
    """Rename a saved batch: ``{"to": new name}``."""
    new_name = _batch_name(_json_body().get("to"))
    with archive().unit_of_work() as (work, _journal):
        runs.rename_batch(work, work.get_one(Project, g.project.id), name, new_name)
    return jsonify({"renamed": name, "to": new_name})


def _selection(body: dict[str, Any]) -> tuple[str, list[int] | None]:
    """The studies a launch or a validation is for: ``studies`` (ids) or ``filter``."""
    studies = body.get("studies")
    if studies is not None and (not isinstance(studies, list) or not all(isinstance(s, int) for s in studies) or not studies):
        raise InvalidValue("studies must be a non-empty list of study ids")
    if studies is None and not isinstance(body.get("filter"), str):
        raise InvalidValue("choose the studies: studies (ids) or filter (a file-search filter, '' for all)")
    return body.get("filter") or "", studies


@blueprint.route("/projects/<project>/batch-validations", methods=["POST"])
@project_role(Role.VIEWER)
def validate_batch(project: str) -> Any:
    """What a launch of ``batch`` on the chosen studies would resolve, launching nothing: the spec's
    problems, then per study (or subject) each argument's file or why it has none."""
    body = _json_body()
    expression, studies = _selection(body)
    result = service.validate(archive(), g.project.name, body.get("batch"), expression, studies)
    targets = [
        {"subject": t.subject, "study": t.study, "ok": t.ok,
         "jobs": [{"index": j.index, "job": j.job,
                   "args": [{"name": a.name, "type": a.type.value, "study": a.study, "path": a.path, "error": a.error} for a in j.args]}
                  for j in t.jobs]}
        for t in result.targets
    ]
    failing = sum(1 for t in result.targets if not t.ok)
    return jsonify({
        "valid": result.valid, "level": result.level.value,
        "problems": [{"field": p.field, "message": str(p)} for p in result.problems],
        "targets": targets, "summary": {"targets": len(targets), "ok": len(targets) - failing, "failing": failing},
    })


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
    expression, studies = _selection(body)
    user = current_user()
    assert user is not None
    record, run_ids = service.launch(
        archive(), g.project.name, document, service.parse_executor(str(body.get("executor", Executor.LOCAL.value))), user.username,
        expression, None, studies, g.role,
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
