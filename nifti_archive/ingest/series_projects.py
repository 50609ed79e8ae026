"""Which project a series belongs to: a series lives in one project.

Once a series has been placed in a project (converted, quarantined, released or discarded
there), everything that arrives later for it goes there too, whatever called AET or routing
rule it came with. Before that, an ingest override (an import or a pull) names its project.
Overrides are written here only, by one upsert that refuses to move a series placed elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nifti_archive.archive import FileJournal
from nifti_archive.catalog.projects import create_project
from nifti_archive.errors import Conflict
from nifti_archive.ingest.routing import Origin, route
from nifti_archive.layout import ArchiveLayout
from nifti_archive.models import ConversionRequest, IngestOverride, Project
from nifti_archive.pacs import senders


@dataclass(frozen=True)
class Claim:
    """The subject and study ids an import asks for (None: named by the project's templates)."""

    patient_id: str | None = None
    study_id: str | None = None


class PlacedElsewhere(Conflict):
    """Series that live in another project; the message names neither that project nor its folders."""

    def __init__(self, series_uids: list[str]) -> None:
        super().__init__(
            f"series {', '.join(series_uids)} belong(s) to another project already (a series lives in one project)"
        )
        self.series_uids = series_uids


def owners(session: Session, series_uids: Iterable[str]) -> dict[str, Project]:
    """The project each of these series was last placed in, for those placed anywhere yet."""
    uids = list(dict.fromkeys(series_uids))
    if not uids:
        return {}
    rows = session.execute(
        select(ConversionRequest.series_instance_uid, Project)
        .join(Project, Project.id == ConversionRequest.project_id)
        .where(ConversionRequest.series_instance_uid.in_(uids))
        .order_by(ConversionRequest.id)
    ).all()
    return {uid: project for uid, project in rows}  # the newest placement wins


def placed_elsewhere(session: Session, project: Project, series_uids: Iterable[str]) -> dict[str, Project]:
    return {uid: owner for uid, owner in owners(session, series_uids).items() if owner.id != project.id}


def claim(session: Session, project: Project, claims: Mapping[str, Claim]) -> None:
    """Ingestion puts these series into ``project`` (with the ids asked for), whatever the routing
    rules say; refuses, changing nothing, where one of them lives in another project already.

    An upsert, so that two imports or pulls of one series at once do not collide."""
    elsewhere = placed_elsewhere(session, project, claims)
    if elsewhere:
        raise PlacedElsewhere(sorted(elsewhere))
    rows = [
        {"series_instance_uid": uid, "project_id": project.id, "patient_id": wanted.patient_id,
         "study_id": wanted.study_id, "created_at": datetime.now(UTC)}
        for uid, wanted in claims.items()
    ]
    if not rows:
        return
    statement: postgresql.Insert | sqlite.Insert = (
        postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    )(IngestOverride).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=[IngestOverride.series_instance_uid],
        set_={"project_id": statement.excluded.project_id, "patient_id": statement.excluded.patient_id,
              "study_id": statement.excluded.study_id},
    ))


def placed_project(session: Session, series_uid: str) -> tuple[Project, IngestOverride | None] | None:
    """The project a series must go to without asking the routing rules, with the override that
    names its subject and study; None where routing decides.

    The project it lives in comes first: an override that points elsewhere (written before this
    rule, or by hand) is ignored rather than allowed to split the series."""
    if not series_uid:
        return None
    override = session.get(IngestOverride, series_uid)
    owner = owners(session, [series_uid]).get(series_uid)
    if owner is not None:
        return owner, override if override is not None and override.project_id == owner.id else None
    if override is not None:
        return session.get_one(Project, override.project_id), override
    return None


def routed_project(session: Session, journal: FileJournal, layout: ArchiveLayout, called_aet: str,
                   tags: Mapping[str, str], origins: frozenset[Origin] = frozenset()) -> Project:
    """Where the routing rules send a series not placed yet: the project a rule names, else the
    inbox; made where missing, so that no series waits for an admin."""
    name = route(senders.load_rules(session), called_aet, tags, origins)
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = create_project(session, journal, layout, name, "series no routing rule claimed")
    return project
