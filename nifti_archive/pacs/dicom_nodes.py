"""The DICOM nodes Northanc knows (PACS peers and senders), as Orthanc must know them.

Orthanc checks every incoming association against its modalities: with
``DicomCheckModalityHost`` on, a calling AET is taken only from the host it was registered
with, and a modality gets only the services it is allowed. Orthanc compares the host as a
string with the caller's IP address, so a node's host must be an IP address; and when two
modalities share an AET and both allow a service, Orthanc allows it from any host, so an AET
is registered for one host only. The archive database is the one source: every change is made
in Orthanc and in the database together, and the plugin registers them all at every start.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.errors import Conflict, InvalidValue
from nifti_archive.models import DicomSender, PacsPeer
from nifti_archive.orthanc_api import OrthancRest, OrthancUnavailable

log = logging.getLogger(__name__)

NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
# An application entity title: 1-16 printable ASCII characters, no backslash, not only spaces.
AET = re.compile(r"(?=.*\S)[ -\[\]-~]{1,16}")
# Orthanc's modality ids allow letters, digits, '-' and '_'; node names start with a letter
# or digit, so this prefix keeps senders apart from PACS peers (registered under their name).
SENDER_PREFIX = "_sender_"

Put = Callable[[str, dict[str, Any]], object]


class DicomService(enum.Enum):
    """What a remote node may ask of Northanc's DICOM port (Orthanc's Allow* of a modality)."""

    ECHO = "AllowEcho"
    STORE = "AllowStore"
    FIND = "AllowFind"
    MOVE = "AllowMove"
    GET = "AllowGet"


# A PACS may C-STORE the answers of our C-MOVE and C-ECHO us; anything more is a site admin's choice.
PEER_SERVICES = frozenset({DicomService.ECHO, DicomService.STORE})
SENDER_SERVICES = PEER_SERVICES


def check_name(kind: str, name: str) -> None:
    if not NODE_NAME.fullmatch(name):
        raise InvalidValue(f"invalid {kind} name {name!r}: up to 32 letters, digits, '_' or '-'")


def check_aet(aet: str) -> None:
    if not AET.fullmatch(aet):
        raise InvalidValue(f"invalid AET {aet!r}: 1 to 16 printable characters, no backslash")


def check_host(host: str) -> str:
    """The host as Orthanc compares it with a caller's address: an IP address, written canonically."""
    try:
        return str(ipaddress.ip_address(host.strip()))
    except ValueError:
        raise InvalidValue(f"invalid host {host!r}: give its IP address (Orthanc checks callers by their address)") from None


def check_aet_host_free(session: Session, aet: str, host: str, peer_id: int | None = None,
                        sender_id: int | None = None) -> None:
    """Refuse an AET that another node uses from another host: Orthanc would then stop checking the host.

    AETs compare as Orthanc compares them (StrictAetComparison off): without case or padding."""
    wanted = aet.strip().upper()
    peers = session.execute(select(PacsPeer.name, PacsPeer.host).where(
        func.upper(func.trim(PacsPeer.aet)) == wanted, PacsPeer.id != (peer_id or -1)))
    senders = session.execute(select(DicomSender.name, DicomSender.host).where(
        func.upper(func.trim(DicomSender.aet)) == wanted, DicomSender.id != (sender_id or -1)))
    for kind, rows in (("PACS", peers), ("sender", senders)):
        for name, other_host in rows:
            if other_host != host:
                raise Conflict(f"AET {aet.strip()} is registered for {other_host} already ({kind} {name}); "
                               "an AET may come from one host only")


def modality(aet: str, host: str, port: int, services: frozenset[DicomService]) -> dict[str, Any]:
    """Orthanc's description of a node: every service it does not name is refused."""
    document: dict[str, Any] = {"AET": aet, "Host": host, "Port": port,
                                "AllowFindWorklist": False, "AllowStorageCommitment": False}
    document.update({service.value: service in services for service in DicomService})
    return document


def peer_services(peer: PacsPeer) -> frozenset[DicomService]:
    extra = {DicomService.FIND} if peer.allow_query else set()
    if peer.allow_retrieve:
        extra |= {DicomService.MOVE, DicomService.GET}
    return PEER_SERVICES | extra


def peer_modality(peer: PacsPeer) -> dict[str, Any]:
    return modality(peer.aet, peer.host, peer.port, peer_services(peer))


def sender_id(name: str) -> str:
    return SENDER_PREFIX + name


def sender_modality(sender: DicomSender) -> dict[str, Any]:
    # Orthanc never connects to a sender; the port is only there because a modality needs one.
    return modality(sender.aet, sender.host, 104, SENDER_SERVICES)


def register_all(put: Put, session: Session) -> None:
    """Declare every peer and sender to Orthanc through ``put`` (the plugin's in-process call at start)."""
    for peer in session.scalars(select(PacsPeer)):
        put(f"/modalities/{peer.name}", peer_modality(peer))
    for sender in session.scalars(select(DicomSender)):
        put(f"/modalities/{sender_id(sender.name)}", sender_modality(sender))


def _registered(orthanc: OrthancRest, modality_id: str) -> dict[str, Any] | None:
    modalities: dict[str, dict[str, Any]] = json.loads(orthanc.get("/modalities?expand"))
    return modalities.get(modality_id)


def _apply(orthanc: OrthancRest, modality_id: str, document: dict[str, Any] | None) -> None:
    if document is not None:
        orthanc.put(f"/modalities/{modality_id}", document)
        return
    try:
        orthanc.delete(f"/modalities/{modality_id}")
    except OrthancUnavailable as exc:
        if exc.status != 404:
            raise


@contextmanager
def changed_together(
    archive: Archive, orthanc: OrthancRest, modality_id: str
) -> Iterator[tuple[Session, Callable[[dict[str, Any] | None], None]]]:
    """A unit of work whose change of one modality in Orthanc stands or falls with the database's.

    The block gets a session and ``apply(document)`` (None removes the modality). Orthanc is asked
    first for what it has, so a stopped Orthanc refuses the change before anything is written; if
    anything fails after Orthanc was changed, Orthanc gets its former modality back.
    """
    try:
        previous = _registered(orthanc, modality_id)
    except OrthancUnavailable as exc:
        if not exc.unreachable:
            raise
        raise OrthancUnavailable(f"{exc}; nothing was changed: Orthanc must run to take the change") from exc
    applied = False

    def apply(document: dict[str, Any] | None) -> None:
        nonlocal applied
        applied = True
        _apply(orthanc, modality_id, document)

    try:
        with archive.unit_of_work() as (session, _journal):
            yield session, apply
    except BaseException:
        if applied:
            try:
                _apply(orthanc, modality_id, previous)
            except OrthancUnavailable:
                log.error("Orthanc's modality %s may differ from the archive until Orthanc restarts", modality_id)
        raise
