"""What users do with ROIs, whoever asks: the REST API, ``nora`` and batch jobs call these.

Every id a caller names is checked to belong to the caller's project (a viewer of one project
must not measure another project's images by guessing file ids). Results are saved through
``rois.save_roi``, so an operation's result or a consensus is a version like a drawn one.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.layout import Location
from nifti_archive.models import File, FileKind, Project, Roi, RoiOrigin, Study, Subject
from segmentation import agreement, operations, rois, statistics
from segmentation.grid import Grid
from segmentation.rois import RoiDraft, SavedRoi, SegPublisher
from segmentation.vocabulary import ConsensusMethod, Operation

log = logging.getLogger(__name__)
# Morphology works on the ROI's box grown by this many voxels per side: more would be a memory bomb,
# not a segmentation step.
MAX_ITERATIONS = 100


# Images decompressed at once for a statistics table.
LOAD_THREADS = 4


@dataclass(frozen=True)
class ProjectFile:
    record: File
    location: Location


def project_files(session: Session, project: Project, file_ids: Sequence[int], what: str = "file") -> list[ProjectFile]:
    """The live files ``file_ids`` of ``project``, in the order asked; unknown or foreign ids are NotFound."""
    rows = session.execute(
        select(File, Study, Subject)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(File.id.in_(file_ids), Subject.project_id == project.id, File.trash_id.is_(None))
    ).all()
    found = {
        record.id: ProjectFile(record, Location(project.name, subject.patient_id, study.study_id, record.path))
        for record, study, subject in rows
    }
    missing = [str(i) for i in file_ids if i not in found]
    if missing:
        raise NotFound(f"no {what} {', '.join(missing)} in project {project.name!r}")
    return [found[i] for i in file_ids]


def project_roi(session: Session, project: Project, roi_id: int) -> Roi:
    project_files(session, project, [roi_id], "ROI")
    return rois.live_roi(session, roi_id)


def load_image(archive: Archive, item: ProjectFile) -> tuple[NDArray[Any], Grid]:
    if item.record.kind not in (FileKind.NIFTI, FileKind.ROI):
        raise InvalidValue(f"{item.record.path} is not a NIfTI image")
    image = rois.load_nifti(archive.layout.file_path(item.location))
    return np.asanyarray(image.dataobj), Grid.of(image)


def _mask_and_grid(archive: Archive, session: Session, roi: Roi) -> tuple[NDArray[np.bool_], Grid]:
    mask, affine = rois.load_mask(archive, session, roi)
    return mask, Grid((int(mask.shape[0]), int(mask.shape[1]), int(mask.shape[2])), affine)


@dataclass(frozen=True)
class Provenance:
    """What made an uploaded mask: a user's hand, or proposals of a program the user accepted."""

    origin: RoiOrigin = RoiOrigin.DRAWN
    algorithm: str | None = None
    note: str = ""


def upload_mask(
    archive: Archive,
    project: Project,
    study_id: int,
    reference_file_id: int,
    mask_file: Path,
    label: str,
    colour: str,
    author: str,
    publish_seg: SegPublisher | None,
    provenance: Provenance | None = None,
) -> SavedRoi:
    """A mask NIfTI on the reference's grid (checked: shape and affine) saved as ``author``'s version of ``label``;
    by default drawn by hand; else ``provenance`` says which program proposed it (the segmentation assistant)."""
    with archive.unit_of_work() as (session, journal):
        project_files(session, project, [reference_file_id], "reference image")
        reference = rois.reference_image(archive, session, reference_file_id)
        if reference.study.id != study_id:
            raise InvalidValue(f"reference image {reference_file_id} is not in study {study_id}")
        try:
            image = rois.load_nifti(mask_file)
            # Reads the voxels too: a truncated file has a good header and fails only here.
            mask = rois.mask_from_nifti(image, reference, f"the mask for ROI {label!r}")
        except InvalidValue:
            raise
        except Exception as exc:  # nibabel, gzip and zlib raise many types for a file that is not NIfTI
            # Their messages name the spooled file's path on the server: the log has them, the caller does not.
            log.info("an uploaded mask for ROI %r is unreadable: %s", label, exc)
            raise InvalidValue("the mask is not a readable NIfTI file (.nii or .nii.gz, NIfTI-1)") from exc
        made = provenance or Provenance()
        draft = RoiDraft(label, mask, colour, made.origin, made.algorithm, note=made.note)
        return rois.save_roi(archive, session, journal, reference, draft, author, publish_seg)


def operate(
    archive: Archive,
    project: Project,
    roi_id: int,
    operation: Operation,
    author: str,
    publish_seg: SegPublisher | None,
    *,
    other_id: int | None = None,
    iterations: int = 1,
    min_voxels: int | None = None,
    label: str = "",
) -> SavedRoi:
    """``operation`` on an ROI (and a second one), saved as ``author``'s version of ``label`` (default: the ROI's label)."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise InvalidValue(f"iterations must be 1 to {MAX_ITERATIONS}, not {iterations}")
    with archive.unit_of_work() as (session, journal):
        roi = project_roi(session, project, roi_id)
        mask, grid = _mask_and_grid(archive, session, roi)
        other, other_grid, inputs = None, None, [roi.file_id]
        if other_id is not None:
            second = project_roi(session, project, other_id)
            other, other_grid = _mask_and_grid(archive, session, second)
            inputs.append(second.file_id)
        result = operations.apply(
            operation, mask, grid, other=other, other_grid=other_grid, iterations=iterations, min_voxels=min_voxels
        )
        if roi.reference_file_id is None:
            raise InvalidValue(f"ROI {roi.label!r} has lost its reference image (it was deleted); restore it first")
        reference = rois.reference_image(archive, session, roi.reference_file_id)
        note = f"{operation.value} of ROI {roi.file_id}" + (f" with ROI {other_id}" if other_id is not None else "")
        draft = RoiDraft(label or roi.label, result, "" if label else roi.colour, RoiOrigin.OPERATION, inputs=tuple(inputs), note=note)
        return rois.save_roi(archive, session, journal, reference, draft, author, publish_seg)


def statistics_rows(archive: Archive, project: Project, image_ids: Sequence[int], roi_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Statistics of every image × ROI pair, as the API and the CSV show them."""
    if not image_ids or not roi_ids:
        raise InvalidValue("name at least one image and one ROI")
    with archive.sessions() as session:
        images = project_files(session, project, image_ids, "image")
        chosen = [project_roi(session, project, i) for i in roi_ids]
        # Decompressing the images is most of the time; zlib lets other threads run meanwhile.
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            loaded = list(pool.map(lambda item: load_image(archive, item), images))
        loaded_images = {str(item.record.id): image for item, image in zip(images, loaded, strict=True)}
        loaded_rois = {str(roi.file_id): _mask_and_grid(archive, session, roi) for roi in chosen}
        table = statistics.table(loaded_images, loaded_rois)
        by_image = {str(item.record.id): item.record for item in images}
        by_roi = {str(roi.file_id): roi for roi in chosen}
        return [
            {
                "image_id": int(row.image), "image_path": by_image[row.image].path, "roi_id": int(row.roi),
                "label": by_roi[row.roi].label, "author": by_roi[row.roi].author,
                "voxels": row.statistics.voxels, "outside": row.statistics.outside_voxels,
                "median": row.statistics.median, "p25": row.statistics.p25, "p75": row.statistics.p75,
                "mean": row.statistics.mean, "std": row.statistics.std,
                "volume_ml": row.statistics.volume_ml, "area_cm2": row.statistics.area_cm2,
            }
            for row in table
        ]


STATISTICS_COLUMNS = (
    "image_id", "image_path", "roi_id", "label", "author", "voxels", "outside", "median", "p25", "p75", "mean", "std",
    "volume_ml", "area_cm2",
)


def write_statistics_csv(rows: Sequence[dict[str, Any]], stream: IO[str]) -> None:
    """The statistics table as CSV, one row per image × ROI pair; an empty cell where a value is undefined."""
    writer = csv.writer(stream)
    writer.writerow(STATISTICS_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[column] is None else row[column] for column in STATISTICS_COLUMNS])


def export_again(archive: Archive, project: Project, roi_id: int, author: str, publish_seg: SegPublisher) -> SavedRoi:
    """The ROI written as a DICOM SEG again: saved as ``author``'s newest version, a new instance of its SEG series."""
    with archive.unit_of_work() as (session, journal):
        roi = project_roi(session, project, roi_id)
        if roi.reference_file_id is None:
            raise InvalidValue(f"ROI {roi.label!r} has lost its reference image (it was deleted); restore it first")
        mask, _grid = _mask_and_grid(archive, session, roi)
        reference = rois.reference_image(archive, session, roi.reference_file_id)
        draft = RoiDraft(roi.label, mask, roi.colour, roi.origin, roi.algorithm, (roi.file_id,))
        saved = rois.save_roi(archive, session, journal, reference, draft, author, publish_seg)
        if saved.roi.seg_instance_uid is None:
            # No SEG could be written (the reference is not from DICOM): a copy of the ROI as a new
            # version, its earlier one in the trash, is not what was asked for. Undo it all.
            raise InvalidValue(saved.seg_message or f"no DICOM SEG could be written for ROI {roi.label!r}")
        return saved


def _versions(archive: Archive, session: Session, project: Project, study_id: int, label: str, purpose: str) -> list[Roi]:
    versions = rois.versions_of(session, study_id, label)
    if versions:
        project_files(session, project, [versions[0].file_id], "ROI")
    if len(versions) < 2:
        raise InvalidValue(f"ROI {label!r} has {len(versions)} version(s) in study {study_id}; {purpose} needs two or more")
    return versions


def agreement_report(archive: Archive, project: Project, study_id: int, label: str) -> dict[str, Any]:
    """Dice, 95th-percentile Hausdorff distance and volume difference between every two versions of a label."""
    with archive.sessions() as session:
        versions = _versions(archive, session, project, study_id, label, "agreement")
        masks = [_mask_and_grid(archive, session, roi) for roi in versions]
        pairs = agreement.pairwise(masks)
        return {
            "label": label,
            "versions": [rois.describe(roi, None) for roi in versions],
            "pairs": [
                {
                    "a": versions[pair.first].file_id, "b": versions[pair.second].file_id, "dice": pair.dice,
                    "hd95_mm": pair.hausdorff95_mm, "volume_difference_ml": pair.volume_difference_ml,
                }
                for pair in pairs
            ],
        }


def consensus(
    archive: Archive, project: Project, study_id: int, label: str, method: ConsensusMethod, author: str,
    publish_seg: SegPublisher | None,
) -> SavedRoi:
    """A consensus of every version of ``label`` (majority vote or STAPLE) on the first version's grid."""
    with archive.unit_of_work() as (session, journal):
        versions = _versions(archive, session, project, study_id, label, "a consensus")
        masks = [_mask_and_grid(archive, session, roi) for roi in versions]
        result = agreement.majority_vote(masks) if method is ConsensusMethod.MAJORITY else agreement.staple(masks).mask
        first = versions[0]
        if first.reference_file_id is None:
            raise InvalidValue(f"ROI {label!r} by {first.author} has lost its reference image; restore it first")
        reference = rois.reference_image(archive, session, first.reference_file_id)
        authors = ", ".join(roi.author for roi in versions)
        draft = RoiDraft(
            label, result, first.colour, RoiOrigin.CONSENSUS, algorithm=method.value,
            inputs=tuple(roi.file_id for roi in versions), note=f"{method.value} consensus of the versions by {authors}",
        )
        return rois.save_roi(archive, session, journal, reference, draft, author, publish_seg)
