"""Connected parts of masks: what is attached to the user's marks, and where a mask ends."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

# Voxels are connected when they share a face: touching at an edge or a corner is how a region leaks.
FACES = ndimage.generate_binary_structure(3, 1)


def connected_to(mask: NDArray[np.bool_], seeds: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The parts of ``mask`` that hold a seed voxel."""
    labels, count = ndimage.label(mask, FACES)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[seeds]] = True
    keep[0] = False
    connected: NDArray[np.bool_] = keep[labels]
    return connected


def extent(mask: NDArray[np.bool_]) -> NDArray[np.intp]:
    """The lowest and highest index of ``mask``'s voxels (at least one) along each axis, as two rows."""
    low, high = [], []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(other for other in range(3) if other != axis)))
        low.append(present[0])
        high.append(present[-1])
    return np.asarray([low, high], dtype=np.intp)


def dilate(mask: NDArray[np.bool_], steps: int = 1) -> NDArray[np.bool_]:
    """``mask`` grown by ``steps`` voxels through faces (what ndimage.binary_dilation does, several times faster)."""
    grown = mask.copy()
    for _ in range(steps):
        previous = grown.copy()
        for axis in range(3):
            lower = tuple(slice(0, -1) if index == axis else slice(None) for index in range(3))
            upper = tuple(slice(1, None) if index == axis else slice(None) for index in range(3))
            grown[lower] |= previous[upper]
            grown[upper] |= previous[lower]
    return grown
