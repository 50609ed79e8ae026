"""The voxel grid of a NIfTI image, and nearest-neighbour moves between grids through world space.

A grid is a shape (three voxel counts) and the NIfTI affine taking voxel indices (i, j, k) to world
millimetres (RAS+). An ROI lives on the grid of its reference image; to combine it with something on
another grid, each voxel centre of the grid the result is on is carried through world space into the other
grid and takes the value of the voxel whose centre is nearest there (round half up: a centre exactly
halfway between two voxels, within 1e-6 voxel, goes to the higher index). Centres falling outside the
other grid are outside: background for a mask, left out and counted (:class:`Sampler`) for an image.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from nifti_archive.errors import InvalidValue

# How far an affine may be from another and still be the same grid, in mm (and mm per voxel for the 3x3).
# NIfTI stores the affine as float32: copies of one grid written by different tools differ by ~1e-5 mm.
SAME_GRID_TOLERANCE_MM = 1e-4

# Pushes centres that float arithmetic puts a hair below a half-voxel boundary onto the documented side.
_HALF_VOXEL_NUDGE = 1e-6
# How far from whole voxels two grids' index mapping may be and still count as whole voxels: affines
# stored as float32 are that far off, and across 1000 voxels it adds up to 0.1 voxel, far from changing
# which voxel is nearest.
_WHOLE_VOXEL_TOLERANCE = 1e-4
# A box of voxels: one slice per grid axis.
Slices = tuple[slice, slice, slice]

# Grids at an angle are matched in slabs of about this many voxels, so that the float index arrays stay small.
_SLAB_VOXELS = 1 << 20


class SpatialImage(Protocol):
    """What a grid is read from: a nibabel image, or anything else with a shape and an affine."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def affine(self) -> NDArray[Any] | None: ...


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3D voxel grid: ``shape`` voxel counts and the 4x4 ``affine`` from voxel index to world mm (RAS+)."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) and n > 0 for n in shape):
            raise InvalidValue(f"a grid's shape must be three positive voxel counts, not {shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise InvalidValue(f"a grid's affine must be a 4x4 matrix, not an array of shape {affine.shape}")
        if not np.all(np.isfinite(affine)):
            raise InvalidValue("a grid's affine holds NaN or infinite values")
        if not np.array_equal(affine[3], [0.0, 0.0, 0.0, 1.0]):
            raise InvalidValue(f"a grid's affine must end with the row 0 0 0 1, not {_format_numbers(affine[3])}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise InvalidValue("a grid's affine is singular: its voxels have no volume")
        affine.flags.writeable = False
        # Frozen: the validated copies replace what was passed, bypassing the dataclass's own guard.
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "affine", affine)

    @classmethod
    def of(cls, image: SpatialImage) -> Grid:
        """The grid of a nibabel image (its first three dimensions)."""
        if image.affine is None:
            raise InvalidValue("the image has no affine: its voxels have no place in world space")
        if len(image.shape) < 3:
            raise InvalidValue(f"the image has shape {tuple(image.shape)}: a grid needs three dimensions")
        i, j, k = image.shape[:3]
        return cls((i, j, k), image.affine)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return self.shape == other.shape and bool(np.array_equal(self.affine, other.affine))

    def __hash__(self) -> int:
        return hash((self.shape, self.affine.tobytes()))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Distance in mm between neighbouring voxel centres along each grid axis (the affine's column norms)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm³)."""
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def face_area_cm2(self, normal_axis: int) -> float:
        """Area in cm² of a voxel's face across grid axis ``normal_axis`` (the in-plane voxel area of a slice).

        The area of the parallelogram spanned by the two other axes' steps, so shear is accounted for.
        """
        first, second = (axis for axis in range(3) if axis != normal_axis)
        steps = self.affine[:3, :3]
        return float(np.linalg.norm(np.cross(steps[:, first], steps[:, second]))) / 100.0

    def same_as(self, other: Grid, tol: float = SAME_GRID_TOLERANCE_MM) -> bool:
        """Whether ``other`` has the same shape and an affine equal to this one within ``tol`` (mm)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, rtol=0.0, atol=tol))

    def world(self, indices: NDArray[np.integer[Any]]) -> NDArray[np.float64]:
        """World positions in mm of the voxel centres at ``indices`` (an (n, 3) array)."""
        positions: NDArray[np.float64] = indices @ self.affine[:3, :3].T + self.affine[:3, 3]
        return positions

    def index_map_from(self, other: Grid) -> NDArray[np.float64]:
        """The 4x4 matrix taking voxel indices of ``other`` to (fractional) voxel indices of this grid."""
        return np.linalg.inv(self.affine) @ other.affine


def check_mask(mask: NDArray[Any], grid: Grid, what: str = "the ROI") -> NDArray[np.bool_]:
    """``mask`` as booleans, after checking it is 3D with ``grid``'s shape and holds only 0 and 1."""
    if mask.shape != grid.shape:
        raise InvalidValue(f"{what} has shape {tuple(mask.shape)} but its grid has shape {grid.shape}")
    if mask.dtype == np.bool_:
        return mask
    if not np.issubdtype(mask.dtype, np.number):
        raise InvalidValue(f"{what} must be a binary mask of numbers 0 and 1, not of {mask.dtype}")
    is_binary = (mask == 0) | (mask == 1)
    if not np.all(is_binary):
        strays = np.unique(mask[~is_binary])
        shown = ", ".join(str(value) for value in strays[:5]) + (", ..." if strays.size > 5 else "")
        raise InvalidValue(f"{what} must be binary (0 and 1 only) but holds {shown}")
    return np.asarray(mask != 0, dtype=np.bool_)


def check_image(image: NDArray[Any], grid: Grid, volume: int = 0, what: str = "the image") -> NDArray[Any]:
    """The 3D volume of ``image`` to measure: the image itself, or volume ``volume`` (0-based) of a 4D image."""
    if image.shape[:3] != grid.shape:
        raise InvalidValue(f"{what} has shape {tuple(image.shape)} but its grid has shape {grid.shape}")
    if not (np.issubdtype(image.dtype, np.number) and not np.issubdtype(image.dtype, np.complexfloating)):
        raise InvalidValue(f"{what} must hold real numbers, not {image.dtype}")
    if image.ndim == 3:
        if volume != 0:
            raise InvalidValue(f"{what} is 3D: it has no volume {volume} (volumes are counted from 0)")
        return image
    if image.ndim == 4:
        if not 0 <= volume < image.shape[3]:
            raise InvalidValue(f"{what} has {image.shape[3]} volumes (0 to {image.shape[3] - 1}): there is no volume {volume}")
        return image[:, :, :, volume]
    raise InvalidValue(f"{what} has shape {tuple(image.shape)}: only 3D images and 4D series (one volume measured) are supported")


def resample_mask(mask: NDArray[np.bool_], source: Grid, target: Grid) -> NDArray[np.bool_]:
    """``mask`` on grid ``source`` carried onto grid ``target``: nearest neighbour, background outside ``source``."""
    if target.same_as(source):
        return mask.copy()
    axis_map = _axis_map(source.index_map_from(target))
    if axis_map is None:
        return _resample_general(mask, source, target)
    result = np.zeros(target.shape, dtype=np.bool_)
    overlap = _overlap(source.shape, target.shape, axis_map)
    if overlap is not None:
        result[overlap[1]] = _moved(mask, axis_map)[overlap[0]]
    return result


class Sampler:
    """Where the voxel centres of an ROI fall on an image's grid, worked out once for any number of images on it.

    Each ROI voxel reads the image voxel whose centre is nearest its own in world space; ``voxels``
    counts the ROI voxels that fall inside the image and ``outside`` those that do not.
    """

    def __init__(self, image_grid: Grid, mask: NDArray[np.bool_], mask_grid: Grid) -> None:
        self.image_grid = image_grid
        total = int(np.count_nonzero(mask))
        # One of three ways, fastest first: the same grid; grids whose axes match up to order, direction
        # and whole-voxel shifts (a view of the image lines up with the ROI); grids at any angle.
        self._mask: NDArray[np.bool_] | None = None
        self._axis_map: AxisMap | None = None
        self._overlap: tuple[Slices, Slices] | None = None
        self._indices: tuple[NDArray[np.intp], ...] = ()
        if mask_grid.same_as(image_grid):
            self._mask, self.voxels = mask, total
        elif (axis_map := _axis_map(image_grid.index_map_from(mask_grid))) is not None:
            self._axis_map = axis_map
            self._overlap = _overlap(image_grid.shape, mask_grid.shape, axis_map)
            # The part of the ROI over the image, which a view of the image lines up with.
            self._mask = mask[self._overlap[1]] if self._overlap is not None else None
            self.voxels = 0 if self._mask is None else int(np.count_nonzero(self._mask))
        else:
            self._indices = _nearest_inside(image_grid, mask, mask_grid)
            self.voxels = self._indices[0].size
        self.outside = total - self.voxels

    def values(self, image: NDArray[Any]) -> NDArray[Any]:
        """The values of the 3D ``image`` (on the sampler's image grid) at the ROI voxels inside it.

        A new array, in the ROI's voxel order (C order), so that sums over it come out the same to the
        last bit whichever grid the image is on.
        """
        if image.shape != self.image_grid.shape:
            raise InvalidValue(f"the image has shape {tuple(image.shape)} but its grid has shape {self.image_grid.shape}")
        if self._axis_map is not None:
            if self._overlap is None or self._mask is None:
                return np.empty(0, dtype=image.dtype)
            return _moved(image, self._axis_map)[self._overlap[0]][self._mask]
        if self._mask is not None:
            return image[self._mask]
        return image[self._indices]


def bounding_box(mask: NDArray[np.bool_], margin: int = 0) -> Slices | None:
    """The smallest box holding the mask, grown by ``margin`` voxels per side (may reach past the volume); None if empty."""
    edges = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=others))
        if occupied.size == 0:
            return None
        edges.append(slice(int(occupied[0]) - margin, int(occupied[-1]) + 1 + margin))
    return (edges[0], edges[1], edges[2])


def _nearest_inside(image_grid: Grid, mask: NDArray[np.bool_], mask_grid: Grid) -> tuple[NDArray[np.intp], ...]:
    """For grids at any angle, the indices (one array per axis) of the image voxels nearest the ROI's voxels inside it."""
    roi_box = bounding_box(mask)
    image_box = None if roi_box is None else _landing_box(roi_box, mask_grid, image_grid)
    if roi_box is None or image_box is None:
        return (np.empty(0, dtype=np.intp),) * 3
    crop = _Crop(image_box)
    picked = np.concatenate([flat[mask[rows, roi_box[1], roi_box[2]]] for rows, flat in crop.nearest(image_grid, mask_grid, roi_box)])
    in_crop = np.unravel_index(picked, tuple(crop.padded_shape))
    inside = np.ones(picked.size, dtype=np.bool_)
    for index, length in zip(in_crop, crop.padded_shape, strict=True):
        inside &= (index >= 1) & (index <= length - 2)
    return tuple(index[inside] - 1 + start for index, start in zip(in_crop, crop.origin, strict=True))


class _Crop:
    """A box of a grid with one voxel of border around it, for lookups by nearest neighbour."""

    def __init__(self, box: Slices) -> None:
        self.origin = np.array([edge.start for edge in box])
        self.padded_shape = np.array([edge.stop - edge.start + 2 for edge in box])

    def nearest(self, source: Grid, target: Grid, box: Slices) -> Iterator[tuple[slice, NDArray[np.intp]]]:
        """For the voxels of ``box`` in ``target`` (slab by slab along its first axis), the nearest crop voxel.

        Yields the slab's rows in ``target`` and, for each voxel of the slab, the flat (C order) index of
        its nearest ``source`` voxel in the crop with its border; one outside the crop gets a border voxel.
        """
        mapping = source.index_map_from(target)
        i, j, k = (np.arange(edge.start, edge.stop, dtype=np.float64) for edge in box)
        rows_per_slab = max(1, _SLAB_VOXELS // (j.size * k.size))
        for start in range(0, i.size, rows_per_slab):
            rows = i[start : start + rows_per_slab]
            flat = np.zeros((rows.size, j.size, k.size), dtype=np.intp)
            for axis in range(3):
                step = mapping[axis]
                # Linear in i, j and k: summed from per-axis terms, it costs one addition per voxel. The
                # position is taken in the padded crop, where index 0 is the border before the crop.
                across_rows = rows[:, None, None] * step[0] + j[None, :, None] * step[1]
                along_k = k * step[2] + (step[3] + 0.5 + _HALF_VOXEL_NUDGE + 1 - self.origin[axis])
                position = across_rows + along_k[None, None, :]
                # Clipped to the border, truncation is rounding down (half up, with the 0.5 above).
                np.clip(position, 0, self.padded_shape[axis] - 1, out=position)
                flat *= self.padded_shape[axis]
                flat += position.astype(np.intp)
            first_row = box[0].start + start
            yield slice(first_row, first_row + rows.size), flat


def _landing_box(box: Slices, source: Grid, target: Grid) -> Slices | None:
    """The box of ``target`` voxels that can have their nearest ``source`` voxel in ``box``; None if it misses ``target``."""
    # The box grown by a voxel, its corners carried into target indices, bounds where it can land.
    grown = [(edge.start - 1, edge.stop) for edge in box]
    corners = np.array([[*corner, 1.0] for corner in itertools.product(*grown)])
    in_target = (target.index_map_from(source) @ corners.T)[:3]
    upper = np.array(target.shape)
    first = np.clip(np.floor(in_target.min(axis=1)).astype(np.intp), 0, upper)
    stop = np.clip(np.ceil(in_target.max(axis=1)).astype(np.intp) + 1, 0, upper)
    if np.any(stop <= first):
        return None
    return (slice(int(first[0]), int(stop[0])), slice(int(first[1]), int(stop[1])), slice(int(first[2]), int(stop[2])))


# (source axis, step +1 or -1, offset) for each target axis: source index = offset + step * target index.
AxisMap = tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


def _axis_map(source_from_target: NDArray[np.float64]) -> AxisMap | None:
    """The grids' axes as a permutation with flips and whole-voxel shifts, if that is what they are.

    Then moving between them is slicing, exact and fast; grids from one scanner session mostly are.
    """
    rotation, offsets = source_from_target[:3, :3], source_from_target[:3, 3]
    steps = np.rint(rotation)
    whole_offsets = np.rint(offsets)
    off_whole = max(float(np.max(np.abs(rotation - steps))), float(np.max(np.abs(offsets - whole_offsets))))
    if off_whole > _WHOLE_VOXEL_TOLERANCE:
        return None
    if not (np.array_equal(np.abs(steps).sum(axis=0), [1, 1, 1]) and np.array_equal(np.abs(steps).sum(axis=1), [1, 1, 1])):
        return None
    entries = []
    for target_axis in range(3):
        source_axis = int(np.flatnonzero(steps[:, target_axis])[0])
        entries.append((source_axis, int(steps[source_axis, target_axis]), int(whole_offsets[source_axis])))
    return (entries[0], entries[1], entries[2])


def _moved(values: NDArray[Any], axis_map: AxisMap) -> NDArray[Any]:
    """A view of ``values`` (on the source grid) with its axes in the target's order and direction."""
    moved = values.transpose([source_axis for source_axis, _, _ in axis_map])
    for target_axis, (_, step, _) in enumerate(axis_map):
        if step < 0:
            moved = np.flip(moved, axis=target_axis)
    return moved


def _overlap(source_shape: tuple[int, int, int], target_shape: tuple[int, int, int], axis_map: AxisMap) -> tuple[Slices, Slices] | None:
    """Where the grids overlap: as slices of the :func:`_moved` source, and of the target; None if they do not."""
    source_part, target_part = [], []
    for target_axis, (source_axis, step, offset) in enumerate(axis_map):
        source_length = source_shape[source_axis]
        # Flipped, source index offset - t is found at position t + (length - 1 - offset).
        shift = offset if step > 0 else source_length - 1 - offset
        first = max(0, -shift)
        stop = min(target_shape[target_axis], source_length - shift)
        if stop <= first:
            return None
        source_part.append(slice(first + shift, stop + shift))
        target_part.append(slice(first, stop))
    return (source_part[0], source_part[1], source_part[2]), (target_part[0], target_part[1], target_part[2])


def _resample_general(mask: NDArray[np.bool_], source: Grid, target: Grid) -> NDArray[np.bool_]:
    """Nearest-neighbour resampling for grids at any angle: only target voxels near the mask are looked up."""
    result = np.zeros(target.shape, dtype=np.bool_)
    mask_box = bounding_box(mask)
    target_box = None if mask_box is None else _landing_box(mask_box, source, target)
    if mask_box is None or target_box is None:
        return result
    crop = _Crop(mask_box)
    bordered = np.pad(mask[mask_box], 1).ravel()
    for rows, flat in crop.nearest(source, target, target_box):
        result[rows, target_box[1], target_box[2]] = bordered[flat]
    return result


def _format_numbers(values: NDArray[np.float64]) -> str:
    return " ".join(f"{value:g}" for value in values)
