"""Ingestion that never mixes or leaks (issue 11, items 4, 5, 8 and 9), against a real Orthanc with
the plugin, dcmtk's storescu, dcm2niix and the portal: each attack next to the use that must still work.

Every test sends its own copies of the reference DICOM, rewritten with fresh UIDs and the
identifying values it needs, so that the tests can share one running Northanc.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import subprocess
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask.testing import FlaskClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from nifti_archive import accounts
from nifti_archive.models import (
    ConversionRequest,
    ConversionState,
    File,
    IngestOverride,
    Project,
    Role,
    Study,
    Subject,
    SubjectIdentity,
)
from portal.app import create_app
from testbed.northanc import Northanc, northanc_settings
from tests.polling import wait_until
from tests.portal_site import PASSWORD
from tests.reference import DATASETS
from tests.test_portal_access import log_in

MOSAIC = sorted((DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35").glob("MR*"))
IDENTIFYING = {
    "PatientName": "Identifiable^Person",
    "PatientID": "ID-SECRET-4711",
    "AccessionNumber": "ACC-SECRET-99",
    "InstitutionName": "Secret General Hospital",
    "InstitutionAddress": "1 Secret Street, Secretville",
    "StationName": "SECRETSTATION",
    "DeviceSerialNumber": "SN-SECRET-123",
    "PatientBirthDate": "19410203",
    "ReferringPhysicianName": "Referrer^Secret",
}
# How the values may show up once converted: DICOM's own form, or a person name's parts.
NEEDLES = [*IDENTIFYING.values(), "1941-02-03", "Identifiable", "Referrer", "Secret General"]


@pytest.fixture(scope="module")
def northanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Northanc]:
    running = Northanc.start(northanc_settings(tmp_path_factory.mktemp("ingest-security") / "var"))
    yield running
    running.stop()


def nora(northanc: Northanc, *args: str) -> subprocess.CompletedProcess[str]:
    return northanc.nora(*args)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], message: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def rewrite(sources: list[Path], folder: Path, series_uid: str | None = None, **values: str) -> list[Path]:
    """Copies of one series' instances with fresh UIDs (or ``series_uid``) and the given attributes."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), series_uid or generate_uid()
    written = []
    for source in sources:
        dataset = pydicom.dcmread(source)
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for keyword, value in values.items():
            setattr(dataset, keyword, value)
        path = folder / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path)
        written.append(path)
    return written


def series_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def wait_converted(northanc: Northanc, series_uids: set[str], instances: int | None = None) -> None:
    """Until each series has a finished conversion (of ``instances`` instances, where given) and none is pending."""

    def finished() -> bool:
        with northanc.archive.sessions() as session:
            rows = session.execute(
                select(ConversionRequest.series_instance_uid, ConversionRequest.state, ConversionRequest.instance_count)
                .where(ConversionRequest.series_instance_uid.in_(series_uids))
            ).all()
        if any(state.value in ("pending", "running") for _uid, state, _count in rows):
            return False
        failed = [state.value for _uid, state, _count in rows if state.value not in ("done", "superseded")]
        assert not failed, f"conversions ended {failed}; see nora --status"
        done = {uid for uid, state, count in rows if state.value == "done" and (instances is None or count == instances)}
        return done >= series_uids

    wait_until(finished, 180, f"conversions of {len(series_uids)} series", interval=0.25)


def projects_of(northanc: Northanc, series_uid: str) -> dict[str, int]:
    """Live NIfTI files of a series by project, and the most instances any of them was made from."""
    with northanc.archive.sessions() as session:
        rows = session.execute(
            select(Project.name, File.instance_count).join(Subject, Subject.project_id == Project.id)
            .join(Study, Study.subject_id == Subject.id).join(File, File.study_id == Study.id)
            .where(File.source_series_uid == series_uid, File.trash_id.is_(None), File.path.endswith(".nii.gz"))
        ).all()
    found: dict[str, int] = {}
    for name, count in rows:
        found[name] = max(found.get(name, 0), count or 0)
    return found


def instance_count(northanc: Northanc) -> int:
    return len(json.loads(northanc.rest.get("/instances")))


def overrides(northanc: Northanc) -> set[tuple[str, int]]:
    with northanc.archive.sessions() as session:
        return {(o.series_instance_uid, o.project_id) for o in session.scalars(select(IngestOverride))}


def orthanc_instance_id(dataset: pydicom.Dataset) -> str:
    """Orthanc's id of an instance: the SHA-1 of its patient, study, series and instance ids."""
    key = "|".join(str(dataset[k].value) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
    digest = hashlib.sha1(key.encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def user_with_token(northanc: Northanc, username: str, project: str, role: Role) -> dict[str, str]:
    with northanc.archive.unit_of_work() as (session, _journal):
        user, _one_time = accounts.create_user(session, username)
        accounts.set_password(user, PASSWORD)
        accounts.grant_role(session, user, session.scalars(select(Project).where(Project.name == project)).one(), role)
        return {"Authorization": f"Bearer {accounts.create_token(session, user, 'test').secret}"}


def zipped(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, f"export/{path.name}")
    return buffer.getvalue()


def upload(client: FlaskClient, project: str, auth: dict[str, str], data: bytes, name: str = "upload.zip") -> Any:
    return client.post(f"/api/v1/projects/{project}/import", headers=auth, content_type="multipart/form-data",
                       data={"thefile": (io.BytesIO(data), name)})


def test_a_series_stays_in_the_project_it_was_converted_into(northanc: Northanc, tmp_path: Path) -> None:
    for name, aet in (("owner", "OWNER"), ("intruder", "INTRUDER")):
        ok(nora(northanc, "-c", name))
        ok(nora(northanc, "--admin", "route", "add", name, "--aet", aet))
    first, second = rewrite(MOSAIC, tmp_path / "series", PatientID="OWN-1", PatientName="Owner^Patient")
    series = series_uid_of(first)
    northanc.storescu([first], called_aet="OWNER")
    wait_converted(northanc, {series})
    assert projects_of(northanc, series) == {"owner": 1}

    # The next instance of that series arrives with another project's AET. Its Orthanc id sorts
    # first, so the series' called AET is now INTRUDER's: routing alone would move it there.
    later = pydicom.dcmread(second)
    stored = northanc.rest.post("/tools/lookup", str(pydicom.dcmread(first).SOPInstanceUID).encode(), "text/plain")
    assert stored[0]["ID"] == orthanc_instance_id(pydicom.dcmread(first))
    while orthanc_instance_id(later) > stored[0]["ID"]:
        later.SOPInstanceUID = later.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    later.save_as(second)
    northanc.storescu([second], called_aet="INTRUDER")
    wait_converted(northanc, {series}, instances=2)
    assert projects_of(northanc, series) == {"owner": 2}

    # An explicit import of it into the other project is refused whole: a fresh series beside it
    # is not stored either, and no override moves.
    fresh = rewrite(MOSAIC[:1], tmp_path / "series", PatientID="NEW-1")
    before_instances, before_overrides = instance_count(northanc), overrides(northanc)
    message = refused(nora(northanc, "-p", "intruder", "--import", str(tmp_path / "series")), "another project")
    assert "OWN-1" not in message and "owner" not in message.lower() and str(northanc.settings.var_dir) not in message
    client = create_app(northanc.settings, northanc.archive).test_client()
    editor = user_with_token(northanc, "intruding-editor", "intruder", Role.EDITOR)
    answer = upload(client, "intruder", editor, zipped([first, second, *fresh]))
    assert answer.status_code == 409 and "another project" in answer.json["error"]
    assert "owner" not in answer.json["error"].lower() and "OWN-1" not in answer.json["error"]
    assert instance_count(northanc) == before_instances and overrides(northanc) == before_overrides

    # Into the project the series lives in, the same import works and the fresh series converts there.
    out = ok(nora(northanc, "-p", "owner", "--import", str(tmp_path / "series"), "--wait", "180"))
    assert "2 series converted" in out
    assert projects_of(northanc, series_uid_of(fresh[0])) == {"owner": 1}
    assert projects_of(northanc, series) == {"owner": 2}


PAIRS = [
    ("COLL/1", "COLL 1"),
    ("abc", "ABC"),
    ("P7.", "P7"),
    (unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")),
]


def test_patients_whose_ids_look_alike_get_folders_of_their_own(northanc: Northanc, tmp_path: Path) -> None:
    ok(nora(northanc, "-c", "lookalikes"))
    ok(nora(northanc, "--admin", "route", "add", "lookalikes", "--aet", "LOOKALIKES"))
    sent: dict[str, tuple[str, str]] = {}  # StudyInstanceUID -> (PatientID, PatientName)
    files = []
    for index, patient_id in enumerate(pid for pair in PAIRS for pid in pair):
        [path] = rewrite(MOSAIC[:1], tmp_path / f"p{index}", PatientID=patient_id, PatientName=f"Person^{index}")
        sent[str(pydicom.dcmread(path).StudyInstanceUID)] = (patient_id, f"Person^{index}")
        files.append(path)
    northanc.storescu(files, called_aet="LOOKALIKES")
    wait_converted(northanc, {series_uid_of(p) for p in files})

    with northanc.archive.sessions() as session:
        rows = session.execute(
            select(Subject.patient_id, SubjectIdentity.real_patient_id, SubjectIdentity.patient_name, Study.study_instance_uid)
            .join(SubjectIdentity, SubjectIdentity.subject_id == Subject.id).join(Study, Study.subject_id == Subject.id)
            .join(Project, Project.id == Subject.project_id).where(Project.name == "lookalikes")
        ).all()
    folders = {real: folder for folder, real, _name, _uid in rows}
    assert set(folders) == {pid for pair in PAIRS for pid in pair}
    assert len({folder.casefold() for folder in folders.values()}) == len(folders)  # distinct on any file system
    for _folder, real, name, study_uid in rows:
        assert sent[study_uid] == (real, name)  # each study under its own patient's name
    for pair in PAIRS:  # the one that came second carries a suffix, the made-safe name stays recognisable
        assert all(unicodedata.normalize("NFC", folders[pid]).casefold().startswith(folders[pair[0]][:2].casefold()) for pid in pair)

    # The same PatientID later: same folder, a study of its own.
    [again] = rewrite(MOSAIC[:1], tmp_path / "again", PatientID="COLL 1", PatientName="Person^1")
    northanc.storescu([again], called_aet="LOOKALIKES")
    wait_converted(northanc, {series_uid_of(again)})
    with northanc.archive.sessions() as session:
        studies = session.scalars(
            select(Study.study_id).join(Subject, Subject.id == Study.subject_id)
            .where(Subject.patient_id == folders["COLL 1"], Study.trash_id.is_(None))
        ).all()
    assert len(studies) == 2 and len(set(studies)) == 2


def _tree_leaks(root: Path) -> list[str]:
    leaks = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        leaks += [f"name {relative}: {needle}" for needle in NEEDLES if needle in relative]
        if path.is_file():
            data = path.read_bytes()
            content = gzip.decompress(data) if path.name.endswith(".gz") else data
            leaks += [f"content {relative}: {needle}" for needle in NEEDLES if needle.encode() in content]
    return leaks


def _answer_leaks(answers: dict[str, str], needles: list[str] = NEEDLES) -> list[str]:
    return [f"{url}: {needle}" for url, text in answers.items() for needle in needles if needle in text]


def test_a_pseudonymised_project_shows_no_identifier_to_its_members(northanc: Northanc, tmp_path: Path) -> None:
    ok(nora(northanc, "-c", "pseudo"))
    ok(nora(northanc, "--admin", "project", "set", "pseudo", "--pseudonymise", "yes"))
    assert "{StudyDate}_{StudyHash}" in ok(nora(northanc, "--admin", "project", "show", "pseudo"))
    refused(nora(northanc, "--admin", "project", "set", "pseudo", "--study-template", "{StudyDate}_{AccessionNumber}"),
            "pseudonymised")
    refused(nora(northanc, "--admin", "project", "set", "pseudo", "--series-template", "{PatientID}_{SeriesNumber}"),
            "pseudonymised")
    sent = rewrite(MOSAIC, tmp_path / "pseudo", **IDENTIFYING)
    # The study's and series' UIDs lead back to the hospital's PACS: they are identifiers too.
    uids = [str(pydicom.dcmread(sent[0]).StudyInstanceUID), series_uid_of(sent[0])]
    ok(nora(northanc, "-p", "pseudo", "--import", str(tmp_path / "pseudo"), "--wait", "180"))
    project_root = northanc.settings.archive_root / "pseudo"
    assert list(project_root.rglob("*.nii.gz")) and list(project_root.rglob("*.json"))
    assert _tree_leaks(project_root) == []

    client = create_app(northanc.settings, northanc.archive).test_client()
    viewer = user_with_token(northanc, "pseudo-viewer", "pseudo", Role.VIEWER)
    admin = user_with_token(northanc, "pseudo-admin", "pseudo", Role.ADMIN)
    with northanc.archive.sessions() as session:
        study_ids = list(session.scalars(
            select(Study.id).join(Subject, Subject.id == Study.subject_id).join(Project, Project.id == Subject.project_id)
            .where(Project.name == "pseudo")
        ))
    preset = {"layout": "1x1", "viewports": [{"file": "*.nii.gz"}]}
    assert client.put("/api/v1/projects/pseudo/presets/all", json=preset, headers=admin).status_code == 200
    urls = ["/api/v1/projects", "/api/v1/projects/pseudo", "/api/v1/projects/pseudo/subjects",
            "/api/v1/projects/pseudo/studies", "/api/v1/projects/pseudo/select?pattern=*"]
    for study_id in study_ids:
        urls += [f"/api/v1/projects/pseudo/studies/{study_id}", f"/api/v1/projects/pseudo/studies/{study_id}/autoload?preset=all"]
        for entry in client.get(f"/api/v1/projects/pseudo/studies/{study_id}", headers=viewer).json["files"]:
            urls += [f"/api/v1/files/{entry['id']}", f"/api/v1/files/{entry['id']}/content"]
            link = client.post("/api/v1/projects/pseudo/links", headers=viewer, json={
                "layout": "1x1", "crosshair": None,
                "viewports": [[{"file_id": entry["id"], "colormap": "gray", "opacity": 1.0, "window": None}]]})
            urls.append(f"/api/v1/projects/pseudo/links/{link.json['key']}")
    answers = {}
    for url in urls:
        answer = client.get(url, headers=viewer)
        assert answer.status_code == 200, (url, answer.text)
        answers[url] = gzip.decompress(answer.data).decode("latin-1") if url.endswith("content") and answer.data[:2] == b"\x1f\x8b" \
            else answer.data.decode("latin-1")
    page_client = create_app(northanc.settings, northanc.archive).test_client()
    log_in(page_client, "pseudo-viewer")
    for page in ("/p/pseudo", "/p/pseudo/viewer"):
        answers[page] = page_client.get(page).data.decode()
    assert _answer_leaks(answers, [*NEEDLES, *uids]) == []
    assert all(row["accession_number"] is None for row in json.loads(answers["/api/v1/projects/pseudo/studies"])["rows"])

    [row] = client.get("/api/v1/projects/pseudo/studies", headers=admin).json["rows"]
    assert row["patient_name"] == "Identifiable^Person" and row["accession_number"] == "ACC-SECRET-99"


def test_a_plain_project_keeps_the_institution_and_accession(northanc: Northanc, tmp_path: Path) -> None:
    ok(nora(northanc, "-c", "plain"))
    rewrite(MOSAIC[:1], tmp_path / "plain", **IDENTIFYING)
    ok(nora(northanc, "-p", "plain", "--import", str(tmp_path / "plain"), "--wait", "180"))
    [sidecar] = (northanc.settings.archive_root / "plain").rglob("*.json")
    document = json.loads(sidecar.read_text())
    assert document["InstitutionName"] == IDENTIFYING["InstitutionName"]
    assert document["StationName"] == IDENTIFYING["StationName"]
    assert "PatientName" not in document and "PatientBirthDate" not in document
    assert "ACC-SECRET-99" in sidecar.parent.parent.name  # the study folder: {StudyDate}_{AccessionNumber}
    client = create_app(northanc.settings, northanc.archive).test_client()
    viewer = user_with_token(northanc, "plain-viewer", "plain", Role.VIEWER)
    [row] = client.get("/api/v1/projects/plain/studies", headers=viewer).json["rows"]
    assert row["accession_number"] == "ACC-SECRET-99" and row["patient_name"] == "Identifiable^Person"


def _lying_zip(good: bytes, member: bytes) -> bytes:
    """A zip of a good member and one whose headers declare fewer bytes than it holds."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/good.dcm", good)
        archive.writestr("export/liar.dcm", member)
    raw = bytearray(buffer.getvalue())
    local = raw.index(b"PK\x03\x04", 1)
    central = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 1)
    struct.pack_into("<I", raw, local + 22, 1000)
    struct.pack_into("<I", raw, central + 24, 1000)
    return bytes(raw)


def _corrupt(data: bytes) -> bytes:
    raw = bytearray(data)
    start = raw.index(b"PK\x03\x04", 1) + 200  # inside the second member's compressed data
    raw[start:start + 16] = bytes(b ^ 0xFF for b in raw[start:start + 16])
    return bytes(raw)


def test_damaged_archives_are_refused_whole_naming_only_the_users_input(northanc: Northanc, tmp_path: Path) -> None:
    ok(nora(northanc, "-c", "zips"))
    first, second = rewrite(MOSAIC, tmp_path / "zips", PatientID="ZIP-1")
    good = zipped([first, second])
    damaged = {
        "lying.zip": _lying_zip(first.read_bytes(), second.read_bytes()),
        "truncated.zip": good[: len(good) // 2],
        "corrupt.zip": _corrupt(good),
    }
    client = create_app(northanc.settings, northanc.archive).test_client()
    editor = user_with_token(northanc, "zips-editor", "zips", Role.EDITOR)
    before_instances, before_overrides = instance_count(northanc), overrides(northanc)
    for name, data in damaged.items():
        path = tmp_path / name
        path.write_bytes(data)
        message = refused(nora(northanc, "-p", "zips", "--import", str(path)), "damaged")
        assert name in message and "nothing was imported" in message
        answer = upload(client, "zips", editor, data, name)
        assert answer.status_code == 400 and "damaged" in answer.json["error"], answer.text
        assert repr(name) in answer.json["error"]
        assert str(northanc.settings.var_dir) not in message  # the path given is the user's own input
        error = answer.json["error"]
        assert str(northanc.settings.var_dir) not in error and "uploads" not in error and "/tmp" not in error
    assert instance_count(northanc) == before_instances and overrides(northanc) == before_overrides

    not_an_archive = upload(client, "zips", editor, b"just some text", "notes.zip")
    assert not_an_archive.status_code == 400 and not_an_archive.json["error"] == "'notes.zip' is not a zip or tar archive"
    answer = upload(client, "zips", editor, good, "good.zip")
    assert answer.status_code == 202 and answer.json["stored"] == 2
    wait_converted(northanc, {series_uid_of(first)}, instances=2)
    assert projects_of(northanc, series_uid_of(first)) == {"zips": 2}


def test_only_identifier_free_templates_in_pseudonymised_projects(northanc: Northanc) -> None:
    ok(nora(northanc, "-c", "templates"))
    ok(nora(northanc, "--admin", "project", "set", "templates", "--study-template", "{StudyDate}_{StudyID}"))
    refused(nora(northanc, "--admin", "project", "set", "templates", "--pseudonymise", "yes"), "StudyID")
    with northanc.archive.sessions() as session:
        assert not session.scalars(select(Project).where(Project.name == "templates")).one().pseudonymise
    ok(nora(northanc, "--admin", "project", "set", "templates", "--pseudonymise", "yes",
            "--study-template", "{StudyDate}_{StudyHash}", "--series-template", "{SeriesNumber:03d}_{SeriesDescription}"))
    shown = ok(nora(northanc, "--admin", "project", "show", "templates"))
    assert "{StudyDate}_{StudyHash}" in shown
    ok(nora(northanc, "--admin", "project", "set", "templates", "--pseudonymise", "no"))
    assert "{StudyDate}_{AccessionNumber}" in ok(nora(northanc, "--admin", "project", "show", "templates"))



def test_an_instance_from_another_sender_cannot_silently_replace_a_published_series(
    northanc: Northanc, tmp_path: Path
) -> None:
    ok(nora(northanc, "-c", "guarded"))
    ok(nora(northanc, "--admin", "route", "add", "guarded", "--aet", "GUARDED"))
    first, second = rewrite(MOSAIC, tmp_path / "series", PatientID="GUARD-1")
    series = series_uid_of(first)
    northanc.storescu([first], called_aet="GUARDED")
    wait_converted(northanc, {series})
    with northanc.archive.sessions() as session:
        published = {f.path: f.sha256 for f in session.scalars(select(File).where(File.source_series_uid == series))}

    # A stranger who learnt the series' UID sends one more instance of it from elsewhere.
    forged = pydicom.dcmread(second)
    forged.PatientName = "Forged^Name"
    forged.save_as(second)
    command = ["storescu", "-aet", "STRANGER", "-aec", "NORTHANC", "127.0.0.1", str(northanc.settings.orthanc_dicom_port),
               str(second)]
    assert subprocess.run(command, capture_output=True, timeout=120, check=False).returncode == 0

    def held() -> ConversionRequest | None:
        with northanc.archive.sessions() as session:
            return session.scalars(select(ConversionRequest).where(
                ConversionRequest.series_instance_uid == series, ConversionRequest.state == ConversionState.QUARANTINED,
            )).one_or_none()

    request = wait_until(held, 180, "the mixed series to be held back", interval=0.25)
    assert "2 different senders" in request.message and "STRANGER@" in request.message and "TESTSCU@" in request.message
    with northanc.archive.sessions() as session:
        live = {f.path: f.sha256 for f in session.scalars(
            select(File).where(File.source_series_uid == series, File.trash_id.is_(None)))}
    assert live == published, "the published files are the first sender's, untouched"
    # The project's admin sees why and decides: a release publishes the mixed series knowingly.
    ok(nora(northanc, "-p", "guarded", "--release", str(request.id), "--reason", "the second sender is our scanner's backup node"))
    assert projects_of(northanc, series) == {"guarded": 2}
