"""Slurm's own command line (sbatch, squeue, scancel), as submitit and dask-jobqueue use it.

Here in the core package because the archive submits work of its own (conversion workers)
as well as the jobs package's runs; pyslurm cannot drive Debian's Slurm 22.05.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from nifti_archive.errors import ArchiveError

SUBMIT_TIMEOUT = 120


class SlurmUnavailable(ArchiveError):
    pass


def slurm(command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The standard output of a Slurm command; SlurmUnavailable with Slurm's own reason otherwise."""
    try:
        result = subprocess.run(
            list(command), capture_output=True, text=True, timeout=SUBMIT_TIMEOUT, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmUnavailable(f"cannot run {command[0]}: {exc}") from exc
    if result.returncode != 0:
        reason = "; ".join(line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip())
        raise SlurmUnavailable(f"{command[0]} failed: {reason[:500]}")
    return result.stdout
