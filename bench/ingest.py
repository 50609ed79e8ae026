"""Benchmark of ingestion: both test data sets (tests/data) sent with dcmtk's storescu.

Run from the repository root:  .venv/bin/python -m bench.ingest [--skip-slow-baseline]

In one run it times
  (a) a plain Orthanc (no plugin) accepting the instances over C-STORE,
  (b) dcm2niix alone converting the same series from disk (Northanc's flags),
  (c) Northanc: from the first instance sent to the last NIfTI registered (this includes
      Orthanc's StableAge wait before a series counts as complete),
and prints instances/s for each and the ratio c / (a + b) of the times. It also times (a)
once more without TCP_NODELAY / TCP_BUFFER_LENGTH in the DICOM endpoints' environment, the
cause of Orthanc's slow C-STORE as shipped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from bench.common import table
from nifti_archive.ingest import converter
from nifti_archive.settings import Settings
from orthanc_plugin import deployment
from testbed.northanc import Northanc, by_transfer_syntax, northanc_settings, storescu
from tests.reference import input_files, references

log = logging.getLogger("bench.ingest")


def dicom_count(files: list[Path]) -> int:
    return sum(1 for f in files if not f.name.lower().endswith((".txt", ".nii")))


def send(files: list[Path], port: int, tcp_settings: bool, associations: int) -> float:
    """Seconds for storescu over ``associations`` parallel associations, each taking whole series folders."""
    folders = sorted({f.parent for f in files})
    chunks = [by_transfer_syntax(f for f in files if folders.index(f.parent) % associations == i) for i in range(associations)]
    start = time.perf_counter()
    with ThreadPoolExecutor(associations) as pool:
        list(pool.map(lambda chunk: storescu(chunk, port, tcp_settings=tcp_settings), chunks))
    return time.perf_counter() - start


def plain_orthanc(settings: Settings, files: list[Path], tcp_settings: bool, associations: int = 1) -> float:
    from nifti_archive.installation import write_secrets

    write_secrets(settings)
    original = deployment.DICOM_TCP_ENVIRONMENT.copy()
    if not tcp_settings:
        deployment.DICOM_TCP_ENVIRONMENT.clear()
    try:
        orthanc = deployment.start_orthanc(settings, with_plugin=False)
    finally:
        deployment.DICOM_TCP_ENVIRONMENT.update(original)
    try:
        orthanc.wait_ready()
        return send(files, settings.orthanc_dicom_port, tcp_settings, associations)
    finally:
        orthanc.stop()


def dcm2niix_alone(files: list[Path], work: Path) -> float:
    folders = sorted({f.parent for f in files if not f.name.lower().endswith((".txt", ".nii"))})
    start = time.perf_counter()
    for index, folder in enumerate(folders):
        converter.convert(folder, work / f"out{index}")
    return time.perf_counter() - start


def northanc_run(settings: Settings, files: list[Path], series: int) -> tuple[float, float]:
    """Seconds to the last instance received, and to the last NIfTI registered."""
    northanc = Northanc.start(settings)
    groups = by_transfer_syntax(files)
    try:
        start = time.perf_counter()
        northanc.storescu(groups)
        received = time.perf_counter() - start
        counts = northanc.wait_for_conversions(series, timeout=600)
        elapsed = time.perf_counter() - start
        if counts != {"done": series}:
            raise RuntimeError(f"not every series converted: {counts}")
        return received, elapsed
    finally:
        northanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-slow-baseline", action="store_true", help="skip (a) without the TCP settings")
    parser.add_argument("--stable-age", type=int, default=Settings.stable_age, help="Orthanc's StableAge for (c)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = input_files("dcm_qa") + input_files("dcm_qa_nih")
    instances = dicom_count(files)
    series = len(references("dcm_qa")) + len(references("dcm_qa_nih"))
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        a = plain_orthanc(northanc_settings(work / "a"), files, tcp_settings=True)
        b = dcm2niix_alone(files, work / "b")
        c_received, c = northanc_run(replace(northanc_settings(work / "c"), stable_age=args.stable_age), files, series)
        rows = [["what", "seconds", "instances/s"]]
        rows.append(["(a) plain Orthanc, C-STORE with TCP settings", f"{a:.1f}", f"{instances / a:.0f}"])
        parallel = plain_orthanc(northanc_settings(work / "a4"), files, tcp_settings=True, associations=4)
        rows.append(["    plain Orthanc, C-STORE over 4 parallel associations", f"{parallel:.1f}", f"{instances / parallel:.0f}"])
        if not args.skip_slow_baseline:
            slow = plain_orthanc(northanc_settings(work / "a0"), files, tcp_settings=False)
            rows.append(["    plain Orthanc, C-STORE as shipped (no TCP settings)", f"{slow:.1f}", f"{instances / slow:.0f}"])
        rows.append(["(b) dcm2niix alone from disk", f"{b:.1f}", f"{instances / b:.0f}"])
        rows.append(["    Northanc, C-STORE of all instances (converting meanwhile)", f"{c_received:.1f}",
                     f"{instances / c_received:.0f}"])
        rows.append([f"(c) Northanc, first instance to last NIfTI (StableAge {args.stable_age} s)", f"{c:.1f}",
                     f"{instances / c:.0f}"])
        log.info("%d instances in %d series\n%s\nratio c / (a + b) = %.2f", instances, series, table(rows), c / (a + b))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
