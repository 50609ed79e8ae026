"""Declaring drop folders (``nora --admin dropfolder``) and reporting on them (``nora --status``).

A folder with a project has a study of its own for files with no DICOM beside them (an
instrument's raw data, a PDF): subject ``--subject``, by default the folder's name, and study
``--study``, by default one per day, named ``YYYYMMDD`` by the date of the entry's newest file.
That subject is no patient and has no identity. In a pseudonymised project it may not look like
a pseudonym (``sub-...``): readers take every such folder for a patient's.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from nifti_archive.archive import get_project
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.ingest import pseudonyms
from nifti_archive.ingest.importer import ExtrasStudy
from nifti_archive.layout import check_folder_id
from nifti_archive.models import DropAction, DropEntry, DropFolder, DropState, Project
from nifti_archive.pacs.dicom_nodes import check_name
from nifti_archive.processes import running_pid
from nifti_archive.settings import Settings

DEFAULT_STABLE_SECONDS = 10.0
POLL_SECONDS = 2.0
# A pass importing a large entry takes longer than this; a poller that is stuck, or whose passes
# all fail, stops touching its heartbeat.
STALE_PASSES = 5


def heartbeat_file(settings: Settings) -> Path:
    """Touched by the poller after every pass: how ``--status`` and ``start`` know it is alive."""
    return settings.var_dir / "run" / "dropfolders.heartbeat"


def pid_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "dropfolders.pid"


def get_drop_folder(session: Session, name: str) -> DropFolder:
    folder = session.scalar(select(DropFolder).where(DropFolder.name == name))
    if folder is None:
        known = session.scalars(select(DropFolder.name).order_by(DropFolder.name)).all()
        raise NotFound(f"no drop folder {name!r}; known: {', '.join(known) or 'none (add one with nora --admin dropfolder add)'}")
    return folder


def list_drop_folders(session: Session) -> list[DropFolder]:
    # The project comes along: the poller reads it after the session is gone.
    return list(session.scalars(select(DropFolder).options(selectinload(DropFolder.project)).order_by(DropFolder.name)))


def check_extras_subject(project: Project, subject: str) -> str:
    check_folder_id("subject", subject)
    if project.pseudonymise and subject.lower().startswith(pseudonyms.PREFIX):
        raise InvalidValue(f"subject {subject!r} of the drop folder's own study looks like a pseudonym in pseudonymised "
                           f"project {project.name}: choose another with --subject")
    return subject


def extras_study(folder: DropFolder, newest_mtime: float) -> ExtrasStudy | None:
    """Where an entry's files with no DICOM beside them go; None in a folder without a project."""
    if folder.project is None or folder.extra_subject is None:
        return None
    subject = check_extras_subject(folder.project, folder.extra_subject)
    if folder.extra_study:
        return ExtrasStudy(subject, folder.extra_study)
    day = datetime.fromtimestamp(newest_mtime).date()
    return ExtrasStudy(subject, f"{day:%Y%m%d}", day)


def own_folder_overlapping(settings: Settings, where: Path) -> Path | None:
    """The archive's own folder (its tree or var/) that ``where``, links resolved, lies in or holds.
    Checked at every pass too: a link on the way to the folder may be changed after it was declared."""
    resolved = where.resolve()
    return next((own for own in (settings.archive_root, settings.var_dir)
                 if resolved.is_relative_to(own.resolve()) or own.resolve().is_relative_to(resolved)), None)


def add_drop_folder(session: Session, settings: Settings, name: str, path: str, project: str | None,
                    stable_seconds: float = DEFAULT_STABLE_SECONDS, action: DropAction = DropAction.MOVE,
                    subject: str | None = None, study: str | None = None) -> DropFolder:
    """Declare a drop folder; ``project`` None routes each series by the routing rules' tag rules.
    The folder need not exist yet: a mount that is down now is reported, and polled again.
    ``subject`` and ``study`` name its own study (see the module); only a folder with a project has one."""
    check_name("drop folder", name)
    if project is None and (subject or study):
        raise InvalidValue("--subject and --study need --project: with --routing, only DICOM tags place files")
    if study:
        check_folder_id("study", study)
    where = Path(path)
    if not where.is_absolute():
        raise InvalidValue(f"drop folder path {path!r} must be absolute: the poller does not run in your folder")
    own = own_folder_overlapping(settings, where)
    if own is not None:
        raise InvalidValue(f"drop folder {path} overlaps the archive's own folder {own}: the poller would move its files")
    if not 0 <= stable_seconds <= 86400:
        raise InvalidValue("--stable-seconds must be between 0 and 86400")
    if session.scalar(select(DropFolder.id).where(DropFolder.name == name)) is not None:
        raise Conflict(f"drop folder {name!r} exists already; remove it first")
    if session.scalar(select(DropFolder.name).where(DropFolder.path == str(where))) is not None:
        raise Conflict(f"{path} is a drop folder already")
    target = get_project(session, project) if project else None
    folder = DropFolder(name=name, path=str(where), project=target, stable_seconds=stable_seconds, action=action,
                        extra_subject=check_extras_subject(target, subject or name) if target else None,
                        extra_study=study or "")
    session.add(folder)
    session.flush()
    return folder


def remove_drop_folder(session: Session, name: str) -> None:
    """Forget a drop folder and its entries; its files, done/ and failed/ stay where they are."""
    session.delete(get_drop_folder(session, name))
    session.flush()


def describe(folder: DropFolder) -> str:
    target = f"project {folder.project.name}" if folder.project else "routing rules"
    if folder.extra_subject is not None:
        target += f", files without DICOM to {folder.extra_subject}/{folder.extra_study or 'YYYYMMDD'}/extra"
    after = "kept and remembered" if folder.action is DropAction.KEEP else "moved to done/"
    return f"{folder.name}\t{folder.path}\t-> {target}\tstable {folder.stable_seconds:g} s\timported files {after}"


def status_lines(session: Session, settings: Settings) -> list[str]:
    """What ``nora --status`` says of drop folders: the poller, each folder's problem and counts,
    and the entries that failed and could not be moved to failed/."""
    folders = list_drop_folders(session)
    if not folders:
        return []
    try:
        age: float | None = time.time() - heartbeat_file(settings).stat().st_mtime
    except FileNotFoundError:
        age = None
    lines = [poller_line(running_pid(pid_file(settings)), age)]
    for folder in folders:
        entries = list(session.scalars(select(DropEntry).where(DropEntry.folder_id == folder.id).order_by(DropEntry.name)))
        counts = Counter(entry.state for entry in entries)
        state = f"PROBLEM since {folder.problem_since:%Y-%m-%d %H:%M:%S}: {folder.problem}" if folder.problem else "ok"
        lines.append(f"drop folder {folder.name} ({folder.path}): {state}; "
                     + " ".join(f"{s.value}={counts.get(s, 0)}" for s in DropState))
        # A writer picks the names: one with a newline must not forge a line of its own here.
        lines.extend(f"  left in place: {printable(entry.name)}: {printable(entry.message)}" for entry in entries
                     if entry.state is DropState.FAILED and (Path(folder.path) / entry.name).exists())
    return lines


def printable(text: str) -> str:
    return text if text.isprintable() else repr(text)


def poller_line(pid: int | None, age: float | None) -> str:
    """The poller's liveness: its process (``pid`` from its pid file, None when not running) and the
    age of its last pass in seconds (None: never)."""
    problems = []
    if pid is None:
        problems.append("not running (python -m nifti_archive.dropfolders.service start)")
    if age is not None and age > STALE_PASSES * POLL_SECONDS:
        problems.append(f"no pass for over {STALE_PASSES} poll intervals (stuck, or importing a large entry; see its log)")
    state = f"PROBLEM: {'; '.join(problems)}" if problems else f"running (pid {pid})"
    passed = "never passed" if age is None else f"last pass {age:.0f} s ago"
    return f"drop folder poller: {state}; {passed}"
