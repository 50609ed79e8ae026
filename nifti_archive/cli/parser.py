"""The ``nora`` command line's arguments, with NORA's flags (parsing only, no I/O)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import NoReturn

from nifti_archive.errors import InvalidValue

DESCRIPTION = """\
The Northanc archive from the command line. Options act on the project given with -p
(or $NORA_PROJECT). File patterns are paths below a study folder with two wildcards:
'*' any run of characters, '_' exactly one ('t1*/s0__.nii'); a backslash makes the next
character literal. -s also takes the file-search bar's language: several patterns (OR),
'&' to require more, and STAG:, PTAG:, FTAG:, SDESC:, JOB: terms ('t1*/s*.nii & STAG:control').
"""

EPILOG = """\
NORA's -q/--sql is not offered: raw SQL on the archive would bypass project roles and
pseudonymisation and tie scripts to the schema. Use -s with --json (files and their
studies), --exportmeta (meta data as CSV) or the REST API instead.

Administration: nora --admin --help; conversion workers outside Orthanc: nora worker --help.
Exit codes: 0 done, 2 a usage or input error (one line on stderr says what), 1 an internal
error (details in the log).
"""

ACTIONS = (
    "createproject",
    "add",
    "delete",
    "del_pat",
    "select",
    "out",
    "pathout",
    "exportmeta",
    "trash",
    "restore",
    "purge",
    "projects",
    "import_path",
    "status",
    "retry",
    "reconvert",
    "release",
    "discard",
    "bids",
    "analyses",
    "create_analysis",
    "sql",
)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors become one line (and exit code 2) instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise InvalidValue(f"{message} (see {self.prog} --help)")


class SqlRefused(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not offered; see the note at the end of nora --help")


def build_parser(extensions: Sequence[ModuleType] = ()) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nora",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-p", "--project", help="the project all other options refer to")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("-c", "--createproject", metavar="NAME", help="create a project")
    actions.add_argument("-a", "--add", nargs="+", metavar="FILE", help="register files that lie in the project's tree")
    actions.add_argument("-d", "--del", dest="delete", nargs="+", metavar="FILE", help="move files to the trash")
    actions.add_argument(
        "-dp", "--del_pat", nargs="+", metavar="PSID", help="move subjects (PATIENT) or studies (PATIENT#STUDY) to the trash"
    )
    actions.add_argument("-s", "--select", metavar="PATTERN", help="list files matching a pattern or file-search filter")
    actions.add_argument("-o", "--out", metavar="PATTERN", help="absolute output file path for SUBJECT/STUDY/folder/file")
    actions.add_argument("-pa", "--pathout", metavar="PATTERN", help="absolute output folder for SUBJECT/STUDY/folder")
    actions.add_argument(
        "--exportmeta",
        nargs=2,
        metavar=("STUDIES", "JSONPATTERN"),
        help="CSV of JSON meta data: STUDIES is PATIENT[#STUDY] with wildcards ('*' for all)",
    )
    actions.add_argument("--trash", action="store_true", help="list the project's trash")
    actions.add_argument("--restore", nargs="+", type=int, metavar="ID", help="bring trash entries back")
    actions.add_argument("--purge", action="store_true", help="delete trash entries for good (see --older-than)")
    actions.add_argument("--projects", action="store_true", help="list projects")
    actions.add_argument(
        "--import", dest="import_path", metavar="PATH", help="send a folder, zip or tar of DICOM through Orthanc into the project"
    )
    actions.add_argument("--status", action="store_true", help="the conversion queue: pending, failed, quarantined")
    actions.add_argument("--retry", nargs="*", type=int, metavar="ID", help="retry failed conversions (all, or these ids)")
    actions.add_argument(
        "--reconvert", metavar="PATTERN|UID", help="convert again from Orthanc: files matching a pattern, or a SeriesInstanceUID"
    )
    actions.add_argument(
        "--release", type=int, metavar="ID", help="publish a quarantined series anyway (its id in --status; needs --reason)"
    )
    actions.add_argument(
        "--discard", type=int, metavar="ID", help="throw a quarantined conversion away (Orthanc keeps the originals)"
    )
    actions.add_argument(
        "--bids", metavar="OUT", help="export the project as a BIDS dataset into the folder OUT (again: adds what is new)"
    )
    actions.add_argument("--analyses", action="store_true", help="list the project's analyses (ANALYSIS#<name> folders)")
    actions.add_argument(
        "--create_analysis", metavar="NAME", help="create the analysis NAME: the folder <project>/ANALYSIS#NAME/analysis/"
    )
    actions.add_argument("-q", "--sql", nargs="*", action=SqlRefused, help=argparse.SUPPRESS)

    parser.add_argument("--addtag", metavar="T1,T2", help="with -a or -s: tag the files")
    parser.add_argument("--rmtag", metavar="T1,T2", help="with -s: remove tags from the selected files")
    parser.add_argument("-j", "--json", action="store_true",
                        help="with -s: JSON grouped by study; with --analyses: the list as JSON; "
                             "with --reconvert --dry-run: the report as JSON")
    parser.add_argument("--byfilename", action="store_true", help="with -s --json: files keyed by their path in the study")
    parser.add_argument("--keys", help="with --exportmeta: comma-separated key sequences (*.mask.volume)")
    parser.add_argument("--description", default="", help="with -c: the project's description")
    parser.add_argument(
        "--older-than", type=int, metavar="DAYS", help="with --purge: age of entries to purge (default: the retention setting)"
    )
    parser.add_argument("--patients_id", metavar="PIZ", help="with --import: the subject id of everything imported")
    parser.add_argument("--studies_id", metavar="SID", help="with --import: the study id of everything imported")
    parser.add_argument(
        "--pattern", metavar="REGEX", help="with --import: named groups patients_id / studies_id taken from each file's path"
    )
    parser.add_argument(
        "--extrafiles_filter", metavar="EXT,EXT", help="with --import: non-DICOM files to copy into the study (nii,hdr,img)"
    )
    parser.add_argument("--reason", metavar="TEXT", help="with --release or --discard: why (kept in the audit log)")
    parser.add_argument("--filter", metavar="EXPR", help="with --bids or a launch: the studies (file-search filter)")
    parser.add_argument("--link", action="store_true",
                        help="with --bids: hard-link the images to the archive's files instead of copying them "
                             "(read-only: do not edit them in place)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --reconvert: convert into scratch and report per file what would change; change nothing")
    parser.add_argument(
        "--wait", type=int, metavar="SECONDS", help="with --import, --reconvert or --launch: wait until the work has finished"
    )
    for extension in extensions:
        extension.add_arguments(actions, parser)
    return parser


@dataclass(frozen=True)
class Request:
    action: str
    args: argparse.Namespace


def resolve(args: argparse.Namespace, extensions: Sequence[ModuleType] = ()) -> Request:
    """Which action was asked for, and whether its modifiers fit it."""
    names = [*ACTIONS, *(name for extension in extensions for name in extension.ACTIONS)]
    chosen = [name for name in names if getattr(args, name, None) not in (None, False)]
    if not chosen:
        raise InvalidValue("nothing to do: give an action such as -s PATTERN (see nora --help)")
    action = chosen[0]
    if args.addtag is not None and action not in ("add", "select"):
        raise InvalidValue("--addtag goes with -a FILE... or -s PATTERN")
    if args.rmtag is not None and action != "select":
        raise InvalidValue("--rmtag goes with -s PATTERN")
    if args.addtag is not None and args.rmtag is not None:
        raise InvalidValue("give --addtag or --rmtag, not both")
    if args.byfilename and not args.json:
        raise InvalidValue("--byfilename goes with --json")
    if args.keys is not None and action != "exportmeta":
        raise InvalidValue("--keys goes with --exportmeta")
    if args.reason is not None and action not in ("release", "discard"):
        raise InvalidValue("--reason goes with --release or --discard")
    if args.older_than is not None and action != "purge":
        raise InvalidValue("--older-than goes with --purge")
    import_options = ("patients_id", "studies_id", "pattern", "extrafiles_filter")
    if action != "import_path" and any(getattr(args, name) is not None for name in import_options):
        raise InvalidValue("--patients_id, --studies_id, --pattern and --extrafiles_filter go with --import")
    filtering = {"bids", *(name for extension in extensions for name in getattr(extension, "FILTER_ACTIONS", ()))}
    if args.filter is not None and action not in filtering:
        raise InvalidValue("--filter goes with --bids, --launch, --launchfile or --launch_saved")
    if args.link and action != "bids":
        raise InvalidValue("--link goes with --bids")
    waiting = {"import_path", "reconvert", *(name for extension in extensions for name in extension.WAITING_ACTIONS)}
    if args.wait is not None and action not in waiting:
        raise InvalidValue("--wait goes with --import, --reconvert or --launch")
    if args.dry_run and (action != "reconvert" or args.wait is not None):
        raise InvalidValue("--dry-run goes with --reconvert (and changes nothing, so there is nothing to --wait for)")
    for extension in extensions:
        extension.check(args, action)
    return Request(action, args)
