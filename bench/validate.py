"""Benchmark of validating a batch: ``.venv/bin/python -m bench.validate [--studies N] [--database sqlite|postgresql|both]``.

A 5-job batch (FILE patterns and outputs, one job reading an earlier one's output) validated over
every study of a project of N studies x 10 files (what the batchtool's Validate does), as the whole
`nora --validate` process, beside the whole `nora -s` process selecting over the same index in the
same run; the in-process times of both show where the time goes.
Target: at most 2 s for 1,000 studies, and at most 1.5 x the selection.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import median_ms, on_databases, table
from bench.select import FILES_PER_STUDY, fill
from jobs import service
from nifti_archive import db
from nifti_archive.archive import Archive, get_project
from nifti_archive.processes import child_environment
from nifti_archive.query.selection import select_files
from nifti_archive.settings import Settings

log = logging.getLogger("bench.validate")
SELECTION = "t1*/s0*.nii"


def _file(value: str, **extra: str) -> dict[str, Any]:
    return {"type": "FILE", "value": value, **extra}


BATCH: dict[str, Any] = {"name": "five", "jobs": [
    {"job": "stats", "args": {"f1": _file("t1_mprage*/s0*.nii"), "o1": {"type": "OUT", "value": "stats/t1.json"}}},
    {"job": "reorient", "args": {"f1": _file("*flair*/*.nii"), "o1": {"type": "OUT", "value": "work/flair_ras.nii.gz"}}},
    {"job": "stats", "args": {"f1": _file("work/flair_ras.nii.gz"), "f2": _file("dwi_0__/*.nii"),
                              "o1": {"type": "OUT", "value": "stats/flair.json"}}},
    {"job": "bash", "script": 'cat "$f1" "$f2" > "$o1"',
     "args": {"f1": _file("t2_tse*/s*.nii"), "f2": _file("swi*/*.nii"), "o1": {"type": "OUT", "value": "work/t2_swi.txt"}}},
    {"job": "resample", "args": {"f1": _file("tof*/*.nii"), "o1": {"type": "OUT", "value": "work/tof_1mm.nii.gz"},
                                 "n1": {"type": "NUMERIC", "value": 1.0}, "c1": {"type": "OPTION", "value": "linear"}}},
]}


def _process_ms(settings: Settings, *args: str, check: bool = True) -> float:
    ms, _ = median_ms(lambda: subprocess.run([str(Path(sys.executable).with_name("nora")), "-p", "bench", *args],
                                             env=child_environment(settings), check=check, capture_output=True), repeat=3, warmup=1)
    return ms


def measure(name: str, database_url: str, var: Path, studies: int, repeat: int) -> list[list[str]]:
    settings = Settings(var_dir=var, database_url=database_url, archive_root=var / "archive", log_dir=var / "log")
    archive = Archive(settings)
    db.upgrade(archive.engine)
    fill(archive.engine, studies)
    with archive.sessions() as session:
        project = get_project(session, "bench")
        select_ms, selected = median_ms(lambda: select_files(session, project, SELECTION), repeat)
    validate_ms, result = median_ms(lambda: service.validate(archive, "bench", BATCH), repeat)
    failing = sum(1 for target in result.targets if not target.ok)
    select_process_ms = _process_ms(settings, "-s", SELECTION)
    # Exit 2: most studies lack one of the files; the output is complete all the same.
    validate_process_ms = _process_ms(settings, "--validate", json.dumps(BATCH), check=False)
    rows = [
        [name, f"whole `nora -s {SELECTION!r}` process", f"{select_process_ms:.0f}", "1.0", f"{len(selected)} files"],
        [name, "whole `nora --validate` process (5 jobs)", f"{validate_process_ms:.0f}", f"{validate_process_ms / select_process_ms:.2f}",
         f"{len(result.targets)} studies, {failing} failing"],
        [name, "selection (in process)", f"{select_ms:.0f}", f"{select_ms / select_process_ms:.2f}", ""],
        [name, "validation (in process)", f"{validate_ms:.0f}", f"{validate_ms / select_process_ms:.2f}", ""],
    ]
    archive.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [["database", "what", "median ms", "x `nora -s`", "result"]]
    rows += on_databases("bench-validate-", args.database,
                         lambda name, url, var: measure(name, url, var, args.studies, args.repeat))
    log.info("%d studies x %d files; median of %d runs\n%s", args.studies, FILES_PER_STUDY, args.repeat, table(rows))


if __name__ == "__main__":
    main()
