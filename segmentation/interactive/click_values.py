"""What a click says about intensities: the voxels around it, on the clicked side of any edge through it.

A single voxel is too little to learn from, so a click stands for its 3×3×3 neighbourhood. Clicks land
on edges, corrective ones most of all (the error left is at the boundary), and there the neighbourhood
holds both the structure and its surroundings: a click at a corner of the structure means the few
voxels of the structure, not the surroundings that fill most of the cube.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# A neighbourhood straddles an edge when its two halves (split where the split explains most of the
# variance, Otsu's rule) lie this many noise standard deviations apart. 27 values of pure noise split
# that far apart about once in a hundred; a corner of a structure 4 noise widths brighter, about every other time.
EDGE_CONTRAST = 2.5


def click_values(image: NDArray[Any], click: tuple[int, int, int], noise: float) -> NDArray[np.float32]:
    """The finite intensities of the click's neighbourhood on the click's side of an edge, sorted."""
    i, j, k = click
    cube = np.asarray(image[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2, max(k - 1, 0) : k + 2], dtype=np.float32).ravel()
    values = np.sort(cube[np.isfinite(cube)])
    own = float(image[i, j, k])
    if len(values) < 2 or not np.isfinite(own):
        return values
    counts = np.arange(1, len(values))
    lower_means = np.cumsum(values)[:-1] / counts
    upper_means = (values.sum() - np.cumsum(values)[:-1]) / counts[::-1]
    split = int(np.argmax(counts * counts[::-1] * (upper_means - lower_means) ** 2))
    if upper_means[split] - lower_means[split] <= EDGE_CONTRAST * noise:
        return values
    return values[: split + 1] if own <= values[split] else values[split + 1 :]
