"""DICOM Segmentation -> one boolean mask per segment, exactly on a reference NIfTI grid.

Each segment is read on its own, frame by frame: a frame's pixels go to the reference voxels its
position, orientation and pixel spacing put them on (see ``geometry`` for the LPS/RAS conventions).
Nothing is resampled: a frame that does not lie on the grid's voxels, or a set pixel outside the grid,
is refused. Reading frame by frame rather than through a volume keeps what volumes lose: segments that
overlap, segments with a single frame or gaps between frames, and frames in any order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset

from nifti_archive.errors import InvalidValue
from segmentation.dicom_seg.geometry import GRID_TOLERANCE_VOXELS, ReferenceGrid, SourceSeries

log = logging.getLogger(__name__)

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"


@dataclass(frozen=True)
class SegReferences:
    """What a SEG points at: enough to find the NIfTI it belongs to before decoding it."""

    sop_instance_uid: str
    frame_of_reference_uid: str | None
    series_instance_uids: tuple[str, ...]
    # Source instances named anywhere (series references and per-frame derivations), for SEGs that name no series.
    source_instance_uids: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class DecodedSegment:
    """One segment of a SEG, its mask on the reference grid; colour ``#rrggbb`` or None when the SEG gives none."""

    number: int
    label: str
    colour: str | None
    algorithm_type: str
    algorithm_name: str | None
    content_creator: str | None
    mask: NDArray[np.bool_]


def seg_references(seg: Dataset) -> SegReferences:
    """The series and instances ``seg`` is derived from; cheap (no pixel data needed). InvalidValue if it is no SEG."""
    _check_sop_class(seg)
    series: list[str] = []
    instances: list[str] = []
    for item in seg.get("ReferencedSeriesSequence", []):
        series.append(str(item.SeriesInstanceUID))
        instances.extend(str(ref.ReferencedSOPInstanceUID) for ref in item.get("ReferencedInstanceSequence", []))
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in frame.get("DerivationImageSequence", []):
            instances.extend(str(ref.ReferencedSOPInstanceUID) for ref in derivation.get("SourceImageSequence", []))
    return SegReferences(
        sop_instance_uid=str(seg.SOPInstanceUID),
        frame_of_reference_uid=str(seg.FrameOfReferenceUID) if "FrameOfReferenceUID" in seg else None,
        series_instance_uids=tuple(dict.fromkeys(series)),
        source_instance_uids=tuple(dict.fromkeys(instances)),
    )


def decode(seg: Dataset, grid: ReferenceGrid, source: SourceSeries) -> list[DecodedSegment]:
    """Every segment of ``seg`` as a mask on ``grid``, the NIfTI made from ``source`` (see ``read_source_series``)."""
    references = seg_references(seg)
    if references.frame_of_reference_uid != source.frame_of_reference_uid:
        raise InvalidValue(f"SEG {references.sop_instance_uid} is not in the frame of reference of series {source.series_instance_uid}")
    if references.series_instance_uids and source.series_instance_uid not in references.series_instance_uids:
        raise InvalidValue(
            f"SEG {references.sop_instance_uid} was made on series {', '.join(references.series_instance_uids)},"
            f" not on {source.series_instance_uid}"
        )
    # Refuse a grid that is not the source's own (as encode does): then a SEG that fits the grid fits the series.
    source.index_map(grid)
    segmentation_type = str(seg.get("SegmentationType", ""))
    if segmentation_type not in ("BINARY", "LABELMAP"):
        kind = segmentation_type or "unknown"
        raise InvalidValue(f"SEG {references.sop_instance_uid} is of type {kind}; only BINARY and LABELMAP segmentations are read")
    creator = str(seg.ContentCreatorName).rstrip("^") if seg.get("ContentCreatorName") else None
    # pydicom gives (frames, rows, columns), but (rows, columns) for a single frame.
    pixels = seg.pixel_array.reshape(int(seg.get("NumberOfFrames", 1)), int(seg.Rows), int(seg.Columns))
    to_grid = np.linalg.inv(grid.lps_affine()).astype(np.float64)
    frames = [_FramePlacement.of(seg, index, to_grid, grid) for index in range(pixels.shape[0])]
    if segmentation_type == "BINARY" and any(placement.segment is None for placement in frames):
        raise InvalidValue(f"SEG {references.sop_instance_uid} does not say which segment each of its frames belongs to")
    decoded = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if segmentation_type == "LABELMAP" and number == 0:
            continue  # the background
        mask = np.zeros(grid.shape, dtype=np.bool_)
        for placement in frames:
            if segmentation_type == "BINARY" and placement.segment != number:
                continue
            inside = pixels[placement.index] == (1 if segmentation_type == "BINARY" else number)
            placement.place(inside, mask, f"segment {number}")
        algorithm = item.get("SegmentationAlgorithmIdentificationSequence")
        decoded.append(
            DecodedSegment(
                number=number,
                label=str(item.get("SegmentLabel", "")),
                colour=_colour(item),
                algorithm_type=str(item.get("SegmentAlgorithmType", "")),
                algorithm_name=str(algorithm[0].AlgorithmName) if algorithm else None,
                content_creator=creator,
                mask=mask,
            )
        )
    log.debug("SEG %s: decoded %d segments onto %s", references.sop_instance_uid, len(decoded), grid.shape)
    return decoded


def _check_sop_class(seg: Dataset) -> None:
    sop_class = str(seg.get("SOPClassUID", ""))
    if sop_class not in (SEGMENTATION, LABEL_MAP_SEGMENTATION):
        name = getattr(seg.get("SOPClassUID"), "name", "") or "no SOP class"
        raise InvalidValue(f"{seg.get('SOPInstanceUID', 'the object')} is not a DICOM Segmentation but {name} ({sop_class or '-'})")


def _colour(item: Dataset) -> str | None:
    if "RecommendedDisplayCIELabValue" not in item:
        return None
    lab = hd.color.CIELabColor.from_dicom_value([int(v) for v in item.RecommendedDisplayCIELabValue])
    # Colours outside sRGB are clipped to the nearest; highdicom then returns floats.
    return "#" + "".join(f"{round(c):02x}" for c in lab.to_rgb(clip=True))


def _functional_group(seg: Dataset, index: int, sequence: str) -> Dataset | None:
    """A frame's functional group item: per-frame if there, else shared."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    shared = seg.get("SharedFunctionalGroupsSequence") or []
    for group in ([per_frame[index]] if index < len(per_frame) else []) + list(shared[:1]):
        if sequence in group:
            item: Dataset = group[sequence].value[0]
            return item
    return None


@dataclass(frozen=True, eq=False)
class _FramePlacement:
    """Where one frame's pixels fall: reference index = ``origin + row * down + column * right`` (all integer vectors)."""

    index: int
    segment: int | None
    origin: NDArray[np.int64]
    down: NDArray[np.int64]
    right: NDArray[np.int64]
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, seg: Dataset, index: int, to_grid: NDArray[np.float64], grid: ReferenceGrid) -> _FramePlacement:
        position = _functional_group(seg, index, "PlanePositionSequence")
        orientation = _functional_group(seg, index, "PlaneOrientationSequence")
        measures = _functional_group(seg, index, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise InvalidValue(f"frame {index + 1} of the SEG has no position, orientation or pixel spacing")
        identification = _functional_group(seg, index, "SegmentIdentificationSequence")
        cosines = np.array(orientation.ImageOrientationPatient, dtype=np.float64)
        row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
        origin = to_grid[:3, :3] @ np.array(position.ImagePositionPatient, dtype=np.float64) + to_grid[:3, 3]
        down = to_grid[:3, :3] @ (cosines[3:] * row_spacing)
        right = to_grid[:3, :3] @ (cosines[:3] * column_spacing)
        exact = [np.round(v) for v in (origin, down, right)]
        # Error of the rounding, where it is largest: at the frame's far corner.
        error = (
            np.abs(origin - exact[0]).max()
            + np.abs(down - exact[1]).max() * (int(seg.Rows) - 1)
            + np.abs(right - exact[2]).max() * (int(seg.Columns) - 1)
        )
        # Rows and columns must each step one voxel, along two different axes of the grid.
        steps = np.abs(np.stack([exact[1], exact[2]]))
        if error > GRID_TOLERANCE_VOXELS or not np.array_equal(steps.sum(axis=1), [1, 1]) or steps.sum(axis=0).max() > 1:
            raise InvalidValue(f"frame {index + 1} of the SEG does not lie on the voxels of the reference grid (shape {grid.shape})")
        return cls(
            index=index,
            segment=int(identification.ReferencedSegmentNumber) if identification is not None else None,
            origin=exact[0].astype(np.int64),
            down=exact[1].astype(np.int64),
            right=exact[2].astype(np.int64),
            shape=grid.shape,
        )

    def place(self, inside: NDArray[np.bool_], mask: NDArray[np.bool_], what: str) -> None:
        rows, columns = np.nonzero(inside)
        if rows.size == 0:
            return
        indices = self.origin[:, None] + self.down[:, None] * rows + self.right[:, None] * columns
        outside = np.any((indices < 0) | (indices >= np.array(self.shape)[:, None]), axis=0)
        if outside.any():
            raise InvalidValue(f"{what} of the SEG has {int(outside.sum())} voxels in frame {self.index + 1} outside the reference grid")
        mask[indices[0], indices[1], indices[2]] = True
