"""Windows: the boxes of voxels the tools crop the image to, so that the work follows the interaction, not the image size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segmentation.interactive.interactions import Box


@dataclass(frozen=True)
class Window:
    """Voxels from ``low`` (included) to ``high`` (excluded) along each axis of the image array."""

    low: tuple[int, int, int]
    high: tuple[int, int, int]

    @classmethod
    def whole(cls, shape: tuple[int, ...]) -> Window:
        """The whole image."""
        return cls((0, 0, 0), (shape[0], shape[1], shape[2]))

    @classmethod
    def of_box(cls, box: Box) -> Window:
        """The voxels of a box given by two opposite corners, both included, in any order."""
        first, second = box
        low = (min(first[0], second[0]), min(first[1], second[1]), min(first[2], second[2]))
        return cls(low, (max(first[0], second[0]) + 1, max(first[1], second[1]) + 1, max(first[2], second[2]) + 1))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """The window as an index into the image array."""
        return (slice(self.low[0], self.high[0]), slice(self.low[1], self.high[1]), slice(self.low[2], self.high[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """How many voxels the window has along each axis."""
        return (self.high[0] - self.low[0], self.high[1] - self.low[1], self.high[2] - self.low[2])

    def around(self, voxels: NDArray[np.intp], margin: int) -> Window:
        """The bounding box of ``voxels`` (rows of three indices) grown by ``margin`` voxels, kept inside this window."""
        low = np.maximum(voxels.min(axis=0) - margin, self.low)
        high = np.minimum(voxels.max(axis=0) + 1 + margin, self.high)
        return Window((int(low[0]), int(low[1]), int(low[2])), (int(high[0]), int(high[1]), int(high[2])))

    def holds(self, voxels: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Which of ``voxels`` lie in the window."""
        inside: NDArray[np.bool_] = np.all((voxels >= self.low) & (voxels < self.high), axis=1)
        return inside

    def local(self, voxels: NDArray[np.intp]) -> NDArray[np.intp]:
        """Indices of ``voxels`` in the array cropped to the window."""
        return voxels - np.asarray(self.low, dtype=np.intp)

    def spills(self, mask: NDArray[np.bool_], limit: Window) -> bool:
        """Whether ``mask`` (cropped to this window) touches a face of the window that ``limit`` lets it grow past."""
        for axis in range(3):
            if self.low[axis] > limit.low[axis] and mask.take(0, axis=axis).any():
                return True
            if self.high[axis] < limit.high[axis] and mask.take(-1, axis=axis).any():
                return True
        return False

    def paste(self, mask: NDArray[np.bool_], shape: tuple[int, ...]) -> NDArray[np.bool_]:
        """A mask of the whole image of ``shape``: ``mask`` in this window, background elsewhere."""
        whole = np.zeros(shape, dtype=bool)
        whole[self.slices] = mask
        return whole

    def crop(self, volume: NDArray[Any]) -> NDArray[np.float32]:
        """The image in the window as float32; values that are not finite take the lowest finite value of the window."""
        image = np.asarray(volume[self.slices], dtype=np.float32)
        finite = np.isfinite(image)
        if not finite.all():
            image = np.where(finite, image, image[finite].min() if finite.any() else 0.0).astype(np.float32)
        return image
