"""The interactive tools by name, what each does, and one entry point that runs any of them on a volume."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive.box_cut import cut_box
from segmentation.interactive.interactions import Interaction, InteractionError, check_fits
from segmentation.interactive.region_grow import grow_from_points
from segmentation.interactive.scribble_cut import cut_scribbles


class Tool(StrEnum):
    """The interactive segmentation tools, by the names a viewer asks for them."""

    POINTS = "points"
    SCRIBBLES = "scribbles"
    BOX = "box"


DESCRIPTIONS: dict[Tool, str] = {
    Tool.POINTS: (
        "Region growing from foreground clicks: takes the voxels connected to a click whose intensity is close to the "
        "clicked one's, kept away from background clicks. Classical image processing, no trained weights."
    ),
    Tool.SCRIBBLES: (
        "Graph cut: learns intensity histograms of the structure and its surroundings from foreground and background "
        "scribbles and finds the boundary between them that follows image edges. Classical image processing, no trained weights."
    ),
    Tool.BOX: (
        "Graph cut inside a box: the box's border is background, its centre the structure; it learns their intensities "
        "and finds the boundary that follows image edges. Classical image processing, no trained weights."
    ),
}

# What each tool needs at the least, for the message about an empty interaction.
_NEEDS = {
    Tool.POINTS: "at least one foreground click",
    Tool.SCRIBBLES: "foreground and background scribbles",
    Tool.BOX: "a box around the structure",
}
_RUNNERS: dict[Tool, Callable[[NDArray[Any], Interaction], NDArray[np.bool_]]] = {
    Tool.POINTS: grow_from_points,
    Tool.SCRIBBLES: cut_scribbles,
    Tool.BOX: cut_box,
}


def segment(tool: Tool, volume: NDArray[Any], interaction: Interaction) -> NDArray[np.bool_]:
    """The mask ``tool`` makes of ``volume`` (3D, indexed like the interaction's voxels) from ``interaction``.

    Raises InteractionError when the interaction does not fit the image or the tool, ValueError when
    the volume is not a 3D array of real numbers.
    """
    try:
        tool = Tool(tool)
    except ValueError:
        raise ValueError(f"unknown interactive tool {tool!r}: use one of {', '.join(known.value for known in Tool)}") from None
    if volume.ndim != 3:
        raise ValueError(f"the interactive tools work on 3D volumes, got an array of shape {volume.shape}")
    if not (np.issubdtype(volume.dtype, np.integer) or np.issubdtype(volume.dtype, np.floating) or volume.dtype == np.bool_):
        raise ValueError(f"the interactive tools need real-valued intensities, got {volume.dtype}")
    if interaction.is_empty:
        raise InteractionError(f"nothing to segment from: the {tool.value} tool needs {_NEEDS[tool]}")
    check_fits(interaction, (volume.shape[0], volume.shape[1], volume.shape[2]))
    return _RUNNERS[tool](volume, interaction)
