"""Benchmark of the segmentation assistant: latency per interaction, server beside in-process.

Run from the repository root:  .venv/bin/python -m bench.monailabel [--repeat N] [--install]

The image: a real series (dcm_qa_nih's first GE EPI volume) resampled to 256x256x176 with a
sphere of 20 voxels' radius and noise inserted, written as a .nii.gz into a fresh archive. For
each offered tool, the request a user's first interaction sends (points: one click at the centre;
scribbles: one stroke inside and one outside; box: the sphere's bounding box with a margin):

- server: the real MONAI Label server (``testbed.assistant``, the gate and the app in
  ``segmentation/assistant``), called as the portal calls it (``AssistantClient.infer``), cold (the
  first call on the image: it is read from disk) and warm (the median of ``--repeat`` calls, each
  after a reset so that it does the same work);
- in-process: the same algorithm (``segmentation.interactive.tools.segment``) run by the
  assistant's own Python in a separate process, without any server: cold (image read + segment)
  and warm (segment on the image in memory).

Targets: warm at most 1 s per interaction on this machine's CPUs for every tool; the server at
most 1.2 x in-process (warm). ``--install`` also builds the assistant's environment from its lock
into a temporary folder and reports its time and size.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bench.common import median_ms, table

log = logging.getLogger("bench.monailabel")
ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "dcm_qa_nih" / "Ref" / "DCM2NIIX_regression_test_4.nii"
SHAPE = (256, 256, 176)
RADIUS = 20
IMAGE = "bench/sub/study/001_phantom/phantom.nii.gz"
WARM_TARGET_MS = 1000.0
OVERHEAD_TARGET = 1.2


def write_phantom(path: Path) -> tuple[int, int, int]:
    """The 256x256x176 image with its sphere; the sphere's centre."""
    from scipy import ndimage

    source = nib.load(str(SOURCE))
    data = np.asanyarray(source.dataobj)[..., 0].astype(np.float32)
    zoomed = ndimage.zoom(data, [t / s for t, s in zip(SHAPE, data.shape, strict=True)], order=1)
    centre = (SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2)
    grid = np.indices(SHAPE, sparse=True)
    sphere = sum((axis - c) ** 2 for axis, c in zip(grid, centre, strict=True)) <= RADIUS**2
    rng = np.random.default_rng(7)
    level = float(np.percentile(zoomed, 99)) * 1.5
    image = zoomed + np.where(sphere, level, 0) + rng.normal(0, level * 0.08, SHAPE)
    affine = np.diag([0.9375, 0.9375, 1.0, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(path))
    return centre


def first_interactions(centre: tuple[int, int, int]) -> dict[str, dict[str, Any]]:
    i, j, k = centre
    inside = [[i + d, j, k] for d in range(-8, 9)]
    outside = [[i + d, j + RADIUS + 15, k] for d in range(-12, 13)]
    margin = RADIUS + 4
    return {
        "points": {"foreground": [[i, j, k]]},
        "scribbles": {"foreground_scribbles": inside, "background_scribbles": outside},
        "box": {"box": [[i - margin, j - margin, k - margin], [i + margin, j + margin, k + margin]]},
    }


def in_process(image: Path, interactions: dict[str, dict[str, Any]], repeat: int) -> dict[str, dict[str, float]]:
    """Run by the assistant's Python: each tool without the server."""
    from segmentation.assistant.volumes import read_volume
    from segmentation.interactive.interactions import parse_interaction
    from segmentation.interactive.tools import Tool, segment

    figures = {}
    for name, params in interactions.items():
        tool = Tool(name)
        start = time.perf_counter()
        volume = read_volume(image)
        segment(tool, volume.data, parse_interaction(params, volume.shape))
        cold = (time.perf_counter() - start) * 1000
        warm, _ = median_ms(partial(lambda t, v, p: segment(t, v.data, parse_interaction(p, v.shape)),
                                    tool, volume, params), repeat)
        figures[name] = {"cold": cold, "warm": warm}
    return figures


def on_server(archive: Path, interactions: dict[str, dict[str, Any]], repeat: int) -> dict[str, dict[str, float]]:
    from nifti_archive.settings import load_settings
    from testbed.assistant import start_assistant

    var = archive.parent
    settings = load_settings({"NORTHANC_VAR": str(var)})
    assistant = start_assistant(settings)
    try:
        client = assistant.client
        figures = {}
        for name, params in interactions.items():
            start = time.perf_counter()
            client.infer(name, IMAGE, {**params, "session": "cold"})
            cold = (time.perf_counter() - start) * 1000

            def warm_call(name: str = name, params: dict[str, Any] = params) -> dict[str, Any]:
                return client.infer(name, IMAGE, {**params, "session": "warm", "reset": True})

            warm, answer = median_ms(warm_call, repeat)
            figures[name] = {"cold": cold, "warm": warm, "voxels": answer["voxels"], "task": answer["seconds"] * 1000}
        return figures
    finally:
        assistant.stop()


def measure_install() -> tuple[float, int]:
    """Seconds and bytes of the assistant's environment built from its lock in a fresh folder."""
    lock = ROOT / "segmentation" / "assistant" / "requirements.lock"
    with tempfile.TemporaryDirectory() as folder:
        venv = Path(folder) / "venv"
        start = time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-r", str(lock)], check=True,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return seconds, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--install", action="store_true", help="also time building the environment")
    parser.add_argument("--in-process", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if options.in_process:
        interactions = json.loads(sys.stdin.read())
        json.dump(in_process(options.in_process, interactions, options.repeat), sys.stdout)
        return 0

    from nifti_archive.settings import load_settings

    var = Path(tempfile.mkdtemp(prefix="bench-assistant-"))
    try:
        archive = var / "archive"
        centre = write_phantom(archive / IMAGE)
        interactions = first_interactions(centre)
        server = on_server(archive, interactions, options.repeat)
        python = load_settings({"NORTHANC_VAR": str(var)}).assistant_python
        done = subprocess.run(
            [str(python), "-m", "bench.monailabel", "--in-process", str(archive / IMAGE), "--repeat", str(options.repeat)],
            input=json.dumps(interactions), capture_output=True, text=True, check=True, cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        local = json.loads(done.stdout)
    finally:
        shutil.rmtree(var, ignore_errors=True)

    rows = [["tool", "server cold ms", "server warm ms", "in-process cold ms", "in-process warm ms",
             "server/in-process", "in the task ms", "voxels", "warm <= 1 s", "overhead <= 1.2x"]]
    for name in interactions:
        ratio = server[name]["warm"] / local[name]["warm"]
        rows.append([
            name, f"{server[name]['cold']:.0f}", f"{server[name]['warm']:.0f}", f"{local[name]['cold']:.0f}",
            f"{local[name]['warm']:.0f}", f"{ratio:.2f}x", f"{server[name]['task']:.0f}", f"{server[name]['voxels']:.0f}",
            "met" if server[name]["warm"] <= WARM_TARGET_MS else "MISSED",
            "met" if ratio <= OVERHEAD_TARGET else "MISSED",
        ])
    log.info("segmentation assistant on %s, %d warm repeats:\n%s", "x".join(map(str, SHAPE)), options.repeat,
             table(rows))
    if options.install:
        seconds, size = measure_install()
        log.info("assistant environment from its lock: %.0f s, %.2f GB (plain `pip install monailabel` with "
                 "its declared dependencies: 8.2 GB)", seconds, size / 1e9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
