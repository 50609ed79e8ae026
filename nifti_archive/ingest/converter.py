"""dcm2niix, run on one series in a scratch folder, with its outputs named by the archive.

dcm2niix never overwrites and adds its own suffixes (echoes ``_e2``, phase ``_ph``,
collisions ``a``/``b``), so it always writes into a fresh folder with the fixed base name
``series``; the archive then renames ``series<suffix>.<ext>`` to ``s<NNN><suffix>.<ext>``.
Its messages are kept: some of them mean the series is incomplete or cannot be a regular
volume, and such a series goes to quarantine instead of the archive.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# What converted files record as their converter.
NAME = "dcm2niix"
BASE_NAME = "series"
# Compressed NIfTI and a BIDS sidecar without patient identifiers (-ba y).
FLAGS = ("-b", "y", "-ba", "y", "-z", "y", "-f", BASE_NAME)
EXTENSIONS = (".nii.gz", ".json", ".bval", ".bvec")
SUSPECT = re.compile(
    r"may be missing|missing images|interslice distance varies|unable to equalize|not divisible"
    r"|^error:",
    re.IGNORECASE | re.MULTILINE,
)
TIMEOUT_SECONDS = 600


class ConversionFailed(Exception):
    """dcm2niix ran but made nothing usable; the message is its own account of why."""


@dataclass(frozen=True)
class ConverterRun:
    outputs: tuple[Path, ...]
    log: str
    version: str

    @property
    def suspect_lines(self) -> list[str]:
        return sorted({line.strip() for line in self.log.splitlines() if SUSPECT.search(line)})


def binary() -> str:
    # The wheel's real binary: its console-script wrapper would cost a Python start per series.
    import dcm2niix

    return str(dcm2niix.bin)


@lru_cache(maxsize=1)
def version() -> str:
    result = subprocess.run([binary(), "-v"], capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"v\d+\.\d+\.\d+\S*", result.stdout + result.stderr)
    return match.group(0) if match else "unknown"


def flags() -> str:
    return " ".join(FLAGS)


def convert(dicom_dir: Path, out_dir: Path) -> ConverterRun:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [binary(), *FLAGS, "-o", str(out_dir), str(dicom_dir)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConversionFailed(f"dcm2niix took longer than {TIMEOUT_SECONDS} s") from exc
    log = result.stdout + result.stderr
    outputs = tuple(sorted(p for p in out_dir.iterdir() if p.is_file() and p.name.endswith(EXTENSIONS)))
    if not any(p.name.endswith(".nii.gz") for p in outputs):
        detail = "; ".join(line for line in log.splitlines() if re.search(r"error|warning|unable", line, re.I))
        raise ConversionFailed(f"dcm2niix made no image (exit {result.returncode}): {detail or log.strip()[-500:]}")
    return ConverterRun(outputs, log, version())


def archive_name(output: Path, series_number: int) -> str:
    """``series_e2.nii.gz`` -> ``s005_e2.nii.gz`` for series 5."""
    if not output.name.startswith(BASE_NAME):
        raise ValueError(f"unexpected dcm2niix output {output.name}")
    return f"s{series_number:03d}{output.name[len(BASE_NAME):]}"
