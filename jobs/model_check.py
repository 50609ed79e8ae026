"""A user's model file checked in the jobs sandbox.

Loading a TorchScript file runs what it holds; a file a user registers is checked the way their
batch jobs run: as the jobs account, without network, seeing a copy of the file, the software and
their project's tree, nothing else of the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.runner import software
from jobs.sandbox import Sandbox, jobs_account, sandbox_argv
from nifti_archive.settings import Settings
from segmentation import model_registry
from segmentation.training import job as training_job


@contextmanager
def sandboxed_copy(settings: Settings, project_dir: Path, source: Path) -> Iterator[tuple[Path, model_registry.Wrap]]:
    """A copy of ``source`` the jobs account owns, and the wrap that runs the check on it sandboxed."""
    account = jobs_account(settings.jobs_user)
    with tempfile.TemporaryDirectory(prefix="model-check-") as folder:
        staging = Path(folder)
        copy = staging / model_registry.MODEL_FILE
        shutil.copyfile(source, copy)
        for path in (staging, copy):
            os.chown(path, account.uid, account.gid)
        sandbox = Sandbox(account=account, software=software() + training_job.software(settings),
                          project_dir=project_dir, staging=staging, api_socket=settings.portal_socket)
        yield copy, lambda argv: sandbox_argv(sandbox, argv)
