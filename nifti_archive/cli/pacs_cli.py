"""``nora`` actions on PACS peers: --find (C-FIND) and --pull_study (C-MOVE or C-GET into a project).

Registered with ``nora`` through the ``northanc.nora`` entry point like any extension; the peers
themselves are administered with ``nora --admin pacs``.
"""

from __future__ import annotations

import argparse
from typing import IO, Any

from .. import pacs
from ..archive import Archive
from ..errors import InvalidValue
from ..orthanc_api import orthanc_for
from ..pacs_query import RETURN_KEYS, parse_query
from .commands import project_name
from .conversion_commands import wait_for_series

ACTIONS = ("find", "pull_study")
WAITING_ACTIONS = ("pull_study",)
QUERY_FIELDS = ("level", "patient_name", "patient_id", "study_date", "accession_number", "study_description")


def add_arguments(actions: Any, parser: argparse.ArgumentParser) -> None:
    actions.add_argument("--find", metavar="PACS", help="query a PACS (C-FIND) with --patient_name, --study_date, ...")
    actions.add_argument("--pull_study", nargs="+", metavar="PACS_OR_UID",
                         help="PACS STUDY_UID...: retrieve studies from a PACS into the project (-p)")
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
    if action == "pull_study" and len(args.pull_study) < 2:
        raise InvalidValue("--pull_study takes a PACS and one or more StudyInstanceUIDs")


def do_find(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    values = {name: getattr(args, name) for name in (*QUERY_FIELDS, "study_instance_uid", "modality") if getattr(args, name)}
    query = parse_query(values, confirm_broad=args.everything)
    with archive.sessions() as session:
        answers = pacs.find(orthanc_for(archive.settings), pacs.get_peer(session, args.find), query)
    keys = RETURN_KEYS[query.level]
    out.write("\t".join(keys) + "\n")
    for answer in sorted(answers, key=lambda a: [a.get(k, "") for k in keys]):
        out.write("\t".join(answer.get(key, "") for key in keys) + "\n")
    out.write(f"{len(answers)} answer(s)\n")


def do_pull_study(archive: Archive, request: Any, out: IO[str]) -> None:
    args = request.args
    peer_name, *study_uids = args.pull_study
    choice = pacs.SeriesChoice(args.modality or "", args.series_description or "")
    orthanc = orthanc_for(archive.settings)
    pulled: set[str] = set()
    for study_uid in study_uids:
        series = pacs.pull_study(archive, orthanc, peer_name, project_name(request), study_uid, choice)
        out.write(f"{study_uid}: {len(series)} series retrieved from {peer_name}\n")
        pulled.update(series)
    if args.wait is not None:
        wait_for_series(archive, pulled, args.wait, out)


COMMANDS = {"find": do_find, "pull_study": do_pull_study}
