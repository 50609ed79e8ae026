"""``nora`` actions for batches: --validate, --launch, --launchfile, --jobs, --cancel, --rerun.

Registered with ``nora`` through the ``northanc.nora`` entry point (see
nifti_archive/cli/extensions.py).
"""

from __future__ import annotations

import argparse
import json
from typing import IO, Any

from sqlalchemy import select

from jobs import runs, service
from nifti_archive.archive import Archive, get_project
from nifti_archive.cli.commands import acting_user, project_name, read_file_argument
from nifti_archive.errors import InvalidValue
from nifti_archive.models import Executor, JobRun, JobState, Study, Subject
from nifti_archive.waiting import DeadlinePassed, wait_until

ACTIONS = (
    "validate", "launch", "launchfile", "launch_saved", "launch_autoexec", "jobs", "cancel", "rerun", "dismiss", "savebatch", "batches",
)
WAITING_ACTIONS = ("validate", "launch", "launchfile", "launch_saved", "launch_autoexec", "rerun")
LAUNCHES = ("launch", "launchfile", "launch_saved")
FILTER_ACTIONS = (*LAUNCHES, "validate")
POLL_SECONDS = 0.3
DAY_SECONDS = 24 * 3600


def add_arguments(actions: Any, parser: argparse.ArgumentParser) -> None:
    actions.add_argument(
        "--validate", metavar="JSON",
        help="show, per selected study, the file each argument of a batch would get or why not; launches nothing",
    )
    actions.add_argument("--launch", metavar="JSON", help="launch a batch given as JSON on the selected studies")
    actions.add_argument("--launchfile", metavar="FILE", help="the same, with the JSON in a file")
    actions.add_argument("--jobs", action="store_true", help="list the project's runs and their states")
    actions.add_argument("--cancel", nargs="*", type=int, metavar="RUN", help="cancel queued or running runs (all, or these)")
    actions.add_argument("--rerun", action="store_true", help="queue the project's errored runs again")
    actions.add_argument("--dismiss", nargs="*", type=int, metavar="RUN", help="put errored runs away (all, or these)")
    actions.add_argument("--savebatch", nargs=2, metavar=("NAME", "JSON"), help="save a batch in the project")
    actions.add_argument("--batches", action="store_true", help="list the project's saved batches")
    actions.add_argument("--launch_saved", metavar="NAME", help="launch a saved batch")
    actions.add_argument(
        "--launch_autoexec", metavar="PSID", help="run the project's autoexec batch on PATIENT or PATIENT#STUDY"
    )
    parser.add_argument("--executor", choices=[e.value for e in Executor], default=Executor.LOCAL.value,
                        help="with --launch: where runs execute")
    parser.add_argument("--throwerror", action="store_true", help="with --wait: exit 2 when a run ended in error")
    parser.add_argument(
        "--handle_job_result", action="store_true",
        help="with a launch: wait for the runs (--wait, default a day), then print DONE and their results as JSON",
    )


def check(args: argparse.Namespace, action: str) -> None:
    if args.throwerror and args.wait is None and not args.handle_job_result:
        raise InvalidValue("--throwerror goes with --wait or --handle_job_result")
    if args.handle_job_result and action not in (*LAUNCHES, "launch_autoexec"):
        raise InvalidValue("--handle_job_result goes with a launch")


def _parse_json(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"the batch is not valid JSON: {exc}") from exc
    return dict(document) if isinstance(document, dict) else {"jobs": document}


def _document(session: Any, project: Any, request: Any) -> dict[str, Any]:
    if request.action == "launch_saved":
        return runs.saved_batch(session, project, request.args.launch_saved)
    if request.action == "launch_autoexec":
        if not project.autoexec_batch:
            raise InvalidValue(f"project {project.name!r} has no autoexec batch (nora --admin project set --autoexec)")
        return runs.saved_batch(session, project, project.autoexec_batch)
    text = request.args.launch
    if request.action == "launchfile":
        text = read_file_argument(request.args.launchfile, "--launchfile")
    return _parse_json(text)


def _wait(archive: Archive, run_ids: list[int], seconds: int, throw: bool, out: IO[str]) -> None:
    def ended() -> tuple[dict[int, JobState]] | None:
        service.sync(archive)
        with archive.sessions() as session:
            rows = session.execute(select(JobRun.id, JobRun.state).where(JobRun.id.in_(run_ids)))
            states = {run_id: state for run_id, state in rows}
        # In a tuple, which is true even when there are no runs at all.
        return None if any(state in runs.ACTIVE for state in states.values()) else (states,)

    try:
        (states,) = wait_until(ended, seconds, "runs to finish", interval=POLL_SECONDS)
    except DeadlinePassed as exc:
        raise InvalidValue(f"runs not finished after {seconds} s; see nora --jobs") from exc
    errors = sorted(run_id for run_id, state in states.items() if state is JobState.ERROR)
    out.write(f"{len(states) - len(errors)} run(s) done or cancelled, {len(errors)} in error\n")
    if errors and throw:
        raise InvalidValue(f"run(s) {', '.join(map(str, errors))} ended in error (see nora --jobs)")


def do_validate(archive: Archive, request: Any, out: IO[str]) -> None:
    """One line per target and argument (tab-separated: target, argument, study, path or error);
    exit 2 when the spec has problems or a target would fail."""
    result = service.validate(archive, project_name(request), _parse_json(request.args.validate), request.args.filter or "")
    for problem in result.problems:
        out.write(f"problem\t{problem}\n")
    for target in result.targets:
        psid = f"{target.subject}#{target.study}" if target.study else target.subject
        for job in target.jobs:
            for check in job.args:
                out.write(f"{psid}\tjobs[{job.index}].{check.name}\t{check.study or ''}\t{check.error or check.path}\n")
    failing = sum(1 for target in result.targets if not target.ok)
    out.write(f"{len(result.targets) - failing} of {len(result.targets)} target(s) resolve\n")
    if not result.valid:
        raise InvalidValue(f"the batch does not validate: {len(result.problems)} problem(s), {failing} target(s) failing")


def do_launch(archive: Archive, request: Any, out: IO[str]) -> None:
    with archive.sessions() as session:
        document = _document(session, get_project(session, project_name(request)), request)
    record, run_ids = service.launch(
        archive, project_name(request), document, Executor(request.args.executor),
        acting_user(), request.args.filter or "", request.args.launch_autoexec,
    )
    out.write(f"launched {record.name!r} as launch {record.id}: {len(run_ids)} run(s) on {record.executor.value}\n")
    if request.args.handle_job_result:
        _wait(archive, run_ids, request.args.wait or DAY_SECONDS, False, out)
        _report(archive, run_ids, request.args.throwerror, out)
    elif request.args.wait is not None:
        _wait(archive, run_ids, request.args.wait, request.args.throwerror, out)


def _report(archive: Archive, run_ids: list[int], throw: bool, out: IO[str]) -> None:
    """NORA's job result: a DONE line, then each run's state, message and log as JSON."""
    with archive.sessions() as session:
        results = [
            {"run": run.id, "state": run.state.value, "message": run.message, "log": run.log_path}
            for run in session.scalars(select(JobRun).where(JobRun.id.in_(run_ids)).order_by(JobRun.id))
        ]
    out.write("DONE\n" + json.dumps(results) + "\n")
    if throw and any(r["state"] == JobState.ERROR.value for r in results):
        raise InvalidValue("a run ended in error (see the results above)")


def do_jobs(archive: Archive, request: Any, out: IO[str]) -> None:
    service.sync(archive)
    with archive.sessions() as session:
        project = get_project(session, project_name(request))
        for run in runs.runs_of(session, project):
            subject = session.get_one(Subject, run.subject_id)
            study = session.get(Study, run.study_id) if run.study_id else None
            psid = f"{subject.patient_id}#{study.study_id}" if study else subject.patient_id
            out.write(f"{run.id}\t{run.launch_id}\t{psid}\t{run.state.value}\t{run.log_path}\t{run.message}\n")


def do_cancel(archive: Archive, request: Any, out: IO[str]) -> None:
    count = service.cancel(archive, project_name(request), request.args.cancel or None)
    out.write(f"cancelled {count} run(s)\n")


def do_rerun(archive: Archive, request: Any, out: IO[str]) -> None:
    run_ids = service.rerun_errored(archive, project_name(request))
    out.write(f"queued {len(run_ids)} errored run(s) again\n")
    if run_ids and request.args.wait is not None:
        _wait(archive, run_ids, request.args.wait, request.args.throwerror, out)


def do_dismiss(archive: Archive, request: Any, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, _journal):
        count = runs.dismiss(session, get_project(session, project_name(request)), request.args.dismiss or None)
    out.write(f"dismissed {count} errored run(s)\n")


def do_savebatch(archive: Archive, request: Any, out: IO[str]) -> None:
    name, text = request.args.savebatch
    with archive.unit_of_work() as (session, _journal):
        runs.save_batch(session, get_project(session, project_name(request)), name, _parse_json(text))
    out.write(f"saved batch {name!r}\n")


def do_batches(archive: Archive, request: Any, out: IO[str]) -> None:
    with archive.sessions() as session:
        for saved in runs.saved_batches(session, get_project(session, project_name(request))):
            out.write(f"{saved.name}\t{saved.spec}\n")


COMMANDS = {
    "validate": do_validate,
    "launch": do_launch,
    "launchfile": do_launch,
    "launch_saved": do_launch,
    "launch_autoexec": do_launch,
    "dismiss": do_dismiss,
    "savebatch": do_savebatch,
    "batches": do_batches,
    "jobs": do_jobs,
    "cancel": do_cancel,
    "rerun": do_rerun,
}
