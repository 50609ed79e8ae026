"""Benchmark of ROIs and DICOM SEG on a 256x256x176 series converted by Northanc.

Run from the repository root:  .venv/bin/python -m bench.seg [--repeat N] [--profile]

A single-frame MR series of 176 sagittal slices of 256x256 (1 mm, smooth blobs and noise; the
header of a dcm_qa_nih GE instance with new UIDs) is written with pydicom, sent with storescu to
a Northanc (Orthanc with the plugin, StableAge 1 s) and converted. On its NIfTI, in one run:

(a) ROI -> SEG stored in Orthanc, for an irregular blob of ~100k voxels: highdicom alone
    (``hd.seg.Segmentation`` on the source headers and the mask already in the source's slice
    order, BINARY, written to bytes in memory) beside our codec (``seg_export.seg_bytes``: the
    same plus choosing the source instances and mapping the NIfTI grid onto them), the
    publisher (source headers fetched from Orthanc, encoded, stored; the fetch also timed on
    its own) and the whole upload (``roi_actions.upload_mask`` with the publisher: mask file
    read and checked, SEG stored, ROI written and registered);
(b) SEG -> ROI in the archive, for a SEG of the same mask from elsewhere: highdicom alone
    (``hd.seg.segread`` from bytes and ``get_volume``) beside our codec (pydicom, the source
    instances, ``dicom_seg.decode`` onto the NIfTI grid) and the conversion the queue runs for
    a SEG series stored in Orthanc (``conversion.convert_request`` -> ``seg_import.convert``:
    SEG and source headers fetched, decoded, ROI saved);
(c) each ``Operation`` (``operations.apply``) on the blob (two-ROI operations with the blob
    shifted by a few voxels), a worst case (closing the blob with specks across the whole
    volume), and one operation as users run it (``roi_actions.operate``: masks read, result
    saved as an ROI and a SEG in Orthanc);
(d) statistics of 4 images x 3 ROIs (``statistics.table`` on arrays in memory; and
    ``roi_actions.statistics_rows``, files read from the archive): the converted image, a
    derived float map on its grid, the same map on the grid permuted and flipped (dcm2niix's
    grid as another tool reorients it), and one resampled to 1.5 mm turned by 10 degrees.

Each step: the median of ``--repeat`` timed runs after one warm-up. Steps that store a SEG in
Orthanc wait, between runs and untimed, for the conversion request Orthanc's STABLE_SERIES
then queues, so that no run shares the CPUs with that background work. Targets: (a) and (b)
at most 1.2 x highdicom alone, each operation at most 200 ms, statistics at most 1 s.
``--profile`` prints the costliest functions (cProfile) of each step that misses its target.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.uid import generate_uid
from scipy import ndimage
from sqlalchemy import func, select

from bench.common import table
from nifti_archive.catalog.registration import register_file
from nifti_archive.ingest import conversion, conversion_queue
from nifti_archive.models import ConversionReason, ConversionRequest, ConversionState, File, FileKind, Study, utcnow
from nifti_archive.orthanc_api import series_info
from segmentation import operations, roi_actions, rois, seg_export
from segmentation import statistics as roi_statistics
from segmentation.dicom_seg import ReferenceGrid, SegmentMask, decode, encode, read_source_series
from segmentation.dicom_seg.encode import CATEGORY, PROPERTY_TYPE
from segmentation.grid import Grid, bounding_box
from segmentation.rois import RoiDraft
from segmentation.vocabulary import Operation
from testbed.northanc import Northanc, northanc_settings
from tests.reference import DATASETS

log = logging.getLogger("bench.seg")
TEMPLATE = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0005" / "axial_epi_fmri_sequential_i_to_s-00001.dcm"
SLICES, ROWS, COLUMNS = 176, 256, 256
BLOB_VOXELS = 100_000
RATIO_TARGET = 1.2
OPERATION_TARGET_MS = 200.0
STATISTICS_TARGET_MS = 1000.0
MIN_VOXELS = 10


# --- the series ---------------------------------------------------------------------------------------------


def phantom(rng: np.random.Generator) -> NDArray[np.uint16]:
    """(slices, rows, columns): a head-sized ellipsoid, a few smooth bright and dark blobs, noise."""
    # Coordinates in units of the head's half-axes.
    s, r, c = (((np.arange(n) - n / 2) / half).astype(np.float32) for n, half in ((SLICES, 75), (ROWS, 105), (COLUMNS, 90)))
    head = ((s[:, None, None] ** 2 + r[None, :, None] ** 2 + c[None, None, :] ** 2) < 1).astype(np.float32) * 600
    for _ in range(6):
        centre = rng.uniform(-0.5, 0.5, 3)
        width = rng.uniform(0.08, 0.25)
        amplitude = rng.uniform(-250, 400)
        # Separable Gaussians: an outer product per blob instead of 11.5M exponentials.
        head += amplitude * (np.exp(-(((s - centre[0]) / width) ** 2))[:, None, None]
                             * np.exp(-(((r - centre[1]) / width) ** 2))[None, :, None]
                             * np.exp(-(((c - centre[2]) / width) ** 2))[None, None, :]).astype(np.float32)
    head += rng.normal(0, 20, head.shape).astype(np.float32)
    return np.clip(np.abs(head), 0, 4095).astype(np.uint16)


def write_series(folder: Path) -> tuple[list[Path], str]:
    """The sagittal series as single-frame files; returns them and the SeriesInstanceUID."""
    folder.mkdir(parents=True)
    template = pydicom.dcmread(TEMPLATE)
    template.remove_private_tags()
    for element in list(template):
        if element.tag.element == 0:  # group lengths, stale once values change
            del template[element.tag]
    for keyword in ("NumberOfTemporalPositions", "TemporalPositionIdentifier", "TemporalResolution", "PixelData",
                    "SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
        if keyword in template:
            delattr(template, keyword)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    volume = phantom(np.random.default_rng(7))
    paths = []
    for index in range(SLICES):
        ds = template.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 9, index + 1, 1
        ds.SeriesDescription = ds.ProtocolName = "bench T1 3D sagittal"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.MRAcquisitionType, ds.ScanOptions, ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = "3D", "", 2300, 3, 9
        ds.ImagesInAcquisition, ds.InStackPositionNumber = SLICES, index + 1
        ds.AcquisitionMatrix, ds.ReconstructionDiameter = [ROWS, 0, 0, COLUMNS], ROWS
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.PixelSpacing = [1, 1]
        ds.SliceThickness = ds.SpacingBetweenSlices = 1
        # Sagittal: rows run anterior to posterior, columns superior to inferior; slices from right to left.
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-88 + index, -128, 128]
        ds.SliceLocation = -88 + index
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = volume[index].tobytes()
        ds["PixelData"].VR = "OW"
        path = folder / f"slice{index + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths, series


# --- masks and images on the reference grid -----------------------------------------------------------------


def blob(shape: tuple[int, int, int], centre: tuple[int, int, int], voxels: int, seed: int) -> NDArray[np.bool_]:
    """An irregular blob of about ``voxels`` voxels: an ellipsoid whose surface a smooth random field bends."""
    rng = np.random.default_rng(seed)
    half = 48
    box = tuple(slice(c - half, c + half) for c in centre)
    grid = np.indices((2 * half,) * 3, dtype=np.float32) - half
    radii = np.array([1.15, 1.0, 0.95], dtype=np.float32)
    field = ndimage.gaussian_filter(rng.normal(0, 1, (2 * half,) * 3).astype(np.float32), 6)
    field /= np.abs(field).max()
    distance = np.sqrt(sum((grid[a] / radii[a]) ** 2 for a in range(3))) * (1 + 0.35 * field)
    # The radius that leaves the wanted number of voxels inside.
    radius = np.sort(distance.ravel())[voxels]
    mask = np.zeros(shape, dtype=bool)
    mask[box] = distance < radius
    return mask


def specks(mask: NDArray[np.bool_], count: int, near: bool, seed: int) -> NDArray[np.bool_]:
    """``mask`` with ``count`` single-voxel specks, within 12 voxels of its bounding box or anywhere in the volume."""
    rng = np.random.default_rng(seed)
    result = mask.copy()
    box = bounding_box(mask, margin=12) if near else tuple(slice(0, n) for n in mask.shape)
    assert box is not None
    where = [rng.integers(max(0, edge.start), min(edge.stop, n), count) for edge, n in zip(box, mask.shape, strict=True)]
    result[tuple(where)] = True
    return result


def turned_grid(grid: Grid, degrees: float, spacing: float) -> Grid:
    """A grid of ``spacing`` mm voxels over the same field of view, turned by ``degrees`` about the first axis."""
    angle = np.radians(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    directions = grid.affine[:3, :3] / np.array(grid.spacing_mm)
    shape = tuple(int(round(n * s / spacing)) for n, s in zip(grid.shape, grid.spacing_mm, strict=True))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ directions * spacing
    centre = grid.affine @ np.array([(n - 1) / 2 for n in grid.shape] + [1.0])
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ np.array([(n - 1) / 2 for n in shape])
    return Grid((shape[0], shape[1], shape[2]), affine)


def resampled(image: NDArray[Any], source: Grid, target: Grid) -> NDArray[np.float32]:
    """``image`` on ``target`` by trilinear interpolation (scipy), 0 outside."""
    mapping = source.index_map_from(target)
    moved: NDArray[np.float32] = ndimage.affine_transform(
        image.astype(np.float32), mapping[:3, :3], mapping[:3, 3], output_shape=target.shape, order=1
    )
    return moved


# --- timing -------------------------------------------------------------------------------------------------


@dataclass
class Step:
    section: str
    what: str
    work: Callable[[], Any]
    # Untimed, before and after each run.
    prepare: Callable[[], Any] | None = None
    settle: Callable[[], Any] | None = None
    baseline: Step | None = None
    limit_ms: float | None = None
    ms: float = 0.0

    def run(self) -> float:
        """One run of ``work``, in ms."""
        if self.prepare is not None:
            self.prepare()
        start = time.perf_counter()
        self.work()
        elapsed = (time.perf_counter() - start) * 1000
        if self.settle is not None:
            self.settle()
        return elapsed

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.ms / self.baseline.ms

    @property
    def target(self) -> str:
        if self.baseline is not None:
            return f"<= {RATIO_TARGET} x"
        return "" if self.limit_ms is None else f"<= {self.limit_ms:,.0f} ms"

    @property
    def met(self) -> bool | None:
        if self.baseline is not None:
            return (self.ratio or 0.0) <= RATIO_TARGET
        return None if self.limit_ms is None else self.ms <= self.limit_ms

    def profile(self, lines: int = 20) -> str:
        """cProfile of one run (``prepare`` and ``settle`` outside it), costliest functions first."""
        if self.prepare is not None:
            self.prepare()
        profiler = cProfile.Profile()
        profiler.runcall(self.work)
        if self.settle is not None:
            self.settle()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative").print_stats(lines)
        text = out.getvalue()
        return text[text.find("ncalls"):].rstrip() if "ncalls" in text else text


@dataclass
class Bench:
    repeat: int
    steps: list[Step] = field(default_factory=list)

    def measure(self, step: Step) -> Step:
        """``step``'s median over ``repeat`` runs after one warm-up."""
        step.run()
        step.ms = statistics.median(step.run() for _ in range(self.repeat))
        log.info("  %s %s: %.1f ms", step.section, step.what, step.ms)
        self.steps.append(step)
        return step


class Queue:
    """The archive's conversion queue, for waiting out the background work a SEG stored in Orthanc causes."""

    def __init__(self, northanc: Northanc) -> None:
        self.northanc = northanc
        self.before = 0

    def finished(self) -> int:
        with self.northanc.archive.sessions() as session:
            finished = ConversionRequest.state.in_(conversion_queue.FINISHED)
            return int(session.scalar(select(func.count()).select_from(ConversionRequest).where(finished)) or 0)

    def prepare(self) -> None:
        self.before = self.finished()

    def settle(self) -> None:
        """Orthanc fires STABLE_SERIES a StableAge after a store; wait until the request it queues is done."""
        self.northanc.wait_for_conversions(self.before + 1, timeout=120)


# --- the benchmark ------------------------------------------------------------------------------------------


def hd_description(label: str, colour: str) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=1, segment_label=label, segmented_property_category=CATEGORY, segmented_property_type=PROPERTY_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL, display_color=hd.color.CIELabColor.from_string(colour),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per step (after one warm-up)")
    parser.add_argument("--profile", action="store_true", help="cProfile each step that misses its target")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("segmentation", "nifti_archive", "highdicom", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    bench = Bench(args.repeat)
    work = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    northanc = Northanc.start(northanc_settings(work / "northanc"))
    try:
        run_all(bench, northanc, work)
        report(bench)
        if args.profile:
            for step in bench.steps:
                if step.met is False:
                    log.info("\n--- profile of one run: %s %s\n%s", step.section, step.what, step.profile())
    finally:
        northanc.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_all(bench: Bench, northanc: Northanc, work: Path) -> None:
    start = time.perf_counter()
    paths, series_uid = write_series(work / "dicom")
    written = time.perf_counter() - start
    start = time.perf_counter()
    northanc.storescu(paths)
    northanc.wait_for_conversions(1, timeout=300)
    converted = time.perf_counter() - start
    archive, rest = northanc.archive, northanc.rest
    with archive.sessions() as session:
        reference_file = session.scalar(select(File).where(File.source_series_uid == series_uid, File.kind == FileKind.NIFTI))
        assert reference_file is not None, "the synthetic series was not converted"
        reference = rois.reference_image(archive, session, reference_file.id)
        project = session.get_one(Study, reference_file.study_id).subject.project
    image_data = np.asanyarray(rois.load_nifti(reference.path).dataobj)
    grid = Grid(reference.shape, reference.affine)
    reference_grid = ReferenceGrid(reference.shape, reference.affine)
    log.info("%d slices written in %.1f s, sent and converted in %.1f s: %s, shape %s, %s", len(paths), written, converted,
             reference_file.path, reference.shape, image_data.dtype)

    centre = (reference.shape[0] // 2 + 20, reference.shape[1] // 2 - 10, reference.shape[2] // 2 + 8)
    lesion = specks(blob(reference.shape, centre, BLOB_VOXELS, seed=1), 40, near=True, seed=2)
    shifted = np.roll(lesion, (6, -4, 3), axis=(0, 1, 2))
    scattered = specks(lesion, 200, near=False, seed=3)
    box = bounding_box(lesion) or ()
    log.info("ROI: %d voxels (a blob and 40 specks near it), bounding box %s", int(lesion.sum()),
             " x ".join(f"{edge.stop - edge.start}" for edge in box))
    upload = work / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), reference.affine), upload)
    queue = Queue(northanc)
    publish = seg_export.publisher(archive, rest)
    datasets = seg_export.source_datasets(rest, str(reference.file.orthanc_series_id))

    # (a) ROI -> SEG stored in Orthanc.
    source = read_source_series(datasets)
    in_source_order = source.index_map(reference_grid).to_source(lesion).astype(np.uint8)
    draft = RoiDraft("lesion", lesion, "#ff0000")

    def highdicom_encode() -> bytes:
        seg = hd.seg.Segmentation(
            source_images=list(source.datasets), pixel_array=in_source_order,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[hd_description("lesion", "#ff0000")],
            series_instance_uid=hd.UID(), series_number=1009, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="Northanc", manufacturer_model_name="bench", software_versions="1", device_serial_number="1",
        )
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    a = "(a) ROI -> SEG"
    encoded = bench.measure(Step(a, "highdicom alone: Segmentation(...) to bytes, in memory", highdicom_encode))
    bench.measure(Step(a, "our codec: seg_export.seg_bytes, in memory",
                       lambda: seg_export.seg_bytes(datasets, reference, draft, "bench", None, 1), baseline=encoded))
    bench.measure(Step(a, "  of which: source headers from Orthanc (source_datasets)",
                       lambda: seg_export.source_datasets(rest, str(reference.file.orthanc_series_id))))
    versions = iter(range(1, 1000))
    bench.measure(Step(a, "publisher: source headers from Orthanc, encode, store",
                       lambda: publish(reference, draft, "bench", None, next(versions)), queue.prepare, queue.settle, encoded))
    saved: list[rois.SavedRoi] = []
    bench.measure(Step(
        a, "upload_mask + publisher: mask file -> ROI saved + SEG stored",
        lambda: saved.append(roi_actions.upload_mask(archive, project, reference.study.id, reference.file.id, upload, "lesion",
                                                     "#ff0000", "alice", publish)),
        queue.prepare, queue.settle, encoded,
    ))
    assert saved[-1].roi.seg_instance_uid and not saved[-1].seg_message, saved[-1].seg_message

    # (b) SEG -> ROI in the archive: SEGs of the same mask made elsewhere, each its own series and reader.
    readers = iter(range(1, 1000))

    def foreign_seg() -> bytes:
        made = encode(datasets, reference_grid, [SegmentMask("lesion", "#00ff00", lesion)], series_number=77,
                      content_creator_name=f"Reader^R{next(readers)}")
        buffer = io.BytesIO()
        made.dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    seg_data = foreign_seg()

    def highdicom_decode() -> NDArray[Any]:
        return hd.seg.segread(io.BytesIO(seg_data)).get_volume(segment_numbers=[1]).array

    def ours_decode() -> NDArray[np.bool_]:
        seg = pydicom.dcmread(io.BytesIO(seg_data))
        return decode(seg, reference_grid, read_source_series(datasets))[0].mask

    assert int(highdicom_decode().sum()) == int(lesion.sum()) and np.array_equal(ours_decode(), lesion)
    b = "(b) SEG -> ROI"
    decoded = bench.measure(Step(b, "highdicom alone: segread + get_volume, in memory", highdicom_decode))
    bench.measure(Step(b, "our codec: dcmread + read_source_series + decode, in memory", ours_decode, baseline=decoded))
    request = {"id": 0}

    def store_foreign() -> None:
        answer = rest.store(foreign_seg())
        info = series_info(rest, str(answer["ParentSeries"]))
        # Claimed before Orthanc's STABLE_SERIES queues it (a StableAge later), so that no worker takes it from us.
        with archive.unit_of_work() as (session, _journal):
            row = ConversionRequest(
                orthanc_series_id=info.orthanc_id, instances_hash=info.instances_hash, instance_count=len(info.instance_ids),
                series_instance_uid=info.series_uid, state=ConversionState.RUNNING, reason=ConversionReason.STABLE_SERIES,
                attempts=1, worker="bench", created_at=utcnow(), updated_at=utcnow(),
            )
            session.add(row)
            session.flush()
            request["id"] = row.id

    results: list[tuple[ConversionState, str, str]] = []
    bench.measure(Step(b, "queue's conversion of a SEG series in Orthanc -> ROI saved",
                       lambda: results.append(conversion.convert_request(archive, rest, request["id"])), store_foreign,
                       baseline=decoded))
    assert all(state is ConversionState.DONE and "1 ROI(s)" in message for state, message, _ in results), results

    # (c) Operations.
    c = "(c) operation"
    for operation in Operation:
        extra: dict[str, Any] = {}
        if operation.takes_two:
            extra = {"other": shifted, "other_grid": grid}
        if operation is Operation.REMOVE_SALT:
            extra = {"min_voxels": MIN_VOXELS}
        bench.measure(Step(c, f"{operation.value} (operations.apply)",
                           lambda o=operation, e=extra: operations.apply(o, lesion, grid, **e),  # type: ignore[misc]
                           limit_ms=OPERATION_TARGET_MS))
    bench.measure(Step(c, "close, the ROI and 200 specks across the volume", lambda: operations.apply(Operation.CLOSE, scattered, grid),
                       limit_ms=OPERATION_TARGET_MS))
    operated: list[rois.SavedRoi] = []
    # The newest versions, read when a run starts: a profiled run saves another version of each.
    bench.measure(Step(
        c, "dilate as users run it: roi_actions.operate + publisher",
        lambda: operated.append(roi_actions.operate(archive, project, saved[-1].roi.file_id, Operation.DILATE, "bob", publish,
                                                    label="lesion grown")),
        queue.prepare, queue.settle, limit_ms=OPERATION_TARGET_MS,
    ))

    # (d) Statistics: 4 images x 3 ROIs.
    smooth = ndimage.uniform_filter(image_data.astype(np.float32), 3) * np.float32(0.01)
    # Index (p, q, r) of the permuted grid is (q, r, K - 1 - p) of the reference.
    k = reference.shape[2]
    permuted_grid = Grid((k, reference.shape[0], reference.shape[1]),
                         reference.affine @ np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, k - 1], [0, 0, 0, 1]]))
    permuted = np.ascontiguousarray(np.flip(np.transpose(smooth, (2, 0, 1)), axis=0))
    turned = turned_grid(grid, 10.0, 1.5)
    images = {
        "converted": (image_data, grid),
        "map": (smooth, grid),
        "map permuted": (permuted, permuted_grid),
        "map turned": (resampled(smooth, grid, turned), turned),
    }
    roi_masks = {"lesion": (lesion, grid), "grown": (operations.dilate(lesion), grid), "shifted": (shifted, grid)}
    checked = roi_statistics.table({name: images[name] for name in ("map", "map permuted")}, {"lesion": roi_masks["lesion"]})
    assert abs((checked[0].statistics.mean or 0) - (checked[1].statistics.mean or 1)) < 1e-3, "the permuted grid is not the same voxels"
    d = "(d) statistics"
    bench.measure(Step(d, "statistics.table, 4 images x 3 ROIs, in memory", lambda: roi_statistics.table(images, roi_masks),
                       limit_ms=STATISTICS_TARGET_MS))
    study_dir = reference.path.parents[len(PurePosixPath(reference.file.path).parts) - 1]
    (study_dir / "derived").mkdir(exist_ok=True)
    image_ids = [reference.file.id]
    with archive.unit_of_work() as (session, _journal):
        study = session.get_one(Study, reference.study.id)
        for number, name in enumerate(list(images)[1:], start=1):
            data, image_grid = images[name]
            relative = f"derived/map{number}.nii.gz"
            nib.save(nib.Nifti1Image(data, image_grid.affine), study_dir / relative)
            image_ids.append(register_file(session, study, relative, study_dir / relative, kind=FileKind.NIFTI).id)
    with archive.sessions() as session:
        imported = next(roi.file_id for roi in rois.live_rois(session, reference.study.id) if roi.author.startswith("Reader"))
    rows: list[list[dict[str, Any]]] = []
    bench.measure(Step(d, "statistics_rows, 4 images x 3 ROIs read from the archive",
                       lambda: rows.append(roi_actions.statistics_rows(archive, project, image_ids,
                                                                       [saved[-1].roi.file_id, operated[-1].roi.file_id, imported])),
                       limit_ms=STATISTICS_TARGET_MS))
    assert len(rows[-1]) == 12


def report(bench: Bench) -> None:
    rows = [["step", "what", "median ms", "x highdicom", "target", "met"]]
    for step in bench.steps:
        ratio = f"{step.ratio:.2f}" if step.ratio is not None else ("1.00" if step.what.startswith("highdicom") else "")
        met = "" if step.met is None else ("yes" if step.met else "MISSED")
        rows.append([step.section, step.what, f"{step.ms:,.1f}", ratio, step.target, met])
    judged = [step for step in bench.steps if step.met is not None]
    log.info("\nmedian of %d runs after one warm-up\n%s\n%d of %d targets met", bench.repeat, table(rows),
             sum(1 for step in judged if step.met), len(judged))


if __name__ == "__main__":
    main()
