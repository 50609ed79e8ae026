"""Train a small 3D U-Net on one label's ROIs and export it as TorchScript.

``python -I train_unet.py CONFIG.json``, run with the segmentation assistant's Python (torch,
MONAI, numpy, nibabel; not the archive's environment, so nothing of the archive is imported).
The config (written by segmentation/training/job.py) lists the cases: image, mask, ROI id and
version, and whether each is for training or validation.

Every image and mask is resampled to a small cube (``grid``) and the image normalised there; the
exported model does the same to whatever it is given, so the app runs it on the archive's image
as it is: a (1, 1, I, J, K) float tensor in the NIfTI's array order in, the foreground probability
(1, 1, I, J, K) out. Training and the exported model share one resampling (torch's trilinear
interpolation) so that what was validated is what is served.

Its standard output is its protocol: one line per epoch (what the run's log shows in Gridstats)
and a last line with the validation Dice beside the baseline's; the metrics (``metrics.json``) and
the model (``model.ts``) are written to the output folder. With a ``checkpoint`` in the config it
saves its state there after every epoch and, finding one, resumes after its epoch.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

# MONAI ships no type information and lives in the assistant's environment only.
from monai.losses import DiceCELoss  # type: ignore[import-not-found]
from monai.networks.nets import UNet  # type: ignore[import-not-found]

EPSILON = 1e-6
# One image per step: a project has tens of ROIs, not thousands, and more steps per epoch learn
# more from them (the network's instance norm needs no batch statistics).
BATCH_SIZE = 1
LEARNING_RATE = 1e-2
# Probability above which a voxel is foreground (the app thresholds the same way).
THRESHOLD = 0.5
MODEL_FILE = "model.ts"
METRICS_FILE = "metrics.json"


class GridModel(torch.nn.Module):  # type: ignore[misc]  # torch is Any to the archive's mypy
    """The network with its input's resampling and normalisation around it: what is exported."""

    def __init__(self, net: torch.nn.Module, grid: int) -> None:
        super().__init__()
        self.net = net
        self.grid = grid
        # An attribute, not the module's constant: TorchScript compiles no closed-over globals.
        self.epsilon = EPSILON

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """A (N, 1, I, J, K) image on the training grid, zero mean and unit variance per image."""
        size = [self.grid, self.grid, self.grid]
        cube = F.interpolate(image.float(), size=size, mode="trilinear", align_corners=False)
        mean = cube.mean(dim=[1, 2, 3, 4], keepdim=True)
        std = cube.std(dim=[1, 2, 3, 4], keepdim=True)
        return (cube - mean) / (std + self.epsilon)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = [int(image.shape[2]), int(image.shape[3]), int(image.shape[4])]
        logits = self.net(self.prepare(image))
        foreground = torch.softmax(logits, dim=1)[:, 1:2]
        return F.interpolate(foreground, size=size, mode="trilinear", align_corners=False)


@dataclass(frozen=True)
class Case:
    # The ROI version it was drawn as; none for a mask a FILE pattern named.
    roi: int | None
    version: int | None
    image: torch.Tensor  # (1, 1, I, J, K) at the image's own size
    mask: torch.Tensor  # (1, 1, I, J, K) bool
    validation: bool


def _volume(path: str) -> np.ndarray:
    """The first 3D volume of a NIfTI, as float32 (a 4D series' first volume is the one ROIs are drawn on)."""
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise SystemExit(f"{path} is not a NIfTI-1 image")
    data = np.asarray(image.dataobj, dtype=np.float32)
    while data.ndim > 3:
        data = data[..., 0]
    return data


def load_cases(config: dict[str, Any]) -> list[Case]:
    cases = []
    for entry in config["cases"]:
        image = _volume(entry["image"])
        mask = _volume(entry["mask"]) > 0
        if mask.shape != image.shape:
            raise SystemExit(f"{entry['mask']}: mask shape {mask.shape} differs from its image's {image.shape}")
        cases.append(Case(entry["roi"], entry["version"], torch.from_numpy(image)[None, None],
                          torch.from_numpy(mask)[None, None], entry["split"] == "validation"))
    return cases


def on_grid(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """A mask resampled to the grid as the image is, as class indices (N, 1, G, G, G)."""
    cube = F.interpolate(mask.float(), size=[grid, grid, grid], mode="trilinear", align_corners=False)
    return (cube > THRESHOLD).long()


def dice(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Dice of two boolean masks; two empty masks agree perfectly."""
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total


def _flipped(x: torch.Tensor, y: torch.Tensor, generator: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random mirror of image and mask: the only augmentation, it keeps the grid."""
    axes = [axis for axis in (2, 3, 4) if generator.random() < 0.5]
    return (x.flip(axes), y.flip(axes)) if axes else (x, y)


def say(line: str) -> None:
    # Progress is this script's output protocol (the run's log), not diagnostics: stdout, flushed
    # so that the log shows each epoch as it ends.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def train(config: dict[str, Any], output: Path) -> dict[str, Any]:
    seed, grid, epochs = int(config["seed"]), int(config["grid"]), int(config["epochs"])
    torch.manual_seed(seed)
    generator = random.Random(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.monotonic()
    cases = load_cases(config)
    training = [c for c in cases if not c.validation]
    validation = [c for c in cases if c.validation]
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    model = GridModel(net, grid).to(device)
    with torch.no_grad():
        train_x = torch.cat([model.prepare(c.image.to(device)) for c in training])
        train_y = torch.cat([on_grid(c.mask.to(device), grid) for c in training])
        val_x = torch.cat([model.prepare(c.image.to(device)) for c in validation])
        val_y = torch.cat([on_grid(c.mask.to(device), grid) for c in validation]).bool()
    say(f"training {config['label']!r}: {len(training)} training and {len(validation)} validation ROIs, "
        f"grid {grid}^3, {epochs} epochs on {device.type}")
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    checkpoint = Path(config["checkpoint"]) if config.get("checkpoint") else None
    first = 1
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.setstate(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first = int(state["epoch"]) + 1
        say(f"resuming after epoch {state['epoch']}")
    for epoch in range(first, epochs + 1):
        model.train()
        order = list(range(len(training)))
        generator.shuffle(order)
        losses = []
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            x, y = _flipped(train_x[batch], train_y[batch], generator)
            optimiser.zero_grad()
            loss = loss_function(model.net(x), y)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            predicted = torch.softmax(model.net(val_x), dim=1)[:, 1:2] > THRESHOLD
        scores = [dice(predicted[i], val_y[i]) for i in range(len(validation))]
        say(f"epoch {epoch}/{epochs} loss {sum(losses) / len(losses):.4f} val dice {sum(scores) / len(scores):.4f} "
            f"({time.monotonic() - started:.1f} s)")
        if checkpoint is not None:
            # Whole or not at all: a run stopped while writing resumes from the epoch before.
            partial = checkpoint.with_suffix(".partial")
            torch.save({"epoch": epoch, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
                        "generator": generator.getstate(), "torch_rng": torch.get_rng_state()}, partial)
            partial.replace(checkpoint)
    model = model.cpu().eval()
    output.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(output / MODEL_FILE))
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # finished: nothing to resume
    # Judged as it will be served: the saved file, on each validation image at its own size.
    served = torch.jit.load(str(output / MODEL_FILE), map_location="cpu")
    prior = train_y.float().mean(dim=0, keepdim=True).cpu()
    per_case: list[dict[str, Any]] = []
    with torch.no_grad():
        for case in validation:
            size = list(case.image.shape[2:])
            predicted = served(case.image) > THRESHOLD
            baseline = F.interpolate(prior, size=size, mode="trilinear", align_corners=False) > THRESHOLD
            per_case.append({"roi": case.roi, "version": case.version, "dice": dice(predicted, case.mask),
                             "baseline_dice": dice(baseline, case.mask)})
    return {
        "label": config["label"], "epochs": epochs, "grid": grid, "seed": seed, "device": device.type,
        "train_count": len(training), "val_count": len(validation),
        "val_dice": sum(c["dice"] for c in per_case) / len(per_case),
        # The mean training mask on the grid, thresholded: where the label usually is, without looking.
        "baseline_dice": sum(c["baseline_dice"] for c in per_case) / len(per_case),
        "per_case": per_case, "seconds": round(time.monotonic() - started, 1),
        "torch": torch.__version__,
    }


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    output = Path(config["output"])
    metrics = train(config, output)
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    say(f"validation dice {metrics['val_dice']:.4f}, baseline (mean training mask) {metrics['baseline_dice']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
