"""The box tool: a graph cut inside a box the user drew around the structure.

The box's border is background (except the faces lying on the image's edge: a structure may run out of
the image); a core around the box's centre is foreground. The two teach the intensity likelihoods,
with the marks the user added. A background click inside the core says the centre is not the
structure (a ring, a bent vessel): the core then neither fixes labels nor teaches, and the foreground
comes from the foreground marks alone. As in the scribbles tool, the user's marks pull their
neighbourhood (nearest_mark), the foreground kept is what is connected to the core or to a foreground
mark, and a background mark it surrounds splits it (split). The work is all inside the box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive.graph_cut import BACKGROUND, FOREGROUND, FREE
from segmentation.interactive.intensity_model import Samples
from segmentation.interactive.interactions import Interaction, InteractionError, show_shape
from segmentation.interactive.marked_cut import cut_marked
from segmentation.interactive.marks import Marks, mask_of, require_in_box, samples
from segmentation.interactive.noise import noise_level
from segmentation.interactive.windows import Window

# The core's semi-axes, as a share of the box's half-widths.
_CORE = 0.25


def cut_box(volume: NDArray[Any], interaction: Interaction) -> NDArray[np.bool_]:
    """The structure inside the interaction's box."""
    if interaction.box is None:
        raise InteractionError("the box tool needs a box around the structure: two opposite corners [[i, j, k], [i, j, k]]")
    window = Window.of_box(interaction.box)
    marks = Marks.of(interaction)
    require_in_box(marks.foreground, window, "box")
    border = _border(window, volume.shape)
    if border.all():
        raise InteractionError(
            f"the box {interaction.box[0]}–{interaction.box[1]} ({show_shape(window.shape)} voxels) has no voxels inside its "
            "border: make it at least 3 voxels wide along each axis that does not reach the edge of the image"
        )
    image = window.crop(volume)
    noise = noise_level(image)
    fixed = np.where(border, BACKGROUND, FREE).astype(np.int8)
    background_marks = mask_of(marks.background, window)
    fixed[background_marks] = BACKGROUND
    # A foreground click on the border is more specific than the box drawn around it.
    fixed[mask_of(marks.foreground, window)] = FOREGROUND
    core = _core(window.shape)
    trust_core = not (core & background_marks).any()
    if trust_core:
        fixed[core & (fixed == FREE)] = FOREGROUND
    foreground_values = samples(volume, marks.foreground_points, marks.foreground_scribbles, noise)
    if trust_core:
        foreground_values = Samples.painted(image[core]) + foreground_values
    background_values = Samples.painted(image[border]) + samples(volume, marks.background_points, marks.background_scribbles, noise)
    if not len(foreground_values):
        raise InteractionError(
            "a background click lies at the centre of the box, where the box tool otherwise finds the structure: "
            "add a foreground click on the structure"
        )
    if not len(background_values):
        raise InteractionError(
            "the box covers the whole image, so nothing in it is known to be background: draw a smaller box or add background clicks"
        )
    # The border is no mark of the user's (near it is where a structure filling the box ends, not
    # background): only the background marks stop the foreground.
    seeds = fixed == FOREGROUND
    found = cut_marked(image, fixed, seeds, background_marks, foreground_values, background_values, noise)
    return window.paste(found, volume.shape)


def _border(window: Window, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """The box's faces that lie inside the image, as a mask of the box."""
    border = np.zeros(window.shape, dtype=bool)
    for axis in range(3):
        index: list[slice | int] = [slice(None)] * 3
        if window.low[axis] > 0:
            index[axis] = 0
            border[tuple(index)] = True
        if window.high[axis] < shape[axis]:
            index[axis] = -1
            border[tuple(index)] = True
    return border


def _core(shape: tuple[int, int, int]) -> NDArray[np.bool_]:
    """An ellipsoid around the box's centre, at least the voxel nearest it."""
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    distance = sum(((axis - (size - 1) / 2) / max(size / 2, 0.5)) ** 2 for axis, size in zip(grid, shape, strict=True))
    core = np.asarray(distance <= _CORE**2)
    core[shape[0] // 2, shape[1] // 2, shape[2] // 2] = True
    return core
