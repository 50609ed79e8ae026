"""The portal's DICOMweb (/dicom-web/) on a real Northanc (Orthanc with its DICOMweb plugin) and the
portal under gunicorn, as OHIF and scripts use it.

Two projects: ``plain`` with a Siemens mosaic series as the scanner wrote it, and ``pseudo``
(pseudonymised) with another series under a new patient whose identifiers are unmistakable
strings. Every answer is searched byte by byte for those strings. The planner, the rewriting
and the multipart reader are also checked on their own, without servers.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from nifti_archive import accounts
from nifti_archive.catalog.projects import create_project, update_settings
from nifti_archive.ingest.conversion import PSEUDONYMISED_SIDECAR_DENYLIST
from nifti_archive.layout import Location
from nifti_archive.models import File, FileKind, Project, Role, RoutingRule, Study, Subject
from portal.app import create_app
from portal.dicomweb_access import UID_LIST_MAX, MatchKey, QidoQuery, StudyView, parse_query, plan_search, results
from portal.dicomweb_identity import EMPTIED, PSEUDONYMISED, REMOVED, bulk_path_allowed, pseudonymise_json, pseudonymise_part10
from portal.multipart import MultipartError, Writer, boundary_of, split
from segmentation import rois
from segmentation.dicom_seg import ReferenceGrid, SegmentMask, encode
from testbed.northanc import Northanc, northanc_settings
from testbed.portal import Portal, start_portal
from tests.polling import wait_until
from tests.portal_site import PASSWORD
from tests.reference import DATASETS
from tests.test_portal_access import log_in

PLAIN_SERIES = DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35"
PSEUDO_SERIES = DATASETS["dcm_qa"] / "In" / "Orientation" / "cor" / "corasc35"
# The pseudonymised project's patient: nothing of this may reach its viewers.
SECRETS = {
    "PatientName": "Identifiable^Jane", "PatientID": "PID-4711-SECRET", "AccessionNumber": "ACC-99-SECRET",
    "PatientBirthDate": "19450203", "InstitutionName": "St Secret Hospital", "ReferringPhysicianName": "Doctor^Secretive",
    "OtherPatientIDs": "OTHER-ID-SECRET",
}
USERS = {"reader_a": ("plain", Role.READER), "editor_a": ("plain", Role.EDITOR), "viewer_b": ("pseudo", Role.VIEWER),
         "editor_b": ("pseudo", Role.EDITOR)}
STOW_LIMIT = 1024 * 1024
PART10_TYPE = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True)
class Series:
    study: str
    series: str
    instances: tuple[str, ...]
    files: tuple[Path, ...]


@dataclass
class Site:
    northanc: Northanc
    portal: Portal
    tokens: dict[str, str]
    plain: Series
    pseudo: Series
    pseudonym: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(site: Site, user: str | None, path: str, method: str = "GET", body: bytes | None = None, **headers: str) -> Answer:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if user:
        sent["Authorization"] = f"Bearer {site.tokens[user]}"
    request = urllib.request.Request(site.portal.url + path, data=body, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())


def dicom_files(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.name.startswith("MR")))


def series_of(files: tuple[Path, ...]) -> Series:
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    return Series(str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID),
                  tuple(str(d.SOPInstanceUID) for d in datasets), files)


def identifiable_copy(files: tuple[Path, ...], folder: Path) -> tuple[Path, ...]:
    """The series as another patient's, in a study of its own, with the SECRETS as identifiers."""
    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    written = []
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for keyword, value in SECRETS.items():
            setattr(dataset, keyword, value)
        written.append(folder / path.name)
        dataset.save_as(written[-1], enforce_file_format=True)
    return tuple(written)


def nifti_grid(northanc: Northanc, series_uid: str) -> tuple[int, ReferenceGrid]:
    """The study id and the grid of the NIfTI the archive converted from a series."""
    with northanc.archive.sessions() as session:
        record = session.scalar(select(File).where(File.source_series_uid == series_uid, File.kind == FileKind.NIFTI))
        assert record is not None, f"series {series_uid} was not converted"
        study = session.get_one(Study, record.study_id)
        location = Location(study.subject.project.name, study.subject.patient_id, study.study_id, record.path)
    image = nib.load(northanc.archive.layout.file_path(location))
    return record.study_id, ReferenceGrid(tuple(image.shape[:3]), image.affine)


def seg_of(northanc: Northanc, source: Series, label: str) -> tuple[pydicom.Dataset, int]:
    """A SEG drawn on the archived series (a block off centre), and the archive's study id."""
    study_id, grid = nifti_grid(northanc, source.series)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[3:9, 4:7, 2:5] = True
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in source.files]
    encoded = encode(datasets, grid, [SegmentMask(label, "#ff0000", mask)], series_number=90, content_creator_name="Web^Reader")
    return encoded.dataset, study_id


def part10(dataset: pydicom.Dataset) -> bytes:
    written = io.BytesIO()
    dataset.save_as(written, enforce_file_format=True)
    return written.getvalue()


def report_on(source: Series) -> pydicom.Dataset:
    """A Comprehensive SR whose evidence is the series (as a viewer's measurement report names it)."""
    first = pydicom.dcmread(source.files[0], stop_before_pixels=True)
    report = pydicom.Dataset()
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID = generate_uid()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.PatientName, report.PatientID, report.StudyInstanceUID = first.PatientName, first.PatientID, source.study
    report.SeriesInstanceUID, report.Modality, report.SeriesNumber, report.InstanceNumber = generate_uid(), "SR", 91, 1
    report.SeriesDescription, report.ValueType, report.CompletionFlag = "measurements", "CONTAINER", "COMPLETE"
    referenced = pydicom.Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = first.SOPClassUID, first.SOPInstanceUID
    series = pydicom.Dataset()
    series.SeriesInstanceUID, series.ReferencedSOPSequence = source.series, [referenced]
    evidence = pydicom.Dataset()
    evidence.StudyInstanceUID, evidence.ReferencedSeriesSequence = source.study, [series]
    report.CurrentRequestedProcedureEvidenceSequence = [evidence]
    return report


def stow(site: Site, user: str, objects: list[bytes], study: str | None = None) -> Answer:
    writer = Writer("application/dicom")
    path = "/dicom-web/studies" + (f"/{study}" if study else "")
    return call(site, user, path, "POST", writer.body(objects), Content_Type=writer.content_type, Accept="application/dicom+json")


def parts(answer: Answer) -> list[bytes]:
    _media, _type, boundary = boundary_of(answer.headers["Content-Type"])
    return [part.body for part in split([answer.body], boundary)]


def store_plain_and_pseudo(northanc: Northanc, base: Path) -> tuple[Series, Series, str]:
    """The plain series sent to project ``plain`` (AET PLAIN) and an identifiable copy of the other
    to ``pseudo`` (AET PSEUDO), both converted; and the pseudonym the archive gave that patient."""
    plain = series_of(dicom_files(PLAIN_SERIES))
    pseudo = series_of(identifiable_copy(dicom_files(PSEUDO_SERIES), base / "identifiable"))
    northanc.storescu(plain.files, called_aet="PLAIN")
    northanc.storescu(pseudo.files, called_aet="PSEUDO")
    northanc.wait_for_conversions(2)
    with northanc.archive.sessions() as session:
        pseudonym = session.scalars(select(Subject.patient_id).join(Project).where(Project.name == "pseudo")).one()
    return plain, pseudo, pseudonym


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("dicomweb")
    settings = dataclasses.replace(northanc_settings(base / "var"), stow_max_bytes=STOW_LIMIT, secure_cookies=False)
    northanc = Northanc.start(settings)
    tokens = {}
    with northanc.archive.unit_of_work() as (session, journal):
        projects = {name: create_project(session, journal, northanc.archive.layout, name) for name in ("plain", "pseudo")}
        update_settings(projects["pseudo"], pseudonymise=True)
        session.add_all([RoutingRule(project_id=projects["plain"].id, called_aet="PLAIN"),
                         RoutingRule(project_id=projects["pseudo"].id, called_aet="PSEUDO")])
        for name in (*USERS, "siteadmin"):
            user, _one_time = accounts.create_user(session, name, site_admin=name == "siteadmin")
            accounts.set_password(user, PASSWORD)
            if name in USERS:
                accounts.grant_role(session, user, projects[USERS[name][0]], USERS[name][1])
            tokens[name] = accounts.create_token(session, user, "dicomweb").secret
    plain, pseudo, pseudonym = store_plain_and_pseudo(northanc, base)
    portal = start_portal(settings)
    yield Site(northanc, portal, tokens, plain, pseudo, pseudonym)
    portal.stop()
    northanc.stop()


def study_uids(answer: Answer) -> list[str]:
    assert answer.status == 200, answer.body[:300]
    return [result["0020000D"]["Value"][0] for result in answer.json()]


def test_searches_find_only_the_callers_studies_and_page_among_them(site: Site) -> None:
    assert study_uids(call(site, "reader_a", "/dicom-web/studies")) == [site.plain.study]
    assert study_uids(call(site, "viewer_b", "/dicom-web/studies")) == [site.pseudo.study]
    assert sorted(study_uids(call(site, "siteadmin", "/dicom-web/studies"))) == sorted([site.plain.study, site.pseudo.study])
    assert study_uids(call(site, "reader_a", f"/dicom-web/studies?StudyInstanceUID={site.pseudo.study}")) == []
    assert set(study_uids(call(site, "reader_a", "/dicom-web/series"))) == {site.plain.study}
    assert set(study_uids(call(site, "reader_a", "/dicom-web/instances?includefield=0020000D"))) == {site.plain.study}
    pages = [study_uids(call(site, "siteadmin", f"/dicom-web/studies?limit=1&offset={offset}")) for offset in (0, 1, 2)]
    assert [len(page) for page in pages] == [1, 1, 0] and sorted(pages[0] + pages[1]) == sorted([site.plain.study, site.pseudo.study])
    series = call(site, "reader_a", f"/dicom-web/studies/{site.plain.study}/series").json()
    assert [s["0020000E"]["Value"][0] for s in series] == [site.plain.series]
    assert f"{site.portal.url}/dicom-web/studies/{site.plain.study}" in series[0]["00081190"]["Value"][0], "RetrieveURL is the portal's"
    anonymous = call(site, None, "/dicom-web/studies")
    assert anonymous.status == 401 and "log in" in anonymous.json()["error"] and "WWW-Authenticate" not in anonymous.headers


def test_every_path_of_another_projects_study_is_not_found(site: Site) -> None:
    study, series, instance = site.pseudo.study, site.pseudo.series, site.pseudo.instances[0]
    paths = [
        f"/studies/{study}", f"/studies/{study}/metadata", f"/studies/{study}/rendered", f"/studies/{study}/series",
        f"/studies/{study}/instances", f"/studies/{study}/series/{series}", f"/studies/{study}/series/{series}/metadata",
        f"/studies/{study}/series/{series}/rendered", f"/studies/{study}/series/{series}/instances",
        f"/studies/{study}/series/{series}/instances/{instance}", f"/studies/{study}/series/{series}/instances/{instance}/metadata",
        f"/studies/{study}/series/{series}/instances/{instance}/rendered",
        f"/studies/{study}/series/{series}/instances/{instance}/frames/1",
        f"/studies/{study}/series/{series}/instances/{instance}/frames/1/rendered",
        f"/studies/{study}/series/{series}/instances/{instance}/bulk/7fe00010",
        "/studies/1.2.826.0.1.3680043.8.498.999/metadata",
    ]
    answers = {path: call(site, "reader_a", "/dicom-web" + path) for path in paths}
    # Through a study the caller sees, another study's series is no more found than by its own UID.
    own = f"/dicom-web/studies/{site.plain.study}/series"
    foreign_instance = f"{own}/{site.plain.series}/instances/{instance}"
    for path in (f"{own}/{series}/metadata", f"{own}/{series}/instances/{instance}", f"{foreign_instance}/frames/1",
                 f"{foreign_instance}/bulk/7fe00010"):
        answers["via own study: " + path] = call(site, "reader_a", path)
    answers["/stow"] = stow(site, "editor_a", [site.pseudo.files[0].read_bytes()], study)
    for path, answer in answers.items():
        assert answer.status == 404, f"{path}: {answer.status}"
        assert not any(value.encode() in answer.body for value in SECRETS.values()), path
        assert b"pseudo" not in answer.body and site.pseudonym.encode() not in answer.body, path
    messages = {answers[p].json()["error"] for p in [*paths, "/stow"]}
    assert messages == {"no such study, or you have no role on a project that holds it"}


def test_a_reader_gets_metadata_part10_frames_and_renderings_of_their_study(site: Site) -> None:
    plain = site.plain
    instance_path = f"/dicom-web/studies/{plain.study}/series/{plain.series}/instances/{plain.instances[0]}"
    metadata = call(site, "reader_a", f"/dicom-web/studies/{plain.study}/series/{plain.series}/metadata")
    assert metadata.status == 200 and metadata.headers["Content-Type"] == "application/dicom+json"
    datasets = metadata.json()
    assert sorted(d["00080018"]["Value"][0] for d in datasets) == sorted(plain.instances)
    original = pydicom.dcmread(plain.files[0])
    assert datasets[0]["00100020"]["Value"] == [original.PatientID], "a plain project shows the identifiers"
    pixels = next(d["7FE00010"]["BulkDataURI"] for d in datasets if d["00080018"]["Value"][0] == plain.instances[0])
    assert pixels.startswith(f"{site.portal.url}/dicom-web/studies/"), "BulkDataURIs point at the portal"
    bulk = call(site, "reader_a", pixels.removeprefix(site.portal.url))
    assert bulk.status == 200 and original.PixelData in bulk.body

    [retrieved] = parts(call(site, "reader_a", instance_path, Accept=PART10_TYPE))
    dataset = pydicom.dcmread(io.BytesIO(retrieved))
    assert dataset.SOPInstanceUID == plain.instances[0] and dataset.PixelData == original.PixelData
    frames = call(site, "reader_a", instance_path + "/frames/1", Accept='multipart/related; type="application/octet-stream"')
    assert frames.status == 200 and len(frames.body) >= len(original.PixelData)
    for path in (instance_path + "/rendered", f"/dicom-web/studies/{plain.study}/series/{plain.series}/rendered"):
        rendered = call(site, "reader_a", path, Accept="image/jpeg")
        assert rendered.status == 200 and rendered.body[:3] == b"\xff\xd8\xff", path
    for answer in (metadata, frames, rendered):
        assert "WWW-Authenticate" not in answer.headers and "Access-Control-Allow-Origin" not in answer.headers


def test_metadata_is_gzipped_for_clients_that_take_it(site: Site) -> None:
    path = f"/dicom-web/studies/{site.plain.study}/series/{site.plain.series}/metadata"
    plain = call(site, "reader_a", path)
    zipped = call(site, "reader_a", path, Accept_Encoding="gzip, deflate")
    assert plain.headers.get("Content-Encoding") is None
    assert zipped.headers["Content-Encoding"] == "gzip" and len(zipped.body) < len(plain.body) / 3
    assert json.loads(gzip.decompress(zipped.body)) == plain.json()


def secrets_in(data: bytes) -> list[str]:
    return [value for value in SECRETS.values() if value.encode() in data or value.split("^")[0].encode() in data]


def test_a_pseudonymised_projects_viewer_sees_the_pseudonym_and_an_admin_the_patient(site: Site) -> None:
    pseudo = site.pseudo
    study_path = f"/dicom-web/studies/{pseudo.study}"
    instance_path = f"{study_path}/series/{pseudo.series}/instances/{pseudo.instances[0]}"
    answers = {
        "studies": call(site, "viewer_b", "/dicom-web/studies?includefield=all"),
        "series": call(site, "viewer_b", f"{study_path}/series?includefield=all"),
        "instances": call(site, "viewer_b", "/dicom-web/instances?includefield=all"),
        "study metadata": call(site, "viewer_b", f"{study_path}/metadata"),
        "instance metadata": call(site, "viewer_b", f"{instance_path}/metadata"),
        "study": call(site, "viewer_b", study_path, Accept=PART10_TYPE),
        "instance": call(site, "viewer_b", instance_path, Accept=PART10_TYPE),
    }
    for name, answer in answers.items():
        assert answer.status == 200, f"{name}: {answer.status} {answer.body[:200]!r}"
        assert secrets_in(answer.body) == [], name
        # Orthanc's instance-level search answers no patient attributes at all.
        assert site.pseudonym.encode() in answer.body or name == "instances", name
    [study] = answers["studies"].json()
    assert study["00100010"]["Value"] == [{"Alphabetic": site.pseudonym}] and study["00100020"]["Value"] == [site.pseudonym]
    retrieved = [pydicom.dcmread(io.BytesIO(body)) for body in parts(answers["study"])]
    originals = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in pseudo.files)}
    assert sorted(str(d.SOPInstanceUID) for d in retrieved) == sorted(originals)
    for dataset in retrieved:
        original = originals[str(dataset.SOPInstanceUID)]
        assert dataset.PatientID == site.pseudonym and dataset.PatientBirthDate == "" and "InstitutionName" not in dataset
        assert dataset.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert dataset.PixelData == original.PixelData and dataset.StudyDate == original.StudyDate

    # A search on a real identifier finds nothing, one on the pseudonym finds the study.
    assert call(site, "viewer_b", "/dicom-web/studies?PatientName=Identifiable*").json() == []
    assert call(site, "viewer_b", "/dicom-web/studies?PatientID=PID-4711*").json() == []
    assert study_uids(call(site, "viewer_b", f"/dicom-web/studies?PatientID={site.pseudonym[:6]}*")) == [pseudo.study]
    assert call(site, "viewer_b", f"{study_path}/series?AccessionNumber=ACC-99-SECRET").json() == []
    name_bulk = call(site, "viewer_b", f"{instance_path}/bulk/00100010")
    assert name_bulk.status == 403 and secrets_in(name_bulk.body) == []

    admin = {
        "studies": call(site, "siteadmin", "/dicom-web/studies?PatientName=Identifiable*&includefield=all"),
        "metadata": call(site, "siteadmin", f"{study_path}/metadata"),
        "instance": call(site, "siteadmin", instance_path, Accept=PART10_TYPE),
    }
    for name, answer in admin.items():
        assert answer.status == 200 and set(secrets_in(answer.body)) >= {SECRETS["PatientID"], SECRETS["PatientName"]}, name
    assert study_uids(admin["studies"]) == [pseudo.study]
    assert SECRETS["PatientName"].encode() in call(site, "siteadmin", f"{instance_path}/bulk/00100010").body


@pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")
def test_stow_takes_an_editors_seg_and_sr_into_the_archive_and_refuses_everything_else(site: Site) -> None:
    seg, study_id = seg_of(site.northanc, site.plain, "lesion")
    report = report_on(site.plain)
    stored = stow(site, "editor_a", [part10(seg), part10(report)])
    assert stored.status == 200, stored.body[:500]
    references = stored.json()["00081199"]["Value"]
    assert len(references) == 2
    assert references[0]["00081190"]["Value"][0].startswith(f"{site.portal.url}/dicom-web/studies/{site.plain.study}/")

    assert stow(site, "reader_a", [part10(seg)]).status == 403
    assert stow(site, "reader_a", [part10(seg)], site.plain.study).status == 403
    image = stow(site, "editor_a", [site.plain.files[0].read_bytes()], site.plain.study)
    assert image.status == 409 and "SOP class 1.2.840.10008.5.1.4.1.1.4 is not taken" in image.json()["error"]
    foreign = pydicom.dcmread(io.BytesIO(part10(seg)))
    foreign.SOPInstanceUID = foreign.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    foreign.ReferencedSeriesSequence[0].SeriesInstanceUID = site.pseudo.series
    refused = stow(site, "editor_a", [part10(foreign)])
    assert refused.status == 409 and f"source series {site.pseudo.series} is not in the archive" in refused.json()["error"]
    writer = Writer("application/dicom")
    broken = call(site, "editor_a", "/dicom-web/studies", "POST", b"--nothing here", Content_Type=writer.content_type)
    assert broken.status == 400 and "not valid multipart/related" in broken.json()["error"]
    untyped = call(site, "editor_a", "/dicom-web/studies", "POST", b"{}", Content_Type="application/json")
    assert untyped.status == 415

    def lesion() -> list[str] | None:
        with site.northanc.archive.sessions() as session:
            labels = [roi.label for roi in rois.live_rois(session, study_id) if roi.seg_series_uid == str(seg.SeriesInstanceUID)]
        return labels or None

    assert wait_until(lesion, 90, "the stored SEG to become an ROI") == ["lesion"]

    def listed() -> int | None:
        with site.northanc.archive.sessions() as session:
            return session.scalar(select(File.study_id).where(File.source_series_uid == str(report.SeriesInstanceUID)))

    assert wait_until(listed, 90, "the SR to be listed") == study_id, "the SR is listed in its study, not in the inbox"


def test_a_seg_from_pseudonymised_metadata_joins_the_real_patient(site: Site) -> None:
    seg, study_id = seg_of(site.northanc, site.pseudo, "nodule")
    seg.PatientName = seg.PatientID = site.pseudonym
    seg.PatientBirthDate = seg.AccessionNumber = ""
    assert stow(site, "viewer_b", [part10(seg)], site.pseudo.study).status == 403
    stored = stow(site, "editor_b", [part10(seg)], site.pseudo.study)
    assert stored.status == 200, stored.body[:500]
    assert secrets_in(stored.body) == []
    [found] = site.northanc.rest.post("/tools/lookup", str(seg.SOPInstanceUID).encode(), "text/plain")
    kept = pydicom.dcmread(io.BytesIO(site.northanc.rest.dicom(found["ID"])))
    assert (kept.PatientID, str(kept.PatientName), kept.AccessionNumber) == (
        SECRETS["PatientID"], SECRETS["PatientName"], SECRETS["AccessionNumber"]
    ), "Orthanc files the SEG under the real patient, not under the pseudonym"

    def nodule() -> list[str] | None:
        with site.northanc.archive.sessions() as session:
            return [roi.label for roi in rois.live_rois(session, study_id) if roi.label == "nodule"] or None

    assert wait_until(nodule, 90, "the SEG to become an ROI in the pseudonymised project") == ["nodule"]


def test_stow_from_a_session_needs_the_csrf_header_and_has_a_size_limit(site: Site) -> None:
    # In process: a refused upload's unread body makes the server's socket reset, which a test
    # over TCP may see instead of the answer.
    client = create_app(site.northanc.settings, site.northanc.archive).test_client()
    token = log_in(client, "editor_a")
    writer = Writer("application/dicom")
    body = writer.body([b"not DICOM"])
    refused = client.post("/dicom-web/studies", data=body, content_type=writer.content_type)
    assert refused.status_code == 403 and "CSRF" in refused.json["error"]
    checked = client.post("/dicom-web/studies", data=body, content_type=writer.content_type, headers={"X-CSRF-Token": token})
    assert checked.status_code == 400 and "part 1 is not a DICOM Part-10 object" in checked.json["error"]
    oversized = client.post("/dicom-web/studies", data=writer.body([b"\0" * STOW_LIMIT]), content_type=writer.content_type,
                            headers={"X-CSRF-Token": token})
    assert oversized.status_code == 413 and "stow_max_bytes" in oversized.json["error"]


# The decisions on their own, without servers.

def view(uid: str, identity: bool = True) -> StudyView:
    return StudyView(uid, identity, "" if identity else f"sub-{uid}")


def study_result(uid: str, name: str = "Real^Name") -> dict[str, Any]:
    return {"0020000D": {"vr": "UI", "Value": [uid]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
            "00080050": {"vr": "SH", "Value": ["ACC"]}, "00080080": {"vr": "LO", "Value": ["Hospital"]}}


def test_a_search_over_few_studies_names_them_and_lets_orthanc_page() -> None:
    views = {uid: view(uid) for uid in ("1.1", "1.2")}
    plan = plan_search(parse_query([("limit", "5"), ("offset", "1"), ("ModalitiesInStudy", "MR")]), views)
    [search] = plan.searches
    assert not plan.page_here
    assert ("StudyInstanceUID", "1.1,1.2") in search.params and ("limit", "5") in search.params and ("offset", "1") in search.params
    assert results(plan, [[study_result("1.2"), study_result("9.9")]]) == [study_result("1.2")], "a stranger's result is dropped"


def test_a_search_over_many_studies_filters_and_pages_here() -> None:
    views = {f"1.{i}": view(f"1.{i}") for i in range(UID_LIST_MAX + 1)}
    plan = plan_search(parse_query([("limit", "2"), ("offset", "1")]), views)
    [search] = plan.searches
    assert plan.page_here and not any(name in ("limit", "offset", "StudyInstanceUID") for name, _value in search.params)
    answer = [study_result("9.9"), study_result("1.0"), study_result("1.1"), study_result("1.2"), study_result("1.3")]
    assert [r["0020000D"]["Value"][0] for r in results(plan, [answer])] == ["1.1", "1.2"]


def test_identifying_keys_are_matched_on_the_pseudonym_in_pseudonymised_studies() -> None:
    views = {"1.1": view("1.1"), "2.2": view("2.2", identity=False)}
    query = parse_query([("PatientName", "Real*"), ("00080050", "ACC")])
    assert query.identifying == (MatchKey("PatientName", 0x00100010, "Real*"), MatchKey("00080050", 0x00080050, "ACC"))
    plan = plan_search(query, views)
    real, pseudonymised = plan.searches
    assert ("PatientName", "Real*") in real.params and not any(name == "PatientName" for name, _v in pseudonymised.params)
    found = results(plan, [[study_result("1.1")], [study_result("2.2")]])
    assert [r["0020000D"]["Value"][0] for r in found] == ["1.1"], "the real name does not find the pseudonymised study"
    by_pseudonym = plan_search(parse_query([("PatientID", "SUB-2*")]), views)
    found = results(by_pseudonym, [[], [study_result("2.2")]])
    assert found[0]["00100010"]["Value"] == [{"Alphabetic": "sub-2.2"}] and "00080080" not in found[0]
    assert plan_search(QidoQuery(study_uids=frozenset({"3.3"})), views).searches == ()


def test_json_rewriting_reaches_into_sequences_and_keeps_the_objects_valid() -> None:
    dataset = study_result("1.1")
    dataset["00081120"] = {"vr": "SQ", "Value": [{"00100020": {"vr": "LO", "Value": ["PID"]}}]}
    dataset["00081115"] = {"vr": "SQ", "Value": [{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Nested^Name"}]}}]}
    pseudonymise_json(dataset, "sub-x")
    assert dataset["00080050"] == {"vr": "SH"} and "00081120" not in dataset and "00080080" not in dataset
    assert dataset["00081115"]["Value"][0]["00100010"]["Value"] == [{"Alphabetic": "sub-x"}]


def test_what_the_archive_keeps_out_of_pseudonymised_sidecars_is_rewritten_here_too() -> None:
    # UIDs stay: they address every DICOMweb resource.
    assert PSEUDONYMISED_SIDECAR_DENYLIST - {"StudyInstanceUID", "SeriesInstanceUID"} <= {*PSEUDONYMISED, *EMPTIED, *REMOVED}


def test_part10_rewriting_keeps_the_transfer_syntax_and_pixels() -> None:
    path = dicom_files(PLAIN_SERIES)[0]
    original = pydicom.dcmread(path)
    rewritten = pydicom.dcmread(io.BytesIO(pseudonymise_part10(path.read_bytes(), "sub-x")))
    assert rewritten.PatientName == "sub-x" and rewritten.PatientBirthDate == "" and "InstitutionName" not in rewritten
    assert rewritten.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert rewritten.PixelData == original.PixelData


def test_bulk_data_of_text_or_private_attributes_is_not_served_without_identities() -> None:
    assert bulk_path_allowed("7fe00010") and bulk_path_allowed("7FE00010")
    for path in ("00100010", "00291010", "00081120/0/00100020", "nonsense", "", "7fe00010/../00100010"):
        assert not bulk_path_allowed(path), path


def test_multipart_bodies_split_however_they_arrive() -> None:
    writer = Writer("application/dicom")
    objects = [b"first", b"", b"\r\n--not-the-boundary\r\n" * 3]
    body = writer.body(objects)
    for size in (1, 7, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert [part.body for part in split(chunks, writer.boundary.encode())] == objects
    for broken in (b"no boundary at all", f"--{writer.boundary}\r\n\r\nunterminated".encode()):
        with pytest.raises(MultipartError):
            list(split([broken], writer.boundary.encode()))
