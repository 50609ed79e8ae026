"""Waiting for a condition with a deadline: the one polling loop of the archive, its services and its tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from nifti_archive.errors import ArchiveError

T = TypeVar("T")


class DeadlinePassed(ArchiveError):
    """What was waited for did not happen in time; the message names it."""


def wait_until(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something true; after ``timeout`` s fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DeadlinePassed(f"{what} (not within {timeout:g} s)")
        time.sleep(interval)
