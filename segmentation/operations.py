"""Operations on ROI masks: morphology, set algebra of two ROIs, and removal of small specks.

Morphology uses the 6-neighbourhood of the ROI's own grid (voxels sharing a face), one step per
iteration, whatever the voxel spacing. Everything beyond the volume's edge counts as background, as if
the volume went on empty: erosion peels voxels off the edge, and closing (dilation then erosion) keeps
what touches the edge instead of eating it as a plain erosion inside the volume would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from nifti_archive.errors import InvalidValue
from segmentation.grid import Grid, bounding_box, check_mask, resample_mask
from segmentation.vocabulary import Operation

FACE_NEIGHBOURS = 6
ALL_NEIGHBOURS = 26
_STRUCTURES = {
    FACE_NEIGHBOURS: ndimage.generate_binary_structure(3, 1),
    ALL_NEIGHBOURS: ndimage.generate_binary_structure(3, 3),
}


def erode(mask: NDArray[np.bool_], iterations: int = 1) -> NDArray[np.bool_]:
    """Voxels whose whole 6-neighbourhood, ``iterations`` steps deep, is in the ROI (the volume's edge erodes)."""
    return _morphology(mask, iterations, (_shrink,))


def dilate(mask: NDArray[np.bool_], iterations: int = 1) -> NDArray[np.bool_]:
    """The ROI grown by ``iterations`` steps of its 6-neighbourhood (cut at the volume's edge)."""
    return _morphology(mask, iterations, (_grow,))


def open_(mask: NDArray[np.bool_], iterations: int = 1) -> NDArray[np.bool_]:
    """Erosion then dilation, ``iterations`` steps each: removes protrusions and bridges thinner than that."""
    return _morphology(mask, iterations, (_shrink, _grow))


def close(mask: NDArray[np.bool_], iterations: int = 1) -> NDArray[np.bool_]:
    """Dilation then erosion, ``iterations`` steps each: fills holes and gaps; never removes a voxel."""
    return _morphology(mask, iterations, (_grow, _shrink))


def union(mask: NDArray[np.bool_], other: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Voxels in either ROI (both on one grid)."""
    return np.logical_or(mask, other)


def intersection(mask: NDArray[np.bool_], other: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Voxels in both ROIs (both on one grid)."""
    return np.logical_and(mask, other)


def difference(mask: NDArray[np.bool_], other: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Voxels of the first ROI that are not in the second (both on one grid)."""
    return np.logical_and(mask, np.logical_not(other))


def remove_salt(mask: NDArray[np.bool_], min_voxels: int, connectivity: int = FACE_NEIGHBOURS) -> NDArray[np.bool_]:
    """The ROI without its connected components of fewer than ``min_voxels`` voxels.

    Voxels are connected through shared faces (``connectivity`` 6) or also through shared edges and
    corners (26); with 26, diagonal chains of voxels hold together and fewer components count as specks.
    """
    if min_voxels < 0:
        raise InvalidValue(f"the smallest component to keep must be 0 voxels or more, not {min_voxels}")
    if connectivity not in _STRUCTURES:
        raise InvalidValue(f"connectivity must be {FACE_NEIGHBOURS} (faces) or {ALL_NEIGHBOURS} (edges, corners too), not {connectivity}")
    result = np.zeros_like(mask)
    box = bounding_box(mask)
    if box is None:
        return result
    labels, _ = ndimage.label(mask[box], structure=_STRUCTURES[connectivity])
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    result[box] = keep[labels]
    return result


def apply(
    operation: Operation | str,
    mask: NDArray[Any],
    grid: Grid,
    *,
    other: NDArray[Any] | None = None,
    other_grid: Grid | None = None,
    iterations: int = 1,
    min_voxels: int | None = None,
    connectivity: int = FACE_NEIGHBOURS,
) -> NDArray[np.bool_]:
    """``operation`` on the ROI ``mask`` (on ``grid``); the result is on ``grid``.

    Union, intersection and difference need the second ROI ``other`` and its grid ``other_grid``; on
    another grid it is first resampled onto ``grid`` (nearest neighbour in world space). Morphology uses
    ``iterations``; remove_salt needs ``min_voxels`` and uses ``connectivity``. Masks must hold 0 and 1 only.
    """
    if isinstance(operation, str):
        operation = Operation.named(operation)
    roi = check_mask(mask, grid)
    if not operation.takes_two and (other is not None or other_grid is not None):
        raise InvalidValue(f"{operation.value} works on one ROI, but a second one was given")
    if operation.takes_two:
        if other is None or other_grid is None:
            raise InvalidValue(f"{operation.value} needs a second ROI and its grid")
        second = check_mask(other, other_grid, what="the second ROI")
        if not other_grid.same_as(grid):
            second = resample_mask(second, other_grid, grid)
        combine = {Operation.UNION: union, Operation.INTERSECTION: intersection, Operation.DIFFERENCE: difference}[operation]
        return combine(roi, second)
    if operation is Operation.REMOVE_SALT:
        if min_voxels is None:
            raise InvalidValue("remove_salt needs the smallest component to keep, in voxels (min_voxels)")
        return remove_salt(roi, min_voxels, connectivity)
    morphology = {Operation.ERODE: erode, Operation.DILATE: dilate, Operation.OPEN: open_, Operation.CLOSE: close}[operation]
    return morphology(roi, iterations)


def _morphology(mask: NDArray[np.bool_], iterations: int, stages: Sequence[Callable[[NDArray[np.bool_]], None]]) -> NDArray[np.bool_]:
    """``iterations`` steps of each stage in turn, as if the volume went on empty beyond its edge.

    The work array is the ROI's bounding box grown by ``iterations`` voxels on every side, zero where it
    reaches past the volume: nothing the stages do can reach further, so their result there is the whole
    answer, and closing's erosion sees the dilated ROI beyond the edge rather than a wall of background.
    """
    if iterations < 0:
        raise InvalidValue(f"iterations must be 0 or more, not {iterations}")
    result = np.zeros_like(mask)
    box = bounding_box(mask, margin=iterations)
    if box is None:
        return result
    padding = [(max(0, -edge.start), max(0, edge.stop - length)) for edge, length in zip(box, mask.shape, strict=True)]
    inside = tuple(slice(max(0, edge.start), min(edge.stop, length)) for edge, length in zip(box, mask.shape, strict=True))
    work = np.pad(mask[inside], padding)
    for stage in stages:
        for _ in range(iterations):
            stage(work)
    unpadded = tuple(slice(before, size - after) for (before, after), size in zip(padding, work.shape, strict=True))
    result[inside] = work[unpadded]
    return result


def _grow(mask: NDArray[np.bool_]) -> None:
    """One step of dilation in place: every voxel of the mask adds its face neighbours."""
    before = mask.copy()
    for lower, upper in _NEIGHBOUR_PAIRS:
        mask[upper] |= before[lower]
        mask[lower] |= before[upper]


def _shrink(mask: NDArray[np.bool_]) -> None:
    """One step of erosion in place: a voxel stays if its face neighbours are all in the mask, beyond the edge being background."""
    before = mask.copy()
    for (lower, upper), edges in zip(_NEIGHBOUR_PAIRS, _EDGES, strict=True):
        mask[upper] &= before[lower]
        mask[lower] &= before[upper]
        mask[edges] = False


_ALL = slice(None)
# Per axis, the array without its last and without its first layer: voxels and their neighbours one step up.
_NEIGHBOUR_PAIRS = [((_ALL,) * axis + (slice(None, -1),), (_ALL,) * axis + (slice(1, None),)) for axis in range(3)]
# Per axis, the first and last layers.
_EDGES = [(_ALL,) * axis + ([0, -1],) for axis in range(3)]
