"""The assistant's inference tasks: the weight-free interactive tools, and a project's own models.

Each task answers one request: the image (a path the datastore resolved inside the archive), the
caller's interaction, the session the portal names. Bad input is a 422 with the reason, raised
here so that MONAI Label's endpoint passes it through rather than turning it into a 500.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from segmentation.assistant.click_memory import ClickMemory
from segmentation.assistant.proposals import packed_mask, write_label
from segmentation.assistant.volumes import Volume, VolumeCache
from segmentation.interactive.interactions import InteractionError, parse_interaction
from segmentation.interactive.tools import DESCRIPTIONS, Tool, segment

log = logging.getLogger(__name__)

Answer = tuple[str | None, dict[str, Any]]


def _refuse(reason: str, status: int = 422) -> HTTPException:
    return HTTPException(status_code=status, detail=reason)


def _image_path(request: dict[str, Any], root: Path) -> Path:
    path = Path(str(request.get("image", ""))).resolve()
    # MONAI Label passes an existing absolute path through without asking the datastore.
    if not path.is_relative_to(root) or not path.is_file():
        raise _refuse("the image is not a file in the archive", status=404)
    return path


def _answer(request: dict[str, Any], volume: Volume, mask: np.ndarray, extra: dict[str, Any],
            started: float) -> Answer:
    """The label image (unless the caller takes the packed mask only) and the JSON answer."""
    label_file = write_label(volume, mask) if request.get("label_image", True) else None
    packed = packed_mask(mask)
    return label_file, {
        **extra,
        "voxels": packed["voxels"] if packed else 0,
        "mask": packed,
        "seconds": round(time.perf_counter() - started, 4),
    }


class InteractiveTask(InferTask):  # type: ignore[misc]
    """One classical tool (region growing or a graph cut): no network, no weights."""

    def __init__(self, tool: Tool, root: Path, volumes: VolumeCache, memory: ClickMemory) -> None:
        super().__init__(type=InferType.SCRIBBLES if tool is Tool.SCRIBBLES else InferType.DEEPGROW,
                         labels=None, dimension=3, description=DESCRIPTIONS[tool],
                         config={"weights": "none"})
        self.tool = tool
        self._root = root
        self._volumes = volumes
        self._memory = memory

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> Answer:
        started = time.perf_counter()
        path = _image_path(request, self._root)
        session = str(request.get("session") or "")
        image_key = str(path.relative_to(self._root))
        if request.get("reset"):
            forgotten = self._memory.reset(session, image_key)
            if not any(request.get(key) for key in ("foreground", "background", "foreground_scribbles",
                                                   "background_scribbles", "box")):
                return None, {"tool": self.tool.value, "reset": True, "forgotten": forgotten, "mask": None}
        volume = self._volumes.get(path)
        try:
            newer = parse_interaction(request, volume.shape)
            interaction = self._memory.add(session, image_key, self.tool.value, newer)
            mask = segment(self.tool, volume.data, interaction)
        except InteractionError as exc:
            raise _refuse(str(exc)) from exc
        counts = {
            "foreground": len(interaction.foreground),
            "background": len(interaction.background),
            "foreground_scribbles": len(interaction.foreground_scribbles),
            "background_scribbles": len(interaction.background_scribbles),
            "box": interaction.box is not None,
        }
        return _answer(request, volume, mask, {"tool": self.tool.value, "interactions": counts}, started)


class ModelTask(InferTask):  # type: ignore[misc]
    """A project's model (TorchScript, trained here or registered), named by the portal per request.

    The model takes the image as a ``(1, 1, I, J, K)`` float tensor in file order and gives
    ``(1, C, I, J, K)``: the foreground probability for one channel, class scores (foreground =
    channel 1) for more.
    """

    def __init__(self, root: Path, models: Path, volumes: VolumeCache) -> None:
        super().__init__(type=InferType.SEGMENTATION, labels=None, dimension=3,
                         description="runs a project's published model, trained on its ROIs or registered",
                         config={"model_file": ""})
        self._root = root
        self._models = models.resolve()
        self._volumes = volumes
        self._loaded: dict[tuple[str, int], torch.jit.ScriptModule] = {}
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        return True

    def _model(self, name: str) -> torch.jit.ScriptModule:
        path = (self._models / name).resolve()
        if not path.is_relative_to(self._models) or not path.is_file():
            raise _refuse(f"no model file {name!r}", status=404)
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key not in self._loaded:
                try:
                    self._loaded[key] = torch.jit.load(str(path), map_location="cpu").eval()
                except (RuntimeError, ValueError) as exc:
                    raise _refuse(f"the model does not load: {str(exc).splitlines()[0]}") from exc
            return self._loaded[key]

    def __call__(self, request: dict[str, Any]) -> Answer:
        started = time.perf_counter()
        path = _image_path(request, self._root)
        model = self._model(str(request.get("model_file") or ""))
        volume = self._volumes.get(path)
        with torch.inference_mode():
            output = model(torch.from_numpy(volume.data)[None, None])
        if output.ndim != 5 or tuple(output.shape[2:]) != volume.shape:
            raise _refuse(f"the model gave an output of shape {tuple(output.shape)} for an image of {volume.shape}")
        scores = output[0].numpy()
        mask = scores[0] > 0.5 if scores.shape[0] == 1 else np.argmax(scores, axis=0) == 1
        return _answer(request, volume, mask, {"tool": "model", "model_file": request.get("model_file")}, started)
