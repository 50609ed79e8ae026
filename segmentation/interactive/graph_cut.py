"""Foreground/background labelling of a voxel grid by a minimum graph cut (Boykov–Jolly), on scipy's maximum flow.

The energy is the cost of each voxel's label (from intensity likelihoods) plus, for every pair of voxels
sharing a face and labelled differently, a weight that is high where the two intensities are alike, so
that the boundary runs along edges of the image. Voxels given a fixed label are not nodes of the graph:
their pull on free neighbours goes into the neighbours' own terminal capacities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse import csgraph

from segmentation.interactive.noise import noise_level

FOREGROUND = 1
BACKGROUND = -1
FREE = 0

# Maximum flow wants integer capacities: costs are in nats, and a 64th of a nat is finer than any
# difference the likelihoods can tell.
_SCALE = 64
# Capacities leaving the source add up to at most this, within the int32 that maximum flow counts in.
_MOST_FLOW = 2**30


def boundary_weights(image: NDArray[np.float32], strength: float) -> tuple[NDArray[np.float32], ...]:
    """The weight of cutting between each voxel and its next neighbour along each axis.

    ``strength * exp(-d² / 2s²)`` for an intensity difference ``d``, with ``s²`` the variance of the
    difference of two neighbours where the image holds only noise (twice the noise's).
    """
    differences = [np.diff(image, axis=axis) for axis in range(3)]
    spread = float(image.max() - image.min()) if image.size else 0.0
    # A noise-free image has no noise to measure; any step in it is then an edge.
    variance = max(2 * noise_level(image) ** 2, 1e-12 * spread**2, 1e-30)
    return tuple((strength * np.exp(-(difference**2) / (2 * variance))).astype(np.float32) for difference in differences)


def min_cut(
    cost_foreground: NDArray[np.float32],
    cost_background: NDArray[np.float32],
    weights: Sequence[NDArray[np.float32]],
    fixed: NDArray[np.int8],
) -> NDArray[np.bool_]:
    """The foreground of the labelling of least energy that keeps the labels ``fixed`` gives (FOREGROUND, BACKGROUND; FREE elsewhere)."""
    free = fixed == FREE
    labels: NDArray[np.bool_] = fixed == FOREGROUND
    count = int(free.sum())
    if count == 0:
        return labels
    node = np.full(fixed.shape, -1, dtype=np.int64)
    node[free] = np.arange(count)
    # What each free voxel pays if it ends up background (source side) or foreground (sink side).
    pays_as_background = cost_background[free].astype(np.float64)
    pays_as_foreground = cost_foreground[free].astype(np.float64)
    tails: list[NDArray[np.int64]] = []
    heads: list[NDArray[np.int64]] = []
    pair_weights: list[NDArray[np.float32]] = []
    for axis, weight in enumerate(weights):
        lower = tuple(slice(0, -1) if index == axis else slice(None) for index in range(3))
        upper = tuple(slice(1, None) if index == axis else slice(None) for index in range(3))
        for this, other in ((lower, upper), (upper, lower)):
            # A free voxel next to a fixed one pays the pair's weight when it takes the other label.
            beside_fixed = free[this] & ~free[other]
            towards = node[this][beside_fixed]
            pull = weight[beside_fixed].astype(np.float64)
            other_foreground = labels[other][beside_fixed]
            pays_as_background += np.bincount(towards[other_foreground], pull[other_foreground], minlength=count)
            pays_as_foreground += np.bincount(towards[~other_foreground], pull[~other_foreground], minlength=count)
        both = free[lower] & free[upper]
        tails.append(node[lower][both])
        heads.append(node[upper][both])
        pair_weights.append(weight[both])
    # Only the difference of a voxel's two terminal capacities changes which cut is least.
    net = pays_as_background - pays_as_foreground
    # The flow cannot exceed what leaves the source; keeping that within int32 keeps every sum within it.
    scale = min(_SCALE, _MOST_FLOW / max(float(np.abs(net).sum()), 1e-9))
    pair_capacity = np.rint(np.concatenate(pair_weights) * scale).astype(np.int64)
    kept = pair_capacity > 0
    first, second, pair_capacity = np.concatenate(tails)[kept], np.concatenate(heads)[kept], pair_capacity[kept]
    terminal_capacity = np.rint(net * scale).astype(np.int64)
    to_source, to_sink = np.flatnonzero(terminal_capacity > 0), np.flatnonzero(terminal_capacity < 0)
    source, sink = count, count + 1
    graph = sparse.csr_array(
        (
            np.concatenate([pair_capacity, pair_capacity, terminal_capacity[to_source], -terminal_capacity[to_sink]]).astype(np.int32),
            (
                np.concatenate([first, second, np.full(len(to_source), source), to_sink]),
                np.concatenate([second, first, to_source, np.full(len(to_sink), sink)]),
            ),
        ),
        shape=(count + 2, count + 2),
    )
    flow = csgraph.maximum_flow(graph, source, sink, method="dinic").flow
    # The foreground is what the source still reaches through edges the flow has not saturated.
    residual = sparse.csr_array(graph - flow)
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = csgraph.breadth_first_order(residual, source, directed=True, return_predecessors=False)
    on_source_side = np.zeros(count + 2, dtype=bool)
    on_source_side[reached] = True
    labels[free] = on_source_side[:count]
    return labels
