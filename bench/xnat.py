"""Benchmark of the XNAT-compatible REST surface, driven by XNAT's own client (xnatpy), beside
the portal's /api/v1 doing the same in the same run.

Run from the repository root:  .venv/bin/python -m bench.xnat [--experiments N] [--runs N]

The index is the embedded default (SQLite) served by gunicorn as ``setup.sh run`` serves it: one
project of ``--experiments`` studies (four per subject), each a series folder with a NIfTI and
its dcm2niix sidecar, one of them a 256x256x176 volume. Measured, as medians of ``--runs``:
- listing: xnatpy's ``project.experiments`` (one request, then a Python object per experiment),
  beside ``GET /api/v1/projects/<p>/studies`` paged through (500 rows a page, its largest);
- download: xnatpy's ``scan.download_dir`` (the scan's resources as a zip, unpacked) and
  ``file.download`` of the 176-slice NIfTI, beside a plain streamed ``GET /api/v1/files/<id>/content``;
  and the scan's zip streamed on its own, to tell the server's part from xnatpy's unpacking
  (download_dir writes the zip to a temporary file, then extracts it: twice the disk writes).
Targets: listing within 2 s; a download within 1.2 x the plain file transfer.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
import xnat

from bench.common import median_ms, table
from bench.portal import phantom
from nifti_archive import accounts, db
from nifti_archive.archive import Archive
from nifti_archive.catalog.projects import create_project
from nifti_archive.catalog.registration import add_files, ensure_study
from nifti_archive.installation import write_secrets
from nifti_archive.settings import Settings
from testbed.portal import start_portal

log = logging.getLogger("bench.xnat")
PASSWORD = "benchmark password"
PROJECT = "bench"
VOLUME = "VOLUME"
# The study table's largest page: a script lists a large project page by page.
API_PAGE = 500
SIDECAR = {"Modality": "MR", "SeriesDescription": "t1_mprage", "Manufacturer": "Siemens"}


def prepare(var: Path, experiments: int) -> tuple[Archive, str, int]:
    """The project, a viewer with a token, and the id of the large volume's file."""
    settings = Settings(var_dir=var, database_url=f"sqlite:///{var / 'archive.sqlite'}", archive_root=var / "archive",
                        log_dir=var / "log", secure_cookies=False)
    archive = Archive(settings)
    db.upgrade(archive.engine)
    write_secrets(settings)
    small = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4))
    with archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, archive.layout, PROJECT)
        user, _password = accounts.create_user(session, "bench")
        accounts.set_password(user, PASSWORD)
        accounts.grant_role(session, user, project, accounts.parse_role("viewer"))
        token = accounts.create_token(session, user, "bench").secret
        paths = []
        for index in range(experiments):
            subject, study = (VOLUME, "S1") if index == 0 else (f"P{index // 4:04d}", f"S{index % 4}")
            ensure_study(session, project, subject, study)
            folder = archive.layout.study_dir(PROJECT, subject, study) / "001_t1"
            folder.mkdir(parents=True)
            if index == 0:
                phantom(folder / "t1.nii.gz")
            else:
                nib.save(small, folder / "t1.nii.gz")
            (folder / "t1.json").write_text(json.dumps(SIDECAR))
            paths += [folder / "t1.nii.gz", folder / "t1.json"]
        files = add_files(session, archive.layout, project, paths)
        volume_id = files[0].id
    return archive, token, volume_id


def streamed(url: str, headers: dict[str, str], target: Path) -> None:
    with requests.get(url, headers=headers, stream=True, timeout=300) as answer:
        answer.raise_for_status()
        with target.open("wb") as sink:
            for block in answer.iter_content(1 << 20):
                sink.write(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-xnat-"))
    try:
        archive, token, volume_id = prepare(work / "var", args.experiments)
        portal = start_portal(archive.settings, workers=args.workers)
        bearer = {"Authorization": f"Bearer {token}"}
        try:
            connect_ms, session = median_ms(lambda: xnat.connect(portal.url, user="bench", password=PASSWORD, loglevel="ERROR"),
                                            1, warmup=0)
            with session:
                project = session.projects[PROJECT]

                def xnat_listing() -> int:
                    session.clearcache()
                    return len(session.projects[PROJECT].experiments)

                def api_listing() -> int:
                    rows: list[object] = []
                    while len(rows) < args.experiments:
                        answer = requests.get(f"{portal.url}/api/v1/projects/{PROJECT}/studies", headers=bearer, timeout=60,
                                              params={"offset": len(rows), "limit": API_PAGE})
                        answer.raise_for_status()
                        rows += answer.json()["rows"]
                    return len(rows)

                list_xnat, listed = median_ms(xnat_listing, args.runs)
                list_api, listed_api = median_ms(api_listing, args.runs)
                if listed != args.experiments or listed_api != args.experiments:
                    raise RuntimeError(f"listed {listed} by xnatpy, {listed_api} by /api/v1, expected {args.experiments}")
                experiment = next(e for e in project.experiments.values() if e.label.startswith(VOLUME))
                scan = experiment.scans["001_t1"]
                volume = scan.resources["NIFTI"].files["t1.nii.gz"]
                size = archive.layout.study_dir(PROJECT, VOLUME, "S1").joinpath("001_t1", "t1.nii.gz").stat().st_size
                plain_ms, _ = median_ms(
                    lambda: streamed(f"{portal.url}/api/v1/files/{volume_id}/content", bearer, work / "plain.nii.gz"), args.runs)
                file_ms, _ = median_ms(lambda: volume.download(str(work / "xnat.nii.gz"), verbose=False), args.runs)

                def scan_download() -> None:
                    shutil.rmtree(work / "scan", ignore_errors=True)
                    scan.download_dir(str(work / "scan"), verbose=False)

                scan_ms, _ = median_ms(scan_download, args.runs)
                zip_url = f"{portal.url}/data/experiments/{experiment.id}/scans/001_t1/files?format=zip"
                zip_ms, _ = median_ms(lambda: streamed(zip_url, bearer, work / "scan.zip"), args.runs)
                if (work / "xnat.nii.gz").read_bytes() != (work / "plain.nii.gz").read_bytes():
                    raise RuntimeError("xnatpy's download differs from the file")
        finally:
            portal.stop()
        archive.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ["measure", "median ms", "x /api/v1", "target"],
        ["xnatpy connect (log-in, schema, classes)", f"{connect_ms:.0f}", "", ""],
        [f"xnatpy project.experiments ({args.experiments})", f"{list_xnat:.0f}", f"{list_xnat / list_api:.2f}",
         "<= 2000 ms " + ("met" if list_xnat <= 2000 else "MISSED")],
        [f"/api/v1 studies, {args.experiments} in pages of {API_PAGE}", f"{list_api:.0f}", "1.00", ""],
        [f"xnatpy file.download, 176-slice NIfTI ({size / 1e6:.1f} MB)", f"{file_ms:.0f}", f"{file_ms / plain_ms:.2f}",
         "<= 1.2 x " + ("met" if file_ms <= 1.2 * plain_ms else "MISSED")],
        ["xnatpy scan.download_dir (zip of NIFTI, unpacked)", f"{scan_ms:.0f}", f"{scan_ms / plain_ms:.2f}",
         "<= 1.2 x " + ("met" if scan_ms <= 1.2 * plain_ms else "MISSED")],
        ["the scan's zip alone, streamed (what the server sends)", f"{zip_ms:.0f}", f"{zip_ms / plain_ms:.2f}",
         "<= 1.2 x " + ("met" if zip_ms <= 1.2 * plain_ms else "MISSED")],
        ["/api/v1 files/<id>/content, streamed (floor)", f"{plain_ms:.0f}", "1.00", ""],
    ]
    log.info("%d experiments, %d runs each, %d gunicorn workers (SQLite index)\n%s", args.experiments, args.runs, args.workers, table(rows))


if __name__ == "__main__":
    main()
