"""Senders: the scanners and nodes that C-STORE into Northanc, known by AET and host.

A sender is registered in Orthanc as a modality that may only C-STORE and C-ECHO (under the
id ``_sender_<name>``). With ``accept_unregistered_senders`` off, Orthanc takes C-STORE only from
registered senders and peers, each from its own host. A routing rule may name the senders it
accepts: a series matches it only when every instance came from one of them (the calling AET
and the address Orthanc recorded), so knowing a project's AET is not enough to send into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.catalog.projects import list_routes
from nifti_archive.errors import Conflict, NotFound
from nifti_archive.ingest.routing import Origin, Rule
from nifti_archive.models import DicomSender, RoutingRule, RoutingRuleSender
from nifti_archive.orthanc_api import OrthancRest
from nifti_archive.pacs import dicom_nodes


def get_sender(session: Session, name: str) -> DicomSender:
    sender = session.scalar(select(DicomSender).where(DicomSender.name == name))
    if sender is None:
        known = session.scalars(select(DicomSender.name).order_by(DicomSender.name)).all()
        raise NotFound(f"no sender {name!r}; known: {', '.join(known) or 'none (add one with nora --admin sender add)'}")
    return sender


def list_senders(session: Session) -> list[DicomSender]:
    return list(session.scalars(select(DicomSender).order_by(DicomSender.name)))


def add_sender(archive: Archive, orthanc: OrthancRest, name: str, aet: str, host: str) -> dict[str, Any]:
    """Register a sender in the database and in Orthanc together (both or neither)."""
    dicom_nodes.check_name("sender", name)
    dicom_nodes.check_aet(aet)
    host = dicom_nodes.check_host(host)
    with dicom_nodes.changed_together(archive, orthanc, dicom_nodes.sender_id(name)) as (session, apply):
        if session.scalar(select(DicomSender.id).where(DicomSender.name == name)) is not None:
            raise Conflict(f"sender {name!r} exists already; remove it first")
        dicom_nodes.check_aet_host_free(session, aet, host)
        sender = DicomSender(name=name, aet=aet, host=host)
        session.add(sender)
        session.flush()
        apply(dicom_nodes.sender_modality(sender))
        return {"name": sender.name, "aet": sender.aet, "host": sender.host}


def remove_sender(archive: Archive, orthanc: OrthancRest, name: str) -> None:
    """Forget a sender in the database and in Orthanc together; refused while a rule names it."""
    with dicom_nodes.changed_together(archive, orthanc, dicom_nodes.sender_id(name)) as (session, apply):
        sender = get_sender(session, name)
        # A rule that lost its last sender would accept every sender: the rule goes first.
        rules = session.scalars(select(RoutingRuleSender.rule_id).where(RoutingRuleSender.sender_id == sender.id)
                                .order_by(RoutingRuleSender.rule_id)).all()
        if rules:
            raise Conflict(f"sender {name!r} is named by routing rule {', '.join(map(str, rules))}; "
                           "remove the rule first (nora --admin route remove)")
        session.delete(sender)
        session.flush()
        apply(None)


def set_rule_senders(session: Session, rule: RoutingRule, names: Sequence[str]) -> None:
    """The senders a rule accepts from now on (none: every sender)."""
    wanted = [get_sender(session, name) for name in dict.fromkeys(names)]
    for link in session.scalars(select(RoutingRuleSender).where(RoutingRuleSender.rule_id == rule.id)):
        session.delete(link)
    session.add_all(RoutingRuleSender(rule_id=rule.id, sender_id=sender.id) for sender in wanted)
    session.flush()


def rule_sender_names(session: Session) -> dict[int, list[str]]:
    """For each rule that names senders, their names."""
    named: dict[int, list[str]] = {}
    rows = session.execute(select(RoutingRuleSender.rule_id, DicomSender.name)
                           .join(DicomSender, DicomSender.id == RoutingRuleSender.sender_id).order_by(DicomSender.name))
    for rule_id, name in rows:
        named.setdefault(rule_id, []).append(name)
    return named


def load_rules(session: Session) -> list[Rule]:
    """The routing rules in the order they are tried, each with the senders it accepts."""
    origins: dict[int, set[Origin]] = {}
    rows = session.execute(select(RoutingRuleSender.rule_id, DicomSender.aet, DicomSender.host)
                           .join(DicomSender, DicomSender.id == RoutingRuleSender.sender_id))
    for rule_id, aet, host in rows:
        origins.setdefault(rule_id, set()).add(Origin(aet, host))
    return [Rule(name, rule.called_aet, rule.tag, rule.pattern, frozenset(origins.get(rule.id, ())))
            for rule, name in list_routes(session)]
