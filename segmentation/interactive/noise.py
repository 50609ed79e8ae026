"""How much an image's intensities vary from voxel to voxel where nothing but noise changes them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# The standard deviation of a normal variable over its median absolute deviation.
MAD_TO_SD = 1.4826
# About how many differences of neighbours to take: enough to estimate the noise well, more only cost time.
_SAMPLE = 100_000


def noise_level(image: NDArray[np.float32]) -> float:
    """The standard deviation of the noise, from differences of neighbours: their median, so that edges do not count.

    A large image is sampled by whole slices (every n-th along the first axis, with the slice after it
    for differences along that axis), so that every difference is still one between true neighbours.
    """
    step = max(1, image.size // _SAMPLE)
    first = np.arange(0, image.shape[0], min(step, max(image.shape[0] - 1, 1)))
    slices = image[first]
    differences = [np.abs(np.diff(slices, axis=axis)).ravel() for axis in (1, 2) if image.shape[axis] > 1]
    if image.shape[0] > 1:
        paired = first[first + 1 < image.shape[0]]
        differences.append(np.abs(image[paired + 1] - image[paired]).ravel())
    if not differences:
        return 0.0
    # A difference of two voxels has twice the variance of one.
    return MAD_TO_SD * float(np.median(np.concatenate(differences))) / 2**0.5
