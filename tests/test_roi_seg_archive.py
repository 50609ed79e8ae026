"""ROIs and DICOM SEG through the whole archive: real Orthanc with the plugin, dcmtk's storescu.

An ROI saved on a converted series is stored in Orthanc as a SEG that follows the source series
(and passes dciodvfy); saving again adds an instance to the same SEG series. A SEG made elsewhere
arrives over C-STORE and becomes ROIs on the grid of its source series' NIfTI, voxel-exact, after
waiting for that series when it comes first. Masks are asymmetric, so a flip or transpose shows.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from scipy import ndimage
from sqlalchemy import select

from nifti_archive.layout import Location
from nifti_archive.models import ConversionRequest, ConversionState, File, FileKind, Roi, RoiOrigin, Study, Subject
from segmentation import roi_actions, rois, seg_export
from segmentation.dicom_seg import ReferenceGrid, SegmentMask, encode, read_source_series
from testbed.northanc import Northanc, northanc_settings
from testbed.pacs import start_orthanc_pacs
from tests.polling import wait_until
from tests.reference import DATASETS, references, sidecar_key
from tests.seg_readers import dcmqi_write

MOSAIC = DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35"
CORONAL = DATASETS["dcm_qa"] / "In" / "Orientation" / "cor" / "corasc35"
GE_OTHER_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0006"
GE_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0005"


@pytest.fixture(scope="module")
def northanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Northanc]:
    server = Northanc.start(northanc_settings(tmp_path_factory.mktemp("roi-seg")))
    yield server
    server.stop()


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".txt", ".nii", ".json"))


def nifti_of(northanc: Northanc, series_uid: str) -> File:
    with northanc.archive.sessions() as session:
        record = session.scalar(select(File).where(File.source_series_uid == series_uid, File.kind == FileKind.NIFTI))
    assert record is not None, f"series {series_uid} was not converted"
    return record


def file_path(northanc: Northanc, record: File) -> Path:
    with northanc.archive.sessions() as session:
        study = session.get_one(Study, record.study_id)
        subject = session.get_one(Subject, study.subject_id)
        location = Location(subject.project.name, subject.patient_id, study.study_id, record.path)
    return northanc.archive.layout.file_path(location)


def asymmetric_mask(shape: tuple[int, ...], seed: int = 0) -> NDArray[np.bool_]:
    """An L-shaped block and a lone voxel, off centre in every axis: a flip or transpose moves them."""
    mask = np.zeros(shape[:3], dtype=bool)
    i, j, k = (max(2, n // 4) for n in shape[:3])
    mask[i : i + 6, j : j + 3, k : k + 2] = True
    mask[i : i + 2, j : j + 9, k : k + 2] = True
    mask[shape[0] - 3 - seed, shape[1] - 2, shape[2] - 2] = True
    return mask


def requests_for(northanc: Northanc, series_uid: str) -> list[ConversionRequest]:
    with northanc.archive.sessions() as session:
        return list(session.scalars(select(ConversionRequest).where(ConversionRequest.series_instance_uid == series_uid)))


def live_rois(northanc: Northanc, study_id: int) -> list[Roi]:
    with northanc.archive.sessions() as session:
        found = rois.live_rois(session, study_id)
        for roi in found:
            _ = roi.file.path
        return found


def load_roi(northanc: Northanc, roi: Roi) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    with northanc.archive.sessions() as session:
        return rois.load_mask(northanc.archive, session, session.get_one(Roi, roi.file_id))


def test_saved_roi_becomes_a_seg_in_orthanc_and_a_new_instance_when_saved_again(northanc: Northanc, tmp_path: Path) -> None:
    northanc.storescu(dicom_files(MOSAIC))
    northanc.wait_for_conversions(1)
    source_uid = str(pydicom.dcmread(dicom_files(MOSAIC)[0], stop_before_pixels=True).SeriesInstanceUID)
    reference_file = nifti_of(northanc, source_uid)
    reference_image = nib.load(file_path(northanc, reference_file))
    mask = asymmetric_mask(reference_image.shape)
    upload = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), reference_image.affine), upload)
    with northanc.archive.sessions() as session:
        project = session.get_one(Study, reference_file.study_id).subject.project

    publish = seg_export.publisher(northanc.archive, northanc.rest)
    first = roi_actions.upload_mask(
        northanc.archive, project, reference_file.study_id, reference_file.id, upload, "lesion", "#ff0000", "alice", publish
    )
    assert first.seg_message == ""
    assert first.roi.seg_instance_uid and first.roi.seg_series_uid and first.roi.version == 1

    # The SEG is in Orthanc, in the study of its source series, and valid as dciodvfy reads DICOM.
    seg_id = seg_export.orthanc_instance(northanc.rest, first.roi.seg_instance_uid)
    seg_bytes = northanc.rest.dicom(seg_id)
    stored = pydicom.dcmread(io.BytesIO(seg_bytes))
    assert stored.StudyInstanceUID == pydicom.dcmread(dicom_files(MOSAIC)[0], stop_before_pixels=True).StudyInstanceUID
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    assert stored.SegmentSequence[0].SegmentLabel == "lesion"
    (tmp_path / "seg.dcm").write_bytes(seg_bytes)
    checked = subprocess.run(["dciodvfy", str(tmp_path / "seg.dcm")], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "Error" not in checked.stderr, checked.stderr

    # Orthanc's STABLE_SERIES for our own SEG adds no second ROI.
    wait_until(lambda: any(r.state is ConversionState.DONE for r in requests_for(northanc, first.roi.seg_series_uid)),
               60, "the archive's own SEG series to be seen")
    assert [(r.label, r.author) for r in live_rois(northanc, reference_file.study_id)] == [("lesion", "alice")]
    saved_mask, saved_affine = load_roi(northanc, first.roi)
    assert np.array_equal(saved_mask, mask)
    assert np.allclose(saved_affine, reference_image.affine, atol=1e-4)
    mask_path = file_path(northanc, first.roi.file)
    sidecar = json.loads(mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["seg"]["sop_instance_uid"] == first.roi.seg_instance_uid
    assert sidecar["reference"]["path"] == reference_file.path and sidecar["author"] == "alice"

    grown = mask.copy()
    grown[1, 1, 1] = True
    nib.save(nib.Nifti1Image(grown.astype(np.uint8), reference_image.affine), upload)
    second = roi_actions.upload_mask(
        northanc.archive, project, reference_file.study_id, reference_file.id, upload, "lesion", "", "alice", publish
    )
    assert second.roi.version == 2
    assert second.roi.seg_series_uid == first.roi.seg_series_uid
    assert second.roi.seg_instance_uid != first.roi.seg_instance_uid
    series = northanc.rest.post("/tools/lookup", first.roi.seg_series_uid.encode(), "text/plain")
    instances = json.loads(northanc.rest.get(f"/series/{series[0]['ID']}/instances"))
    assert sorted(int(i["MainDicomTags"]["InstanceNumber"]) for i in instances) == [1, 2]
    [current] = live_rois(northanc, reference_file.study_id)
    assert current.version == 2 and np.array_equal(load_roi(northanc, current)[0], grown)
    with northanc.archive.sessions() as session:
        earlier = session.get_one(File, first.roi.file_id)
        assert earlier.trash_id is not None, "the first version is kept in the trash"


def test_seg_from_elsewhere_waits_for_its_source_then_becomes_separate_rois(northanc: Northanc, tmp_path: Path) -> None:
    sources = dicom_files(GE_SERIES)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sources]
    reference = references("dcm_qa_nih")[sidecar_key({"ProtocolName": datasets[0].ProtocolName, "SeriesNumber": datasets[0].SeriesNumber})]
    reference_image = nib.load(reference.nifti)
    grid = ReferenceGrid(tuple(reference_image.shape[:3]), reference_image.affine)
    tumour = asymmetric_mask(reference_image.shape)
    oedema = np.roll(tumour, 2, axis=0) | tumour
    encoded = encode(
        datasets, grid, [SegmentMask("tumour", "#00ff00", tumour), SegmentMask("oedema", "#0000ff", oedema)],
        series_number=77, content_creator_name="Other^Reader",
    )
    seg_file = tmp_path / "foreign-seg.dcm"
    encoded.dataset.save_as(seg_file, enforce_file_format=True)
    seg_series = str(encoded.dataset.SeriesInstanceUID)

    sent = northanc.storescu([seg_file], only_required=True)
    assert sent.returncode == 0 and "No presentation context" not in sent.stdout, sent.stdout
    waiting = wait_until(
        lambda: next((r for r in requests_for(northanc, seg_series) if r.state is ConversionState.WAITING), None),
        60, "the SEG to wait for its source series",
    )
    assert str(datasets[0].SeriesInstanceUID) in waiting.message
    status = northanc.nora("--status")
    assert f"waiting\t{seg_series}" in status.stdout and "waits for its source series" in status.stdout

    northanc.storescu(sources)
    wait_until(lambda: any(r.state is ConversionState.DONE for r in requests_for(northanc, seg_series)), 120,
               "the SEG to become ROIs once its source series is converted")
    reference_file = nifti_of(northanc, str(datasets[0].SeriesInstanceUID))
    ours = nib.load(file_path(northanc, reference_file))
    assert np.allclose(ours.affine, reference_image.affine, atol=1e-4), "the archive's NIfTI is dcm2niix's reference grid"
    found = {roi.label: roi for roi in live_rois(northanc, reference_file.study_id)}
    assert set(found) == {"tumour", "oedema"}
    for label, expected in (("tumour", tumour), ("oedema", oedema)):
        roi = found[label]
        mask, affine = load_roi(northanc, roi)
        assert np.array_equal(mask, expected), f"{label} differs from the mask the SEG was made of"
        assert np.allclose(affine, reference_image.affine, atol=1e-4)
        assert roi.origin is RoiOrigin.DICOM_SEG and roi.author == "Other^Reader"
        assert roi.seg_instance_uid == str(encoded.dataset.SOPInstanceUID)
    assert found["tumour"].colour == "#00ff00"


def test_nora_lists_saves_operates_and_measures_rois(northanc: Northanc, tmp_path: Path) -> None:
    series = dicom_files(CORONAL)
    northanc.storescu(series)
    source_uid = str(pydicom.dcmread(series[0], stop_before_pixels=True).SeriesInstanceUID)
    wait_until(lambda: any(r.state is ConversionState.DONE for r in requests_for(northanc, source_uid)), 120, "the coronal mosaic")
    reference_file = nifti_of(northanc, source_uid)
    with northanc.archive.sessions() as session:
        study = session.get_one(Study, reference_file.study_id)
        project, psid = study.subject.project.name, f"{study.subject.patient_id}#{study.study_id}"
    reference_image = nib.load(file_path(northanc, reference_file))
    mask = asymmetric_mask(reference_image.shape, seed=1)
    upload = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), reference_image.affine), upload)

    saved = northanc.nora("-p", project, "--roi_upload", str(upload), "--reference", str(reference_file.id), "--label", "cyst")
    assert saved.returncode == 0, saved.stderr
    assert "DICOM SEG" in saved.stdout and "stored in Orthanc" in saved.stdout
    listing = northanc.nora("-p", project, "--rois", psid)
    assert listing.returncode == 0, listing.stderr + listing.stdout + psid
    [line] = [row for row in listing.stdout.splitlines() if row.split("\t")[1] == "cyst"]
    roi_id, label, _author, version, origin, reference_path = line.split("\t")[:6]
    assert (label, version, origin, reference_path) == ("cyst", "v1", "drawn", reference_file.path)

    dilated = northanc.nora("-p", project, "--roi_op", roi_id, "dilate", "--label", "cyst grown")
    assert dilated.returncode == 0, dilated.stderr
    [grown_id] = [row.split("\t")[0] for row in northanc.nora("-p", project, "--rois", psid).stdout.splitlines() if "\tcyst grown\t" in row]
    stats = northanc.nora("-p", project, "--roi_stats", "--images", str(reference_file.id), "--roi_ids", f"{roi_id},{grown_id}")
    assert stats.returncode == 0, stats.stderr
    rows = [line.split(",") for line in stats.stdout.splitlines()]
    assert rows[0][:6] == ["image_id", "image_path", "roi_id", "label", "author", "voxels"]
    voxels = {row[3]: int(row[5]) for row in rows[1:]}
    expected = int(np.count_nonzero(ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 1))))
    assert voxels == {"cyst": int(mask.sum()), "cyst grown": expected}

    pacs = start_orthanc_pacs(tmp_path / "pacs", "ORTHANCPACS", {})
    try:
        added = northanc.nora("--admin", "pacs", "add", "hospital", "ORTHANCPACS", "127.0.0.1", str(pacs.settings.orthanc_dicom_port))
        assert added.returncode == 0, added.stderr
        sent = northanc.nora("-p", project, "--roi_send", roi_id, "--to_pacs", "hospital")
        assert sent.returncode == 0, sent.stderr
        with northanc.archive.sessions() as session:
            seg_uid = session.get_one(Roi, int(roi_id)).seg_instance_uid
        assert seg_uid and pacs.api().post("/tools/lookup", seg_uid.encode(), "text/plain"), "the PACS holds the ROI's SEG"
    finally:
        pacs.stop()

    nib.save(nib.Nifti1Image(np.zeros(mask.shape, dtype=np.uint8), reference_image.affine), upload)
    empty = northanc.nora("-p", project, "--roi_upload", str(upload), "--reference", str(reference_file.id), "--label", "nothing yet")
    assert empty.returncode == 0, empty.stderr
    assert "ROI 'nothing yet' is empty: its DICOM SEG has a segment without any frame" in empty.stdout

    unknown = northanc.nora("-p", project, "--roi_op", "999999", "erode")
    assert unknown.returncode == 2 and "no ROI 999999" in unknown.stderr
    bad = northanc.nora("-p", project, "--roi_op", roi_id, "shrink")
    assert bad.returncode == 2 and "shrink" in bad.stderr


def test_a_seg_written_by_dcmqi_arrives_over_c_store_as_its_mask(northanc: Northanc, tmp_path: Path) -> None:
    series = dicom_files(GE_OTHER_SERIES)
    northanc.storescu(series)
    source_uid = str(pydicom.dcmread(series[0], stop_before_pixels=True).SeriesInstanceUID)
    wait_until(lambda: any(r.state is ConversionState.DONE for r in requests_for(northanc, source_uid)), 120, "the GE series")
    reference_file = nifti_of(northanc, source_uid)
    reference_image = nib.load(file_path(northanc, reference_file))
    labels = asymmetric_mask(reference_image.shape, seed=2).astype(np.uint8)
    labels[1:3, 2:5, 3] = 2
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in series}
    chosen = read_source_series([pydicom.dcmread(p, stop_before_pixels=True) for p in series]).datasets
    seg_file = dcmqi_write(labels, reference_image.affine, ["gyrus", "sulcus"], [by_uid[str(ds.SOPInstanceUID)] for ds in chosen],
                           tmp_path / "dcmqi")
    seg_series = str(pydicom.dcmread(seg_file, stop_before_pixels=True).SeriesInstanceUID)

    sent = northanc.storescu([seg_file], only_required=True)
    assert sent.returncode == 0 and "No presentation context" not in sent.stdout, sent.stdout
    wait_until(lambda: any(r.state is ConversionState.DONE for r in requests_for(northanc, seg_series)), 60, "the dcmqi SEG")
    found = {roi.label: roi for roi in live_rois(northanc, reference_file.study_id) if roi.seg_series_uid == seg_series}
    assert set(found) == {"gyrus", "sulcus"}
    for label, value in (("gyrus", 1), ("sulcus", 2)):
        mask, affine = load_roi(northanc, found[label])
        assert np.array_equal(mask, labels == value), f"{label} differs from the mask dcmqi encoded"
        assert np.allclose(affine, reference_image.affine, atol=1e-4)
        assert found[label].author == "Reader^Dcmqi"
