"""Graph cuts on windows too large to cut at once: cut a coarser copy, then recut only near its boundary at each finer level.

Each level halves the grid along every axis: a coarse voxel's intensity is the mean of its 2×2×2 block
and its label costs are the sums of the block's, so a coarse labelling is priced as its fine one would
be; the weight between two coarse voxels stands for the 4 faces of fine voxels between them. A block
holding fixed voxels of one label only is fixed to it. Going down a level, voxels within ``_BAND`` of
the coarse boundary, and around fixed voxels the coarse labels disagree with, are cut again; the rest
keep the coarse labels. A band too large for the budget ends the refinement there, and the finer
levels take the labels of that level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive.components import dilate
from segmentation.interactive.graph_cut import BACKGROUND, FOREGROUND, FREE, boundary_weights, min_cut

# Free voxels one cut may have: the maximum flow on a 6-connected grid of this size takes about 0.1 s.
NODE_BUDGET = 40_000
# How far from the coarse boundary, in voxels of the finer level, the labels may still change.
_BAND = 2
# The eight voxels of each 2×2×2 block, as strided views.
_CORNERS = [(slice(i, None, 2), slice(j, None, 2), slice(k, None, 2)) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


@dataclass(frozen=True)
class _Level:
    image: NDArray[np.float32]
    cost_foreground: NDArray[np.float32]
    cost_background: NDArray[np.float32]
    fixed: NDArray[np.int8]
    # Where pairs of neighbours are tied by a boundary weight; None: everywhere.
    within: NDArray[np.bool_] | None

    def weights(self, strength: float) -> tuple[NDArray[np.float32], ...]:
        weights = boundary_weights(self.image, strength)
        if self.within is None:
            return weights
        within = self.within
        return tuple(weight * (within[_lower(axis)] & within[_upper(axis)]).astype(np.float32) for axis, weight in enumerate(weights))

    def halved(self) -> _Level:
        """The next coarser level."""
        has_foreground = _any_in_block(self.fixed == FOREGROUND)
        has_background = _any_in_block(self.fixed == BACKGROUND)
        fixed = np.where(has_foreground & ~has_background, FOREGROUND, np.where(has_background & ~has_foreground, BACKGROUND, FREE))
        return _Level(
            _sum_of_block(np.pad(self.image, _padding(self.image.shape), mode="edge")) / np.float32(8),
            # Padding voxels do not exist: they cost nothing either way.
            _sum_of_block(np.pad(self.cost_foreground, _padding(self.image.shape))),
            _sum_of_block(np.pad(self.cost_background, _padding(self.image.shape))),
            fixed.astype(np.int8),
            None if self.within is None else _any_in_block(self.within),
        )


def cut(
    image: NDArray[np.float32],
    cost_foreground: NDArray[np.float32],
    cost_background: NDArray[np.float32],
    fixed: NDArray[np.int8],
    smoothness: float,
    within: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """The foreground of the graph cut of ``image`` (see graph_cut.min_cut), coarse to fine when the window is large.

    ``within``, if given, is where neighbours are tied: the boundary weight between a voxel inside and
    one outside is zero, so that voxels outside, fixed, do not pull on those inside.
    """
    levels = [_Level(image, cost_foreground, cost_background, fixed, within)]
    while int((levels[-1].fixed == FREE).sum()) > NODE_BUDGET:
        levels.append(levels[-1].halved())
    depth = len(levels) - 1
    coarsest = levels[depth]
    labels = min_cut(coarsest.cost_foreground, coarsest.cost_background, coarsest.weights(smoothness * 4**depth), coarsest.fixed)
    for number in range(depth - 1, -1, -1):
        level = levels[number]
        labels = _doubled(labels, 2, level.image.shape)
        band = _band(labels, level.fixed)
        if int(band.sum()) > NODE_BUDGET:
            return _doubled(labels, 2**number, image.shape)
        kept = np.where(labels, FOREGROUND, BACKGROUND).astype(np.int8)
        band_fixed = np.where(level.fixed != FREE, level.fixed, np.where(band, FREE, kept)).astype(np.int8)
        labels = min_cut(level.cost_foreground, level.cost_background, level.weights(smoothness * 4**number), band_fixed)
    return labels


def _band(labels: NDArray[np.bool_], fixed: NDArray[np.int8]) -> NDArray[np.bool_]:
    """The free voxels whose label the finer cut may change."""
    # Voxels within _BAND of both labels; beyond the window's faces there is nothing to be near.
    band = dilate(labels, _BAND) & dilate(~labels, _BAND)
    overruled = (fixed != FREE) & ((fixed == FOREGROUND) != labels)
    if overruled.any():
        band |= dilate(overruled, _BAND)
    band &= fixed == FREE
    return band


def _padding(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(0, size % 2) for size in shape]


def _sum_of_block(array: NDArray[np.float32]) -> NDArray[np.float32]:
    """The sum of each 2×2×2 block of ``array`` (even along every axis)."""
    # Eight strided views added up: far faster than reducing a 6-axis reshape over its odd axes.
    total = np.zeros(tuple(size // 2 for size in array.shape), dtype=np.float32)
    for corner in _CORNERS:
        total += array[corner]
    return total


def _any_in_block(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Whether each 2×2×2 block of ``mask``, padded with False to even lengths, holds a True."""
    padded = np.pad(mask, _padding(mask.shape))
    found = np.zeros(tuple(size // 2 for size in padded.shape), dtype=bool)
    for corner in _CORNERS:
        found |= padded[corner]
    return found


def _doubled(labels: NDArray[np.bool_], factor: int, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """Labels of a grid ``factor`` times coarser, on the grid of ``shape``."""
    fine = labels.repeat(factor, axis=0).repeat(factor, axis=1).repeat(factor, axis=2)
    return fine[: shape[0], : shape[1], : shape[2]]


def _lower(axis: int) -> tuple[slice, ...]:
    return tuple(slice(0, -1) if index == axis else slice(None) for index in range(3))


def _upper(axis: int) -> tuple[slice, ...]:
    return tuple(slice(1, None) if index == axis else slice(None) for index in range(3))
