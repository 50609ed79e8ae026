"""Predefined jobs: ``python -m jobs.library NAME``, arguments from the environment.

``stats``      f1 NIfTI -> o1 JSON of intensity statistics (what ``--exportmeta`` exports);
               with f2 a mask, the statistics within it and its volume.
``reorient``   f1 NIfTI -> o1 NIfTI in the closest RAS+ orientation (voxels permuted and
               flipped, no interpolation; the affine says the same place in the scanner).
``resample``   f1 NIfTI -> o1 NIfTI on an isotropic grid of n1 mm (linear interpolation,
               or nearest neighbour when c1 is "nearest", e.g. for masks).
``roistats``   f1 NIfTI image, f2 ROI mask -> o1 JSON of the image inside the ROI: median,
               quartiles, mean, std, volume (and area for a one-slice ROI), the image
               sampled at the ROI's voxel centres in world space when the grids differ.
``bids``       p1 PATHOUT <- the project as a BIDS dataset, mapped by its BIDS rules (s1: a
               file-search filter of the studies to export, default all), fetched through the
               API with the run's token; copies, since the sandbox cannot hard-link the archive.
``segapply``   f1 NIfTI image, s1 a model of the project (NAME or NAME vN) -> the model's mask, saved
               by the runner as an ROI of the model's label (segmentation/training/apply_job.py).
``train``      the same training on f1 images and f2 masks of every selected study (a project-level
               batch), into a model version named s1 and the analysis folder p1; n1 epochs.
``segtrain``   a segmentation network trained on the project's ROIs of one label; started by
               ``nora --model_train`` (segmentation/training/job.py), which reserves the model
               version the runner takes the result in as.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np


def _image(name: str) -> nib.Nifti1Image:
    return nib.load(os.environ[name])  # type: ignore[return-value]  # load gives any image type; the inputs are NIfTI


def stats() -> None:
    image = _image("f1")
    data = np.asanyarray(image.dataobj, dtype=np.float64)
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
    selection = data
    result: dict[str, object] = {"shape": list(image.shape), "voxel_size_mm": [float(z) for z in image.header.get_zooms()]}
    if os.environ.get("f2"):
        mask = np.asanyarray(_image("f2").dataobj) > 0
        if mask.shape != data.shape[: mask.ndim]:
            raise SystemExit(f"mask shape {mask.shape} does not fit image shape {data.shape}")
        selection = data[mask]
        result["mask"] = {"voxels": int(mask.sum()), "volume_ml": round(int(mask.sum()) * voxel_ml, 6)}
    finite = selection[np.isfinite(selection)]
    result.update(
        {
            "voxels": int(finite.size),
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "nonzero_volume_ml": round(int(np.count_nonzero(finite)) * voxel_ml, 6),
        }
    )
    with open(os.environ["o1"], "w") as fh:
        json.dump(result, fh, indent=2)


def reorient() -> None:
    nib.save(nib.as_closest_canonical(_image("f1")), os.environ["o1"])


def resample() -> None:
    from nibabel.processing import resample_to_output

    voxel = float(os.environ.get("n1", "1"))
    if voxel <= 0:
        raise SystemExit("n1 (voxel size in mm) must be positive")
    order = 0 if os.environ.get("c1") == "nearest" else 1
    nib.save(resample_to_output(_image("f1"), voxel_sizes=voxel, order=order), os.environ["o1"])


def roistats() -> None:
    from dataclasses import asdict

    from segmentation.grid import Grid
    from segmentation.statistics import roi_statistics

    image, roi = _image("f1"), _image("f2")
    mask = np.asanyarray(roi.dataobj)
    result = roi_statistics(np.asanyarray(image.dataobj), Grid.of(image), mask.reshape(mask.shape[:3]) > 0, Grid.of(roi))
    document = {"image": os.path.basename(os.environ["f1"]), "roi": os.path.basename(os.environ["f2"]), **asdict(result)}
    with open(os.environ["o1"], "w") as fh:
        json.dump(document, fh, indent=2)


def bids() -> None:
    from nifti_archive.cli.main import run

    expression = os.environ.get("s1", "")
    raise SystemExit(run(["--bids", os.environ["p1"], *(["--filter", expression] if expression else [])]))


def _in_assistant(config_file: str, script_key: str) -> None:
    """Run a script in the segmentation assistant's Python (torch, MONAI), in this process's place,
    on the config the runner wrote into the working directory (the staging folder)."""
    config = json.loads(Path(config_file).read_text())
    python = config["python"]
    # The run shares its machine with other runs: OpenMP threads that spin while they wait take
    # the CPU from them, and lose it to them (on a busy 2-core machine training ran 4x slower).
    os.execve(python, [python, "-I", config[script_key], config_file], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def segtrain() -> None:
    from segmentation.training import CONFIG_FILE

    _in_assistant(CONFIG_FILE, "trainer")


def segapply() -> None:
    from segmentation.training import APPLY_CONFIG

    _in_assistant(APPLY_CONFIG.format(index=os.environ["NORTHANC_JOB_INDEX"]), "script")


JOBS: dict[str, Callable[[], None]] = {
    "stats": stats, "reorient": reorient, "resample": resample, "roistats": roistats, "bids": bids, "segtrain": segtrain,
    "segapply": segapply,
    # The same training, on the cases a batch's FILE patterns name (segmentation/training/job.py).
    "train": segtrain,
}


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in JOBS:
        sys.stderr.write(f"unknown job {name!r}; predefined jobs: {', '.join(sorted(JOBS))}\n")
        return 2
    JOBS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
