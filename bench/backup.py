"""Benchmark of ``nora --admin backup`` and ``restore`` on SQLite and PostgreSQL.

Run from the repository root:  .venv/bin/python -m bench.backup [--studies N] [--file-kib K]
[--database sqlite|postgresql|both]

The index is bench/select's project (``--studies`` studies of ten files each); every file is
written to the tree with ``--file-kib`` KiB of content and its size and checksum go into the
index, so the backup's checks hold. In one run, for each database, it times a backup that copies
the files, one that hard-links them, and a restore of the copied one into a wiped archive
(staging with every checksum checked, then the database), and prints files/s and MiB/s, beside
`cp -a` and `cp -al` of the same tree (no index, manifest or checksums) as the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, text, update

from bench.common import on_databases, table
from bench.select import fill
from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.layout import Location
from nifti_archive.maintenance import backup
from nifti_archive.models import File, Project, Study, Subject
from nifti_archive.settings import Settings

log = logging.getLogger("bench.backup")


def write_tree(archive: Archive, file_kib: int) -> tuple[int, int]:
    """Each indexed file on disk (the same bytes in each), the index given their size and checksum."""
    content = os.urandom(file_kib * 1024)
    with archive.sessions() as session:
        rows = session.execute(
            select(Project.name, Subject.patient_id, Study.study_id, File.path)
            .join(Study, Study.id == File.study_id).join(Subject, Subject.id == Study.subject_id)
            .join(Project, Project.id == Subject.project_id)
        ).all()
    for row in rows:
        path = archive.layout.file_path(Location(*row))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    with archive.sessions() as session, session.begin():
        session.execute(update(File).values(size=len(content), sha256=hashlib.sha256(content).hexdigest()))
    return len(rows), len(rows) * len(content)


def wipe(archive: Archive) -> None:
    if archive.engine.dialect.name == "sqlite":
        archive.engine.dispose()
        Path(str(archive.engine.url.database)).unlink()
    else:
        with archive.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        archive.engine.dispose()
    shutil.rmtree(archive.settings.archive_root)


def measure(name: str, database_url: str, var: Path, studies: int, file_kib: int) -> list[list[str]]:
    settings = Settings(var_dir=var, database_url=database_url, archive_root=var / "archive", log_dir=var / "log")
    archive = Archive(settings)
    db.upgrade(archive.engine)
    fill(archive.engine, studies)
    files, size = write_tree(archive, file_kib)
    seconds: dict[str, float] = {}

    def timed(label: str, work: Callable[[], object]) -> None:
        start = time.perf_counter()
        work()
        seconds[label] = time.perf_counter() - start

    # The baseline: the same tree copied and hard-linked by cp, with no index, manifest or checksum.
    root = settings.archive_root
    timed("cp -a", lambda: subprocess.run(["cp", "-a", str(root), str(var.parent / f"{name}-cp")], check=True))
    timed("cp -al", lambda: subprocess.run(["cp", "-al", str(root), str(var.parent / f"{name}-cpl")], check=True))
    timed("backup (copy)", lambda: backup.backup(archive, var.parent / f"{name}-copy", link=False))
    timed("backup (--link)", lambda: backup.backup(archive, var.parent / f"{name}-link", link=True))
    wipe(archive)
    timed("restore", lambda: backup.restore(archive, var.parent / f"{name}-copy", force=False))
    baseline = {"cp -a": "cp -a", "cp -al": "cp -al", "backup (copy)": "cp -a", "backup (--link)": "cp -al", "restore": "cp -a"}
    rows = [
        [name, label, str(files), f"{size / 2**20:.0f}", f"{took:.2f}", f"{files / took:.0f}", f"{size / 2**20 / took:.0f}",
         f"{took / seconds[baseline[label]]:.1f}"]
        for label, took in seconds.items()
    ]
    archive.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200, help="studies of ten files each")
    parser.add_argument("--file-kib", type=int, default=256, help="each file's size in KiB")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    rows = [["database", "step", "files", "MiB", "seconds", "files/s", "MiB/s", "x cp"]]
    rows += on_databases("bench-backup-", args.database,
                         lambda name, url, var: measure(name, url, var / "var", args.studies, args.file_kib))
    log.info("backup and restore of %d studies, files of %d KiB:\n%s", args.studies, args.file_kib, table(rows))


if __name__ == "__main__":
    main()
