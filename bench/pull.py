"""Benchmark of pulls from a PACS: N studies retrieved by C-MOVE and converted into a project.

Run from the repository root:  .venv/bin/python -m bench.pull [--studies N]

A plain Orthanc serves as the PACS, holding N copies (new UIDs, accession numbers BENCH001...)
of the Siemens study of dcm_qa_nih (4 series, 8 instances). In one run: (a) a second plain
Orthanc moves all N studies to itself from the PACS (``POST /modalities/pacs/move``, the
floor for the DICOM transfer); (b) Northanc pulls the same N studies as a cohort of accession
numbers (C-FIND per row, C-MOVE, ``pull_concurrency`` at a time), and converts them; the time
to the last NIfTI is from the start of the pull.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import table
from nifti_archive.catalog.projects import create_project
from nifti_archive.installation import write_secrets
from nifti_archive.pacs import peers, pull_queue
from nifti_archive.pacs.cohort import cohort_row
from orthanc_plugin.deployment import start_orthanc
from testbed.northanc import Northanc, northanc_settings
from testbed.pacs import Destination, renamed_study, start_orthanc_pacs
from tests.reference import input_files

log = logging.getLogger("bench.pull")
SERIES_PER_STUDY = 4


def copies(studies: int) -> list[bytes]:
    """``studies`` copies of the Siemens study, each with its own UIDs, patient and accession number."""
    sources = [p for p in input_files("dcm_qa_nih") if "20180918Si" in str(p)]
    return [data for number in range(1, studies + 1) for data in renamed_study(sources, f"BENCH{number:03d}")]


def plain_move(work: Path, pacs_port: int, receiver_settings: object, studies: int) -> float:
    receiver = start_orthanc(receiver_settings, with_plugin=False,  # type: ignore[arg-type]
                             extra={"DicomModalities": {"pacs": ["PACS", "127.0.0.1", pacs_port]}})
    try:
        receiver.wait_ready()
        api = receiver.api()
        answers = api.post("/modalities/pacs/query", json.dumps(
            {"Level": "Study", "Query": {"AccessionNumber": "BENCH*"}}).encode())
        start = time.perf_counter()
        api.post(f"/queries/{answers['ID']}/retrieve", json.dumps({"TargetAet": "RECEIVER", "Timeout": 600}).encode())
        elapsed = time.perf_counter() - start
        stored = len(json.loads(api.get("/studies")))
        if stored != studies:
            raise RuntimeError(f"the plain C-MOVE stored {stored} studies, not {studies}")
        return elapsed
    finally:
        receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    try:
        northanc = Northanc.start(northanc_settings(work / "northanc"))
        receiver_settings = dataclasses.replace(northanc_settings(work / "receiver"), orthanc_aet="RECEIVER")
        write_secrets(receiver_settings)
        destinations = {
            "northanc": Destination(northanc.settings.orthanc_aet, northanc.settings.orthanc_dicom_port),
            "receiver": Destination("RECEIVER", receiver_settings.orthanc_dicom_port),
        }
        source = start_orthanc_pacs(work / "pacs", "PACS", destinations)
        try:
            for data in copies(args.studies):
                source.api().store(data)
            floor = plain_move(work, source.settings.orthanc_dicom_port, receiver_settings, args.studies)
            with northanc.archive.unit_of_work() as (session, journal):
                peer = peers.save_peer(session, "pacs", "PACS", "127.0.0.1", source.settings.orthanc_dicom_port)
                peers.register(northanc.rest.put, [peer])
                create_project(session, journal, northanc.archive.layout, "bench")
                rows = [cohort_row(n, {"accession_number": f"BENCH{n:03d}"}) for n in range(1, args.studies + 1)]
                cohort_id = pull_queue.create_cohort(session, "bench", "pacs", "bench", "bench", rows).id
            start = time.perf_counter()
            counts = pull_queue.run_and_report(northanc.archive, cohort_id, work / "report.csv")
            pulled = time.perf_counter() - start
            if counts["done"] != args.studies:
                raise RuntimeError(f"the pull ended with {counts}")
            northanc.wait_for_conversions(args.studies * SERIES_PER_STUDY, timeout=1800)
            last_nifti = time.perf_counter() - start
        finally:
            source.stop()
            northanc.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.studies
    rows_out = [
        ["what", "seconds", "studies/min", "x floor"],
        ["(a) plain Orthanc C-MOVE of all studies (floor)", f"{floor:.1f}", f"{n / floor * 60:.0f}", "1.0"],
        ["(b) Northanc cohort pull, C-FIND + C-MOVE per study", f"{pulled:.1f}", f"{n / pulled * 60:.0f}", f"{pulled / floor:.1f}"],
        ["(b) to the last NIfTI converted", f"{last_nifti:.1f}", f"{n / last_nifti * 60:.0f}", f"{last_nifti / floor:.1f}"],
    ]
    log.info("%d studies x %d series (%d instances)\n%s", n, SERIES_PER_STUDY, n * 8, table(rows_out))


if __name__ == "__main__":
    main()
