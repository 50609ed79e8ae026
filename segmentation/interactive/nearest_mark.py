"""A pull of each voxel towards the label of the mark nearest to it, as label costs for the graph cuts.

Where the intensities cannot tell the labels apart (a background click on tissue that looks like the
structure, a neighbour of the same intensity touching it), the likelihoods alone leave the cut free to
shrink the foreground to the marks themselves, the least boundary there is. Nearness to the marks
settles such ties the way the user placed them. The tools' cuts pull weakly, so that elsewhere the
likelihoods, several nats apart, outweigh it; a split (split.py), where intensities say nothing, pulls harder.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

# Distances are computed on a grid coarsened by powers of 2 until it has at most this many voxels: the
# pull is a tie-breaker, and its border need not be sharper than the coarse grid.
_MOST_VOXELS = 200_000


def nearest_mark_costs(
    foreground: NDArray[np.bool_], background: NDArray[np.bool_], strength: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """What each voxel pays, in nats, for the foreground and for the background label.

    A voxel nearer a background mark pays for the foreground ``strength`` × (d_f - d_b) / (d_f + d_b),
    from its distances to the nearest mark of each label, and the other way round: full strength beside
    a mark, fading where both kinds of marks are far, so that the pull stays local to where the user marked.
    """
    shape = foreground.shape
    if not foreground.any() or not background.any():
        return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
    factor = 1
    while int(np.prod([-(-size // factor) for size in shape])) > _MOST_VOXELS:
        factor *= 2
    to_foreground = ndimage.distance_transform_edt(~_coarsened(foreground, factor))
    to_background = ndimage.distance_transform_edt(~_coarsened(background, factor))
    # Two marks in one coarse block are at distance 0 from it both: no pull there.
    lean = (to_foreground - to_background) / np.maximum(to_foreground + to_background, 1e-9)
    foreground_cost = _refined(np.clip(strength * lean, 0, None).astype(np.float32), factor, shape)
    background_cost = _refined(np.clip(-strength * lean, 0, None).astype(np.float32), factor, shape)
    return foreground_cost, background_cost


def _coarsened(mask: NDArray[np.bool_], factor: int) -> NDArray[np.bool_]:
    """Blocks of ``factor`` voxels along each axis that hold a voxel of ``mask``."""
    padded = np.pad(mask, [(0, -size % factor) for size in mask.shape])
    first, second, third = (size // factor for size in padded.shape)
    return np.asarray(padded.reshape(first, factor, second, factor, third, factor).any(axis=(1, 3, 5)), dtype=bool)


def _refined(costs: NDArray[np.float32], factor: int, shape: tuple[int, ...]) -> NDArray[np.float32]:
    fine = costs.repeat(factor, axis=0).repeat(factor, axis=1).repeat(factor, axis=2)
    return fine[: shape[0], : shape[1], : shape[2]]
