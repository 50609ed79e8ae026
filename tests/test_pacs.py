"""Query/retrieve against real peers: a plain Orthanc and dcmtk's dcmqrscp, each with its own
data from tests/data; Northanc's Orthanc does the DICOM networking."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.errors
import pytest
from sqlalchemy import func, select

from nifti_archive.catalog.projects import add_route, create_project
from nifti_archive.errors import Conflict, InvalidValue, NotFound
from nifti_archive.models import File, Project, PullRow, RetrieveMethod, Study, Subject
from nifti_archive.pacs import peers
from nifti_archive.pacs.query import parse_query
from orthanc_plugin.deployment import OrthancProcess
from testbed.northanc import Northanc, northanc_settings
from testbed.pacs import Dcmqrscp, Destination, renamed_study, start_dcmqrscp, start_orthanc_pacs
from testbed.ports import free_port
from tests.conftest import NORA, postgresql_everywhere
from tests.polling import wait_until
from tests.reference import DATASETS, compare, input_files, references, sidecar_key


@dataclass
class Site:
    northanc: Northanc
    orthanc_pacs: OrthancProcess
    dcmqrscp: Dcmqrscp


def study_uid(files: list[Path]) -> str:
    uids = set()
    for path in files:
        try:
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID))
        except pydicom.errors.InvalidDicomError:
            continue  # the notes and READMEs among the DICOM
    assert len(uids) == 1
    return uids.pop()


def running_site(base: Path, databases: dict[str, str]) -> Iterator[Site]:
    northanc = Northanc.start(northanc_settings(base / "northanc", **databases))
    destination = Destination(northanc.settings.orthanc_aet, northanc.settings.orthanc_dicom_port)
    nih_siemens = [p for p in input_files("dcm_qa_nih") if "20180918Si" in str(p)]
    orthanc_pacs = start_orthanc_pacs(base / "orthanc-pacs", "ORTHANCPACS", {"northanc": destination},
                                      input_files("dcm_qa") + nih_siemens,
                                      {study_uid(input_files("dcm_qa")): "ACC-QA", study_uid(nih_siemens): "ACC-NIH"})
    # Each test that pulls into a project of its own pulls a study of its own: a series lives in one project.
    for tag in ("ACC-COHORT", "ACC-RESUME", "ACC-PORTAL", "ACC-BROWSER"):
        for data in renamed_study(nih_siemens, tag, tag.replace("ACC-", "PATIENT-")):
            orthanc_pacs.api().store(data)
    # dcmqrscp knows another destination only: a C-MOVE to Northanc must be refused.
    qrscp = start_dcmqrscp(base / "dcmqrscp", "QRSCP", {"elsewhere": Destination("ELSEWHERE", free_port())},
                           DATASETS["dcm_qa_nih"] / "In")
    with northanc.archive.unit_of_work() as (session, journal):
        peers.save_peer(session, "hospital", "ORTHANCPACS", "127.0.0.1", orthanc_pacs.settings.orthanc_dicom_port)
        peers.save_peer(session, "qr", "QRSCP", "127.0.0.1", qrscp.port)
        peers.save_peer(session, "offline", "NOBODY", "127.0.0.1", free_port())
        peers.register(northanc.rest.put, peers.list_peers(session))
        for name in ("pulled", "routed", "cohort"):
            create_project(session, journal, northanc.archive.layout, name)
    yield Site(northanc, orthanc_pacs, qrscp)
    qrscp.stop()
    orthanc_pacs.stop()
    northanc.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from running_site(tmp_path_factory.mktemp("pacs"), {})


@pytest.fixture(scope="module")
def site_on_postgresql(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The same site with Northanc's Orthanc and its archive indexed in PostgreSQL."""
    yield from running_site(tmp_path_factory.mktemp("pacs-postgresql"), postgresql_everywhere(request))


def peer(site: Site, name: str) -> peers.PacsPeer:
    with site.northanc.archive.sessions() as session:
        return peers.get_peer(session, name)


def find(site: Site, name: str, **values: str) -> list[dict[str, str]]:
    return peers.find(site.northanc.rest, peer(site, name), parse_query(values))


def test_echo_reaches_both_peers_and_names_the_one_that_is_down(site: Site) -> None:
    peers.echo(site.northanc.rest, peer(site, "hospital"))
    peers.echo(site.northanc.rest, peer(site, "qr"))
    with pytest.raises(peers.PacsError, match=r"PACS offline \(NOBODY at 127.0.0.1:\d+\): C-ECHO failed"):
        peers.echo(site.northanc.rest, peer(site, "offline"))


@pytest.mark.parametrize("name", ["hospital", "qr"])
def test_query_by_name_date_range_and_modality(site: Site, name: str) -> None:
    everything = peers.find(site.northanc.rest, peer(site, name), parse_query({}, confirm_broad=True))
    assert everything, "the peer holds studies"
    sample = everything[0]
    by_name = find(site, name, patient_name=sample["PatientName"][:3] + "*")
    assert sample["StudyInstanceUID"] in {a["StudyInstanceUID"] for a in by_name}
    day = sample["StudyDate"]
    iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    in_range = find(site, name, study_date=f"{iso}..{iso}")
    assert {a["StudyDate"] for a in in_range} == {day}
    assert find(site, name, study_date="1900-01-01..1900-12-31") == []
    series = peers.study_series(site.northanc.rest, peer(site, name), sample["StudyInstanceUID"])
    modality = series[0]["Modality"]
    assert all(a["StudyInstanceUID"] for a in find(site, name, patient_id=sample["PatientID"], modality=modality))


@pytest.mark.parametrize("site_fixture", ["site", pytest.param("site_on_postgresql", marks=pytest.mark.postgres)])
def test_pull_a_study_by_cmove_into_the_chosen_project_whatever_the_routing(request: pytest.FixtureRequest, site_fixture: str) -> None:
    site: Site = request.getfixturevalue(site_fixture)
    northanc = site.northanc
    study = find(site, "hospital", patient_id="crlab")[0]
    with northanc.archive.unit_of_work() as (session, _journal):
        routed = session.scalar(select(Project).where(Project.name == "routed"))
        add_route(session, routed, None, "PatientID", ".*", 1)
    pulled = peers.pull_study(northanc.archive, northanc.rest, "hospital", "pulled", study["StudyInstanceUID"])
    assert pulled

    # This study's files only: the site, and its conversion queue, are shared by the module's tests.
    def converted() -> list[str] | None:
        with northanc.archive.sessions() as session:
            projects = list(session.scalars(
                select(Project.name).join(Subject, Subject.project_id == Project.id)
                .join(Study, Study.subject_id == Subject.id).join(File, File.study_id == Study.id)
                .where(File.path.endswith(".nii.gz"), Study.study_instance_uid == study["StudyInstanceUID"])
            ))
        return projects if len(projects) >= len(pulled) else None

    assert set(wait_until(converted, 180, "the pulled study's series converted")) == {"pulled"}
    refs = references("dcm_qa")
    folder = northanc.settings.archive_root / "pulled"
    matched = 0
    for nifti in folder.rglob("*.nii.gz"):
        sidecar = json.loads(nifti.with_name(nifti.name.replace(".nii.gz", ".json")).read_text())
        assert compare(nifti, sidecar, refs[sidecar_key(sidecar)]) == []
        matched += 1
    assert matched == len(pulled)


def test_a_study_already_converted_into_another_project_is_refused_not_silently_skipped(site: Site) -> None:
    northanc = site.northanc
    study = find(site, "hospital", patient_id="crlab")[0]["StudyInstanceUID"]
    peers.pull_study(northanc.archive, northanc.rest, "hospital", "pulled", study)  # there already, or now
    wait_until(lambda: converted_projects(site, study) == {"pulled"}, 180, "the study converted into 'pulled'")
    with pytest.raises(Conflict, match=f"series of study {study} were converted into project pulled before"):
        peers.pull_study(northanc.archive, northanc.rest, "hospital", "routed", study)


def converted_projects(site: Site, study_uid: str) -> set[str]:
    with site.northanc.archive.sessions() as session:
        return set(session.scalars(
            select(Project.name).join(Subject, Subject.project_id == Project.id).join(Study, Study.subject_id == Subject.id)
            .where(Study.study_instance_uid == study_uid)
        ))


def test_a_move_to_a_destination_the_pacs_does_not_know_is_refused_clearly(site: Site) -> None:
    study = find(site, "qr", patient_name="*", study_date="..2100-01-01")[0]
    with pytest.raises(peers.PacsError, match=r"PACS qr \(QRSCP at .*\): C-MOVE failed"):
        peers.pull_study(site.northanc.archive, site.northanc.rest, "qr", "pulled", study["StudyInstanceUID"])


def test_a_pull_of_a_study_the_pacs_does_not_have_is_not_found(site: Site) -> None:
    with pytest.raises(NotFound, match="has no series of study 1.2.3.4"):
        peers.pull_study(site.northanc.archive, site.northanc.rest, "hospital", "pulled", "1.2.3.4")


def test_peers_are_validated(site: Site) -> None:
    with site.northanc.archive.unit_of_work() as (session, _journal):
        with pytest.raises(Conflict):
            peers.save_peer(session, "hospital", "X", "127.0.0.1", 104)
        with pytest.raises(InvalidValue, match="AET"):
            peers.save_peer(session, "bad", "A\\B", "127.0.0.1", 104)
        with pytest.raises(InvalidValue, match="port"):
            peers.save_peer(session, "bad", "AET", "127.0.0.1", 70000)


def nora(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NORA), *args], env=site.northanc.env(), capture_output=True, text=True, timeout=300, check=False)


def test_the_command_line_adds_tests_queries_and_pulls(site: Site) -> None:
    port = str(site.orthanc_pacs.settings.orthanc_dicom_port)
    added = nora(site, "--admin", "pacs", "add", "second", "ORTHANCPACS", "127.0.0.1", port)
    assert added.returncode == 0, added.stderr
    assert f"second\tORTHANCPACS\t127.0.0.1:{port}\tmove\t" in nora(site, "--admin", "pacs", "list").stdout
    assert nora(site, "--admin", "pacs", "echo", "second").stdout == "second answered C-ECHO\n"
    down = nora(site, "--admin", "pacs", "echo", "offline")
    assert down.returncode == 2 and "C-ECHO failed" in down.stderr
    found = nora(site, "--find", "second", "--patient_id", "crlab", "--study_date", "..2100-01-01", "--modality", "MR")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0].startswith("PatientName\tPatientID\tStudyInstanceUID") and lines[-1].endswith("answer(s)")
    study_uid = lines[1].split("\t")[2]
    pulled = nora(site, "-p", "pulled", "--pull_study", "second", study_uid, "--series_description", "*", "--wait", "180")
    assert pulled.returncode == 0, pulled.stderr
    assert f"{study_uid}: " in pulled.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--find", "second"), "whole PACS"),
    (("--find", "second", "--study_date", "2024-02-30"), "is not a date"),
    (("--find", "nowhere", "--patient_id", "1"), "no PACS 'nowhere'"),
    (("--select", "*", "--patient_id", "1"), "--patient_id goes with --find"),
    (("-p", "pulled", "--pull_study", "second"), "a PACS and one or more"),
])
def test_bad_queries_exit_2_with_the_reason(site: Site, args: tuple[str, ...], message: str) -> None:
    nora(site, "--admin", "pacs", "add", "second", "ORTHANCPACS", "127.0.0.1", str(site.orthanc_pacs.settings.orthanc_dicom_port))
    result = nora(site, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_cohort_pull_reports_the_unknown_accession_failed_and_the_others_done(site: Site, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("AccessionNumber;Modality\nACC-NIH;MR\nACC-404;\nACC-COHORT;\n")
    result = nora(site, "-p", "cohort", "--pull", str(cohort), "--pacs", "hospital")
    assert result.returncode == 0, result.stderr
    assert "3 studies from hospital into cohort" in result.stdout
    report = list(csv.DictReader(cohort.with_suffix(".report.csv").open()))
    states = {row["accession_number"]: (row["state"], row["message"]) for row in report}
    assert states["ACC-404"][0] == "failed" and "has no study with accession number ACC-404" in states["ACC-404"][1]
    assert states["ACC-NIH"][0] == "done" and states["ACC-COHORT"][0] == "done"
    assert [row["line"] for row in report] == ["2", "3", "4"]

    nih = next(a for a in find(site, "hospital", accession_number="ACC-NIH"))
    wanted = {s["SeriesInstanceUID"] for s in peers.study_series(site.northanc.rest, peer(site, "hospital"), nih["StudyInstanceUID"])}

    def converted() -> set[str]:
        with site.northanc.archive.sessions() as session:
            return set(session.scalars(
                select(File.source_series_uid).join(Study, Study.id == File.study_id)
                .join(Subject, Subject.id == Study.subject_id).join(Project, Project.id == Subject.project_id)
                .where(Project.name == "cohort", File.path.endswith(".nii.gz"))
            ))

    wait_until(lambda: wanted <= converted(), 180, "the NIH Siemens study's series converted into the cohort's project")
    listing = nora(site, "-p", "cohort", "--pulls").stdout
    assert "done 2 failed 1" in listing.replace("queued 0 running 0 ", "")


def test_a_cohort_with_a_faulty_row_queues_nothing(site: Site, tmp_path: Path) -> None:
    cohort = tmp_path / "bad.csv"
    cohort.write_text("PatientID,StudyDate\nP1,2024-01-01\nP2,2024-13-01\nP3,\n")
    result = nora(site, "-p", "cohort", "--pull", str(cohort), "--pacs", "hospital")
    assert result.returncode == 2
    assert "line 3: study date: '2024-13-01' is not a date" in result.stderr and "line 4: needs" in result.stderr
    with site.northanc.archive.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PullRow).where(PullRow.patient_id == "P1")) == 0


def test_an_unreachable_pacs_is_retried_with_backoff_then_reported(site: Site, tmp_path: Path) -> None:
    cohort = tmp_path / "offline.csv"
    cohort.write_text("AccessionNumber\nACC-QA\n")
    env = {**site.northanc.env(), "NORTHANC_PULL_ATTEMPTS": "2", "NORTHANC_PULL_RETRY_SECONDS": "1"}
    result = subprocess.run([str(NORA), "-p", "cohort", "--pull", str(cohort), "--pacs", "offline"], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader(cohort.with_suffix(".report.csv").open())
    assert row["state"] == "failed" and row["attempts"] == "2"
    assert row["message"].startswith("gave up after 2 attempts: PACS offline") and "C-FIND failed" in row["message"]


def test_a_pull_left_running_by_a_stopped_process_is_resumed(site: Site, tmp_path: Path) -> None:
    from nifti_archive.models import PullState
    from nifti_archive.pacs import pull_queue
    from nifti_archive.pacs.cohort import CohortRow

    with site.northanc.archive.unit_of_work() as (session, _journal):
        cohort = pull_queue.create_cohort(session, "cohort", "hospital", str(tmp_path / "lost.csv"), "test",
                                          [CohortRow(2, accession_number="ACC-RESUME"), CohortRow(3, accession_number="ACC-RESUME")])
        cohort_id = cohort.id
        session.query(PullRow).filter_by(cohort_id=cohort_id, line=2).update({"state": PullState.RUNNING, "attempts": 1})
    result = nora(site, "-p", "cohort", "--pull_resume", str(cohort_id), "--report", str(tmp_path / "lost.report.csv"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "lost.report.csv").open()))
    assert [(r["line"], r["state"]) for r in rows] == [("2", "done"), ("3", "done")]
    assert rows[0]["attempts"] == "2", "the interrupted attempt counts"


def test_a_portal_upload_is_recorded_by_name_only_and_resumed_into_the_report_folder(site: Site, tmp_path: Path) -> None:
    from nifti_archive import accounts
    from nifti_archive.models import PullCohort, Role
    from nifti_archive.pacs import pull_queue
    from portal.app import create_app

    northanc = site.northanc
    with northanc.archive.unit_of_work() as (session, _journal):
        user, _password = accounts.create_user(session, "uploader")
        accounts.grant_role(session, user, session.scalars(select(Project).filter_by(name="cohort")).one(), Role.EDITOR)
        headers = {"Authorization": f"Bearer {accounts.create_token(session, user, 'test').secret}"}
    client = create_app(northanc.settings, northanc.archive).test_client()
    hostile = "../escape/evil.csv"
    started = client.post("/api/v1/projects/cohort/pulls", headers=headers, content_type="multipart/form-data",
                          data={"peer": "hospital", "cohort": (io.BytesIO(b"AccessionNumber\nACC-404\n"), hostile)})
    assert started.status_code == 202, started.json
    cohort_id = started.json["pull"]
    with northanc.archive.sessions() as session:
        assert session.get_one(PullCohort, cohort_id).source == "portal: upload 'evil.csv'"
    wait_until(lambda: client.get(f"/api/v1/projects/cohort/pulls/{cohort_id}", headers=headers).json["progress"]["failed"],
               60, "the uploaded cohort's one row to fail")
    report = pull_queue.report_path(northanc.settings, cohort_id)
    wait_until(report.is_file, 60, "the background pull to write its report")
    report.unlink()
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([str(NORA), "-p", "cohort", "--pull_resume", str(cohort_id)], cwd=work,
                            env=northanc.env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f"report {report}\n") and report.is_file()
    assert list(tmp_path.rglob("*.csv")) == [], "nothing written where the upload's name points"


def test_the_portal_queries_hides_names_reveals_with_audit_and_pulls(site: Site) -> None:
    from nifti_archive import accounts
    from nifti_archive.models import AuditEvent, Role
    from portal.app import create_app

    northanc = site.northanc
    with northanc.archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, northanc.archive.layout, "portalpull")
        project.pseudonymise = True
        tokens = {}
        for name, role in (("pulleditor", Role.EDITOR), ("pullviewer", Role.VIEWER)):
            user, _password = accounts.create_user(session, name)
            accounts.grant_role(session, user, project, role)
            tokens[name] = {"Authorization": f"Bearer {accounts.create_token(session, user, 'test').secret}"}
    client = create_app(northanc.settings, northanc.archive).test_client()
    url = "/api/v1/projects/portalpull/pacs/hospital/query"
    assert client.post(url, json={"patient_id": "PATIENT-PORTAL"}, headers=tokens["pullviewer"]).status_code == 403
    answer = client.post(url, json={"patient_id": "PATIENT-PORTAL"}, headers=tokens["pulleditor"])
    assert answer.status_code == 200, answer.json
    (patient,) = answer.json["patients"]
    assert patient["patient_id"] is None and patient["label"] == "patient 1" and "PATIENT-PORTAL" not in answer.text
    study_uid = patient["studies"][0]["study_instance_uid"]
    broad = client.post(url, json={}, headers=tokens["pulleditor"])
    assert broad.status_code == 400 and "whole PACS" in broad.json["error"]
    revealed = client.post("/api/v1/projects/portalpull/pacs/hospital/reveal", json={"study_instance_uid": study_uid},
                           headers=tokens["pulleditor"])
    assert revealed.json["patient_id"] == "PATIENT-PORTAL"
    with northanc.archive.sessions() as session:
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "reveal-identity")).all()
        assert event.username == "pulleditor" and study_uid in event.detail
    down = client.post("/api/v1/projects/portalpull/pacs/offline/query", json={"patient_id": "x"}, headers=tokens["pulleditor"])
    assert down.status_code == 502 and "C-FIND failed" in down.json["error"]
    started = client.post("/api/v1/projects/portalpull/pulls", json={"peer": "hospital", "studies": [study_uid], "modality": "MR"},
                          headers=tokens["pulleditor"])
    assert started.status_code == 202, started.json
    pull_url = f"/api/v1/projects/portalpull/pulls/{started.json['pull']}"

    def finished() -> dict[str, object] | None:
        state = client.get(pull_url, headers=tokens["pullviewer"]).json
        return state if state["progress"]["done"] + state["progress"]["failed"] == 1 else None

    state = wait_until(finished, 180, "the portal's pull to finish")
    assert state["rows"][0]["state"] == "done", state
    report = client.get(pull_url + "/report", headers=tokens["pullviewer"]).text
    assert report.splitlines()[0].startswith("line,accession_number") and ",done," in report


def test_site_admins_manage_peers_in_the_portal(site: Site) -> None:
    from nifti_archive import accounts
    from portal.app import create_app

    northanc = site.northanc
    with northanc.archive.unit_of_work() as (session, _journal):
        admin, _password = accounts.create_user(session, "pacsadmin", site_admin=True)
        headers = {"Authorization": f"Bearer {accounts.create_token(session, admin, 'test').secret}"}
    client = create_app(northanc.settings, northanc.archive).test_client()
    port = site.orthanc_pacs.settings.orthanc_dicom_port
    added = client.post("/api/v1/pacs", json={"name": "second2", "aet": "ORTHANCPACS", "host": "127.0.0.1", "port": 1},
                        headers=headers)
    assert added.status_code == 201, added.json
    assert client.post("/api/v1/pacs/second2/echo", headers=headers).status_code == 502
    edited = client.put("/api/v1/pacs/second2", json={"aet": "ORTHANCPACS", "host": "127.0.0.1", "port": port}, headers=headers)
    assert edited.status_code == 200 and edited.json["port"] == port and edited.json["retrieve"] == "move"
    assert client.post("/api/v1/pacs/second2/echo", headers=headers).json == {"echo": "ok", "peer": "second2"}
    cget = client.put("/api/v1/pacs/second2", json={"aet": "ORTHANCPACS", "host": "127.0.0.1", "port": port, "retrieve": "get"},
                      headers=headers)
    version = json.loads(northanc.rest.get("/system"))["Version"]
    if peers.orthanc_version(northanc.rest) < (1, 12, 6):
        # An older Orthanc (Debian 12 ships 1.10) cannot be a C-GET client: refused with the reason, nothing saved.
        assert cget.status_code == 400, cget.json
        assert f"C-GET needs Orthanc 1.12.6 or newer as its client; this Orthanc is {version}" in cget.json["error"]
        assert peer(site, "second2").retrieve is RetrieveMethod.MOVE
    else:
        assert cget.status_code == 200 and cget.json["retrieve"] == "get", cget.json
        assert peer(site, "second2").retrieve is RetrieveMethod.GET
    assert client.put("/api/v1/pacs/second2", json={"aet": "ORTHANCPACS", "host": "127.0.0.1", "port": port, "retrieve": "fetch"},
                      headers=headers).json == {"error": "retrieve is move or get, not 'fetch'"}
    assert client.post("/api/v1/pacs", json={"name": "bad name", "aet": "X", "host": "h", "port": 104},
                       headers=headers).status_code == 400
    assert client.delete("/api/v1/pacs/second2", headers=headers).json == {"removed": "second2"}
    with pytest.raises(NotFound):
        peer(site, "second2")


def test_the_query_page_searches_and_pulls_in_a_browser(site: Site) -> None:
    from playwright.sync_api import expect

    from nifti_archive import accounts
    from nifti_archive.models import Role
    from testbed.portal import chromium, log_in, start_portal

    northanc = site.northanc
    with northanc.archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, northanc.archive.layout, "browserpull")
        user, _password = accounts.create_user(session, "browsereditor")
        accounts.set_password(user, "browser editor password")
        accounts.grant_role(session, user, project, Role.EDITOR)
    portal = start_portal(northanc.settings)
    try:
        with chromium() as browser:
            page = browser.new_page(base_url=portal.url)
            page.set_default_timeout(60_000)
            log_in(page, "browsereditor", "browser editor password")
            page.goto("/p/browserpull/pacs")
            page.select_option("#peer", "hospital")
            page.fill("input[name=study_date]", "1900-01-01..1900-12-31")
            page.click("#query-form button[type=submit]")
            expect(page.locator("#query-summary")).to_have_text("0 studies of 0 patients")
            page.fill("input[name=study_date]", "")
            page.fill("input[name=patient_id]", "PATIENT-BROWSER")
            page.click("#query-form button[type=submit]")
            expect(page.locator("#query-summary")).to_have_text("1 studies of 1 patients")
            expect(page.locator("#results td.patient").first).to_contain_text("PATIENT-BROWSER")
            page.locator("#results input.pick").first.check()
            page.click("#pull")
            page.click("#pull-result a")
            # A retrieve and its conversion take longer than expect's default 5 s.
            expect(page.locator("#pulls tbody tr").first.locator(".progress")).to_have_text("1 done", timeout=180_000)
            page.screenshot(path=Path(__file__).resolve().parents[1] / "test-artifacts" / "pacs-pulls.png")
    finally:
        portal.stop()
