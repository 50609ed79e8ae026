"""Run a project's segmentation model on one image and write its mask on the image's grid.

``python -I apply_model.py CONFIG.json``, run with the segmentation assistant's Python (torch,
nibabel, numpy; nothing of the archive is imported). The config (written by
segmentation/training/apply_job.py) names the TorchScript file, the image and the mask to write.
The model keeps the assistant's contract (model_registry.py): a (1, 1, I, J, K) float tensor in
the NIfTI's array order in, (1, C, I, J, K) out; one channel is the foreground probability, more
are class scores whose channel 1 is the label. The mask is thresholded as the assistant does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

THRESHOLD = 0.5


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    image = nib.load(config["image"])
    if not isinstance(image, nib.Nifti1Image):
        sys.stderr.write(f"{config['image']} is not a NIfTI-1 image\n")
        return 2
    data = np.asarray(image.dataobj, dtype=np.float32)
    # A 4D series' first volume, the one its ROIs are drawn on (as the trainer reads it).
    while data.ndim > 3:
        data = data[..., 0]
    model = torch.jit.load(config["model"], map_location="cpu").eval()
    with torch.inference_mode():
        output = model(torch.from_numpy(data)[None, None])
    if output.ndim != 5 or tuple(output.shape[2:]) != data.shape:
        sys.stderr.write(f"the model gave an output of shape {tuple(output.shape)} for an image of {data.shape}\n")
        return 2
    scores = output[0].numpy()
    mask = scores[0] > THRESHOLD if scores.shape[0] == 1 else np.argmax(scores, axis=0) == 1
    Path(config["output"]).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), config["output"])
    # The run's log: what the model found.
    sys.stdout.write(f"{config['model_name']}: {int(mask.sum())} of {mask.size} voxels\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
