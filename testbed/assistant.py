"""The segmentation assistant (the real MONAI Label server) on a free port, for tests and benchmarks."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass

from nifti_archive.installation import write_secrets
from nifti_archive.settings import Settings
from segmentation import assistant_service
from segmentation.assistant_client import AssistantClient
from testbed.children import stop_child
from testbed.ports import free_port


@dataclass
class Assistant:
    settings: Settings
    process: subprocess.Popen[bytes]

    @property
    def client(self) -> AssistantClient:
        return AssistantClient(self.settings)

    def stop(self) -> None:
        stop_child(self.process)


def start_assistant(settings: Settings) -> Assistant:
    """The assistant on ``settings``' archive; the returned settings carry its port (give them to
    a portal started afterwards so that it reaches this assistant)."""
    settings = dataclasses.replace(settings, assistant_port=free_port())
    write_secrets(settings)
    process = assistant_service.start(settings, detach=False)
    try:
        assistant_service.wait_ready(settings, process)
    except BaseException:
        stop_child(process)
        raise
    return Assistant(settings, process)
