"""Splitting a region the user marked background inside: along its cheapest section between the marks.

A background mark that the region surrounds says the region holds something that is not the
structure, something the intensities could not tell apart from it (a neighbour of the same intensity
touching it, a leak through a bridge). The region is then cut in two by a graph cut on the region
alone: each voxel leans to the label of the mark nearest to it (nearest_mark), and the boundary
between the parts costs where the image is uniform and little along its edges, so that the cut runs
through the narrowest, most edge-like section between the marks rather than halfway between them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive import coarse_to_fine
from segmentation.interactive.components import connected_to, extent
from segmentation.interactive.graph_cut import BACKGROUND, FOREGROUND, FREE
from segmentation.interactive.nearest_mark import nearest_mark_costs

# A background mark lies inside the region when at least this many of its 6 face neighbours are in it.
_ENCLOSED = 4
# Nats, right beside a mark, that the other label costs.
_LEAN = 3.0


def split(
    image: NDArray[np.float32], region: NDArray[np.bool_], seeds: NDArray[np.bool_], stops: NDArray[np.bool_], smoothness: float
) -> NDArray[np.bool_]:
    """``region`` without what lies on the far side of a cut between its ``seeds`` and the ``stops`` inside it."""
    if not stops.any():
        return region
    inside = stops & (region | (_neighbours_in(region) >= _ENCLOSED))
    if not inside.any():
        return region
    low, high = extent(region | inside)
    box = tuple(slice(int(start), int(end) + 1) for start, end in zip(low, high, strict=True))
    within = region[box] | inside[box]
    fixed = np.where(within, FREE, BACKGROUND).astype(np.int8)
    fixed[seeds[box] & within] = FOREGROUND
    fixed[inside[box]] = BACKGROUND
    cost_foreground, cost_background = nearest_mark_costs(seeds[box] & within, inside[box], _LEAN)
    labels = coarse_to_fine.cut(image[box], cost_foreground, cost_background, fixed, smoothness, within)
    kept = np.zeros(region.shape, dtype=bool)
    kept[box] = connected_to(labels & region[box], seeds[box])
    return kept


def _neighbours_in(mask: NDArray[np.bool_]) -> NDArray[np.int8]:
    """How many of each voxel's 6 face neighbours are in ``mask``."""
    padded = np.pad(mask, 1).astype(np.int8)
    core = (slice(1, -1),) * 3
    count = np.zeros(mask.shape, dtype=np.int8)
    for axis in range(3):
        for step in (-1, 1):
            shifted = list(core)
            shifted[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            count += padded[tuple(shifted)]
    return count
