"""The XNAT surface's plain logic, without servers: ids, answer shapes and formats, tags as
fields, the scan and resource mapping of a study's files, upload names, and credentials."""

from __future__ import annotations

import base64
import io
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from werkzeug.exceptions import NotAcceptable

from nifti_archive.errors import InvalidPath, InvalidValue
from nifti_archive.ingest.importer import UnsafeArchive
from nifti_archive.models import File, FileKind
from nifti_archive.zipstream import Entry, zipped
from portal.xnat import canonical_path, catalog, fields, unpack
from portal.xnat.credentials import basic_credentials, is_alias
from portal.xnat.ids import Level, accession, experiment_label, parse_accession, parse_experiment_label
from portal.xnat.results import Child, Format, item, negotiate, result_set


def test_accession_ids_round_trip_and_labels_are_not_ids() -> None:
    assert accession(Level.EXPERIMENT, 42) == "NRT_E00042"
    assert parse_accession(Level.EXPERIMENT, "NRT_E00042") == 42
    assert parse_accession(Level.SUBJECT, "NRT_E00042") is None
    assert parse_accession(Level.SUBJECT, "P01") is None
    assert parse_accession(Level.SUBJECT, "NRT_S" + "9" * 19) is None, "beyond the index's whole numbers"
    assert experiment_label("P01", "S1") == "P01_S1"


def test_experiment_labels_name_one_subject_and_study_each() -> None:
    pairs = [("P_1", "S"), ("P", "1_S"), ("P_", "S"), ("P", "S_"), ("a__b", "c__d"), ("NRT", "E00042")]
    labels = [experiment_label(subject, study) for subject, study in pairs]
    assert len(set(labels)) == len(labels), labels
    assert [parse_experiment_label(label) for label in labels] == pairs
    assert experiment_label("P_1", "S") != experiment_label("P", "1_S")
    for not_a_label in ("P01", "_S1", "P01_", "P01__"):
        assert parse_experiment_label(not_a_label) is None, not_a_label


def test_listings_are_result_sets_of_strings_and_objects_are_items() -> None:
    listed = result_set([{"ID": "a", "count": 3, "flag": True, "none": None}])
    assert listed == {"ResultSet": {"Result": [{"ID": "a", "count": "3", "flag": "true", "none": ""}], "totalRecords": "1", "title": ""}}
    one = item("xnat:mrSessionData", {"ID": "E", "note": None}, [Child("fields/field", "xnat:experimentData_field", [{"name": "t"}])],
               datetime(2024, 5, 6, tzinfo=UTC))
    entry = one["items"][0]
    assert entry["meta"]["xsi:type"] == "xnat:mrSessionData" and entry["meta"]["isHistory"] is False
    assert entry["data_fields"] == {"ID": "E"}
    assert entry["children"][0]["field"] == "fields/field" and entry["children"][0]["items"][0]["data_fields"] == {"name": "t"}


def test_formats_are_json_or_zip_and_the_rest_is_406_naming_what_is_served() -> None:
    assert negotiate(None, (Format.JSON,), Format.JSON) is Format.JSON
    assert negotiate("ZIP", (Format.JSON, Format.ZIP), Format.JSON) is Format.ZIP
    with pytest.raises(NotAcceptable, match="XNAT knows.*json, zip"):
        negotiate("xml", (Format.JSON, Format.ZIP), Format.JSON)
    with pytest.raises(NotAcceptable, match="unknown format.*json"):
        negotiate("yaml", (Format.JSON,), Format.JSON)


def test_field_updates_are_tag_changes_and_nothing_else() -> None:
    changes = fields.tag_changes([
        ("xsiType", "xnat:mrSessionData"), ("xnat:mrSessionData/fields/field[name=done]/field", "true"),
        ("xnat:mrSessionData/fields/field[name=old]/field", "NULL"), ("xnat:mrSessionData/fields/field[name=old]/old", "NULL"),
    ])
    assert (changes.add, changes.remove) == (["done"], ["old"])
    with pytest.raises(InvalidValue, match="only fields/field"):
        fields.tag_changes([("xnat:mrSessionData/label", "x")])
    with pytest.raises(InvalidValue, match="true or false"):
        fields.tag_changes([("xnat:subjectData/fields/field[name=age]/field", "42")])


def _file(path: str, kind: FileKind, series: str | None = None) -> File:
    return File(path=path, kind=kind, size=10, orthanc_series_id=series)


def test_series_folders_are_scans_and_files_fall_into_resources() -> None:
    scans = catalog.scans_of([
        _file("003_t1/t1.nii.gz", FileKind.NIFTI, "orthanc-1"), _file("003_t1/t1.json", FileKind.JSON, "orthanc-1"),
        _file("003_t1/qc.png", FileKind.OTHER), _file("003_t1/NOTES/a/b.txt", FileKind.OTHER),
        _file("rois/003_t1/t1/liver.jane.nii.gz", FileKind.ROI), _file("rois/003_t1/t1/liver.jane.json", FileKind.JSON),
        _file("rois/gone/x/y.nii.gz", FileKind.ROI), _file("top.txt", FileKind.OTHER),
    ])
    assert list(scans) == ["003_t1"]
    t1 = scans["003_t1"]
    assert t1.type == "t1"
    assert sorted(t1.resources) == ["DICOM", "NIFTI", "NOTES", "OTHER", "ROI"]
    assert t1.resources["DICOM"].orthanc_series == ["orthanc-1"]
    assert [f.path for f in t1.resources["ROI"].files] == ["rois/003_t1/t1/liver.jane.nii.gz", "rois/003_t1/t1/liver.jane.json"]
    assert t1.sidecar is not None and t1.sidecar.path == "003_t1/t1.json"
    assert [catalog.relative_name(f, "NOTES") for f in t1.resources["NOTES"].files] == ["a/b.txt"]
    assert catalog.relative_name(t1.resources["ROI"].files[0], "ROI") == "t1/liver.jane.nii.gz"
    for label, resource in t1.resources.items():
        for record in resource.files:
            name = catalog.relative_name(record, label)
            assert record.path in catalog.candidate_paths("003_t1", label, name) and catalog.holds("003_t1", label, record)
    qc = t1.resources["OTHER"].files[0]
    assert not catalog.holds("003_t1", "NIFTI", qc), "a file of the series folder is NIFTI's only if it is an image"


def test_upload_names_land_in_the_resource_they_were_put_in_or_are_refused() -> None:
    assert catalog.upload_path("003_t1", "NIFTI", "t2.nii.gz") == "003_t1/t2.nii.gz"
    assert catalog.upload_path("003_t1", "NIFTI", "notes.txt") == "003_t1/NIFTI/notes.txt"
    assert catalog.upload_path("003_t1", "QC", "sub/plot.png") == "003_t1/QC/sub/plot.png"
    for path in ("003_t1/t2.nii.gz", "003_t1/NIFTI/notes.txt", "003_t1/QC/sub/plot.png"):
        place = catalog.resource_of(path, FileKind.NIFTI if path.endswith(".nii.gz") else FileKind.OTHER)
        assert place is not None and place[1] in ("NIFTI", "QC")
    for name in ("../../escape.txt", "a/../../b", ".hidden", "a\\b.txt", "c:evil", "bad\x01name"):
        with pytest.raises(InvalidPath):
            catalog.upload_path("003_t1", "QC", name)
    with pytest.raises(InvalidValue, match="DICOM goes to Orthanc"):
        catalog.upload_path("003_t1", "DICOM", "x.dcm")
    with pytest.raises(InvalidValue, match="invalid resource name"):
        catalog.upload_path("003_t1", "../x", "y")


def test_session_types_follow_the_modality() -> None:
    assert catalog.SessionType.of("MR").session_xsi == "xnat:mrSessionData"
    assert catalog.SessionType.of("PT").scan_xsi == "xnat:petScanData"
    assert catalog.SessionType.of("SR") is catalog.SessionType.OTHER


def test_archive_members_are_listed_and_links_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "b.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("dir/", "")
        archive.writestr("dir/a.txt", "A")
    with unpack.members(bundle, 1 << 20) as members:
        assert [m.name for m in members] == ["dir/a.txt"]
        members[0].save(tmp_path / "out")
    assert (tmp_path / "out").read_text() == "A"
    linked = tmp_path / "l.tar.gz"
    with tarfile.open(linked, "w:gz") as tar:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(InvalidValue, match="link or device"), unpack.members(linked, 1 << 20):
        pass
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(InvalidValue, match="not a zip or tar archive"), unpack.members(tmp_path / "plain.txt", 1 << 20):
        pass


def test_damaged_members_are_refused_by_name(tmp_path: Path) -> None:
    bundle = tmp_path / "b.zip"
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("good.txt", "fine")
        archive.writestr("bad.txt", "payload " * 100)
    bundle.write_bytes(bundle.read_bytes().replace(b"payload payload", b"pAyload payload", 1))
    with pytest.raises(UnsafeArchive, match="member bad.txt: damaged or inconsistent archive"), \
            unpack.members(bundle, 1 << 20) as members:
        for member in members:
            member.save(tmp_path / member.name)
    truncated = tmp_path / "t.zip"
    truncated.write_bytes(bundle.read_bytes()[:100])
    with pytest.raises(UnsafeArchive, match="damaged or truncated zip"), unpack.members(truncated, 1 << 20):
        pass


def test_a_full_disk_while_extracting_is_not_called_a_damaged_archive(tmp_path: Path) -> None:
    bundle = tmp_path / "b.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("a.bin", bytes(1 << 20))
    with unpack.members(bundle, 1 << 30) as members, pytest.raises(OSError, match="No space left"):
        members[0].save(Path("/dev/full"))


def test_archives_over_the_import_size_limit_are_refused_whatever_their_kind(tmp_path: Path) -> None:
    bundle = tmp_path / "b.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("a.txt", "x" * 100)
    packed = tmp_path / "b.tar"
    with tarfile.open(packed, "w") as tar:
        tar.add(bundle, "b.zip")
    for source in (bundle, packed):
        with unpack.members(source, 1 << 20) as members:
            assert members
        with pytest.raises(UnsafeArchive, match="over the limit of 50"), unpack.members(source, 50):
            pass


def test_the_streamed_zip_reads_back() -> None:
    when = datetime(2024, 1, 2)
    data = b"".join(zipped([Entry("a/b.txt", [b"hello ", b"world"], when), Entry("c", [b"x" * 3_000_000], when)]))
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.read("a/b.txt") == b"hello world" and len(archive.read("c")) == 3_000_000


def test_archive_paths_and_credentials() -> None:
    assert canonical_path("/data/archive/projects/p") == "/data/projects/p"
    assert canonical_path("/data/projects") == "/data/projects"
    assert canonical_path("/api/v1/data/archive/x") == "/api/v1/data/archive/x"
    assert basic_credentials("Basic " + base64.b64encode(b"ann:pa:ss").decode()) == ("ann", "pa:ss")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Bearer abc") is None
    assert is_alias("5b0e3a1c-2f4d-4a55-9a0e-0d4c1e2b3a4f") and not is_alias("editor")
