"""A known structure in a real image, and a user who corrects an interactive tool's proposal.

The image is a real series (dcm_qa_nih's first GE EPI volume, resampled) with a sphere or a box
of another intensity and noise inserted, so the right answer is known without trusting our own
code. The simulated user clicks where a radiologist would: in the middle of the largest region
the proposal gets wrong (a foreground click in a miss, a background click in a false alarm).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tests.reference import DATA

SOURCE = DATA / "dcm_qa_nih" / "Ref" / "DCM2NIIX_regression_test_4.nii"

Voxel = tuple[int, int, int]


class Structure(StrEnum):
    SPHERE = "sphere"
    BOX = "box"


@dataclass(frozen=True)
class Phantom:
    image: np.ndarray
    truth: np.ndarray
    affine: np.ndarray

    @property
    def centre(self) -> Voxel:
        i, j, k = (int(round(v)) for v in ndimage.center_of_mass(self.truth))
        return i, j, k

    def bounding_box(self, margin: int) -> list[list[int]]:
        where = np.argwhere(self.truth)
        low = np.maximum(where.min(axis=0) - margin, 0)
        high = np.minimum(where.max(axis=0) + margin, np.array(self.truth.shape) - 1)
        return [[int(v) for v in low], [int(v) for v in high]]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(self.image.astype(np.float32), self.affine), str(path))


def phantom(structure: Structure, shape: Voxel = (96, 96, 64), seed: int = 3) -> Phantom:
    """The real series resampled to ``shape`` with the structure (a sixth of the size) inserted."""
    source = nib.load(str(SOURCE))
    data = np.asanyarray(source.dataobj)[..., 0].astype(np.float32)
    image = ndimage.zoom(data, [t / s for t, s in zip(shape, data.shape, strict=True)], order=1)
    centre = np.array(shape) // 2 + np.array([3, -4, 2])
    size = min(shape) // 6
    grid = np.indices(shape)
    if structure is Structure.SPHERE:
        truth = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0) <= size**2
    else:
        truth = (np.abs(grid - centre[:, None, None, None]) <= np.array([size, size - 2, size + 2])[:, None, None, None]).all(axis=0)
    level = float(np.percentile(image, 99))
    rng = np.random.default_rng(seed)
    noisy = image + np.where(truth, level, 0.0) + rng.normal(0.0, level * 0.1, shape)
    affine = source.affine @ np.diag([data.shape[0] / shape[0], data.shape[1] / shape[1], data.shape[2] / shape[2], 1.0])
    return Phantom(noisy.astype(np.float32), truth, affine)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def correction(proposal: np.ndarray, truth: np.ndarray) -> tuple[bool, Voxel]:
    """Where the user clicks next: (foreground?, voxel) at the deepest voxel of the largest error."""
    missed = truth & ~proposal
    extra = proposal & ~truth
    labels_missed, _ = ndimage.label(missed)
    labels_extra, _ = ndimage.label(extra)
    largest_missed = np.bincount(labels_missed.ravel())[1:].max(initial=0)
    largest_extra = np.bincount(labels_extra.ravel())[1:].max(initial=0)
    foreground = largest_missed >= largest_extra
    labels = labels_missed if foreground else labels_extra
    biggest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    depth = ndimage.distance_transform_edt(labels == biggest)
    i, j, k = (int(v) for v in np.unravel_index(int(np.argmax(depth)), depth.shape))
    return bool(foreground), (i, j, k)
