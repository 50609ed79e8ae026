"""The DICOM SEG codec on real scanner series, checked against dcm2niix's NIfTI, dcmqi and dciodvfy.

Series: Siemens mosaics (axial; coronal, oblique; sagittal; 5 slices in a 3x3 mosaic), GE 4D EPI
(150 single-frame instances: 15 slices x 10 time points) and, as the single-frame 3D series, that GE
series' first time point alone (15 instances; the test data has no other single-frame 3D series).
The masks are on dcm2niix's reference NIfTI, the grid our archive's NIfTI has, and are lopsided (an L,
single voxels in far corners) so that a flip or transpose cannot go unseen. Positions are checked in
world space from the SEG's own per-frame attributes, not only by decoding with our own code.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sr.codedict import codes
from scipy.spatial import cKDTree

from nifti_archive.errors import InvalidValue
from segmentation.dicom_seg import (
    Algorithm,
    EncodedSeg,
    ReferenceGrid,
    SegmentMask,
    SourceSeries,
    decode,
    encode,
    read_source_series,
    seg_references,
)
from tests.reference import DATASETS, references
from tests.seg_readers import dciodvfy, dcmqi_read, dcmqi_write


@dataclass(frozen=True)
class Case:
    dataset: str
    folder: str
    key: tuple[str, int]
    # Keep only instances up to this InstanceNumber (GE numbers the first time point 1..15).
    last_instance: int | None = None


CASES = {
    "mosaic-axial": Case("dcm_qa", "Orientation/ax/axasc35", ("ax_asc_35sl", 6)),
    "mosaic-coronal-oblique": Case("dcm_qa", "Orientation/cor/corasc36", ("cor_asc_36sl", 13)),
    "mosaic-sagittal": Case("dcm_qa", "Orientation/sag/sagdesc35", ("sag_desc_35sl", 23)),
    "mosaic-5-slices-3x3": Case("dcm_qa_nih", "20180918Si/mr_0003", ("EPI PE=AP", 3)),
    "ge-4d-epi": Case("dcm_qa_nih", "20180918GE/mr_0004", ("DCM2NIIX regression test", 4)),
    "single-frame-3d": Case("dcm_qa_nih", "20180918GE/mr_0004", ("DCM2NIIX regression test", 4), last_instance=15),
}
CREATOR = "anna"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class Source:
    files: dict[str, Path]  # SOPInstanceUID -> file
    datasets: list[Dataset]  # headers only: encoding needs no pixel data
    nifti: Any
    grid: ReferenceGrid


@functools.cache
def source(name: str) -> Source:
    case = CASES[name]
    files = {}
    datasets = []
    for path in sorted((DATASETS[case.dataset] / "In" / case.folder).iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue  # README files sit among the DICOM
        if case.last_instance is None or int(ds.InstanceNumber) <= case.last_instance:
            files[str(ds.SOPInstanceUID)] = path
            datasets.append(ds)
    nifti = nib.load(references(case.dataset)[case.key].nifti)
    return Source(files, datasets, nifti, ReferenceGrid.of_image(nifti))


def lopsided_masks(shape: tuple[int, int, int]) -> dict[str, NDArray[np.bool_]]:
    """An L with single voxels in far corners, a block overlapping it, and nothing."""
    nx, ny, nz = shape
    letter = np.zeros(shape, dtype=np.bool_)
    letter[5:9, 10, 1] = True  # the L's long arm along i ...
    letter[5, 11:14, 1] = True  # ... its short arm along j
    letter[nx - 1, 0, nz - 1] = True
    letter[0, ny - 1, 0] = True
    block = np.zeros(shape, dtype=np.bool_)
    block[4:7, 9:20, 1:3] = True
    return {"L-förmig": letter, "block": block, "nothing": np.zeros(shape, dtype=np.bool_)}


def segments_of(masks: dict[str, NDArray[np.bool_]]) -> list[SegmentMask]:
    colours = {"L-förmig": "#e6194b", "block": "#3cb44b", "nothing": "#4363d8"}
    algorithms = {"block": Algorithm("blobber", "2.1"), "nothing": Algorithm("clicker", "1", steered=True)}
    return [SegmentMask(label, colours[label], mask, algorithms.get(label)) for label, mask in masks.items()]


@dataclass(frozen=True)
class Written:
    name: str
    source: Source
    masks: dict[str, NDArray[np.bool_]]
    encoded: EncodedSeg
    path: Path
    seg: Dataset  # read back from the file


@pytest.fixture(scope="module", params=list(CASES))
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    src = source(request.param)
    masks = lopsided_masks(src.grid.shape)
    encoded = encode(src.datasets, src.grid, segments_of(masks), series_number=901, content_creator_name=CREATOR)
    path = tmp_path_factory.mktemp(request.param) / "seg.dcm"
    encoded.dataset.save_as(path, enforce_file_format=True)
    return Written(request.param, src, masks, encoded, path, pydicom.dcmread(path))


def world_points_of_mask(mask: NDArray[np.bool_], grid: ReferenceGrid) -> NDArray[np.float64]:
    """LPS positions of the mask's voxels, through the NIfTI affine (RAS+)."""
    ijk = np.argwhere(mask)
    ras = (grid.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    return ras * np.array([-1.0, -1.0, 1.0])


def world_points_of_seg(seg: Dataset, number: int) -> NDArray[np.float64]:
    """LPS positions of a segment's pixels, from the SEG's own per-frame position, orientation and pixel spacing."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    cosines = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    between_rows, between_columns = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    points = []
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence, strict=True):
        if group.SegmentIdentificationSequence[0].ReferencedSegmentNumber != number:
            continue
        corner = np.array(group.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        rows, columns = np.nonzero(frame)
        # DICOM: column index runs along the first cosine triplet, row index along the second.
        points.append(corner + np.outer(columns * between_columns, cosines[:3]) + np.outer(rows * between_rows, cosines[3:]))
    return np.concatenate(points) if points else np.zeros((0, 3))


def same_points(a: NDArray[np.float64], b: NDArray[np.float64], tolerance_mm: float = 1e-3) -> bool:
    if len(a) != len(b):
        return False
    return len(a) == 0 or bool(cKDTree(b).query(a)[0].max() < tolerance_mm and cKDTree(a).query(b)[0].max() < tolerance_mm)


def on_grid(image: Any, grid: ReferenceGrid) -> NDArray[np.bool_]:
    """A nibabel image's non-zero voxels moved onto ``grid`` through world space (each must land on a voxel centre)."""
    ijk = np.argwhere(np.asarray(image.dataobj) != 0)
    target = (np.linalg.inv(grid.affine) @ image.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    rounded = np.round(target).astype(int)
    assert np.abs(target - rounded).max(initial=0.0) < 1e-3
    mask = np.zeros(grid.shape, dtype=np.bool_)
    mask[tuple(rounded.T)] = True
    return mask


# ---- every series type: round trips and independent readers


def test_round_trip_is_voxel_exact(written: Written) -> None:
    src = written.source
    decoded = decode(written.seg, src.grid, read_source_series(src.datasets))
    assert [d.label for d in decoded] == list(written.masks)
    for segment, (label, mask) in zip(decoded, written.masks.items(), strict=True):
        assert np.array_equal(segment.mask, mask), label
        assert segment.content_creator == CREATOR
    assert [d.colour for d in decoded] == ["#e6194b", "#3cb44b", "#4363d8"]
    assert [(d.algorithm_type, d.algorithm_name) for d in decoded] == [
        ("MANUAL", None), ("AUTOMATIC", "blobber"), ("SEMIAUTOMATIC", "clicker"),
    ]
    assert written.encoded.empty_labels == ("nothing",)
    # The two segments overlap, and each keeps the shared voxels.
    assert (decoded[0].mask & decoded[1].mask).any()


def test_frames_lie_where_the_nifti_voxels_are(written: Written) -> None:
    for number, mask in enumerate(written.masks.values(), start=1):
        assert same_points(world_points_of_seg(written.seg, number), world_points_of_mask(mask, written.source.grid))


def test_frames_follow_the_source_series(written: Written) -> None:
    seg, src = written.seg, written.source
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    referenced = seg_references(seg)
    assert referenced.series_instance_uids == (src.datasets[0].SeriesInstanceUID,)
    by_uid = {ds.SOPInstanceUID: ds for ds in src.datasets}
    if written.name.startswith("mosaic"):
        # One mosaic (the first time point) is the source; its slices are the frames, which no single mosaic frame matches.
        first = min(src.datasets, key=lambda ds: int(ds.InstanceNumber))
        assert referenced.source_instance_uids == (first.SOPInstanceUID,)
        assert (seg.Rows, seg.Columns) == src.grid.shape[1::-1]
        assert all(not group.get("DerivationImageSequence") for group in seg.PerFrameFunctionalGroupsSequence)
        orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
        assert np.allclose(orientation, first.ImageOrientationPatient, atol=1e-6)
        return
    # Single-frame: each frame references the instance at its position, from the first time point.
    for group in seg.PerFrameFunctionalGroupsSequence:
        (derivation,) = group.DerivationImageSequence
        (reference,) = derivation.SourceImageSequence
        instance = by_uid[reference.ReferencedSOPInstanceUID]
        assert int(instance.InstanceNumber) <= 15
        assert np.allclose(group.PlanePositionSequence[0].ImagePositionPatient, instance.ImagePositionPatient, atol=1e-4)


def test_source_slices_hold_the_nifti_voxels(written: Written) -> None:
    """The source geometry, checked by voxel values: dcm2niix's first volume, rearranged to our slices, is the DICOM pixels."""
    src = written.source
    series = read_source_series(src.datasets)
    first_volume = np.asarray(src.nifti.dataobj)[..., 0]
    if series.is_mosaic:
        (mosaic,) = series.datasets
        pixels = pydicom.dcmread(src.files[mosaic.SOPInstanceUID]).pixel_array
        slices, rows, columns = series.geometry.spatial_shape
        per_side = pixels.shape[0] // rows
        dicom = np.stack([pixels[k // per_side * rows :][:rows, k % per_side * columns :][:, :columns] for k in range(slices)])
    else:
        dicom = np.stack([pydicom.dcmread(src.files[ds.SOPInstanceUID]).pixel_array for ds in series.datasets])
    assert np.array_equal(series.index_map(src.grid).to_source(first_volume), dicom)


def test_dciodvfy_accepts_the_seg(written: Written) -> None:
    status, lines = dciodvfy(written.path)
    assert status == 0, lines
    assert not [line for line in lines if "Error" in line], lines
    # Besides the IOD's name, the only thing it may say: the mosaics' PatientName 'stc_test' has no caret ("Retired
    # Person Name form"). That is the source's own value, which the SEG must carry unchanged.
    others = [line for line in lines if line != "Segmentation"]
    assert len(others) == len(lines) - 1
    assert all(
        re.search(r"^Warning - .* \(0x0010,0x0010\) PN Patient's Name .*<stc_test> - Retired Person Name form$", line) for line in others
    ), lines


def test_dcmqi_reads_our_seg(written: Written, tmp_path: Path) -> None:
    segments = {segment.label: segment for segment in dcmqi_read(written.path, tmp_path)}
    assert list(segments) == list(written.masks)
    for label, mask in written.masks.items():
        assert np.array_equal(on_grid(segments[label].image, written.source.grid), mask), label
    assert segments["block"].rgb == (60, 180, 75)


def test_dcmqi_seg_decodes_to_its_mask(written: Written, tmp_path: Path) -> None:
    src = written.source
    labels = written.masks["L-förmig"].astype(np.uint8)
    labels[20:23, 30:40, 2:4] = 2
    series = read_source_series(src.datasets)
    seg = dcmqi_write(labels, src.grid.affine, ["L", "blob"], [src.files[ds.SOPInstanceUID] for ds in series.datasets], tmp_path)
    decoded = decode(pydicom.dcmread(seg), src.grid, series)
    assert [d.label for d in decoded] == ["L", "blob"]
    assert np.array_equal(decoded[0].mask, labels == 1)
    assert np.array_equal(decoded[1].mask, labels == 2)
    assert decoded[0].content_creator == "Reader^Dcmqi"


# ---- what encode refuses, and says


@pytest.fixture(scope="module")
def ge() -> Source:
    return source("ge-4d-epi")


def encode_one(src: Source, segment: SegmentMask, **options: Any) -> EncodedSeg:
    return encode(src.datasets, src.grid, [segment], series_number=901, **options)


def a_mask(grid: ReferenceGrid) -> NDArray[np.bool_]:
    return lopsided_masks(grid.shape)["L-förmig"]


def test_a_label_over_64_characters_is_refused(ge: Source) -> None:
    with pytest.raises(InvalidValue, match="has 65 characters; DICOM allows at most 64"):
        encode_one(ge, SegmentMask("x" * 65, "#ff0000", a_mask(ge.grid)))
    encoded = encode_one(ge, SegmentMask("y" * 64, "#ff0000", a_mask(ge.grid)))
    assert encoded.dataset.SegmentSequence[0].SegmentLabel == "y" * 64


def test_a_mask_of_another_shape_is_refused_naming_both(ge: Source) -> None:
    with pytest.raises(InvalidValue, match=re.escape("the mask has shape (64, 64, 14), the reference grid (64, 64, 15)")):
        encode_one(ge, SegmentMask("lesion", "#ff0000", np.zeros((64, 64, 14), dtype=np.bool_)))


@pytest.mark.parametrize("values", [np.uint8(2), np.float32(0.5)])
def test_a_mask_that_is_not_binary_is_refused(ge: Source, values: Any) -> None:
    mask = a_mask(ge.grid).astype(type(values)) * values
    with pytest.raises(InvalidValue, match="must hold only 0 and 1"):
        encode_one(ge, SegmentMask("lesion", "#ff0000", mask))


def test_a_mask_of_zeros_and_ones_is_taken(ge: Source) -> None:
    decoded = decode(
        encode_one(ge, SegmentMask("lesion", "#ff0000", a_mask(ge.grid).astype(np.uint8))).dataset, ge.grid, read_source_series(ge.datasets)
    )
    assert np.array_equal(decoded[0].mask, a_mask(ge.grid))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: [s, replace(s, colour="#00ff00")], "segment labels must be unique in a SEG; repeated: 'lesion'"),
        (lambda s: [replace(s, colour="red")], "colour 'red' is not of the form #rrggbb"),
        (lambda s: [replace(s, label="  ")], "a segment needs a label"),
        (lambda s: [replace(s, label=" lesion")], "starts or ends with spaces"),
        (lambda s: [replace(s, label="a\\b")], "contains a backslash"),
        (lambda s: [replace(s, algorithm=Algorithm("n" * 65, "1"))], "algorithm name has 65 characters"),
        (lambda s: [], "a SEG needs at least one segment"),
    ],
)
def test_bad_segments_are_refused(ge: Source, change: Callable[[SegmentMask], list[SegmentMask]], message: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(message)):
        encode(ge.datasets, ge.grid, change(SegmentMask("lesion", "#ff0000", a_mask(ge.grid))), series_number=901)


def test_bad_content_attributes_are_refused(ge: Source) -> None:
    segment = SegmentMask("lesion", "#ff0000", a_mask(ge.grid))
    with pytest.raises(InvalidValue, match="content label 'my rois' must be 1 to 16 upper-case letters"):
        encode_one(ge, segment, content_label="my rois")
    with pytest.raises(InvalidValue, match="content creator name 'a=b' must be"):
        encode_one(ge, segment, content_creator_name="a=b")


def test_sources_from_two_series_are_refused(ge: Source) -> None:
    other = pydicom.dcmread(next((DATASETS["dcm_qa_nih"] / "In/20180918GE/mr_0005").glob("*.dcm")), stop_before_pixels=True)
    with pytest.raises(InvalidValue, match="the source instances come from 2 series"):
        encode(ge.datasets + [other], ge.grid, [SegmentMask("lesion", "#ff0000", a_mask(ge.grid))], series_number=901)


def test_a_grid_that_is_not_the_source_geometry_is_refused(ge: Source) -> None:
    shifted = ge.grid.affine.copy()
    shifted[:3, 3] += shifted[:3, 0]  # one voxel along i
    segment = SegmentMask("lesion", "#ff0000", a_mask(ge.grid))
    with pytest.raises(
        InvalidValue, match=r"does not match the geometry of source series .*: its voxels are shifted by \[0.0, 0.0, 1.0\] voxels"
    ):
        encode(ge.datasets, ReferenceGrid(ge.grid.shape, shifted), [segment], series_number=901)
    mosaic = source("mosaic-axial")
    with pytest.raises(InvalidValue, match="does not match the geometry of source series"):
        encode(ge.datasets, mosaic.grid, [SegmentMask("lesion", "#ff0000", a_mask(mosaic.grid))], series_number=901)


def test_a_seg_of_empty_masks_is_written_and_says_so(ge: Source, tmp_path: Path) -> None:
    empty = np.zeros(ge.grid.shape, dtype=np.bool_)
    encoded = encode(ge.datasets, ge.grid, [SegmentMask("a", "#ff0000", empty), SegmentMask("b", "#00ff00", empty)], series_number=901)
    assert encoded.empty_labels == ("a", "b")
    # A SEG must have frames: highdicom keeps them all, all zero.
    assert encoded.dataset.NumberOfFrames == 2 * ge.grid.shape[2]
    encoded.dataset.save_as(tmp_path / "empty.dcm", enforce_file_format=True)
    status, lines = dciodvfy(tmp_path / "empty.dcm")
    assert (status, lines) == (0, ["Segmentation"])
    decoded = decode(pydicom.dcmread(tmp_path / "empty.dcm"), ge.grid, read_source_series(ge.datasets))
    assert [d.mask.any() for d in decoded] == [False, False]


def test_the_series_and_uids_a_seg_gives(ge: Source) -> None:
    encoded = encode(
        ge.datasets, ge.grid, [SegmentMask("lesion", "#ff0000", a_mask(ge.grid))], series_number=7, series_instance_uid="1.2.3.4"
    )
    seg = encoded.dataset
    assert (seg.SeriesInstanceUID, seg.SeriesNumber, seg.Modality, seg.ContentLabel) == ("1.2.3.4", 7, "SEG", "ROI")
    assert (seg.StudyInstanceUID, seg.PatientID) == (ge.datasets[0].StudyInstanceUID, ge.datasets[0].PatientID)
    assert seg.SOPInstanceUID != encode_one(ge, SegmentMask("lesion", "#ff0000", a_mask(ge.grid))).dataset.SOPInstanceUID


# ---- what decode and seg_references refuse


@pytest.fixture(scope="module")
def ge_seg(ge: Source) -> Dataset:
    return encode_one(ge, SegmentMask("lesion", "#ff0000", a_mask(ge.grid))).dataset


def test_seg_references_lists_the_source_series_and_instances(ge: Source, ge_seg: Dataset) -> None:
    referenced = seg_references(ge_seg)
    first_time_point = {str(ds.SOPInstanceUID) for ds in ge.datasets if int(ds.InstanceNumber) <= 15}
    assert referenced.series_instance_uids == (ge.datasets[0].SeriesInstanceUID,)
    assert set(referenced.source_instance_uids) == first_time_point
    assert referenced.frame_of_reference_uid == ge.datasets[0].FrameOfReferenceUID


def test_an_image_is_not_a_seg(ge: Source) -> None:
    with pytest.raises(InvalidValue, match=r"is not a DICOM Segmentation but MR Image Storage \(1.2.840.10008.5.1.4.1.1.4\)"):
        seg_references(ge.datasets[0])


def test_decode_refuses_a_seg_of_another_series_or_frame_of_reference(ge: Source, ge_seg: Dataset) -> None:
    other_run = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((DATASETS["dcm_qa_nih"] / "In/20180918GE/mr_0005").glob("*.dcm"))[:15]
    ]
    with pytest.raises(InvalidValue, match="was made on series .*, not on"):
        decode(ge_seg, ge.grid, read_source_series(other_run))
    moved = copy.deepcopy(ge_seg)
    moved.FrameOfReferenceUID = "1.2.3"
    with pytest.raises(InvalidValue, match="is not in the frame of reference of series"):
        decode(moved, ge.grid, read_source_series(ge.datasets))


def test_decode_refuses_frames_off_the_grid(ge: Source, ge_seg: Dataset) -> None:
    moved = copy.deepcopy(ge_seg)
    position = moved.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 1.0 for v in position.ImagePositionPatient]  # under a voxel (3.75 mm)
    with pytest.raises(InvalidValue, match=r"frame 1 of the SEG does not lie on the voxels of the reference grid \(shape \(64, 64, 15\)\)"):
        decode(moved, ge.grid, read_source_series(ge.datasets))


def test_a_label_map_seg_decodes(ge: Source) -> None:
    """The reader takes the Label Map SOP class too (other tools write it; we never do)."""
    series = read_source_series(ge.datasets)
    labels = a_mask(ge.grid).astype(np.uint8)
    labels[20:23, 30:40, 2:4] = 2
    description = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"label {n}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type="MANUAL",
        )
        for n in (1, 2)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(series.datasets),
        pixel_array=series.index_map(ge.grid).to_source(labels),
        segmentation_type="LABELMAP",
        segment_descriptions=description,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    decoded = decode(seg, ge.grid, series)
    assert [(d.number, d.label, d.colour) for d in decoded] == [(1, "label 1", None), (2, "label 2", None)]
    assert np.array_equal(decoded[0].mask, labels == 1) and np.array_equal(decoded[1].mask, labels == 2)


def test_source_series_takes_the_first_time_point(ge: Source) -> None:
    series: SourceSeries = read_source_series(list(reversed(ge.datasets)))
    assert [int(ds.InstanceNumber) for ds in series.datasets] == [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert series.geometry.spatial_shape == (15, 64, 64)
