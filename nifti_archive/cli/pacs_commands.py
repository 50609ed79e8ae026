"""``nora`` actions on PACS peers: --find (C-FIND) and --pull_study (C-MOVE or C-GET into a project).

Registered with ``nora`` through the ``northanc.nora`` entry point like any extension; the peers
themselves are administered with ``nora --admin pacs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from nifti_archive.archive import Archive, get_project
from nifti_archive.cli.commands import acting_user, project_name
from nifti_archive.cli.conversion_commands import wait_for_series
from nifti_archive.errors import InvalidValue
from nifti_archive.models import PullCohort
from nifti_archive.orthanc_api import orthanc_for
from nifti_archive.pacs import peers, pull_queue
from nifti_archive.pacs.cohort import parse_cohort
from nifti_archive.pacs.query import RETURN_KEYS, parse_query

ACTIONS = ("find", "pull_study", "pull", "pull_resume", "pulls")
WAITING_ACTIONS = ("pull_study",)
QUERY_FIELDS = ("level", "patient_name", "patient_id", "study_date", "accession_number", "study_description")


def add_arguments(actions: Any, parser: argparse.ArgumentParser) -> None:
    actions.add_argument("--find", metavar="PACS", help="query a PACS (C-FIND) with --patient_name, --study_date, ...")
    actions.add_argument("--pull_study", nargs="+", metavar="PACS_OR_UID",
                         help="PACS STUDY_UID...: retrieve studies from a PACS into the project (-p)")
    actions.add_argument("--pull", metavar="CSV", help="pull a cohort (AccessionNumber, or PatientID and StudyDate) into -p")
    actions.add_argument("--pull_resume", type=int, metavar="ID", help="carry on with a pull a stopped process left")
    actions.add_argument("--pulls", action="store_true", help="list the project's pulls and their progress")
    parser.add_argument("--pacs", metavar="NAME", help="with --pull: the PACS (default: the only one)")
    parser.add_argument("--report", metavar="PATH", help="with --pull or --pull_resume: where the report CSV goes "
                        "(default CSV.report.csv beside the cohort, <var>/pulls/ID.report.csv on resuming)")
    parser.add_argument("--level", choices=["patient", "study", "series"], help="with --find: what to list (default study)")
    parser.add_argument("--patient_name", metavar="LAST^FIRST", help="with --find: * and ? match any text / one character")
    parser.add_argument("--patient_id", metavar="ID", help="with --find")
    parser.add_argument("--study_date", metavar="DATE", help="with --find: YYYY-MM-DD, A..B, A.., ..B or *")
    parser.add_argument("--accession_number", metavar="ACC", help="with --find")
    parser.add_argument("--study_description", metavar="TEXT", help="with --find")
    parser.add_argument("--study_instance_uid", metavar="UID", help="with --find --level series: the study")
    parser.add_argument("--modality", metavar="MR", help="with --find or --pull_study: only this modality")
    parser.add_argument("--series_description", metavar="PATTERN", help="with --pull_study: only matching series (* and _)")
    parser.add_argument("--everything", action="store_true", help="with --find: allow a query that narrows nothing")


def check(args: argparse.Namespace, action: str) -> None:
    given = [name for name in (*QUERY_FIELDS, "study_instance_uid", "everything") if getattr(args, name, None)]
    if given and action != "find":
        raise InvalidValue(f"--{given[0]} goes with --find")
    if args.series_description is not None and action != "pull_study":
        raise InvalidValue("--series_description goes with --pull_study")
    if args.modality is not None and action not in ACTIONS:
        raise InvalidValue("--modality goes with --find or --pull_study")
    if args.pacs is not None and action != "pull":
        raise InvalidValue("--pacs goes with --pull")
    if args.report is not None and action not in ("pull", "pull_resume"):
        raise InvalidValue("--report goes with --pull or --pull_resume")
    if action == "pull_study" and len(args.pull_study) < 2:
        raise InvalidValue("--pull_study takes a PACS and one or more StudyInstanceUIDs")


def do_find(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    values = {name: getattr(args, name) for name in (*QUERY_FIELDS, "study_instance_uid", "modality") if getattr(args, name)}
    query = parse_query(values, confirm_broad=args.everything)
    with archive.sessions() as session:
        answers = peers.find(orthanc_for(archive.settings), peers.get_peer(session, args.find), query)
    keys = RETURN_KEYS[query.level]
    out.write("\t".join(keys) + "\n")
    for answer in sorted(answers, key=lambda a: [a.get(k, "") for k in keys]):
        out.write("\t".join(answer.get(key, "") for key in keys) + "\n")
    out.write(f"{len(answers)} answer(s)\n")


def do_pull_study(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    peer_name, *study_uids = args.pull_study
    choice = peers.SeriesChoice(args.modality or "", args.series_description or "")
    orthanc = orthanc_for(archive.settings)
    pulled: set[str] = set()
    for study_uid in study_uids:
        series = peers.pull_study(archive, orthanc, peer_name, project_name(request), study_uid, choice)
        out.write(f"{study_uid}: {len(series)} series retrieved from {peer_name}\n")
        pulled.update(series)
    if args.wait is not None:
        wait_for_series(archive, pulled, args.wait, out)


def _only_peer(archive: Archive) -> str:
    with archive.sessions() as session:
        known = peers.list_peers(session)
    if len(known) != 1:
        raise InvalidValue(f"name the PACS with --pacs ({', '.join(p.name for p in known) or 'none is set up'})")
    return known[0].name


def _run_pull(archive: Archive, cohort_id: int, report_path: Path, out: IO[str]) -> None:
    def show(counts: dict[str, int]) -> None:
        out.write(" ".join(f"{state} {count}" for state, count in counts.items()) + "\n")
        out.flush()

    counts = pull_queue.run_and_report(archive, cohort_id, report_path, show)
    out.write(f"pull {cohort_id}: {counts['done']} done, {counts['failed']} failed; report {report_path}\n")


def do_pull(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    source = Path(args.pull)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"cannot read the cohort {source}: {exc}") from exc
    rows = parse_cohort(text)
    peer = args.pacs or _only_peer(archive)
    with archive.unit_of_work() as (session, _journal):
        cohort = pull_queue.create_cohort(session, project_name(request), peer, str(source.resolve()), acting_user(), rows)
        cohort_id = cohort.id
    out.write(f"pull {cohort_id}: {len(rows)} studies from {peer} into {project_name(request)}\n")
    _run_pull(archive, cohort_id, Path(args.report or source.with_suffix(".report.csv")), out)


def do_pull_resume(archive: Archive, request: Any, out: IO[str]) -> None:
    with archive.sessions() as session:
        cohort_id = pull_queue.get_cohort(session, request.args.pull_resume).id
    default = pull_queue.report_path(archive.settings, cohort_id)
    _run_pull(archive, cohort_id, Path(request.args.report) if request.args.report else default, out)


def do_pulls(archive: Archive, request: Any, out: IO[str]) -> None:
    with archive.sessions() as session:
        project = get_project(session, project_name(request))
        for cohort in session.scalars(select(PullCohort).where(PullCohort.project_id == project.id).order_by(PullCohort.id)):
            counts = pull_queue.progress(session, cohort.id)
            summary = " ".join(f"{state} {count}" for state, count in counts.items())
            out.write(f"{cohort.id}\t{cohort.created_at:%Y-%m-%d %H:%M}\t{cohort.created_by}\t{summary}\t{cohort.source}\n")


COMMANDS = {"find": do_find, "pull_study": do_pull_study, "pull": do_pull, "pull_resume": do_pull_resume, "pulls": do_pulls}
