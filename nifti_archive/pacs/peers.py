"""PACS peers, and what Northanc asks of them through Orthanc: C-ECHO, C-FIND, C-MOVE or C-GET.

Orthanc does the DICOM networking. A peer is kept in the archive database and registered in
Orthanc as a DICOM modality of the same name (``PUT /modalities/{name}``), with its host checked
and only the services it needs (dicom_nodes.py); ``save_peer_registered`` and
``remove_peer_registered`` change both together, and the plugin registers every peer again
when Orthanc starts, so the database stays the one source.

A pull names the project its series go to: an ``IngestOverride`` per series is written before
the retrieve starts, so ingestion puts them there whatever the routing rules say.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, get_project
from nifti_archive.errors import ArchiveError, Conflict, InvalidValue, NotFound
from nifti_archive.ingest import series_projects
from nifti_archive.models import PacsPeer, Project, RetrieveMethod
from nifti_archive.orthanc_api import OrthancRest, OrthancUnavailable
from nifti_archive.pacs import dicom_nodes
from nifti_archive.pacs.query import PacsQuery, QueryLevel
from nifti_archive.query.patterns import parse_value_pattern

log = logging.getLogger(__name__)
# Seconds Orthanc waits for a PACS's DICOM answers before it gives up.
DICOM_TIMEOUT = 30
# Orthanc is a C-GET client (POST /modalities/{id}/get) from this version on; Debian 12 ships 1.10.
CGET_SINCE = (1, 12, 6)


class PacsError(ArchiveError):
    """A PACS that did not answer, or refused; the message says which and what to check."""


def parse_retrieve(text: str) -> RetrieveMethod:
    """A retrieve method as a user or a JSON body spells it."""
    try:
        return RetrieveMethod(text)
    except ValueError:
        raise InvalidValue(f"retrieve is {' or '.join(m.value for m in RetrieveMethod)}, not {text!r}") from None


def check_peer(name: str, aet: str, host: str, port: int) -> str:
    """Refuses a malformed peer; returns its host as Orthanc compares it."""
    dicom_nodes.check_name("PACS", name)
    dicom_nodes.check_aet(aet)
    canonical_host = dicom_nodes.check_host(host)
    if not 1 <= port <= 65535:
        raise InvalidValue(f"invalid port {port}: 1 to 65535")
    return canonical_host


def get_peer(session: Session, name: str) -> PacsPeer:
    peer = session.scalar(select(PacsPeer).where(PacsPeer.name == name))
    if peer is None:
        known = session.scalars(select(PacsPeer.name).order_by(PacsPeer.name)).all()
        raise NotFound(f"no PACS {name!r}; known: {', '.join(known) or 'none (add one with nora --admin pacs add)'}")
    return peer


def list_peers(session: Session) -> list[PacsPeer]:
    return list(session.scalars(select(PacsPeer).order_by(PacsPeer.name)))


def save_peer(session: Session, name: str, aet: str, host: str, port: int, retrieve: RetrieveMethod = RetrieveMethod.MOVE,
              replace: bool = False, allow_query: bool | None = None, allow_retrieve: bool | None = None) -> PacsPeer:
    """Add or change a peer in the database only; ``allow_*`` None keeps what the peer had (no right for a new one)."""
    host = check_peer(name, aet, host, port)
    peer = session.scalar(select(PacsPeer).where(PacsPeer.name == name))
    if peer is not None and not replace:
        raise Conflict(f"PACS {name!r} exists already; edit it instead")
    dicom_nodes.check_aet_host_free(session, aet, host, peer_id=peer.id if peer else None)
    if peer is None:
        peer = PacsPeer(name=name, allow_query=False, allow_retrieve=False)
        session.add(peer)
    peer.aet, peer.host, peer.port, peer.retrieve = aet, host, port, retrieve
    if allow_query is not None:
        peer.allow_query = allow_query
    if allow_retrieve is not None:
        peer.allow_retrieve = allow_retrieve
    session.flush()
    return peer


def remove_peer(session: Session, name: str) -> None:
    session.delete(get_peer(session, name))


def rights(peer: PacsPeer) -> str:
    """What the peer may ask of Northanc, in words."""
    return ", ".join(service.name.lower() for service in dicom_nodes.DicomService
                     if service in dicom_nodes.peer_services(peer))


def register(put: Callable[[str, dict[str, Any]], object], peers: Iterable[PacsPeer]) -> None:
    """Declare the peers to Orthanc through ``put`` (OrthancRest.put, or the plugin's in-process call)."""
    for peer in peers:
        put(f"/modalities/{peer.name}", dicom_nodes.peer_modality(peer))


def save_peer_registered(archive: Archive, orthanc: OrthancRest, name: str, aet: str, host: str, port: int,
                         retrieve: RetrieveMethod = RetrieveMethod.MOVE, replace: bool = False,
                         allow_query: bool | None = None,
                         allow_retrieve: bool | None = None) -> dict[str, Any]:
    """Add or change a peer in the database and in Orthanc together (both or neither); returns it as JSON."""
    with dicom_nodes.changed_together(archive, orthanc, name) as (session, apply):
        check_retrieve_supported(orthanc, retrieve)
        if replace:
            get_peer(session, name)
        peer = save_peer(session, name, aet, host, port, retrieve, replace, allow_query, allow_retrieve)
        apply(dicom_nodes.peer_modality(peer))
        return peer_json(peer)


def remove_peer_registered(archive: Archive, orthanc: OrthancRest, name: str) -> None:
    """Remove a peer from the database and from Orthanc together."""
    with dicom_nodes.changed_together(archive, orthanc, name) as (session, apply):
        remove_peer(session, name)
        apply(None)


def peer_json(peer: PacsPeer) -> dict[str, Any]:
    return {"name": peer.name, "aet": peer.aet, "host": peer.host, "port": peer.port, "retrieve": peer.retrieve.value,
            "allow_query": peer.allow_query, "allow_retrieve": peer.allow_retrieve}


def _describe(peer: PacsPeer) -> str:
    return f"PACS {peer.name} ({peer.aet} at {peer.host}:{peer.port})"


def _dicom_call(peer: PacsPeer, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except OrthancUnavailable as exc:
        if exc.unreachable:
            raise
        raise PacsError(f"{_describe(peer)}: {what} failed ({exc}); check that it runs, and that it knows "
                        "Northanc's AET, host and port") from exc


def orthanc_version(orthanc: OrthancRest) -> tuple[int, ...]:
    version = str(json.loads(orthanc.get("/system")).get("Version", "0"))
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def check_retrieve_supported(orthanc: OrthancRest, retrieve: RetrieveMethod) -> None:
    """C-GET only where this Orthanc can be a C-GET client; C-MOVE always."""
    if retrieve is not RetrieveMethod.GET:
        return
    version = orthanc_version(orthanc)
    if version < CGET_SINCE:
        have = ".".join(map(str, version))
        raise InvalidValue(f"C-GET needs Orthanc {'.'.join(map(str, CGET_SINCE))} or newer as its client; this Orthanc is "
                           f"{have}: retrieve from this PACS with C-MOVE (it must know Northanc's AET)")


def echo(orthanc: OrthancRest, peer: PacsPeer) -> None:
    _dicom_call(peer, "C-ECHO", lambda: orthanc.post(f"/modalities/{peer.name}/echo", b'{"Timeout": %d}' % DICOM_TIMEOUT))


def _simplified(answer: dict[str, Any]) -> dict[str, str]:
    return {key: value if isinstance(value, str) else str(value) for key, value in answer.items()}


def find(orthanc: OrthancRest, peer: PacsPeer, query: PacsQuery) -> list[dict[str, str]]:
    """The peer's answers, each a dict of DICOM keyword to value."""
    body = {**query.orthanc_body(), "Timeout": DICOM_TIMEOUT}
    created = _dicom_call(peer, "C-FIND", lambda: orthanc.post(f"/modalities/{peer.name}/query", json.dumps(body).encode()))
    answers = json.loads(orthanc.get(f"/queries/{created['ID']}/answers?expand&simplify"))
    return [_simplified(answer) for answer in answers]


@dataclass(frozen=True)
class SeriesChoice:
    """Which series of a study a pull takes: by modality, and by a pattern on the description."""

    modality: str = ""
    description: str = ""

    def takes(self, series: dict[str, str]) -> bool:
        if self.modality and series.get("Modality", "").upper() != self.modality.upper():
            return False
        if self.description:
            return parse_value_pattern(self.description).regex().fullmatch(series.get("SeriesDescription", "")) is not None
        return True


def study_series(orthanc: OrthancRest, peer: PacsPeer, study_uid: str) -> list[dict[str, str]]:
    return find(orthanc, peer, PacsQuery(level=QueryLevel.SERIES, study_instance_uid=study_uid))


def retrieve(orthanc: OrthancRest, peer: PacsPeer, study_uid: str, series_uids: Sequence[str], target_aet: str) -> None:
    """C-MOVE (to ``target_aet``) or C-GET of the series; returns when the PACS has sent them."""
    resources = [{"StudyInstanceUID": study_uid, "SeriesInstanceUID": uid} for uid in series_uids]
    body: dict[str, Any] = {"Level": "Series", "Resources": resources, "Timeout": DICOM_TIMEOUT}
    if peer.retrieve is RetrieveMethod.MOVE:
        body["TargetAet"] = target_aet
    what = "C-MOVE" if peer.retrieve is RetrieveMethod.MOVE else "C-GET"
    check_retrieve_supported(orthanc, peer.retrieve)
    # Orthanc's route is named by the method's value: /modalities/{name}/move or /get.
    path = f"/modalities/{peer.name}/{peer.retrieve.value}"
    _dicom_call(peer, what, lambda: orthanc.post(path, json.dumps(body).encode()))


def _refuse_series_of_other_projects(session: Session, project: Project, study_uid: str, uids: Sequence[str]) -> None:
    """A series already converted lives in its project: retrieving it again changes nothing in
    Orthanc, so nothing would reach this project. Say so instead of reporting a pull that did nothing."""
    elsewhere = {owner.name for owner in series_projects.placed_elsewhere(session, project, uids).values()}
    if elsewhere:
        raise Conflict(f"series of study {study_uid} were converted into project {', '.join(sorted(elsewhere))} before; "
                       "a series lives in one project")


def pull_study(archive: Archive, orthanc: OrthancRest, peer_name: str, project_name: str, study_uid: str,
               choice: SeriesChoice = SeriesChoice()) -> list[str]:
    """Retrieve a study's chosen series from a peer into a project; returns their SeriesInstanceUIDs.

    The series then flow through ingestion (stable, converted) like any other arrival.
    """
    with archive.sessions() as session:
        peer = get_peer(session, peer_name)
        get_project(session, project_name)
        series = [s for s in study_series(orthanc, peer, study_uid) if choice.takes(s)]
        if not series:
            raise NotFound(f"{_describe(peer)} has no series of study {study_uid} that the pull takes")
        uids = [s["SeriesInstanceUID"] for s in series]
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        _refuse_series_of_other_projects(session, project, study_uid, uids)
        series_projects.claim(session, project, {uid: series_projects.Claim() for uid in uids})
    with archive.sessions() as session:
        retrieve(orthanc, get_peer(session, peer_name), study_uid, uids, archive.settings.orthanc_aet)
    log.info("pulled %d series of study %s from %s into %s", len(uids), study_uid, peer_name, project_name)
    return uids
