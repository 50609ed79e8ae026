"""Benchmark of `nora --select` on an index of 10,000 studies x 10 files, SQLite and PostgreSQL.

Run from the repository root:  .venv/bin/python -m bench.select [--studies N]

For each database it fills a fresh archive index, then prints the median time of the
selection the command runs (prefix pattern, infix pattern, filter-bar query) beside a bare
``SELECT count(*) FROM files`` over the same table as the floor, and the ratio to it.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

from bench.common import median_ms, table
from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.models import File, Project, Study, StudyTag, Subject
from nifti_archive.processes import child_environment
from nifti_archive.query.selection import select_files
from nifti_archive.settings import Settings
from testbed.postgres import start_postgres

log = logging.getLogger("bench.select")

PROTOCOLS = ["t1_mprage", "t1_se", "t2_tse", "t2_flair", "dwi", "bold_rest", "swi", "tof", "pd", "asl", "localizer",
             "fieldmap", "t2star", "mpr_t1_sag"]
DESCRIPTIONS = ["MRI brain", "MRI brain with contrast", "CT head", "MRI spine", "MRI knee", "brain follow-up"]
FILES_PER_STUDY = 10
QUERIES = [
    ("prefix pattern", "t1*/s0*.nii"),
    ("infix pattern", "*flair*"),
    ("filter bar", "STAG:control & SDESC:brain"),
]


def fill(engine: Engine, studies: int, seed: int = 7) -> None:
    """A project with ``studies`` studies (two per subject), ten series each, some tagged."""
    rng = random.Random(seed)
    with engine.begin() as connection:
        project_id = connection.execute(insert(Project).values(name="bench", description="", pseudonymise=False,
                                                                created_at=func.now()).returning(Project.id)).scalar_one()
        subjects = [{"id": i + 1, "project_id": project_id, "patient_id": f"P{i + 1:06d}", "created_at": None}
                    for i in range(studies // 2)]
        connection.execute(insert(Subject).values(created_at=func.now()), [
            {k: v for k, v in s.items() if k != "created_at"} for s in subjects])
        study_rows, tag_rows, file_rows = [], [], []
        for index in range(studies):
            study_pk = index + 1
            study_rows.append({"id": study_pk, "subject_id": index // 2 + 1, "study_id": f"S{index % 2 + 1}",
                               "description": rng.choice(DESCRIPTIONS), "accession_number": "",
                               "study_instance_uid": ""})
            if rng.random() < 0.2:
                tag_rows.append({"study_id": study_pk, "tag": "control"})
            for series, protocol in enumerate(rng.sample(PROTOCOLS, FILES_PER_STUDY), start=2):
                file_rows.append({"study_id": study_pk, "path": f"{protocol}_{series:03d}/s{series:03d}.nii",
                                  "kind": "nifti", "size": 1, "sha256": "0" * 64})
        connection.execute(insert(Study).values(created_at=func.now()), study_rows)
        connection.execute(insert(StudyTag), tag_rows)
        connection.execute(insert(File).values(created_at=func.now()), file_rows)
    if engine.dialect.name == "postgresql":
        # The rows above carry their own ids, which PostgreSQL's sequences do not see: rows added
        # later (by the benchmarks' own set-up) would collide with them.
        with engine.begin() as connection:
            for name in ("subjects", "studies"):
                connection.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")


def measure(name: str, database_url: str, var: Path, studies: int, repeat: int) -> list[list[str]]:
    settings = Settings(var_dir=var, database_url=database_url, archive_root=var / "archive", log_dir=var / "log")
    archive = Archive(settings)
    db.upgrade(archive.engine)
    fill(archive.engine, studies)
    rows = []
    with archive.sessions() as session:
        project = session.scalars(select(Project)).one()
        floor_ms, total = median_ms(lambda: session.scalar(select(func.count()).select_from(File)), repeat)
        rows.append([name, "SELECT count(*) FROM files (floor)", f"{floor_ms:.1f}", "1.0", str(total)])
        for label, expression in QUERIES:
            ms, result = median_ms(lambda expression=expression: select_files(session, project, expression), repeat)
            rows.append([name, f"--select {expression!r} ({label})", f"{ms:.1f}", f"{ms / floor_ms:.1f}",
                         str(len(result))])
    cli_ms, _ = median_ms(lambda: subprocess.run(
        [str(Path(sys.executable).with_name("nora")), "-p", "bench", "-s", QUERIES[0][1]],
        env=child_environment(settings),
        check=True, capture_output=True), repeat=3, warmup=1)
    rows.append([name, f"whole `nora -s {QUERIES[0][1]!r}` process", f"{cli_ms:.0f}", "", ""])
    archive.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-select-"))
    server = start_postgres()
    try:
        rows = [["database", "query", "median ms", "x floor", "rows"]]
        rows += measure("sqlite", f"sqlite:///{work / 'index.sqlite'}", work / "sqlite", args.studies, args.repeat)
        url = server.create_database("bench")
        rows += measure("postgresql", url, work / "pg", args.studies, args.repeat)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    log.info("%d studies x %d files; median of %d runs\n%s", args.studies, FILES_PER_STUDY, args.repeat, table(rows))


if __name__ == "__main__":
    main()
