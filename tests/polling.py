"""Tests wait the way the archive does: for a condition, with a deadline, never a fixed sleep."""

from nifti_archive.waiting import DeadlinePassed, wait_until

__all__ = ["DeadlinePassed", "wait_until"]
