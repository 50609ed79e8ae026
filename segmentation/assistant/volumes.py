"""The images the assistant segments, read once and kept while a user works on them.

An interaction costs a fraction of a second; reading a compressed 256×256×176 NIfTI costs as
much again, so the last few images stay in memory, keyed by their file's identity on disk (a
file written again is read again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3D image: its voxels in the file's array order and the NIfTI header that places them."""

    data: np.ndarray
    header: nib.Nifti1Header

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.data.shape
        return int(i), int(j), int(k)


def read_volume(path: Path) -> Volume:
    """The image at ``path``; of a 4D series, its first volume (the one ROIs are drawn on)."""
    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image):
        raise ValueError(f"{path.name} is not a NIfTI-1 image")
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path.name} is not a 3D or 4D image (it has {data.ndim} dimensions)")
    header = image.header.copy()
    return Volume(np.asarray(data, dtype=np.float32), header)


class VolumeCache:
    def __init__(self, capacity: int = 4) -> None:
        self._capacity = capacity
        self._volumes: OrderedDict[tuple[str, int, int], Volume] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Volume:
        status = path.stat()
        key = (str(path), status.st_mtime_ns, status.st_size)
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return self._volumes[key]
        volume = read_volume(path)
        with self._lock:
            self._volumes[key] = volume
            while len(self._volumes) > self._capacity:
                self._volumes.popitem(last=False)
        return volume
