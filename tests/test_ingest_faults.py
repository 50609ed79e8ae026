"""Orthanc killed in the middle of conversions: after a restart every series is converted
exactly once. Runs on PostgreSQL, where the queue claims rows with SKIP LOCKED."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from nifti_archive.models import ConversionRequest, ConversionState, File
from testbed.northanc import Northanc, northanc_settings
from testbed.postgres import PostgresServer
from tests.conftest import postgresql_everywhere
from tests.polling import wait_until
from tests.reference import input_files, references

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["orthanc-sqlite", "orthanc-postgresql"])
def northanc_on_postgres(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer, postgres_template: str
) -> Iterator[Northanc]:
    """The archive's index in PostgreSQL; Orthanc's in its own SQLite, then in PostgreSQL too."""
    if request.param == "orthanc-postgresql":
        databases = postgresql_everywhere(request)
    else:
        databases = {"database_url": postgres.create_database(f"t_{uuid.uuid4().hex[:12]}", template=postgres_template)}
    # One worker, so that conversions follow each other and one is surely under way when we kill.
    settings = replace(northanc_settings(tmp_path / "var", **databases), conversion_workers=1)
    running = Northanc.start(settings)
    yield running
    running.stop()


def wait_until_converting(northanc: Northanc, timeout: float = 120.0) -> None:
    def under_way() -> bool:
        with northanc.archive.sessions() as session:
            states = Counter(session.scalars(select(ConversionRequest.state)))
        return bool(states[ConversionState.RUNNING] and states[ConversionState.PENDING])

    wait_until(under_way, timeout, "never saw a conversion under way", interval=0.02)


def test_killed_mid_conversion_every_series_converts_exactly_once(northanc_on_postgres: Northanc) -> None:
    northanc = northanc_on_postgres
    series = len(references("dcm_qa_nih"))
    northanc.storescu(input_files("dcm_qa_nih"))
    wait_until_converting(northanc)
    northanc.orthanc.kill()
    with northanc.archive.sessions() as session:
        # Orthanc is dead: the request it still held is the one the restart must take up again.
        interrupted = set(session.scalars(select(ConversionRequest.id).where(ConversionRequest.state == ConversionState.RUNNING)))
    assert len(interrupted) == 1, interrupted

    northanc.restart()
    assert northanc.wait_for_conversions(series) == {"done": series}
    with northanc.archive.sessions() as session:
        requests = session.scalars(select(ConversionRequest)).all()
        live = session.scalars(select(File).where(File.trash_id.is_(None))).all()
    assert len({r.orthanc_series_id for r in requests}) == series
    per_series = Counter(f.orthanc_series_id for f in live if f.path.endswith(".nii.gz"))
    assert sorted(per_series.values()) == [1] * series
    on_disk = {
        p.relative_to(northanc.settings.archive_root).as_posix()
        for p in northanc.settings.archive_root.rglob("*")
        if p.is_file() and ".trash" not in p.parts
    }
    assert len(on_disk) == len(live)  # no half-written leftovers beside the registered files
    # The interrupted request ran a second time, every other one once.
    assert {r.id: r.attempts for r in requests} == {r.id: 2 if r.id in interrupted else 1 for r in requests}
