"""``nora --admin backup``, ``restore`` and ``rebuild``: keeping the index and the NIfTI tree."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import IO

from nifti_archive.archive import Archive
from nifti_archive.cli.parser import OneLineParser
from nifti_archive.orthanc_api import orthanc_for


def add_parsers(areas: argparse._SubParsersAction[OneLineParser]) -> None:
    take = areas.add_parser("backup", help="a consistent copy of the index and the archive's files into an empty folder")
    take.add_argument("folder", type=Path)
    take.add_argument("--link", action="store_true",
                      help="hard-link the archive's files instead of copying them (the folder on the archive's file system)")
    bring = areas.add_parser("restore", help="bring a backup back, checking every file's checksum first")
    bring.add_argument("folder", type=Path)
    bring.add_argument("--force", action="store_true",
                       help="replace an archive that is not empty (its tree is moved aside, not deleted)")
    again = areas.add_parser("rebuild", help="make a project's converted files again from Orthanc's originals and "
                                             "replace those missing or different")
    again.add_argument("project")
    again.add_argument("--dry-run", action="store_true", help="only report what differs; change nothing")


def _backup(archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    # Imported here, not at the top: nibabel and numpy would add a second to every nora call.
    from nifti_archive.maintenance import backup

    made = backup.backup(archive, args.folder, args.link)
    how = "hard-linked" if made.linked else "copied"
    out.write(f"backup in {made.folder}: {made.dump.kind.value} database (schema {made.schema_revision}, "
              f"{made.dump.method.value}: {made.dump.tool_version}) and {made.files} files {how} ({made.size} bytes)\n")


def _restore(archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    # Imported here, not at the top: nibabel and numpy would add a second to every nora call.
    from nifti_archive.maintenance import backup

    done = backup.restore(archive, args.folder, args.force)
    schema = f"schema {done.schema_revision}" + (" upgraded to the current one" if done.upgraded else "")
    out.write(f"restored {done.files} files ({done.size} bytes) and the database ({schema}) from {args.folder}\n")
    if done.replaced_tree is not None:
        out.write(f"the archive tree it replaced is in {done.replaced_tree}: remove it once the restore is checked\n")


def _rebuild(archive: Archive, args: argparse.Namespace, out: IO[str]) -> None:
    # Imported here, not at the top: nibabel and numpy would add a second to every nora call.
    from nifti_archive.maintenance import rebuild

    results = rebuild.rebuild(archive, orthanc_for(archive.settings), args.project, args.dry_run)
    out.write(rebuild.report(args.project, results, args.dry_run))


# Run before the schema check: a restore's target may have no schema yet.
AREAS: dict[str, Callable[[Archive, argparse.Namespace, IO[str]], None]] = {
    "backup": _backup,
    "restore": _restore,
    "rebuild": _rebuild,
}
