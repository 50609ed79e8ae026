"""The voxels a user marked, as index arrays and masks the tools compute with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive.click_values import click_values
from segmentation.interactive.intensity_model import Samples
from segmentation.interactive.interactions import Interaction, InteractionError, Voxel
from segmentation.interactive.windows import Window

# How many painted voxels a click weighs as, when it teaches intensities.
CLICK_WEIGHT = 3.0
# The most all clicks of a label together weigh, as a share of the label's painted voxels.
CLICK_SHARE = 0.5


@dataclass(frozen=True)
class Marks:
    """Clicked and painted voxels of each label, each an array with one row of three indices per voxel."""

    foreground_points: NDArray[np.intp]
    foreground_scribbles: NDArray[np.intp]
    background_points: NDArray[np.intp]
    background_scribbles: NDArray[np.intp]

    @classmethod
    def of(cls, interaction: Interaction) -> Marks:
        """The marks of an interaction."""
        return cls(
            _array(interaction.foreground),
            _array(interaction.foreground_scribbles),
            _array(interaction.background),
            _array(interaction.background_scribbles),
        )

    @property
    def foreground(self) -> NDArray[np.intp]:
        """Every voxel marked foreground, clicked or painted."""
        return np.concatenate([self.foreground_points, self.foreground_scribbles])

    @property
    def background(self) -> NDArray[np.intp]:
        """Every voxel marked background, clicked or painted."""
        return np.concatenate([self.background_points, self.background_scribbles])


def mask_of(voxels: NDArray[np.intp], window: Window) -> NDArray[np.bool_]:
    """The voxels that lie in ``window``, as a mask of the window."""
    mask = np.zeros(window.shape, dtype=bool)
    inside = window.local(voxels[window.holds(voxels)])
    mask[inside[:, 0], inside[:, 1], inside[:, 2]] = True
    return mask


def samples(volume: NDArray[Any], points: NDArray[np.intp], scribbles: NDArray[np.intp], noise: float) -> Samples:
    """Intensities to learn a label from: the painted voxels, and around each click what click_values takes.

    A click weighs as much as CLICK_WEIGHT painted voxels, however many values it stands for, and the
    clicks together at most CLICK_SHARE of the painted voxels, if any: corrective clicks land on the
    voxels the cut got wrong, often noisy ones at an edge that look like the other label, and must
    not outweigh the strokes that teach the label.
    """
    painted = np.asarray(volume[scribbles[:, 0], scribbles[:, 1], scribbles[:, 2]], dtype=np.float32)
    found = Samples.painted(painted[np.isfinite(painted)])
    if not len(points):
        return found
    click_weight = CLICK_WEIGHT if not len(found) else min(CLICK_WEIGHT, CLICK_SHARE * len(found) / len(points))
    for i, j, k in points:
        values = click_values(volume, (int(i), int(j), int(k)), noise)
        found = found + Samples(values, np.full(len(values), click_weight / max(len(values), 1)))
    return found


def require_in_box(foreground: NDArray[np.intp], box: Window, tool: str) -> None:
    """Raise InteractionError for a foreground mark outside the box: the box says the structure lies within it."""
    outside = foreground[~box.holds(foreground)]
    if len(outside):
        voxel = "(" + ", ".join(str(int(index)) for index in outside[0]) + ")"
        last = tuple(index - 1 for index in box.high)
        raise InteractionError(
            f"foreground mark {voxel} lies outside the box {box.low}–{last}; the {tool} tool keeps the structure inside "
            "the box, so draw a box that holds every foreground mark"
        )


def _array(voxels: Sequence[Voxel]) -> NDArray[np.intp]:
    return np.asarray(voxels, dtype=np.intp).reshape(-1, 3)
