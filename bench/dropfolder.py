"""Benchmark of drop folders: 2,000 DICOM files (the GE and Siemens series of tests/data/dcm_qa_nih,
repeated with new Study, Series and SOP Instance UIDs) imported two ways, in one run:

  (a) ``nora -p bench --import FOLDER``, from the command to the last NIfTI registered;
  (b) the drop folder service: the same kind of folder (its own UIDs) moved into a declared drop
      folder at once, as an instrument's finished folder appears, to the last NIfTI registered.

Run from the repository root:  .venv/bin/python -m bench.dropfolder [--files 2000] [--stable-seconds 2]

It prints both times and the ratio b / a (the target is 1.2 at most). Each way runs on a Northanc of
its own, so neither finds the other's instances in Orthanc. (b) includes the wait for the entries to
stop changing (--stable-seconds) and the poller's interval.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from bench.common import table
from testbed.northanc import Northanc, northanc_settings
from tests.reference import DATASETS

log = logging.getLogger("bench.dropfolder")
PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
SERIES = sorted(p for p in (DATASETS["dcm_qa_nih"] / "In").glob("*/mr_*") if p.is_dir())


def write_copies(target: Path, files: int) -> int:
    """Whole series, each copy under new UIDs, one folder per series, until ``files`` are written;
    the number of series."""
    written = copies = 0
    while written < files:
        for series in SERIES:
            if written >= files:
                break
            study_uid, series_uid = generate_uid(), generate_uid()
            folder = target / f"{series.parent.name}-{series.name}-{copies}"
            folder.mkdir(parents=True)
            for path in sorted(series.glob("*.dcm")):
                dataset = pydicom.dcmread(path)
                dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
                dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                dataset.save_as(folder / path.name)
                written += 1
            copies += 1
    return copies


def run(northanc: Northanc, *args: str) -> None:
    result = northanc.nora(*args)
    if result.returncode != 0:
        raise RuntimeError(f"nora {' '.join(args)}: {result.stderr}")


def converted(northanc: Northanc, series: int, start: float) -> float:
    counts = northanc.wait_for_conversions(series, timeout=1800)
    elapsed = time.perf_counter() - start
    if counts != {"done": series}:
        raise RuntimeError(f"not every series converted: {counts}")
    return elapsed


def by_import(work: Path, files: int) -> tuple[int, float]:
    source = work / "import"
    series = write_copies(source, files)
    northanc = Northanc.start(northanc_settings(work / "var-import"))
    try:
        run(northanc, "-c", "bench")
        start = time.perf_counter()
        run(northanc, "-p", "bench", "--import", str(source))
        return series, converted(northanc, series, start)
    finally:
        northanc.stop()


def by_drop_folder(work: Path, files: int, stable_seconds: float) -> tuple[int, float]:
    written = work / "instrument"
    series = write_copies(written, files)
    drop = work / "drop"
    drop.mkdir()
    northanc = Northanc.start(northanc_settings(work / "var-drop"))
    service = [str(PYTHON), "-m", "nifti_archive.dropfolders.service"]
    try:
        run(northanc, "-c", "bench")
        run(northanc, "--admin", "dropfolder", "add", "bench", str(drop), "--project", "bench",
            "--stable-seconds", str(stable_seconds))
        subprocess.run([*service, "start"], env=northanc.env(), check=True, capture_output=True, timeout=300)
        start = time.perf_counter()
        for folder in sorted(written.iterdir()):
            folder.rename(drop / folder.name)
        return series, converted(northanc, series, start)
    finally:
        subprocess.run([*service, "stop"], env=northanc.env(), check=False, capture_output=True, timeout=300)
        northanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="DICOM files per way (whole series, so a few more)")
    parser.add_argument("--stable-seconds", type=float, default=2.0, help="the drop folder's stable time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-dropfolder-"))
    try:
        series, a = by_import(work, args.files)
        _series, b = by_drop_folder(work, args.files, args.stable_seconds)
        instances = sum(len(list(p.glob("*.dcm"))) for p in (work / "import").iterdir())
        rows = [["what", "seconds", "instances/s"],
                ["(a) nora --import, to the last NIfTI", f"{a:.1f}", f"{instances / a:.0f}"],
                [f"(b) drop folder (stable {args.stable_seconds:g} s), to the last NIfTI", f"{b:.1f}", f"{instances / b:.0f}"]]
        log.info("%d instances in %d series per way\n%s\nratio b / a = %.2f (target <= 1.2)", instances, series, table(rows), b / a)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
