"""The navigation tool's geometry (NORA's manual alignment and warping), with no archive and no server.

Conventions, all in NIfTI world space (RAS+ millimetres, as an image's sform/qform gives it):

* **Affine transform** ``T`` (4x4) acts on world points. Built by :func:`compose` from a translation
  (mm), rotations (degrees) about the world axes through a centre (mm) and scale factors along the world
  axes (about the same centre): ``T = Translate(t) @ Translate(c) @ Rz @ Ry @ Rx @ Scale(s) @ Translate(-c)``.
  The rotations are applied x first, then y, then z, about fixed axes (scipy's
  ``Rotation.from_euler("xyz", angles, degrees=True)``); positive angles turn counter-clockwise looking
  down the axis towards the origin (right-handed).
* **Moving an image** by ``T`` changes only its geometry: the new image's sform and qform are
  ``T @ affine`` (:func:`moved_affine`) and its voxels are untouched.
* **Displacement field** (what a warped image is resampled through): a *pull-back* field ``u`` on the
  output grid, as ITK and ANTs use it: the output voxel at world point ``x`` takes the moving image's
  value at world point ``x + u(x)``. Vectors are in mm along RAS+ world axes (ITK and ANTs keep theirs
  in LPS: negate x and y for them).
* **Gaussian displacement markers**: a marker (centre ``c``, displacement ``d``, width ``sigma``)
  pushes the image content at ``c`` to ``c + d`` and its surroundings with a Gaussian fall-off: its
  pull-back field is ``u(x) = -d * exp(-|x - (c + d)|^2 / (2 sigma^2))``, exactly ``-d`` at ``c + d``
  (and nothing beyond 6 sigma along any axis, where it would be below 1.5e-8 of ``d``).
  The markers of one stage sum. A *dump* ends a stage: later markers warp the already warped image, so
  stages compose (the newest stage first: ``x -> x + u_new(x) -> ... -> x + u_total(x)``).
* **Keypoint pairs**: source points (on the moving image) and target points (where they belong). The
  pull-back field is the Gaussian radial-basis interpolation of ``source - target`` at the targets:
  ``u(x) = sum_i w_i exp(-|x - q_i|^2 / (2 sigma^2))`` with weights solved so that ``u(q_i) = p_i - q_i``
  exactly; it fades to zero further than a few ``sigma`` from every target.
* **Resampling** (:func:`resample`) is trilinear, or nearest-neighbour for label images; outside the
  moving image is 0.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from nifti_archive.errors import InvalidValue, member_named
from segmentation.grid import Grid

Vector = tuple[float, float, float]
# A warp whose output grid holds more voxels than this is refused: the field alone is 12 bytes a voxel.
MAX_FIELD_VOXELS = 400 * 400 * 400
# Points are warped in slabs of this many, so that the float arrays of a large grid stay small.
_CHUNK = 1 << 20
# Displacement markers: widths in mm a user can mean (a fraction of a voxel to a whole head).
MIN_SIGMA_MM = 0.1
MAX_SIGMA_MM = 500.0
# How many sigmas from its target a displacement marker reaches (exp(-6^2 / 2) is 1.5e-8).
MARKER_REACH = 6.0


class TransformMode(Enum):
    """What the navigation tool does to the moving images."""

    RIGID = "rigid"
    AFFINE = "affine"
    DISPLACEMENTS = "displacements"
    KEYPOINTS = "keypoints"

    @classmethod
    def named(cls, name: str) -> TransformMode:
        return member_named(cls, name, "transform mode", field="mode")

    @property
    def deforms(self) -> bool:
        """Whether the mode resamples voxels through a displacement field (else only the affine changes)."""
        return self in (TransformMode.DISPLACEMENTS, TransformMode.KEYPOINTS)


class GridChoice(Enum):
    """Which grid a warped image is resampled onto (NORA's common matrix)."""

    OWN = "own"
    IMAGE = "image"
    WORLD = "world"


class Interpolation(Enum):
    LINEAR = "linear"
    NEAREST = "nearest"

    @classmethod
    def named(cls, name: str) -> Interpolation:
        return member_named(cls, name, "interpolation", field="interpolation")

    @property
    def order(self) -> int:
        """scipy's spline order for this interpolation."""
        return 1 if self is Interpolation.LINEAR else 0


@dataclass(frozen=True)
class AffineParameters:
    """A transform as the tool's fields give it; the identity by default."""

    translation: Vector = (0.0, 0.0, 0.0)
    rotation_deg: Vector = (0.0, 0.0, 0.0)
    scale: Vector = (1.0, 1.0, 1.0)
    centre: Vector = (0.0, 0.0, 0.0)

    @property
    def is_rigid(self) -> bool:
        return all(math.isclose(s, 1.0, abs_tol=1e-12) for s in self.scale)

    def as_dict(self) -> dict[str, list[float]]:
        return {
            "translation": list(self.translation), "rotation_deg": list(self.rotation_deg),
            "scale": list(self.scale), "centre": list(self.centre),
        }


def translation_matrix(offset: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    matrix: NDArray[np.float64] = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def rotation_matrix(angles_deg: Sequence[float]) -> NDArray[np.float64]:
    """Rotations about the world x, y and z axes, in that order (``Rz @ Ry @ Rx``), as a 4x4 matrix."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx
    return matrix


def compose(parameters: AffineParameters) -> NDArray[np.float64]:
    """The 4x4 world transform of ``parameters`` (see the module's conventions)."""
    if any(s <= 0 or not math.isfinite(s) for s in parameters.scale):
        raise InvalidValue(f"scale: factors must be positive, not {list(parameters.scale)}")
    centre = np.asarray(parameters.centre, dtype=np.float64)
    scale = np.diag([*parameters.scale, 1.0])
    result: NDArray[np.float64] = (
        translation_matrix(parameters.translation) @ translation_matrix(centre) @ rotation_matrix(parameters.rotation_deg)
        @ scale @ translation_matrix(-centre)
    )
    return result


def moved_affine(transform: NDArray[np.float64], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    """The affine of an image moved by ``transform``: its voxels land where ``transform`` takes them."""
    result: NDArray[np.float64] = np.asarray(transform, dtype=np.float64) @ np.asarray(affine, dtype=np.float64)
    return result


def has_shear(affine: NDArray[np.float64]) -> bool:
    """Whether the affine's columns are not at right angles (a NIfTI qform cannot hold it then)."""
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    gram = columns.T @ columns
    return not np.allclose(gram, np.eye(3), atol=1e-6)


def world_points(grid: Grid, indices: NDArray[np.float64]) -> NDArray[np.float64]:
    """World positions (mm) of fractional voxel ``indices`` (n, 3) of ``grid``."""
    positions: NDArray[np.float64] = indices @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    return positions


def _corners(grid: Grid) -> NDArray[np.float64]:
    """World positions of the outer corners of a grid's corner voxels (half a voxel beyond the centres)."""
    low = [-0.5, -0.5, -0.5]
    high = [n - 0.5 for n in grid.shape]
    points = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    return world_points(grid, points)


def world_grid(grids: Sequence[Grid], voxel_mm: float) -> Grid:
    """NORA's "world" matrix: an axis-aligned RAS+ grid of ``voxel_mm`` voxels covering every grid's extent."""
    if not grids:
        raise InvalidValue("grid: the world grid needs at least one image")
    if not (math.isfinite(voxel_mm) and voxel_mm > 0):
        raise InvalidValue(f"voxel_mm: the voxel size must be a positive number of mm, not {voxel_mm}")
    corners = np.concatenate([_corners(grid) for grid in grids])
    low, high = corners.min(axis=0), corners.max(axis=0)
    # Whole voxels covering the box, centred on it; 1e-9 keeps an exact fit from gaining a voxel.
    counts = [max(1, math.ceil((hi - lo) / voxel_mm - 1e-9)) for lo, hi in zip(low, high, strict=True)]
    if math.prod(counts) > MAX_FIELD_VOXELS:
        raise InvalidValue(f"voxel_mm: {voxel_mm} mm voxels make a grid of {counts} voxels; choose larger voxels")
    centre = (low + high) / 2
    first = centre - (np.array(counts) - 1) * voxel_mm / 2
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = first
    return Grid((counts[0], counts[1], counts[2]), affine)


class Deformation(Protocol):
    """One stage of a warp: a pull-back displacement (mm) at world points."""

    def displacement(self, points: NDArray[np.float64]) -> NDArray[np.float64]: ...


def _check_sigma(sigma: float, what: str) -> float:
    if not (math.isfinite(sigma) and MIN_SIGMA_MM <= sigma <= MAX_SIGMA_MM):
        raise InvalidValue(f"{what}: sigma must be {MIN_SIGMA_MM} to {MAX_SIGMA_MM} mm, not {sigma}")
    return sigma


@dataclass(frozen=True)
class DisplacementMarker:
    """Pushes the content at ``centre`` by ``displacement`` (mm), fading as a Gaussian of width ``sigma`` (mm)."""

    centre: Vector
    displacement: Vector
    sigma: float

    def __post_init__(self) -> None:
        _check_sigma(self.sigma, "markers")

    @property
    def target(self) -> NDArray[np.float64]:
        return np.add(self.centre, self.displacement)


@dataclass(frozen=True)
class MarkerStage:
    """Markers added together: one stage between two dumps."""

    markers: tuple[DisplacementMarker, ...]

    def displacement(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        total = np.zeros_like(points)
        for marker in self.markers:
            # Beyond MARKER_REACH sigmas a marker's weight is below 1e-8: those points are not worked out.
            near = np.flatnonzero(np.all(np.abs(points - marker.target) <= MARKER_REACH * marker.sigma, axis=1))
            squared = np.sum((points[near] - marker.target) ** 2, axis=1)
            weight = np.exp(-squared / (2 * marker.sigma**2))
            total[near] -= weight[:, None] * np.asarray(marker.displacement)
        return total


@dataclass(frozen=True)
class KeypointStage:
    """Source points on the moving image and the target points where they belong, pair by pair."""

    source: NDArray[np.float64]
    target: NDArray[np.float64]
    sigma: float
    weights: NDArray[np.float64]

    @classmethod
    def fit(cls, source: Sequence[Vector], target: Sequence[Vector], sigma: float) -> KeypointStage:
        """The Gaussian radial-basis interpolation taking every target point to its source point."""
        _check_sigma(sigma, "keypoints")
        p, q = np.asarray(source, dtype=np.float64).reshape(-1, 3), np.asarray(target, dtype=np.float64).reshape(-1, 3)
        if len(p) != len(q):
            raise InvalidValue(f"keypoints: {len(p)} source points but {len(q)} target points; they go in pairs")
        if not len(p):
            raise InvalidValue("keypoints: give at least one pair of points")
        kernel = _gaussian(q, q, sigma)
        try:
            weights = np.linalg.solve(kernel, p - q)
        except np.linalg.LinAlgError:
            raise InvalidValue("keypoints: two target points coincide; every target point must be distinct") from None
        if not np.all(np.isfinite(weights)) or not np.allclose(kernel @ weights, p - q, atol=1e-6):
            raise InvalidValue("keypoints: target points lie too close together for their sigma; spread them or narrow sigma")
        return cls(p, q, sigma, np.asarray(weights, dtype=np.float64))

    def displacement(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        # One basis function at a time: the points-by-keypoints matrix of a whole grid would not fit in memory.
        total = np.zeros_like(points)
        for centre, weight in zip(self.target, self.weights, strict=True):
            squared = np.sum((points - centre) ** 2, axis=1)
            total += np.exp(-squared / (2 * self.sigma**2))[:, None] * weight
        return total


def _gaussian(points: NDArray[np.float64], centres: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """The Gaussian of every point's distance to every centre: (points, centres); for the keypoints alone."""
    squared = np.sum((points[:, None, :] - centres[None, :, :]) ** 2, axis=2)
    result: NDArray[np.float64] = np.exp(-squared / (2 * sigma**2))
    return result


def pull_back(stages: Sequence[Deformation], points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Where in the moving image the output's world ``points`` come from: the newest stage is undone first."""
    current = np.array(points, dtype=np.float64)
    for stage in reversed(stages):
        current = current + stage.displacement(current)
    return current


def displacement_field(stages: Sequence[Deformation], grid: Grid) -> NDArray[np.float32]:
    """The composed pull-back field on ``grid``: shape (x, y, z, 3), mm, RAS+."""
    count = math.prod(grid.shape)
    if count > MAX_FIELD_VOXELS:
        raise InvalidValue(f"grid: {grid.shape} voxels are too many for a displacement field (at most {MAX_FIELD_VOXELS})")
    field = np.empty((count, 3), dtype=np.float32)
    for start in range(0, count, _CHUNK):
        flat = np.arange(start, min(start + _CHUNK, count))
        indices = np.stack(np.unravel_index(flat, grid.shape), axis=1).astype(np.float64)
        world = world_points(grid, indices)
        field[start : start + len(flat)] = pull_back(stages, world) - world
    return field.reshape(*grid.shape, 3)


def resample(
    data: NDArray[Any],
    source_affine: NDArray[np.float64],
    field: NDArray[np.float32],
    grid: Grid,
    interpolation: Interpolation,
) -> NDArray[Any]:
    """``data`` (3D, or 4D: each volume alike) with world geometry ``source_affine``, read through the
    pull-back ``field`` at every voxel of ``grid``; the result keeps ``data``'s type (rounded for integers)."""
    count = math.prod(grid.shape)
    to_voxels = np.linalg.inv(source_affine)
    flat_field = field.reshape(-1, 3)
    volumes = data[..., None] if data.ndim == 3 else data.reshape(*data.shape[:3], -1)
    result = np.empty((count, volumes.shape[3]), dtype=data.dtype)
    # Volume by volume, slab by slab: one float copy of one volume and one slab's coordinates at a time.
    for v in range(volumes.shape[3]):
        volume = np.asarray(volumes[..., v], dtype=np.float64)
        for start in range(0, count, _CHUNK):
            flat = np.arange(start, min(start + _CHUNK, count))
            indices = np.stack(np.unravel_index(flat, grid.shape), axis=1).astype(np.float64)
            sources = world_points(grid, indices) + flat_field[flat]
            coordinates = (sources @ to_voxels[:3, :3].T + to_voxels[:3, 3]).T
            sampled = ndimage.map_coordinates(volume, coordinates, order=interpolation.order, mode="constant", cval=0.0)
            if np.issubdtype(data.dtype, np.integer):
                limits = np.iinfo(data.dtype)
                sampled = np.clip(np.rint(sampled), limits.min, limits.max)
            result[flat, v] = sampled
    shaped = result.reshape(*grid.shape, volumes.shape[3])
    return shaped[..., 0] if data.ndim == 3 else shaped.reshape(*grid.shape, *data.shape[3:])


# NIfTI's intent for a vector at every voxel (nifti1.h: NIFTI_INTENT_VECTOR).
NIFTI_INTENT_VECTOR = 1007
# Every NIfTI-1 header is this long; the extension flag and any extensions follow it, then the voxels.
NIFTI1_HEADER_BYTES = 348


def set_geometry(header: nib.Nifti1Header, affine: NDArray[np.float64]) -> None:
    """Give ``header`` the world geometry ``affine``: the sform exactly (keeping its code, else aligned);
    the qform too (keeping its code, else scanner) unless ``affine`` shears, which a qform cannot hold:
    then no qform, so that no reader takes an approximation for the image's place."""
    sform_code = int(header["sform_code"]) or 2
    qform_code = int(header["qform_code"]) or 1
    header.set_sform(affine, sform_code)
    if has_shear(affine):
        header.set_qform(None, 0)
    else:
        header.set_qform(affine, qform_code)


def with_affine(raw: bytes, affine: NDArray[np.float64]) -> bytes:
    """A NIfTI-1 file's bytes (uncompressed) with the world geometry ``affine`` and every other byte as it was."""
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    if header.sizeof_hdr != NIFTI1_HEADER_BYTES:
        raise InvalidValue("the moving image is not a NIfTI-1 file")
    set_geometry(header, affine)
    block: bytes = header.binaryblock
    return block + raw[NIFTI1_HEADER_BYTES:]


def field_image(field: NDArray[np.float32], grid: Grid) -> nib.Nifti1Image:
    """The pull-back field as ITK and ANTs write one: 5-D (x, y, z, 1, 3), float32, intent vector,
    on ``grid`` (sform and qform); vectors in mm along RAS+ axes."""
    image = nib.Nifti1Image(np.asarray(field, dtype=np.float32).reshape(*grid.shape, 1, 3), grid.affine)
    set_geometry(image.header, grid.affine)
    image.header.set_intent(NIFTI_INTENT_VECTOR, (), name="displacement")
    image.header.set_xyzt_units("mm")
    return image
