"""The archive handle: settings, database and on-disk layout, and the unit of work.

A unit of work is one database transaction plus the file-system changes made during it. If
anything fails before the commit has gone through, the changes are undone in reverse order, so a
command either happens entirely or leaves the archive as it found it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from nifti_archive import accounts, db
from nifti_archive.errors import InvalidPath, NotFound
from nifti_archive.layout import ArchiveLayout
from nifti_archive.models import Project
from nifti_archive.permissions import inherit_group, restrict_process
from nifti_archive.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class FileJournal:
    """The file-system changes of one unit of work, in order, so they can be undone."""

    moves: list[tuple[Path, Path]] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)

    def make_dir(self, path: Path) -> None:
        missing = [p for p in [path, *path.parents] if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidPath(f"cannot create {path}: {exc.strerror}") from exc
        self.created_dirs.extend(reversed(missing))

    def move(self, source: Path, target: Path) -> None:
        if target.exists():
            raise InvalidPath(f"{target} already exists; not overwriting it")
        self.make_dir(target.parent)
        try:
            os.rename(source, target)
        except OSError as exc:
            raise InvalidPath(f"cannot move {source} to {target}: {exc.strerror}") from exc
        self.moves.append((source, target))
        inherit_group(target)

    def undo(self) -> None:
        for source, target in reversed(self.moves):
            try:
                source.parent.mkdir(parents=True, exist_ok=True)
                os.rename(target, source)
            except OSError:
                log.exception("could not move %s back to %s", target, source)
        for folder in reversed(self.created_dirs):
            try:
                folder.rmdir()
            except OSError:
                log.warning("left %s in place: not empty or not removable", folder)
        self.moves.clear()
        self.created_dirs.clear()


class Archive:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        # Every process that writes the archive opens it here: its files get no rights for others.
        restrict_process()
        accounts.use_password_cost(accounts.PasswordCost(settings.password_cost))
        self.settings = settings
        self.engine = engine or db.make_engine(settings.database_url)
        self.sessions: sessionmaker[Session] = db.make_sessionmaker(self.engine)
        self.read_sessions: sessionmaker[Session] = db.make_read_sessionmaker(self.engine)
        self.layout = ArchiveLayout(settings.archive_root)

    def check_schema(self) -> None:
        db.require_current_schema(self.engine)

    @contextmanager
    def unit_of_work(self) -> Iterator[tuple[Session, FileJournal]]:
        journal = FileJournal()
        session = self.sessions()
        try:
            with session.begin():
                yield session, journal
        except BaseException:
            journal.undo()
            raise
        finally:
            session.close()

    def close(self) -> None:
        self.engine.dispose()


def get_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        known = session.scalars(select(Project.name).order_by(Project.name)).all()
        hint = f"; known projects: {', '.join(known)}" if known else "; there are no projects yet (create one with -c)"
        raise NotFound(f"unknown project {name!r}{hint}")
    return project
