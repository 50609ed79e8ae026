"""DICOM peers and senders that cannot be impersonated: a real Northanc (Orthanc with the plugin)
spoken to with dcmtk's findscu, movescu and storescu from this machine's 127.0.0.1.

A node registered on 127.0.0.2 stands for a machine elsewhere: the same AET from 127.0.0.1 is a
stranger using it. Each attack sits next to the legitimate use that must still work.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.models import ConversionRequest, ConversionState, Project, RoutingRule
from nifti_archive.pacs import peers, senders
from orthanc_plugin.deployment import DICOM_TCP_ENVIRONMENT
from testbed.northanc import Northanc, northanc_settings
from testbed.pacs import renamed_study
from testbed.ports import free_port
from tests.polling import wait_until
from tests.reference import DATASETS

ELSEWHERE = "127.0.0.2"
PATIENT = re.compile(r"\(0010,0020\) LO \[([^\]]*)\]")


def series_files(tmp_path: Path, tag: str) -> list[Path]:
    """A two-instance series of its own (new UIDs), PatientID ``tag``, as files for the dcmtk tools."""
    source = sorted((DATASETS["dcm_qa"] / "In" / "Orientation" / "sag" / "sagdesc36").iterdir())
    folder = tmp_path / tag
    folder.mkdir()
    paths = []
    for number, data in enumerate(renamed_study(source, tag), start=1):
        path = folder / f"{number}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def uid_of(path: Path, keyword: str) -> str:
    import pydicom

    return str(getattr(pydicom.dcmread(path, stop_before_pixels=True), keyword))


def dcmtk(*command: str) -> str:
    result = subprocess.run(list(command), check=False, capture_output=True, text=True, timeout=120,
                            env={**DICOM_TCP_ENVIRONMENT, "PATH": "/usr/bin:/bin"})
    return result.stdout + result.stderr


def refused(output: str) -> bool:
    return "Peer aborted Association" in output or "Rejected Permanent" in output or "Association Rejected" in output


def store(northanc: Northanc, aet: str, files: list[Path], called_aet: str = "NORTHANC") -> bool:
    """C-STORE from ``aet``; whether Orthanc holds the instances afterwards."""
    dcmtk("storescu", "-aet", aet, "-aec", called_aet, "127.0.0.1", str(northanc.settings.orthanc_dicom_port),
          *map(str, files))
    return all(northanc.rest.post("/tools/lookup", uid_of(path, "SOPInstanceUID").encode(), "text/plain")
               for path in files)


def find(northanc: Northanc, aet: str) -> tuple[list[str], str]:
    """C-FIND of every study from ``aet``: the PatientIDs answered, and dcmtk's output."""
    output = dcmtk("findscu", "-v", "-S", "-aet", aet, "-aec", "NORTHANC", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", "PatientID", "127.0.0.1", str(northanc.settings.orthanc_dicom_port))
    return [found.strip() for found in PATIENT.findall(output)], output


def move(northanc: Northanc, aet: str, listen_port: int, study_uid: str, into: Path) -> tuple[list[Path], str]:
    """C-MOVE of a study from ``aet`` to itself (movescu receives on ``listen_port``): the files received."""
    into.mkdir()
    output = dcmtk("movescu", "-S", "-aet", aet, "-aem", aet, "-aec", "NORTHANC", "--port", str(listen_port),
                   "-od", str(into), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                   "127.0.0.1", str(northanc.settings.orthanc_dicom_port))
    return sorted(into.iterdir()), output


def nora(northanc: Northanc, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return northanc.nora(*args, **env)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused_with(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


@dataclasses.dataclass
class Guarded:
    """Northanc with accept_unregistered_senders off, a sender and peers, and a study sent by the sender."""

    northanc: Northanc
    study_uid: str
    patient: str
    plain_port: int


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    base = tmp_path_factory.mktemp("guarded")
    settings = dataclasses.replace(northanc_settings(base / "northanc"), accept_unregistered_senders=False)
    northanc = Northanc.start(settings)
    plain_port = free_port()
    try:
        ok(nora(northanc, "--admin", "sender", "add", "ct1", "CT1", "127.0.0.1"))
        ok(nora(northanc, "--admin", "sender", "add", "far", "FARCT", ELSEWHERE))
        ok(nora(northanc, "--admin", "pacs", "add", "plain", "PLAINPACS", "127.0.0.1", str(plain_port)))
        ok(nora(northanc, "--admin", "pacs", "add", "remote", "REMOTEPACS", ELSEWHERE, str(free_port()),
                "--allow-query", "yes", "--allow-retrieve", "yes"))
        files = series_files(base, "GUARDED-1")
        assert store(northanc, "CT1", files), "a registered sender's C-STORE is taken"
        yield Guarded(northanc, uid_of(files[0], "StudyInstanceUID"), "GUARDED-1", plain_port)
    finally:
        northanc.stop()


def test_a_peer_with_default_rights_may_store_but_neither_find_nor_move(guarded: Guarded, tmp_path: Path) -> None:
    northanc = guarded.northanc
    assert store(northanc, "PLAINPACS", series_files(tmp_path, "FROM-PLAIN")), "the answers of our C-MOVE are taken"
    answers, output = find(northanc, "PLAINPACS")
    assert answers == [] and refused(output), output
    received, output = move(northanc, "PLAINPACS", guarded.plain_port, guarded.study_uid, tmp_path / "moved")
    assert received == [] and refused(output), output
    assert "plain\tPLAINPACS\t127.0.0.1:" in ok(nora(northanc, "--admin", "pacs", "list"))
    assert "\techo, store\n" in ok(nora(northanc, "--admin", "pacs", "list"))


def test_a_site_admin_lets_a_peer_query_and_then_retrieve(guarded: Guarded, tmp_path: Path) -> None:
    northanc = guarded.northanc
    port = str(free_port())
    added = ok(nora(northanc, "--admin", "pacs", "add", "trusted", "TRUSTEDPACS", "127.0.0.1", port))
    assert added == "PACS trusted saved; it may echo, store\n"
    assert find(northanc, "TRUSTEDPACS")[0] == []

    granted = ok(nora(northanc, "--admin", "pacs", "edit", "trusted", "TRUSTEDPACS", "127.0.0.1", port, "--allow-query", "yes"))
    assert granted == "PACS trusted saved; it may echo, store, find\n"
    answers, output = find(northanc, "TRUSTEDPACS")
    assert guarded.patient in answers, output
    received, output = move(northanc, "TRUSTEDPACS", int(port), guarded.study_uid, tmp_path / "before")
    assert received == [] and refused(output), output

    ok(nora(northanc, "--admin", "pacs", "edit", "trusted", "TRUSTEDPACS", "127.0.0.1", port, "--allow-retrieve", "yes"))
    received, output = move(northanc, "TRUSTEDPACS", int(port), guarded.study_uid, tmp_path / "after")
    assert len(received) == 2, output
    assert guarded.patient in find(northanc, "TRUSTEDPACS")[0], "an edit that names no right keeps the rights given"


def test_a_stranger_using_a_registered_peers_aet_from_another_host_is_refused(guarded: Guarded, tmp_path: Path) -> None:
    northanc = guarded.northanc
    with northanc.archive.sessions() as session:
        remote = peers.get_peer(session, "remote")
        assert remote.allow_query and remote.allow_retrieve and remote.host == ELSEWHERE
    answers, output = find(northanc, "REMOTEPACS")
    assert answers == [] and refused(output), output
    # movescu listens on every address: Orthanc would reach it at 127.0.0.2 if it moved anything.
    received, output = move(northanc, "REMOTEPACS", remote.port, guarded.study_uid, tmp_path / "moved")
    assert received == [] and refused(output), output
    assert not store(northanc, "REMOTEPACS", series_files(tmp_path, "FROM-IMPOSTOR"))


def test_c_store_only_from_registered_senders_on_their_host_also_after_a_restart(guarded: Guarded, tmp_path: Path) -> None:
    northanc = guarded.northanc
    assert not store(northanc, "STRANGER", series_files(tmp_path, "FROM-STRANGER"))
    assert not store(northanc, "FARCT", series_files(tmp_path, "FROM-FAR-AET")), "FARCT is registered for 127.0.0.2"
    assert ok(nora(northanc, "--admin", "sender", "list")) == f"ct1\tCT1\t127.0.0.1\nfar\tFARCT\t{ELSEWHERE}\n"
    northanc.orthanc.stop()
    northanc.restart()
    assert store(northanc, "CT1", series_files(tmp_path, "AFTER-RESTART")), "Orthanc learns the senders at start"
    assert not store(northanc, "STRANGER", series_files(tmp_path, "STRANGER-AFTER"))
    answers, output = find(northanc, "REMOTEPACS")
    assert answers == [] and refused(output), output


@pytest.mark.parametrize(("args", "message"), [
    (("sender", "add", "ct9", "CT9", "scanner.example.org"), "give its IP address"),
    (("sender", "add", "ct3", "ct1", "127.0.0.5"), "AET ct1 is registered for 127.0.0.1 already (sender ct1)"),
    (("sender", "add", "ct1", "CT1", "127.0.0.1"), "sender 'ct1' exists already"),
    (("sender", "add", "bad name", "X", "127.0.0.1"), "invalid sender name"),
    (("pacs", "add", "clash", "FARCT", "127.0.0.1", "104"), "AET FARCT is registered for 127.0.0.2 already (sender far)"),
    (("pacs", "add", "named", "NAMED", "peers.example.org", "104"), "give its IP address"),
    (("sender", "remove", "nobody"), "no sender 'nobody'"),
])
def test_bad_senders_and_peers_exit_2_and_change_nothing(guarded: Guarded, args: tuple[str, ...], message: str) -> None:
    northanc = guarded.northanc
    before = [ok(nora(northanc, "--admin", area, "list")) for area in ("sender", "pacs")]
    modalities_before = northanc.rest.get("/modalities")
    refused_with(nora(northanc, "--admin", *args), message)
    assert [ok(nora(northanc, "--admin", area, "list")) for area in ("sender", "pacs")] == before
    assert northanc.rest.get("/modalities") == modalities_before


def test_with_orthanc_down_a_new_peer_or_sender_is_refused_and_nothing_saved(guarded: Guarded) -> None:
    northanc = guarded.northanc
    down = {"NORTHANC_ORTHANC_URL": f"http://127.0.0.1:{free_port()}"}
    refused_with(nora(northanc, "--admin", "pacs", "add", "later", "LATER", "127.0.0.1", "104", **down),
                 "nothing was changed: Orthanc must run")
    refused_with(nora(northanc, "--admin", "sender", "add", "mr9", "MR9", "127.0.0.1", **down), "nothing was changed")
    refused_with(nora(northanc, "--admin", "pacs", "remove", "plain", **down), "nothing was changed")
    assert "later" not in ok(nora(northanc, "--admin", "pacs", "list"))
    assert "plain\t" in ok(nora(northanc, "--admin", "pacs", "list"))
    assert "mr9" not in ok(nora(northanc, "--admin", "sender", "list"))


def test_a_sender_named_by_a_rule_is_kept_until_the_rule_goes(guarded: Guarded) -> None:
    northanc = guarded.northanc
    ok(nora(northanc, "--admin", "sender", "add", "mr5", "MR5", "127.0.0.1"))
    ok(nora(northanc, "-c", "kept"))
    refused_with(nora(northanc, "--admin", "route", "add", "kept", "--aet", "KEPT", "--senders", "mr5,nosuch"),
                 "no sender 'nosuch'")
    assert "KEPT" not in ok(nora(northanc, "--admin", "route", "list")), "a refused rule is not half saved"
    rule_id = ok(nora(northanc, "--admin", "route", "add", "kept", "--aet", "KEPT", "--senders", "mr5")).split()[-1]
    assert f"{rule_id}\t100\taet=KEPT\t-> kept\tfrom mr5\n" in ok(nora(northanc, "--admin", "route", "list"))
    refused_with(nora(northanc, "--admin", "sender", "remove", "mr5"), f"named by routing rule {rule_id}")
    ok(nora(northanc, "--admin", "route", "remove", rule_id))
    assert ok(nora(northanc, "--admin", "sender", "remove", "mr5")) == "sender mr5 removed\n"
    assert "_sender_mr5" not in json.loads(northanc.rest.get("/modalities"))


def answer(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert isinstance(body, dict), response.text
    return body


def test_site_admins_give_and_see_a_peers_rights_in_the_portal(guarded: Guarded) -> None:
    from portal.app import create_app

    northanc = guarded.northanc
    with northanc.archive.unit_of_work() as (session, _journal):
        admin, _password = accounts.create_user(session, "peersadmin", site_admin=True)
        headers = {"Authorization": f"Bearer {accounts.create_token(session, admin, 'test').secret}"}
    client = create_app(northanc.settings, northanc.archive).test_client()
    body = {"name": "portalpeer", "aet": "PORTALPACS", "host": "127.0.0.1", "port": 11112}
    added = client.post("/api/v1/pacs", json=body, headers=headers)
    assert added.status_code == 201 and answer(added)["allow_query"] is False and answer(added)["allow_retrieve"] is False
    edited = client.put("/api/v1/pacs/portalpeer", json={**body, "allow_query": True}, headers=headers)
    assert edited.status_code == 200 and answer(edited)["allow_query"] is True and answer(edited)["allow_retrieve"] is False
    registered = json.loads(northanc.rest.get("/modalities?expand"))["portalpeer"]
    assert registered["AllowFind"] is True and registered["AllowMove"] is False and registered["AllowGet"] is False
    assert registered["AllowStore"] is True and registered["Host"] == "127.0.0.1"
    assert find(northanc, "PORTALPACS")[0], "the right is in force at once"

    wrong = client.put("/api/v1/pacs/portalpeer", json={**body, "allow_retrieve": "yes"}, headers=headers)
    assert wrong.status_code == 400 and answer(wrong) == {"error": "allow_retrieve must be true or false"}
    named = client.put("/api/v1/pacs/portalpeer", json={**body, "host": "peers.example.org"}, headers=headers)
    assert named.status_code == 400 and "give its IP address" in answer(named)["error"]
    assert json.loads(northanc.rest.get("/modalities?expand"))["portalpeer"]["Host"] == "127.0.0.1"
    listed = answer(client.get("/api/v1/pacs", headers=headers))["peers"]
    assert {"name": "portalpeer", "allow_query": True, "allow_retrieve": False}.items() <= next(
        p for p in listed if p["name"] == "portalpeer").items()

    with northanc.archive.unit_of_work() as (session, _journal):
        accounts.set_password(accounts.get_user(session, "peersadmin"), "peers admin password")
    page_client = create_app(northanc.settings, northanc.archive).test_client()
    page_client.get("/login")
    with page_client.session_transaction() as session:
        csrf = str(session["csrf_token"])
    page_client.post("/login", data={"username": "peersadmin", "password": "peers admin password", "csrf_token": csrf})
    page = page_client.get("/admin/pacs")
    assert page.status_code == 200
    row = re.search(r'<tr data-peer="portalpeer".*?</tr>', page.text, re.DOTALL)
    assert row is not None
    assert '<td class="allow-query">yes</td><td class="allow-retrieve">no</td>' in row.group(0)


@pytest.fixture(scope="module")
def open_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Northanc]:
    """Northanc as embedded by default: C-STORE from anyone is taken."""
    base = tmp_path_factory.mktemp("open")
    northanc = Northanc.start(northanc_settings(base / "northanc"))
    assert northanc.settings.accept_unregistered_senders
    try:
        ok(nora(northanc, "--admin", "sender", "add", "ct1", "CT1", "127.0.0.1"))
        ok(nora(northanc, "--admin", "sender", "add", "ct2", "CT2", ELSEWHERE))
        for project, aet, who in (("beta", "BETA", "ct1"), ("gamma", "GAMMA", "ct2")):
            ok(nora(northanc, "-c", project))
            ok(nora(northanc, "--admin", "route", "add", project, "--aet", aet, "--senders", who))
        ok(nora(northanc, "-c", "open"))
        ok(nora(northanc, "--admin", "route", "add", "open", "--aet", "OPEN"))
        yield northanc
    finally:
        northanc.stop()


def converted_into(northanc: Northanc, series_uid: str) -> str:
    """The project a series was converted into, once its conversion finished."""

    def finished() -> tuple[ConversionState, str, str | None] | None:
        with northanc.archive.sessions() as session:
            row = session.execute(
                select(ConversionRequest.state, ConversionRequest.message, Project.name)
                .outerjoin(Project, Project.id == ConversionRequest.project_id)
                .where(ConversionRequest.series_instance_uid == series_uid,
                       ConversionRequest.state.in_((ConversionState.DONE, ConversionState.FAILED)))
            ).first()
            return (row[0], row[1] or "", row[2]) if row else None

    result = wait_until(finished, 180, f"series {series_uid} converted")
    assert result is not None
    state, message, project = result
    assert state is ConversionState.DONE and project, message
    return project


def test_a_rule_with_senders_routes_only_their_series(open_site: Northanc, tmp_path: Path) -> None:
    sent = {}
    for tag, aet, called in (("CT1-BETA", "CT1", "BETA"), ("STRANGER-BETA", "STRANGER", "BETA"),
                             ("IMPOSTOR-GAMMA", "CT2", "GAMMA"), ("STRANGER-OPEN", "STRANGER", "OPEN")):
        files = series_files(tmp_path, tag)
        assert store(open_site, aet, files, called), "with accept_unregistered_senders on, anyone may C-STORE"
        sent[tag] = uid_of(files[0], "SeriesInstanceUID")
    assert converted_into(open_site, sent["CT1-BETA"]) == "beta"
    assert converted_into(open_site, sent["STRANGER-BETA"]) == "inbox", "knowing beta's AET is not enough"
    assert converted_into(open_site, sent["IMPOSTOR-GAMMA"]) == "inbox", "ct2's AET from another host is not ct2"
    assert converted_into(open_site, sent["STRANGER-OPEN"]) == "open", "a rule without senders takes anyone"
    with open_site.archive.sessions() as session:
        rules = {rule.called_aet: rule.id for rule in session.scalars(select(RoutingRule))}
        assert senders.rule_sender_names(session)[rules["BETA"]] == ["ct1"]
