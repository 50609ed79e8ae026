"""Projects: creation and listing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .archive import FileJournal
from .errors import Conflict
from .layout import ArchiveLayout, check_project_name
from .models import Project


def create_project(
    session: Session, journal: FileJournal, layout: ArchiveLayout, name: str, description: str = ""
) -> Project:
    check_project_name(name)
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} already exists")
    journal.make_dir(layout.project_dir(name))
    project = Project(name=name, description=description)
    session.add(project)
    session.flush()
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))
