"""``nora --admin backup`` and ``restore``: the index and the NIfTI tree of one moment, and back.

A backup folder holds the database dump (``dump.py``), ``manifest.tsv`` (every live, trashed
and quarantined file: sha256, size and path below the archive root), ``archive/`` with those
files copied or hard-linked, and ``backup.json`` describing it. The manifest is read from the
dump's own snapshot, so it names the files of the dumped index; files written after the dump
are not in it. Archive files are never rewritten in place (a new conversion moves the old file
to the trash and writes a new one), so a file the snapshot names still has its checksum when it
is copied a moment later, unless it was trashed, purged or released meanwhile: then the backup
fails and says to run it again.

A restore checks every file against the manifest while copying into a staging folder beside
the archive root, and only then swaps the folder in and replaces the database; a failure before
the end leaves the archive as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, inspect, select, text

from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.catalog.registration import sha256_of
from nifti_archive.errors import ArchiveError, InvalidPath, InvalidValue, NotInitialised
from nifti_archive.ingest.conversion import QUARANTINE_FOLDER
from nifti_archive.layout import ArchiveLayout, Location
from nifti_archive.maintenance import dump
from nifti_archive.models import ConversionRequest, ConversionState, File, Project, Study, Subject
from nifti_archive.permissions import secure_installation

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DESCRIPTION = "backup.json"
MANIFEST = "manifest.tsv"
FILES = "archive"


class BackupError(ArchiveError):
    pass


@dataclass(frozen=True)
class Entry:
    """One archive file: its path below the archive root ('/'-separated), size and sha256."""

    path: str
    size: int
    sha256: str

    def line(self) -> str:
        return f"{self.sha256}\t{self.size}\t{self.path}\n"


@dataclass(frozen=True)
class BackupReport:
    folder: Path
    dump: dump.Dump
    schema_revision: str
    files: int
    size: int
    linked: bool


@dataclass(frozen=True)
class RestoreReport:
    files: int
    size: int
    schema_revision: str
    upgraded: bool
    # Where a forced restore moved the archive tree it replaced.
    replaced_tree: Path | None


def _indexed_files(connection: Connection) -> Iterator[Entry]:
    """Every file the index names, live or in the trash, at the path the layout gives it."""
    relative = ArchiveLayout(Path())
    rows = connection.execute(
        select(Project.name, Subject.patient_id, Study.study_id, File.path, File.trash_id, File.size, File.sha256)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .join(Project, Project.id == Subject.project_id)
        .order_by(File.id)
    )
    for project, subject, study, path, trash_id, size, sha256 in rows:
        location = Location(project, subject, study, path)
        where = relative.file_path(location) if trash_id is None else relative.in_trash(trash_id, location)
        yield Entry(where.as_posix(), size, sha256)


def _quarantine_folders(connection: Connection) -> list[str]:
    """Conversions held back, waiting for a project admin: their files are in no File row yet."""
    rows = connection.execute(
        select(Project.name, ConversionRequest.id)
        .join(Project, Project.id == ConversionRequest.project_id)
        .where(ConversionRequest.state == ConversionState.QUARANTINED)
        .order_by(ConversionRequest.id)
    )
    return [f"{project}/{QUARANTINE_FOLDER}/{request_id}" for project, request_id in rows]


def _counts(connection: Connection) -> dict[str, int]:
    def count(statement: Any) -> int:
        return int(connection.execute(statement).scalar_one())

    return {
        "projects": count(select(func.count()).select_from(Project)),
        "subjects": count(select(func.count()).select_from(Subject).where(Subject.trash_id.is_(None))),
        "studies": count(select(func.count()).select_from(Study).where(Study.trash_id.is_(None))),
        "files": count(select(func.count()).select_from(File).where(File.trash_id.is_(None))),
        "trashed_files": count(select(func.count()).select_from(File).where(File.trash_id.is_not(None))),
    }


def _copy(source: Path, target: Path, link: bool) -> str:
    """Copy or hard-link ``source`` to ``target``; the sha256 of what arrived."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
        except OSError as exc:
            raise BackupError(f"cannot hard-link {source} into the backup ({exc.strerror}): "
                              "--link needs the backup folder on the archive's file system") from exc
    else:
        shutil.copy2(source, target)
    return sha256_of(target)


def _backup_file(root: Path, files: Path, entry: Entry, link: bool) -> None:
    source = root / entry.path
    if not source.is_file():
        raise BackupError(f"{entry.path} is in the index but not in the archive (trashed, purged or moved since the "
                          "backup began?): run the backup again")
    if _copy(source, files / entry.path, link) != entry.sha256:
        raise BackupError(f"{entry.path} does not match its checksum in the index (changed since the backup began, "
                          "or damaged on disk)")


def _backup_quarantine(root: Path, files: Path, folder: str, link: bool) -> list[Entry]:
    held = root / folder
    if not held.is_dir():
        raise BackupError(f"{folder} is quarantined in the index but not in the archive (released or discarded "
                          "since the backup began?): run the backup again")
    entries = []
    for path in sorted(p for p in held.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        entries.append(Entry(relative, path.stat().st_size, _copy(path, files / relative, link)))
    return entries


def _check_destination(archive: Archive, destination: Path) -> None:
    root = archive.settings.archive_root.resolve()
    if destination.resolve().is_relative_to(root):
        raise InvalidPath(f"{destination} is inside the archive root {root}: put backups elsewhere")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise InvalidPath(f"{destination} exists and is not an empty folder")


def backup(archive: Archive, destination: Path, link: bool) -> BackupReport:
    """Dump the index, then copy (or link) the files its snapshot names into ``destination``.

    An index at an older schema is backed up as it is (a backup before ``nora --admin init``
    upgrades it is the one to keep); a restore upgrades it."""
    revision = db.current_revision(archive.engine)
    if revision is None:
        raise NotInitialised("the archive is not initialised: there is nothing to back up")
    _check_revision(revision)
    destination = destination.absolute()
    _check_destination(archive, destination)
    kind = dump.DatabaseKind.of(archive.engine)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.partial-"))
    try:
        with dump.snapshot(archive.engine, staging / kind.dump_file) as (connection, taken):
            revision = str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
            _check_revision(revision)
            indexed = list(_indexed_files(connection))
            quarantined = _quarantine_folders(connection)
            counts = _counts(connection)
            projects = list(connection.execute(select(Project.name).order_by(Project.name)).scalars())
        root, files = archive.settings.archive_root, staging / FILES
        for entry in indexed:
            _backup_file(root, files, entry, link)
        held = [entry for folder in quarantined for entry in _backup_quarantine(root, files, folder, link)]
        entries = indexed + held
        with (staging / MANIFEST).open("w", encoding="utf-8") as manifest:
            manifest.writelines(entry.line() for entry in entries)
        size = sum(entry.size for entry in entries)
        description = {
            "format": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": kind.value,
            "dump": {"file": kind.dump_file, "method": taken.method.value, "tool": taken.tool_version,
                     "sha256": sha256_of(staging / kind.dump_file)},
            "schema_revision": revision,
            "projects": projects,
            "counts": {**counts, "quarantined_files": len(held), "manifest_files": len(entries), "bytes": size},
            "linked": link,
        }
        (staging / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        if destination.exists():
            destination.rmdir()
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("backup of %d files (%d bytes) in %s", len(entries), size, destination)
    return BackupReport(destination, taken, revision, len(entries), size, link)


def _read_description(source: Path) -> dict[str, Any]:
    if not (source / DESCRIPTION).is_file():
        raise InvalidPath(f"{source} is not a backup folder: it has no {DESCRIPTION}")
    try:
        description = json.loads((source / DESCRIPTION).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidPath(f"{source} is not a readable backup: {DESCRIPTION}: {exc}") from exc
    if not isinstance(description, dict) or description.get("format") != FORMAT_VERSION:
        raise InvalidValue(f"{source / DESCRIPTION} is not a backup description of format {FORMAT_VERSION}")
    return description


def _safe_relative(path: str) -> str:
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidValue(f"the manifest names {path!r}, which is not a path inside the archive")
    return path


def _read_manifest(source: Path) -> list[Entry]:
    entries = []
    try:
        lines = (source / MANIFEST).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidPath(f"{source} has no readable {MANIFEST}: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 3 or not fields[1].isdigit():
            raise InvalidValue(f"{source / MANIFEST}: line {number} is not 'sha256<TAB>size<TAB>path'")
        entries.append(Entry(_safe_relative(fields[2]), int(fields[1]), fields[0]))
    return entries


def _check_revision(revision: str) -> None:
    """Refuses a schema this code does not know: a newer version of Northanc's."""
    known = {script.revision for script in ScriptDirectory(str(db.MIGRATIONS_DIR)).walk_revisions()}
    if revision not in known:
        raise InvalidValue(f"schema revision {revision!r} is unknown to this version of Northanc (newest "
                           f"{db.SCHEMA_REVISION}): use the version that made it")


def _contents(archive: Archive) -> str | None:
    """What the archive holds already, in words, or None when it is empty."""
    held = []
    with archive.engine.connect() as connection:
        if inspect(connection).has_table(Project.__tablename__):
            projects = int(connection.execute(select(func.count()).select_from(Project)).scalar_one())
            if projects:
                held.append(f"{projects} project(s) in the index")
    archive.engine.dispose()
    root = archive.settings.archive_root
    if _has_files(root):
        held.append(f"files under {root}")
    return " and ".join(held) or None


def _has_files(folder: Path) -> bool:
    return folder.exists() and next((p for p in folder.rglob("*") if not p.is_dir()), None) is not None


def _stage(source: Path, staging: Path, entries: list[Entry], projects: list[str]) -> None:
    for project in projects:
        if "/" in _safe_relative(project):
            raise InvalidValue(f"the backup names the project {project!r}, which is not a folder name")
        (staging / project).mkdir(parents=True, exist_ok=True)
    for entry in entries:
        copied = source / FILES / entry.path
        # A link would bring in whatever it points at, outside the backup.
        if copied.is_symlink() or not copied.is_file():
            raise BackupError(f"{entry.path} is missing from the backup (or is a link, which a backup never holds); nothing restored")
        if _copy(copied, staging / entry.path, link=False) != entry.sha256 or copied.stat().st_size != entry.size:
            raise BackupError(f"{entry.path} in the backup does not match its checksum in the manifest; nothing restored")


def restore(archive: Archive, source: Path, force: bool) -> RestoreReport:
    """Bring back the backup in ``source``: files checked and staged first, then swapped in with the database."""
    source = source.absolute()
    description = _read_description(source)
    kind = dump.DatabaseKind.of(archive.engine)
    if description.get("database") != kind.value:
        raise InvalidValue(f"the backup holds a {description.get('database')} database; this archive uses {kind.value}")
    revision = str(description.get("schema_revision"))
    _check_revision(revision)
    dump_file = source / kind.dump_file
    if not dump_file.is_file() or sha256_of(dump_file) != description.get("dump", {}).get("sha256"):
        raise BackupError(f"{dump_file.name} in the backup is missing or does not match its checksum; nothing restored")
    entries = _read_manifest(source)
    held = _contents(archive)
    if held and not force:
        raise BackupError(f"the archive is not empty ({held}): restore into an empty one, or pass --force to replace it")
    present = db.current_revision(archive.engine)
    if kind is dump.DatabaseKind.POSTGRESQL and present not in (None, revision):
        # pg_restore --clean drops only what the dump holds: tables of another revision would stay
        # and keep the dump's from loading.
        raise BackupError(f"the database is at schema revision {present} and the backup at {revision}: "
                          "restore into an empty database (drop and create it again)")
    root = archive.settings.archive_root.absolute()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = root.parent / f"{root.name}.before-restore-{stamp}"
    root.parent.mkdir(parents=True, exist_ok=True)
    # Beside the root, so that swapping it in is a rename on one file system.
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.restore-"))
    swapped = False
    try:
        _stage(source, staging, entries, [str(name) for name in description.get("projects", [])])
        if root.exists():
            root.rename(aside)
        staging.rename(root)
        swapped = True
        dump.restore(archive.engine, dump_file, kind)
    except BaseException:
        if swapped:
            root.rename(staging)
        if aside.exists():
            aside.rename(root)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    upgraded = db.current_revision(archive.engine) != db.SCHEMA_REVISION
    if upgraded:
        db.upgrade(archive.engine)
    secure_installation(archive.settings)
    replaced = aside if _has_files(aside) else None
    if aside.exists() and replaced is None:
        shutil.rmtree(aside)  # folders only: nothing of the replaced archive is lost
    log.info("restored %d files from %s", len(entries), source)
    return RestoreReport(len(entries), sum(e.size for e in entries), revision, upgraded, replaced)
