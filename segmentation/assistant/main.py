"""The MONAI Label app MONAI Label loads (it looks for ``main.py`` in the app folder).

Its tasks: the weight-free interactive tools, each under its tool's name, and ``model``, which runs
a project's published model. Nothing that needs weights it lacks is listed (no DeepEdit or SAM on
random weights); training runs as the archive's batch job, not inside this server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore

from segmentation.assistant.click_memory import ClickMemory
from segmentation.assistant.datastore import ArchiveDatastore
from segmentation.assistant.tasks import InteractiveTask, ModelTask
from segmentation.assistant.volumes import VolumeCache
from segmentation.interactive.tools import Tool

MODEL_TASK = "model"


class NorthancAssistant(MONAILabelApp):  # type: ignore[misc]
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self._root = Path(studies).resolve()
        self._models = Path(conf["models"]).resolve()
        self._volumes = VolumeCache()
        self._memory = ClickMemory()
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="Northanc segmentation assistant",
                         description="Interactive segmentation on the archive's images", version="1")

    def init_datastore(self) -> Datastore:
        return ArchiveDatastore(self._root)

    def init_infers(self) -> dict[str, Any]:
        tasks: dict[str, Any] = {
            tool.value: InteractiveTask(tool, self._root, self._volumes, self._memory) for tool in Tool
        }
        tasks[MODEL_TASK] = ModelTask(self._root, self._models, self._volumes)
        return tasks

    def init_strategies(self) -> dict[str, Any]:
        return {}
