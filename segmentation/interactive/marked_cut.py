"""The graph cut the scribbles and box tools end in, once they know which voxels are marked.

Intensity likelihoods learnt from the marked voxels' values, a weak pull towards the label of the
nearest mark (nearest_mark), the cut (coarse_to_fine), the foreground connected to a foreground
seed, and a split wherever a background mark lies inside it (split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive import coarse_to_fine
from segmentation.interactive.components import connected_to
from segmentation.interactive.intensity_model import IntensityModel, IntensityRange, Samples
from segmentation.interactive.nearest_mark import nearest_mark_costs
from segmentation.interactive.split import split

# Weight of a smooth boundary against the likelihoods, in nats per voxel face of an unbroken region.
SMOOTHNESS = 2.0
# Nats that the pull towards the label of the nearest mark adds, beside a mark (see nearest_mark).
NEAREST_MARK = 1.0


def cut_marked(
    image: NDArray[Any], fixed: NDArray[np.int8], seeds: NDArray[np.bool_], stops: NDArray[np.bool_],
    foreground_values: Samples, background_values: Samples, noise: float,
) -> NDArray[np.bool_]:
    """The foreground of ``image`` (a window): ``fixed`` labels the marked voxels, ``seeds`` are the
    foreground marks the result must hold, ``stops`` the background marks it must not."""
    intensities = IntensityRange.of(image, foreground_values, background_values)
    nearness_foreground, nearness_background = nearest_mark_costs(seeds, stops, NEAREST_MARK)
    labels = coarse_to_fine.cut(
        image,
        IntensityModel.foreground(foreground_values, intensities, noise).costs(image) + nearness_foreground,
        IntensityModel.background(background_values, image, intensities, noise).costs(image) + nearness_background,
        fixed,
        SMOOTHNESS,
    )
    return split(image, connected_to(labels, seeds), seeds, stops, SMOOTHNESS)
