"""Ingestion end to end: real Orthanc with the plugin, dcmtk's storescu, dcm2niix, the archive.

Every converted series is checked against dcm2niix's reference output in the test data
(shape, affine to 1e-4 mm, voxel values, key sidecar fields), not against our own code. Every
test runs on the embedded default and again with Orthanc's index and the archive's in PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from nifti_archive.layout import Location
from nifti_archive.models import ConversionRequest, File, FileKind, Project, Study, Subject, SubjectIdentity
from nifti_archive.orthanc_api import OrthancRest
from testbed.northanc import Northanc
from tests.conftest import ON_BOTH_INDEXES
from tests.polling import wait_until
from tests.reference import DATASETS, compare, input_files, references, sidecar_key

GE_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0004"
MOSAIC = DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35"

pytestmark = ON_BOTH_INDEXES


def nora(northanc: Northanc, *args: str) -> subprocess.CompletedProcess[str]:
    return northanc.nora(*args)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def live_files(northanc: Northanc, suffix: str = "") -> list[tuple[str, str, str, File]]:
    with northanc.archive.sessions() as session:
        rows = session.execute(
            select(Subject.patient_id, Study.study_id, File)
            .join(Study, Study.id == File.study_id)
            .join(Subject, Subject.id == Study.subject_id)
            .where(File.trash_id.is_(None), File.path.endswith(suffix))
        ).all()
    return [(subject, study, record.path, record) for subject, study, record in rows]


def project_of(northanc: Northanc, record: File) -> str:
    with northanc.archive.sessions() as session:
        study = session.get_one(Study, record.study_id)
        return session.get_one(Subject, study.subject_id).project.name


def check_against_references(northanc: Northanc, dataset: str) -> int:
    refs = references(dataset)
    matched = 0
    for subject, study, path, record in live_files(northanc, ".nii.gz"):
        project = project_of(northanc, record)
        folder = northanc.settings.archive_root / project / subject / study
        sidecar = json.loads((folder / path.replace(".nii.gz", ".json")).read_text())
        reference = refs.get(sidecar_key(sidecar))
        if reference is None:
            continue
        assert compare(folder / path, sidecar, reference) == [], f"{path} differs from {reference.nifti.name}"
        matched += 1
    return matched


def test_cstore_of_both_datasets_matches_the_references(northanc: Northanc) -> None:
    sent = northanc.storescu(input_files("dcm_qa") + input_files("dcm_qa_nih"))
    assert "README-Study.txt" in sent.stdout and "notes.txt" in sent.stdout  # reported, skipped
    expected = len(references("dcm_qa")) + len(references("dcm_qa_nih"))
    counts = northanc.wait_for_conversions(expected)
    assert counts == {"done": expected}
    assert check_against_references(northanc, "dcm_qa") == len(references("dcm_qa"))
    assert check_against_references(northanc, "dcm_qa_nih") == len(references("dcm_qa_nih"))
    for _subject, _study, path, record in live_files(northanc, ".nii.gz"):
        assert record.converter == "dcm2niix" and record.converter_version and record.orthanc_series_id
        assert record.instance_count and record.source_series_uid
        assert path.split("/")[1].startswith("s")  # archive-owned names: <series folder>/sNNN...
    sidecars = [northanc.settings.archive_root / project_of(northanc, r) / s / t / p for s, t, p, r in live_files(northanc, ".json")]
    for sidecar in sidecars:
        assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(json.loads(sidecar.read_text()))


def test_import_zip_with_nora_options(northanc: Northanc, tmp_path: Path) -> None:
    import zipfile

    ok(nora(northanc, "-c", "study"))
    bundle = tmp_path / "siemens.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in input_files("dcm_qa_nih"):
            if "20180918Si" in str(path):
                archive.write(path, path.relative_to(DATASETS["dcm_qa_nih"] / "In"))
    out = ok(nora(northanc, "-p", "study", "--import", str(bundle), "--patients_id", "P01", "--studies_id", "baseline",
                  "--wait", "180"))
    assert "skipped 20180918Si/README-Study.txt: not DICOM" in out
    assert "4 series converted" in out
    subjects = {(subject, study) for subject, study, _path, _rec in live_files(northanc, ".nii.gz")}
    assert subjects == {("P01", "baseline")}
    assert check_against_references(northanc, "dcm_qa_nih") == 4
    assert len(ok(nora(northanc, "-p", "study", "-s", "*.nii.gz")).splitlines()) == 4


def test_import_pattern_and_extra_files(northanc: Northanc, tmp_path: Path) -> None:
    ok(nora(northanc, "-c", "mosaic"))
    source = tmp_path / "export" / "site-7" / "subj042"
    source.mkdir(parents=True)
    for path in MOSAIC.iterdir():
        (source / path.name).write_bytes(path.read_bytes())  # includes a .nii made elsewhere
    out = ok(nora(northanc, "-p", "mosaic", "--import", str(tmp_path / "export"), "--pattern",
                  r"(?<studies_id>[\w\-]+)/(?<patients_id>\w+)/[^/]+$", "--extrafiles_filter", "nii", "--wait", "120"))
    assert "1 extra file(s)" in out
    files = {(s, t, p) for s, t, p, _r in live_files(northanc)}
    assert ("subj042", "site-7", "extra/6_ax_asc_35sl.nii") in files
    assert any(p.endswith(".nii.gz") and s == "subj042" and t == "site-7" for s, t, p in files)


def test_bad_imports_report_and_keep_the_rest(northanc: Northanc, tmp_path: Path) -> None:
    import zipfile

    ok(nora(northanc, "-c", "p"))
    good = sorted(GE_SERIES.glob("*.dcm"))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good[0].read_bytes()[:600])
    bundle = tmp_path / "mixed.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("../../escape.dcm", good[1].read_bytes())
        archive.writestr("/abs/escape.dcm", good[2].read_bytes())
        archive.write(truncated, "broken/truncated.dcm")
        for path in good[3:6]:
            archive.write(path, f"ok/{path.name}")
    out = ok(nora(northanc, "-p", "p", "--import", str(bundle)))
    assert "skipped ../../escape.dcm: '..' in the archive path" in out
    assert "skipped /abs/escape.dcm: absolute path in the archive" in out
    assert "broken/truncated.dcm" in out
    assert "stored 3 DICOM file(s)" in out
    assert not (tmp_path.parent / "escape.dcm").exists() and not Path("/abs").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.dcm", b"\0" * (64 << 20))
    result = nora(northanc, "-p", "p", "--import", str(bomb))
    assert result.returncode == 2 and "zip bomb" in result.stderr
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    result = nora(northanc, "-p", "p", "--import", str(empty))
    assert result.returncode == 2 and "holds no files" in result.stderr
    result = nora(northanc, "-p", "nope", "--import", str(bundle))
    assert result.returncode == 2 and "unknown project" in result.stderr
    assert len(json.loads(northanc.rest.get("/instances"))) == 3  # the good ones, nothing lost


def test_import_tar_refuses_links_and_escapes(northanc: Northanc, tmp_path: Path) -> None:
    import io
    import tarfile

    ok(nora(northanc, "-c", "t"))
    bundle = tmp_path / "mosaic.tar.gz"
    with tarfile.open(bundle, "w:gz") as archive:
        for path in sorted(MOSAIC.glob("MR*")):
            archive.add(path, f"in/{path.name}")
        link = tarfile.TarInfo("in/link.dcm")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        data = sorted(GE_SERIES.glob("*.dcm"))[0].read_bytes()
        escape = tarfile.TarInfo("../outside.dcm")
        escape.size = len(data)
        archive.addfile(escape, io.BytesIO(data))
    out = ok(nora(northanc, "-p", "t", "--import", str(bundle), "--wait", "120"))
    assert "skipped in/link.dcm: not a regular file" in out and "skipped ../outside.dcm: '..'" in out
    assert "stored 2 DICOM file(s) in 1 series" in out and "1 series converted" in out
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    result = nora(northanc, "-p", "t", "--import", str(text))
    assert result.returncode == 2 and "nothing imported" in result.stderr


def test_routing_by_called_aet_and_by_tag(northanc: Northanc) -> None:
    ok(nora(northanc, "-c", "stroke"))
    ok(nora(northanc, "-c", "mcbi"))
    ok(nora(northanc, "--admin", "route", "add", "stroke", "--aet", "STROKE"))
    ok(nora(northanc, "--admin", "route", "add", "mcbi", "--tag", "StudyDescription", "--pattern", "MCBI_TEST"))
    northanc.storescu(sorted(GE_SERIES.glob("*.dcm")), called_aet="STROKE")
    northanc.storescu(sorted(MOSAIC.glob("MR*")))
    northanc.wait_for_conversions(2)
    assert len(ok(nora(northanc, "-p", "stroke", "-s", "*.nii.gz")).splitlines()) == 1
    assert len(ok(nora(northanc, "-p", "mcbi", "-s", "*.nii.gz")).splitlines()) == 1
    result = nora(northanc, "--admin", "route", "add", "stroke", "--tag", "StudyDescription", "--pattern", "(")
    assert result.returncode == 2 and "invalid pattern" in result.stderr


def test_exactly_once_and_reconversion_on_new_instances(northanc: Northanc) -> None:
    first, second = sorted(MOSAIC.glob("MR*"))
    northanc.storescu([first])
    northanc.wait_for_conversions(1)
    [(_s, _t, path, record)] = live_files(northanc, ".nii.gz")
    # The same instance again, then another series as a marker: once the marker is
    # converted, a repeat of the first would have been too.
    northanc.storescu([first])
    northanc.storescu(sorted(GE_SERIES.glob("*.dcm")))
    northanc.wait_for_conversions(2)
    with northanc.archive.sessions() as session:
        assert session.query(ConversionRequest).count() == 2
    northanc.storescu([second])
    northanc.wait_for_conversions(3)
    mosaic = [r for _s, _t, p, r in live_files(northanc, ".nii.gz") if r.orthanc_series_id == record.orthanc_series_id]
    assert len(mosaic) == 1 and mosaic[0].instance_count == 2 and mosaic[0].path == path
    with northanc.archive.sessions() as session:
        trashed = session.scalars(select(File).where(File.trash_id.is_not(None))).all()
    assert {t.path for t in trashed} == {path, path.replace(".nii.gz", ".json")}
    assert check_against_references(northanc, "dcm_qa") == 1


def test_incomplete_series_goes_to_quarantine(northanc: Northanc) -> None:
    files = sorted(GE_SERIES.glob("*.dcm"))
    northanc.storescu(files[:70] + files[71:])
    assert northanc.wait_for_conversions(1) == {"quarantined": 1}
    status = ok(nora(northanc, "--status"))
    assert "quarantined=1" in status and "missing" in status.lower()
    assert live_files(northanc) == []
    with northanc.archive.sessions() as session:
        request = session.scalars(select(ConversionRequest)).one()
    assert Path(request.target).is_dir() and any(Path(request.target).glob("*.nii.gz"))


def test_non_image_objects_are_listed_not_converted(northanc: Northanc, tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pdf = Dataset()
    pdf.file_meta = meta
    pdf.SOPClassUID, pdf.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    pdf.PatientID, pdf.PatientName, pdf.Modality = "DOC01", "Doe^Jane", "DOC"
    pdf.StudyInstanceUID, pdf.SeriesInstanceUID = generate_uid(), generate_uid()
    pdf.StudyDate, pdf.SeriesNumber, pdf.SeriesDescription = "20240101", 900, "referral letter"
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    path = tmp_path / "report.dcm"
    pdf.save_as(path, enforce_file_format=True)
    northanc.rest.store(path.read_bytes())
    assert northanc.wait_for_conversions(1) == {"done": 1}
    [(subject, study, listed, record)] = live_files(northanc)
    assert subject == "DOC01" and listed == "900_referral_letter/dicom-only.json" and record.kind is FileKind.DICOM_ONLY
    description = json.loads(northanc.archive.layout.file_path(Location("inbox", subject, study, listed)).read_text())
    assert description["Modality"] == "DOC"


def test_pseudonymised_project_keeps_identities_apart(northanc: Northanc) -> None:
    ok(nora(northanc, "-c", "pseudo"))
    ok(nora(northanc, "--admin", "project", "set", "pseudo", "--pseudonymise", "yes"))
    ok(nora(northanc, "--admin", "route", "add", "pseudo", "--aet", "PSEUDO"))
    result = nora(northanc, "--admin", "project", "set", "pseudo", "--subject-template", "{PatientName}")
    assert result.returncode == 2 and "pseudonymised" in result.stderr
    northanc.storescu(sorted(GE_SERIES.glob("*.dcm")), called_aet="PSEUDO")
    northanc.wait_for_conversions(1)
    [(subject, study, path, _record)] = live_files(northanc, ".json")
    assert subject.startswith("sub-") and len(subject) == 16
    with northanc.archive.sessions() as session:
        identity = session.scalars(select(SubjectIdentity)).one()
    assert identity.real_patient_id and identity.real_patient_id not in subject
    text = (northanc.settings.archive_root / "pseudo" / subject / study / path).read_text()
    assert identity.real_patient_id not in text


def test_conversion_failure_is_recorded_and_retryable(northanc: Northanc, tmp_path: Path) -> None:
    import pydicom

    broken = pydicom.dcmread(sorted(GE_SERIES.glob("*.dcm"))[0])
    del broken.PixelData
    broken.SeriesInstanceUID = pydicom.uid.generate_uid()
    broken.SOPInstanceUID = pydicom.uid.generate_uid()
    path = tmp_path / "nopixels.dcm"
    broken.save_as(path)
    northanc.rest.store(path.read_bytes())
    northanc.storescu(sorted(MOSAIC.glob("MR*")))
    assert northanc.wait_for_conversions(2) == {"done": 1, "failed": 1}
    assert "dcm2niix made no image" in ok(nora(northanc, "--status"))
    assert "1 conversion(s) queued again" in ok(nora(northanc, "--retry"))
    assert northanc.wait_for_conversions(2) == {"done": 1, "failed": 1}
    with northanc.archive.sessions() as session:
        attempts = sorted(session.scalars(select(ConversionRequest.attempts)))
    assert attempts == [1, 2], "the failed series was converted a second time, the other one not"


def test_reconvert_rebuilds_from_orthanc(northanc: Northanc) -> None:
    northanc.storescu(sorted(GE_SERIES.glob("*.dcm")))
    northanc.wait_for_conversions(1)
    [(_s, _t, path, before)] = live_files(northanc, ".nii.gz")
    uid = before.source_series_uid
    assert "1 series queued" in ok(nora(northanc, "--reconvert", uid, "--wait", "120"))
    [(_s, _t, again, after)] = live_files(northanc, ".nii.gz")
    assert again == path and after.id != before.id and after.sha256 == before.sha256
    result = nora(northanc, "-p", "inbox", "--reconvert", "nothing*")
    assert result.returncode == 2 and "no converted series" in result.stderr


def test_orthanc_rest_needs_credentials(northanc: Northanc) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(northanc.settings.orthanc_url + "/system", timeout=10)
    assert refused.value.code == 401
    wrong = OrthancRest(northanc.settings.orthanc_url, "northanc", "wrong")
    with pytest.raises(Exception, match="401"):
        wrong.get("/system")
    assert json.loads(northanc.rest.get("/system"))["DicomAet"] == "NORTHANC"


def test_autoexec_batch_runs_when_a_series_is_converted(northanc: Northanc) -> None:
    ok(nora(northanc, "-c", "auto"))
    ok(nora(northanc, "--admin", "route", "add", "auto", "--aet", "AUTO"))
    stats = {"jobs": [{"job": "stats", "args": {"f1": {"type": "FILE", "value": "*.nii.gz"},
                                                "o1": {"type": "OUT", "value": "stats/series.json TAG(auto)"}}}]}
    ok(nora(northanc, "-p", "auto", "--savebatch", "stats", json.dumps(stats)))
    ok(nora(northanc, "--admin", "project", "set", "auto", "--autoexec", "stats"))
    northanc.storescu(sorted(GE_SERIES.glob("*.dcm")), called_aet="AUTO")
    northanc.wait_for_conversions(1)
    def finished() -> str:
        jobs = ok(nora(northanc, "-p", "auto", "--jobs"))
        assert "\terror\t" not in jobs, jobs
        return jobs if "\tdone\t" in jobs else ""

    wait_until(finished, 120, "the autoexec run did not finish", interval=0.5)
    [statistics] = ok(nora(northanc, "-p", "auto", "-s", "* & FTAG:auto")).splitlines()
    assert json.loads(Path(statistics).read_text())["shape"] == [64, 64, 15, 10]


def test_portal_import_as_nora_documents_it_with_curl(northanc: Northanc, tmp_path: Path) -> None:
    """NORA's scripted upload (``curl -F call=... -F thefile=@data.zip``) into a project, then
    the converted series in the portal's table."""
    import io
    import zipfile

    from nifti_archive import accounts
    from nifti_archive.models import Role
    from portal.app import create_app

    ok(nora(northanc, "-c", "uploads"))
    with northanc.archive.unit_of_work() as (session, _journal):
        user, _password = accounts.create_user(session, "uploader")
        project = session.scalar(select(Project).where(Project.name == "uploads"))
        accounts.grant_role(session, user, project, Role.EDITOR)
        secret = accounts.create_token(session, user, "curl").secret
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in input_files("dcm_qa_nih"):
            if "20180918Si" in str(path):
                archive.write(path, path.relative_to(DATASETS["dcm_qa_nih"] / "In"))
    client = create_app(northanc.settings, northanc.archive).test_client()
    answer = client.post("/?project=uploads", content_type="multipart/form-data", data={
        "call": json.dumps({"cmd": "import", "user": "uploader", "token": "@CRYPT@" + secret}),
        "thefile": (io.BytesIO(bundle.getvalue()), "data.zip"),
    })
    assert answer.status_code == 202, answer.json
    assert len(answer.json["series"]) == 4
    assert {"name": "20180918Si/README-Study.txt", "reason": "not DICOM"} in answer.json["skipped"]
    northanc.wait_for_conversions(4)
    table = client.get("/api/v1/projects/uploads/studies", headers={"Authorization": f"Bearer {secret}"}).json
    assert table["total"] == 1 and table["rows"][0]["file_count"] == 8  # four series: NIfTI + sidecar each
    assert check_against_references(northanc, "dcm_qa_nih") == 4
