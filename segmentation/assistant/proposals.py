"""A proposed mask, written for the two kinds of caller: a NIfTI file and a compact JSON form.

OHIF's MONAI Label panel asks for the label image; the portal's ROI tool merges the proposal into
the ROI being drawn in the browser, where a bit-packed bounding box is smaller than any image and
needs no gzip or NIfTI reader.
"""

from __future__ import annotations

import base64
import tempfile
from typing import Any

import nibabel as nib
import numpy as np

from segmentation.assistant.volumes import Volume


def write_label(volume: Volume, mask: np.ndarray) -> str:
    """The mask as a uint8 NIfTI on the image's grid (its sform and qform), in a temporary file.

    Uncompressed: gzip costs most of a second on a 256×256×176 mask, the bytes only cross localhost.
    """
    header = volume.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    image = nib.Nifti1Image(mask.astype(np.uint8), None, header)
    with tempfile.NamedTemporaryFile(prefix="proposal-", suffix=".nii", delete=False) as handle:
        path = handle.name
    nib.save(image, path)
    return path


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box holding the mask's voxels; None for an empty mask.

    Each axis is searched within the range the previous ones found, so a large mask with a small
    structure is read about once, not once per axis.
    """
    box: list[slice] = [slice(None)] * 3
    for axis in range(3):
        region = mask[tuple(box)]
        hits = np.flatnonzero(region.any(axis=tuple(other for other in range(3) if other != axis)))
        if hits.size == 0:
            return None
        start = (box[axis].start or 0) + int(hits[0])
        box[axis] = slice(start, start + int(hits[-1]) - int(hits[0]) + 1)
    return box[0], box[1], box[2]


def packed_mask(mask: np.ndarray) -> dict[str, Any] | None:
    """``{"origin": [i, j, k], "shape": [ni, nj, nk], "voxels": n, "bits": base64}`` of the mask's
    bounding box. Bits run in NIfTI file order (``i`` fastest), most significant bit first; None
    for an empty mask.
    """
    found = bounding_box(mask)
    if found is None:
        return None
    box = mask[found]
    bits = np.packbits(box.ravel(order="F").astype(np.uint8))
    return {
        "origin": [int(part.start) for part in found],
        "shape": [int(v) for v in box.shape],
        "voxels": int(np.count_nonzero(box)),
        "bits": base64.b64encode(bits.tobytes()).decode("ascii"),
    }


def unpack_mask(packed: dict[str, Any] | None, shape: tuple[int, int, int]) -> np.ndarray:
    """The whole-volume bool mask that ``packed_mask`` gave (for tests and for callers in Python)."""
    mask = np.zeros(shape, dtype=bool)
    if packed is None:
        return mask
    box_shape = tuple(int(v) for v in packed["shape"])
    count = int(np.prod(box_shape))
    bits = np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8))[:count]
    origin = [int(v) for v in packed["origin"]]
    region = tuple(slice(o, o + n) for o, n in zip(origin, box_shape, strict=True))
    mask[region] = bits.reshape(box_shape, order="F").astype(bool)
    return mask
