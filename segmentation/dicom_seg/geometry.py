"""Where the voxels of a reference NIfTI and of its DICOM source series lie in patient space.

Two conventions meet here, and every affine below says which one it is in:

* NIfTI (``ReferenceGrid.affine``): voxel index (i, j, k) -> RAS+ millimetres, x growing to the
  patient's Right, y to Anterior, z to Superior. Axes in the order the NIfTI stores them.
* DICOM and highdicom (``SourceSeries.geometry``): LPS millimetres, x growing to the patient's Left,
  y to Posterior, z to Superior; voxel indices (slice, row, column), slices in the order the SEG's
  frames take (a mosaic's tile order; for single-frame images, highdicom's right-handed stacking).
  The same point in both: ``lps = diag(-1, -1, 1) @ ras``.

dcm2niix writes its NIfTI in its own axis order (rows flipped, slices possibly reversed), so the two
grids are the same set of voxel centres with axes permuted and flipped. ``SourceSeries.index_map``
finds that permutation and refuses anything else: a SEG never resamples.

A source series is what a SEG's frames follow:

* single-frame images (CT, MR, GE EPI): one instance per slice position. A 4D series (positions
  repeating over time points) contributes its first time point only; per position the instance with
  the lowest (TemporalPositionIdentifier, AcquisitionNumber, InstanceNumber) is taken.
* a Siemens mosaic: one instance holds all slices as tiles, and its ImagePositionPatient is the corner
  of the whole mosaic. The slices' geometry comes from the tile size, the CSA header's slice normal and
  SpacingBetweenSlices (the reference grid check catches any disagreement with dcm2niix). Of a mosaic
  time series, the first instance (lowest AcquisitionNumber, InstanceNumber) is taken.

Enhanced (multi-frame) images other than mosaics are refused: nothing here has been checked on them.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset

from nifti_archive.errors import InvalidValue

with warnings.catch_warnings():
    # nibabel.nicom warns on import that its DICOM readers are experimental; only its CSA header parser is used here.
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import csareader

log = logging.getLogger(__name__)

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Two slice positions closer than this along the slice normal (mm) are the same slice of a 4D series.
SAME_POSITION_MM = 0.01
# Direction cosines of two slices closer than this are one orientation.
ORIENTATION_TOLERANCE = 1e-4
# How far (in voxels, at the grid's far corner) the reference grid's voxel centres may sit from the source's and
# still be the same voxels. NIfTI stores its affine as float32 and DICOM positions as decimal strings of at most
# 16 characters: copies of one grid differ by about 1e-5 voxel, a misplaced grid by half a voxel or more.
GRID_TOLERANCE_VOXELS = 0.01


@dataclass(frozen=True, eq=False)
class ReferenceGrid:
    """The voxel grid of the NIfTI an ROI is drawn on: first three axes only, affine voxel -> RAS+ mm."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or not all(int(n) > 0 for n in self.shape):
            raise InvalidValue(f"a reference grid needs three positive voxel counts, not {tuple(self.shape)}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise InvalidValue(f"a reference grid needs a finite 4x4 affine, not an array of shape {affine.shape}")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "affine", affine)

    @classmethod
    def of_image(cls, image: Any) -> ReferenceGrid:
        """The grid of a nibabel image; a 4D image (a time series) gives the grid of its first three axes."""
        return cls(tuple(image.shape[:3]), np.asarray(image.affine, dtype=np.float64))

    def lps_affine(self) -> NDArray[np.float64]:
        """Voxel index -> LPS mm, for comparing with DICOM."""
        return LPS_FROM_RAS @ self.affine


@dataclass(frozen=True, eq=False)
class IndexMap:
    """Reference voxel index -> source voxel index: source axis a is reference axis ``axes[a]``, reversed where ``flips[a]``."""

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def to_source(self, array: NDArray[Any]) -> NDArray[Any]:
        """An array on the reference grid, rearranged to the source's (slice, row, column) order."""
        moved = np.transpose(array, self.axes + tuple(range(3, array.ndim)))
        return moved[tuple(slice(None, None, -1) if flip else slice(None) for flip in self.flips)]


@dataclass(frozen=True, eq=False)
class SourceSeries:
    """The instances a SEG is derived from and the voxel grid their slices span (LPS, slice/row/column)."""

    datasets: tuple[Dataset, ...]
    geometry: hd.VolumeGeometry
    is_mosaic: bool

    @property
    def series_instance_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.datasets[0].FrameOfReferenceUID)

    def index_map(self, grid: ReferenceGrid) -> IndexMap:
        """How the reference grid's axes lie on the source's; InvalidValue if they are not the same voxels."""
        source_from_reference = np.linalg.inv(np.asarray(self.geometry.affine, dtype=np.float64)) @ grid.lps_affine()
        rotation, offset = source_from_reference[:3, :3], source_from_reference[:3, 3]
        signed = np.round(rotation)
        mismatch = (
            f"the reference grid (shape {grid.shape}) does not match the geometry of source series {self.series_instance_uid}"
            f" ({self.geometry.spatial_shape} slices, rows, columns)"
        )
        # Error of the rounding, where it is largest: at the voxel farthest from the first.
        error = (np.abs(rotation - signed) @ (np.array(grid.shape, dtype=np.float64) - 1)).max()
        ones = np.ones(3)
        if error > GRID_TOLERANCE_VOXELS or not (
            np.array_equal(np.abs(signed).sum(0), ones) and np.array_equal(np.abs(signed).sum(1), ones)
        ):
            raise InvalidValue(f"{mismatch}: its axes are not along the source's slices, rows and columns, or its voxel sizes differ")
        axes = tuple(int(np.argmax(np.abs(signed[a]))) for a in range(3))
        if tuple(grid.shape[a] for a in axes) != self.geometry.spatial_shape:
            raise InvalidValue(f"{mismatch}: the voxel counts differ")
        flips = tuple(bool(signed[a, axes[a]] < 0) for a in range(3))
        # The reference's first voxel is the source's first along unflipped axes, its last along flipped ones.
        expected = np.array([self.geometry.spatial_shape[a] - 1 if flips[a] else 0 for a in range(3)], dtype=np.float64)
        if np.abs(offset - expected).max() > GRID_TOLERANCE_VOXELS:
            shift = np.round(offset - expected, 2).tolist()
            raise InvalidValue(f"{mismatch}: its voxels are shifted by {shift} voxels (slices, rows, columns)")
        return IndexMap(axes=(axes[0], axes[1], axes[2]), flips=(flips[0], flips[1], flips[2]))


def read_source_series(datasets: Sequence[Dataset]) -> SourceSeries:
    """The source instances a SEG follows, chosen from all instances of one series (pixel data not needed)."""
    if not datasets:
        raise InvalidValue("no source DICOM instances were given")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(series) > 1:
        raise InvalidValue(f"the source instances come from {len(series)} series ({', '.join(series)}); a SEG follows one series")
    for ds in datasets:
        missing = [k for k in ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing") if k not in ds]
        if missing:
            uid = ds.get("SOPInstanceUID", "?")
            raise InvalidValue(f"source instance {uid} has no {', '.join(missing)}: it has no place in patient space")
    mosaics = [ds for ds in datasets if _is_mosaic(ds)]
    if mosaics:
        if len(mosaics) != len(datasets):
            raise InvalidValue(f"series {series[0]} mixes mosaic and non-mosaic instances")
        first = min(mosaics, key=_time_order)
        return SourceSeries(datasets=(first,), geometry=_mosaic_geometry(first), is_mosaic=True)
    if any(int(ds.get("NumberOfFrames", 1)) > 1 for ds in datasets):
        raise InvalidValue(f"series {series[0]} holds enhanced multi-frame images, which DICOM SEG export does not support yet")
    return _single_frame_series(datasets)


def _time_order(ds: Dataset) -> tuple[int, int, int, str]:
    return (
        int(ds.get("TemporalPositionIdentifier") or 0),
        int(ds.get("AcquisitionNumber") or 0),
        int(ds.get("InstanceNumber") or 0),
        str(ds.get("SOPInstanceUID", "")),
    )


def _is_mosaic(ds: Dataset) -> bool:
    return "MOSAIC" in [str(v).upper() for v in ds.get("ImageType", [])]


def _single_frame_series(datasets: Sequence[Dataset]) -> SourceSeries:
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])

    def distance(ds: Dataset) -> float:
        return float(normal @ np.array(ds.ImagePositionPatient, dtype=np.float64))

    # The first time point: per slice position, the earliest instance.
    positions: list[list[Dataset]] = []
    for ds in sorted(datasets, key=distance):
        if positions and distance(ds) - distance(positions[-1][0]) < SAME_POSITION_MM:
            positions[-1].append(ds)
        else:
            positions.append([ds])
    chosen = [min(same_position, key=_time_order) for same_position in positions]
    uid = chosen[0].SeriesInstanceUID
    if len(chosen) < len(datasets):
        log.debug("series %s: %d of %d instances, one per slice position", uid, len(chosen), len(datasets))
    if len(chosen) == 1:
        spacing = float(chosen[0].get("SpacingBetweenSlices") or chosen[0].get("SliceThickness") or 1.0)
        ordered = chosen
    else:
        # highdicom's get_series_volume_positions checks each pydicom dataset in Python (about 2 ms a slice);
        # the same test on arrays of their positions and orientations takes microseconds.
        orientations = np.array([ds.ImageOrientationPatient for ds in chosen], dtype=np.float64)
        if not np.allclose(orientations, orientations[0], atol=ORIENTATION_TOLERANCE, rtol=0):
            raise InvalidValue(f"series {uid} has slices of different orientations: a SEG cannot follow it voxel for voxel")
        corners = [[float(v) for v in ds.ImagePositionPatient] for ds in chosen]
        found_spacing, indices = hd.spatial.get_volume_positions(corners, orientations[0].tolist())
        if found_spacing is None or indices is None:
            raise InvalidValue(f"series {uid} is not a regularly spaced stack of parallel slices: a SEG cannot follow it voxel for voxel")
        spacing = float(found_spacing)
        ordered = [chosen[indices.index(i)] for i in range(len(chosen))]
    first = ordered[0]
    geometry = hd.VolumeGeometry.from_attributes(
        image_position=first.ImagePositionPatient,
        image_orientation=first.ImageOrientationPatient,
        rows=int(first.Rows),
        columns=int(first.Columns),
        pixel_spacing=first.PixelSpacing,
        spacing_between_slices=spacing,
        number_of_frames=len(ordered),
        coordinate_system="PATIENT",
        frame_of_reference_uid=first.FrameOfReferenceUID,
    )
    return SourceSeries(datasets=tuple(ordered), geometry=geometry, is_mosaic=False)


def _mosaic_geometry(ds: Dataset) -> hd.VolumeGeometry:
    """The slices a Siemens mosaic holds, as a volume: tile k is slice k, along the CSA header's slice normal."""
    csa = csareader.get_csa_header(ds, "image")
    slices = csareader.get_n_mosaic(csa) if csa is not None else None
    normal = csareader.get_slice_normal(csa) if csa is not None else None
    if not slices or normal is None:
        raise InvalidValue(
            f"mosaic {ds.SOPInstanceUID} lacks the Siemens (CSA) header that says how many slices it holds and their direction"
        )
    slices = int(slices)
    spacing = float(ds.get("SpacingBetweenSlices") or ds.SliceThickness)
    tiles_per_side = math.ceil(math.sqrt(slices))
    rows, columns = int(ds.Rows) // tiles_per_side, int(ds.Columns) // tiles_per_side
    orientation = np.array(ds.ImageOrientationPatient, dtype=np.float64)
    along_row, along_column = orientation[:3], orientation[3:]
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    # ImagePositionPatient is the centre of the mosaic's first pixel; the slices are centred in it.
    corner = (
        np.array(ds.ImagePositionPatient, dtype=np.float64)
        + along_row * column_spacing * (int(ds.Columns) - columns) / 2
        + along_column * row_spacing * (int(ds.Rows) - rows) / 2
    )
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(normal, dtype=np.float64) * spacing
    affine[:3, 1] = along_column * row_spacing
    affine[:3, 2] = along_row * column_spacing
    affine[:3, 3] = corner
    return hd.VolumeGeometry(
        affine=affine,
        spatial_shape=(slices, rows, columns),
        coordinate_system="PATIENT",
        frame_of_reference_uid=ds.FrameOfReferenceUID,
    )
