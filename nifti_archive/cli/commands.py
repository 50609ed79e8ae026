"""The archive actions of ``nora``: each runs in one unit of work and writes to ``out``."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from nifti_archive.archive import Archive, get_project
from nifti_archive.catalog import analyses, exportmeta, trash
from nifti_archive.catalog.outputs import output_path
from nifti_archive.catalog.projects import create_project, list_projects
from nifti_archive.catalog.registration import add_files
from nifti_archive.catalog.tags import TagLevel, add_tags, remove_tags, split_tag_list
from nifti_archive.cli.parser import Request
from nifti_archive.errors import InvalidValue
from nifti_archive.layout import ArchiveLayout
from nifti_archive.query.selection import SelectedFile, select_files

Command = Callable[[Archive, Request, IO[str]], None]


def acting_user() -> str:
    """Who the command line acts for, in trash entries, launches, pulls and the audit log:
    NORA_USER where a wrapper sets it, else the account running nora."""
    return os.environ.get("NORA_USER") or getpass.getuser()


def project_name(request: Request) -> str:
    name = request.args.project or os.environ.get("NORA_PROJECT")
    if not name:
        raise InvalidValue("no project: give -p PROJECT (or set NORA_PROJECT)")
    return str(name)


def read_file_argument(path: str, option: str) -> str:
    """The text of the file an option names, or one line that says why it cannot be read."""
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"{option}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def do_createproject(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, archive.layout, request.args.createproject, request.args.description)
        out.write(f"created project {project.name} at {archive.layout.project_dir(project.name)}\n")


def do_projects(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.sessions() as session:
        for project in list_projects(session):
            out.write(f"{project.name}\t{project.description}\n")


def do_add(archive: Archive, request: Request, out: IO[str]) -> None:
    tags = split_tag_list(request.args.addtag) if request.args.addtag is not None else []
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name(request))
        added = add_files(session, archive.layout, project, [Path(p) for p in request.args.add], tags)
        out.write(f"registered {len(added)} file(s)" + (f", tagged {','.join(tags)}" if tags else "") + "\n")


def _json_selection(layout: ArchiveLayout, project: str, selected: list[SelectedFile], by_filename: bool) -> str:
    grouped: dict[str, dict[str, object]] = {}
    for item in selected:
        location = item.location(project)
        entry = grouped.setdefault(
            location.psid,
            {"psid": location.psid, "subject": item.subject, "study": item.study, "files": {} if by_filename else []},
        )
        absolute = str(layout.file_path(location))
        files = entry["files"]
        if isinstance(files, dict):
            files[item.path] = absolute
        elif isinstance(files, list):
            files.append(absolute)
    return json.dumps(list(grouped.values()), indent=2)


def tagging_report(adding: bool, count: int, files: int) -> str:
    return f"added {count} tag(s) to {files} file(s)\n" if adding else f"removed {count} tag(s) from {files} file(s)\n"


def write_selection(out: IO[str], layout: ArchiveLayout, project: str, selected: list[SelectedFile], request: Request) -> None:
    """What ``-s`` prints: absolute paths, or with ``--json`` the files grouped by study."""
    if request.args.json:
        out.write(_json_selection(layout, project, selected, request.args.byfilename) + "\n")
    else:
        # Ids in the index were checked when they were registered; plain string joins keep
        # listing ten thousand files fast.
        base = layout.project_dir(project)
        out.writelines(f"{base}/{item.subject}/{item.study}/{item.path}\n" for item in selected)


def do_select(archive: Archive, request: Request, out: IO[str]) -> None:
    args = request.args
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name(request))
        selected = select_files(session, project, args.select)
        if args.addtag is not None or args.rmtag is not None:
            ids = [item.file_id for item in selected]
            if args.addtag is not None:
                count = add_tags(session, TagLevel.FILE, ids, split_tag_list(args.addtag))
            else:
                count = remove_tags(session, TagLevel.FILE, ids, split_tag_list(args.rmtag))
            out.write(tagging_report(args.addtag is not None, count, len(ids)))
            return
    write_selection(out, archive.layout, project.name, selected, request)


def _output(archive: Archive, request: Request, out: IO[str], pattern: str, is_folder: bool) -> None:
    with archive.sessions() as session:
        project = get_project(session, project_name(request))
        out.write(f"{output_path(session, archive.layout, project, pattern, is_folder)}\n")


def do_out(archive: Archive, request: Request, out: IO[str]) -> None:
    _output(archive, request, out, request.args.out, is_folder=False)


def do_pathout(archive: Archive, request: Request, out: IO[str]) -> None:
    _output(archive, request, out, request.args.pathout, is_folder=True)


def do_delete(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name(request))
        paths = [Path(p) for p in request.args.delete]
        entry = trash.delete_files(session, journal, archive.layout, project, paths, acting_user())
        out.write(f"moved {len(paths)} file(s) to trash entry {entry.id} (nora -p {project.name} --restore {entry.id})\n")


def do_del_pat(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name(request))
        psids = list(request.args.del_pat)
        entry = trash.delete_subjects_or_studies(session, journal, archive.layout, project, psids, acting_user())
        out.write(f"moved {', '.join(psids)} to trash entry {entry.id} (nora -p {project.name} --restore {entry.id})\n")


def do_trash(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.sessions() as session:
        project = get_project(session, project_name(request))
        for item in trash.list_trash(session, project):
            out.write(f"{item.id}\t{item.deleted_at:%Y-%m-%d %H:%M}\t{item.deleted_by}\t{item.files} file(s)\t{item.summary}\n")


def do_restore(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name(request))
        for trash_id in request.args.restore:
            count = trash.restore(session, journal, archive.layout, project, trash_id)
            out.write(f"restored trash entry {trash_id} ({count} file(s))\n")


def do_purge(archive: Archive, request: Request, out: IO[str]) -> None:
    days = request.args.older_than
    if days is None:
        days = archive.settings.trash_retention_days
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name(request))
        doomed = trash.purge(session, journal, archive.layout, project, days)
    trash.remove_purged(doomed)
    out.write(f"purged {len(doomed)} trash folder(s) older than {days} day(s)\n")


def write_analyses(out: IO[str], analyses: list[dict[str, Any]], as_json: bool) -> None:
    """What ``--analyses`` prints: a line per analysis (name, files, created, tags), or with ``--json`` the records."""
    if as_json:
        out.write(json.dumps(analyses, indent=2) + "\n")
        return
    for item in analyses:
        tags = ",".join(sorted({*item["subject_tags"], *item["study_tags"]}))
        out.write(f"{item['name']}\t{item['files']} file(s)\t{item['created_at'][:16].replace('T', ' ')}\t{tags}\n")


def do_analyses(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.sessions() as session:
        project = get_project(session, project_name(request))
        found = [item.as_json() for item in analyses.list_analyses(session, project)]
    write_analyses(out, found, request.args.json)


def created_analysis_report(project: str, name: str, folder: str) -> str:
    return f"created analysis {name} in project {project}: {folder}\n"


def do_create_analysis(archive: Archive, request: Request, out: IO[str]) -> None:
    with archive.unit_of_work() as (session, journal):
        project = get_project(session, project_name(request))
        study = analyses.create_analysis(session, journal, archive.layout, project, request.args.create_analysis, acting_user())
        folder = archive.layout.study_dir(project.name, study.subject.patient_id, study.study_id)
        report = created_analysis_report(project.name, request.args.create_analysis, str(folder))
    out.write(report)


def do_exportmeta(archive: Archive, request: Request, out: IO[str]) -> None:
    studies, json_pattern = request.args.exportmeta
    keys = exportmeta.parse_keys(request.args.keys) if request.args.keys is not None else None
    with archive.sessions() as session:
        project = get_project(session, project_name(request))
        columns, rows = exportmeta.collect(session, archive.layout, project, studies, json_pattern, keys)
    exportmeta.write_csv(out, columns, rows)


COMMANDS: dict[str, Command] = {
    "createproject": do_createproject,
    "projects": do_projects,
    "add": do_add,
    "select": do_select,
    "out": do_out,
    "pathout": do_pathout,
    "delete": do_delete,
    "del_pat": do_del_pat,
    "trash": do_trash,
    "restore": do_restore,
    "purge": do_purge,
    "exportmeta": do_exportmeta,
    "analyses": do_analyses,
    "create_analysis": do_create_analysis,
}
