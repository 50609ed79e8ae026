"""Synthetic tractograms for tests and benchmarks: smooth random curves in world millimetres.

Each streamline starts somewhere in an ellipsoid (a brain's size by default) and walks in steps of
``step_mm``, its direction turning a little at every step, as a deterministic tractography's would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nibabel.streamlines.tck import TckFile
from nibabel.streamlines.tractogram import Tractogram
from nibabel.streamlines.trk import TrkFile
from numpy.typing import NDArray

# Half-axes (mm) of the ellipsoid the streamlines start in, about a brain's.
BRAIN_MM = (65.0, 80.0, 55.0)


def curves(count: int, seed: int, *, points: tuple[int, int] = (10, 40), step_mm: float = 2.0,
           half_axes: tuple[float, float, float] = BRAIN_MM, turn: float = 0.25) -> list[NDArray[np.float32]]:
    """``count`` smooth random streamlines of ``points`` (low, high) points each."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(points[0], points[1] + 1, count)
    starts = rng.uniform(-1, 1, (count, 3)) * np.asarray(half_axes) * 0.8
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    longest = int(lengths.max()) if count else 0
    walk = np.empty((count, longest, 3))
    position = starts.copy()
    for k in range(longest):
        walk[:, k] = position
        directions += rng.normal(scale=turn, size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        position = position + step_mm * directions
    return [walk[i, : lengths[i]].astype(np.float32) for i in range(count)]


def write_tck(path: Path, streamlines: list[NDArray[np.float32]]) -> Path:
    TckFile(Tractogram(streamlines, affine_to_rasmm=np.eye(4))).save(str(path))
    return path


def write_trk(path: Path, streamlines: list[NDArray[np.float32]], affine: NDArray[np.float64], shape: tuple[int, int, int]) -> Path:
    """A TRK whose header names a reference grid (``affine``, ``shape``), as TrackVis and DIPY write them."""
    header = {"voxel_to_rasmm": affine, "dimensions": np.asarray(shape, dtype=np.int16),
              "voxel_sizes": np.linalg.norm(affine[:3, :3], axis=0).astype(np.float32), "voxel_order": "RAS"}
    TrkFile(Tractogram(streamlines, affine_to_rasmm=np.eye(4)), header=header).save(str(path))
    return path
