"""The Python that child processes run: ours, even from inside Orthanc's embedded interpreter."""

from __future__ import annotations

import os
import sys


def python_executable() -> str:
    return os.environ.get("NORTHANC_PYTHON") or sys.executable
