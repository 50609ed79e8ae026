"""The scribbles tool: a graph cut whose intensity likelihoods are learned from the user's foreground and background marks.

Painted voxels teach the likelihoods, clicks a little (marks.samples); every marked voxel keeps its
label, and a weak pull towards the label of the nearest mark settles what the intensities leave open
(nearest_mark). The rest of a window around the marks is labelled by the cut (coarse_to_fine), and
the foreground kept is what is connected to a foreground mark: a look-alike elsewhere in the window is
not what the user painted. A background mark the foreground surrounds splits it (split). The window
is enlarged while the foreground reaches its faces, twice at most.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive.components import extent
from segmentation.interactive.graph_cut import BACKGROUND, FOREGROUND, FREE
from segmentation.interactive.interactions import Interaction, InteractionError
from segmentation.interactive.marked_cut import cut_marked
from segmentation.interactive.marks import Marks, mask_of, require_in_box, samples
from segmentation.interactive.noise import noise_level
from segmentation.interactive.windows import Window

# The window reaches at least this far beyond the marks, and a quarter of their extent.
_FIRST_MARGIN = 8
_ENLARGEMENTS = 2


def cut_scribbles(volume: NDArray[Any], interaction: Interaction) -> NDArray[np.bool_]:
    """The structure the interaction's marks separate from its surroundings; a box, if drawn, confines it."""
    marks = Marks.of(interaction)
    foreground, background = marks.foreground, marks.background
    if not len(foreground) or not len(background):
        raise InteractionError(
            "the scribbles tool learns the intensities of the structure and of its surroundings from the marks, so it needs "
            f"foreground and background scribbles (or clicks); got {_count(foreground)} foreground and "
            f"{_count(background)} background voxels"
        )
    limit = Window.whole(volume.shape)
    if interaction.box is not None:
        limit = Window.of_box(interaction.box)
        require_in_box(foreground, limit, "scribbles")
    anchors = np.concatenate([foreground, background[limit.holds(background)]])
    margin = max(_FIRST_MARGIN, int(np.ptp(anchors, axis=0).max()) // 4)
    window = limit.around(anchors, margin)
    for enlargement in range(_ENLARGEMENTS + 1):
        image = window.crop(volume)
        noise = noise_level(image)
        foreground_values = samples(volume, marks.foreground_points, marks.foreground_scribbles, noise)
        background_values = samples(volume, marks.background_points, marks.background_scribbles, noise)
        fixed = np.full(window.shape, FREE, dtype=np.int8)
        stops = mask_of(background, window)
        fixed[stops] = BACKGROUND
        seeds = mask_of(foreground, window)
        fixed[seeds] = FOREGROUND
        region = cut_marked(image, fixed, seeds, stops, foreground_values, background_values, noise)
        if enlargement == _ENLARGEMENTS or window == limit or not window.spills(region, limit):
            break
        reach = window.low + extent(region)
        # Half the region's size again on every side: the region seen so far is cut by the window.
        window = limit.around(np.concatenate([anchors, reach]), max(margin, int(np.ptp(reach, axis=0).max()) // 2))
    return window.paste(region, volume.shape)


def _count(voxels: NDArray[np.intp]) -> str:
    return str(len(voxels)) if len(voxels) else "no"
