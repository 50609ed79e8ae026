"""Quarantined series a project admin can act on: release with a reason, discard, and the later complete series."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nifti_archive.models import AuditEvent, ConversionRequest, ConversionState, File

from .conftest import NORA
from .reference import DATASETS
from .servers.northanc import Northanc, northanc_settings

GE_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0004"
OTHER_GE_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0005"


@pytest.fixture
def northanc(tmp_path: Path) -> Iterator[Northanc]:
    running = Northanc.start(northanc_settings(tmp_path / "var"))
    yield running
    running.stop()


def nora(northanc: Northanc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NORA), *args], env=northanc.env(), capture_output=True, text=True, timeout=600)


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def requests(northanc: Northanc) -> list[ConversionRequest]:
    with northanc.archive.sessions() as session:
        return list(session.scalars(select(ConversionRequest).order_by(ConversionRequest.id)))


def live_files(northanc: Northanc) -> list[File]:
    with northanc.archive.sessions() as session:
        return list(session.scalars(select(File).where(File.trash_id.is_(None)).order_by(File.path)))


def test_release_publishes_with_its_reason_and_the_complete_series_replaces_it(northanc: Northanc) -> None:
    files = sorted(GE_SERIES.glob("*.dcm"))
    held_back = files[70]
    northanc.storescu([f for f in files if f != held_back])
    assert northanc.wait_for_conversions(1) == {"quarantined": 1}
    (request,) = requests(northanc)
    assert request.study_id is not None and request.series_folder

    refused(nora(northanc, "-p", "inbox", "--release", "999", "--reason", "aborted scan"), "no conversion request 999")
    refused(nora(northanc, "-p", "inbox", "--release", str(request.id)), "--reason")
    refused(nora(northanc, "-p", "other", "--release", str(request.id), "--reason", "x"), "unknown project")
    assert live_files(northanc) == [] and requests(northanc)[0].state is ConversionState.QUARANTINED

    out = nora(northanc, "-p", "inbox", "--release", str(request.id), "--reason", "aborted scan, usable for QC")
    assert out.returncode == 0, out.stderr
    released = live_files(northanc)
    assert [Path(f.path).name for f in released] == ["s004.nii.gz"]
    assert all(f.path.startswith(request.series_folder + "/") for f in released)
    assert all("aborted scan, usable for QC" in (f.provenance_note or "") for f in released)
    assert all(f.orthanc_series_id == request.orthanc_series_id and f.instance_count == 149 for f in released)
    with northanc.archive.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "release-quarantined-series")).all()
    assert len(events) == 1 and "aborted scan" in events[0].detail
    assert not any((northanc.settings.archive_root / "inbox" / ".quarantine" / str(request.id)).glob("*"))
    # Released is not quarantined any more: a second release says so and changes nothing.
    refused(nora(northanc, "-p", "inbox", "--release", str(request.id), "--reason", "again"), "released, not quarantined")

    northanc.storescu([held_back])
    northanc.wait_for_conversions(2)
    complete = live_files(northanc)
    assert {f.instance_count for f in complete} == {150}
    assert all(f.provenance_note is None for f in complete)
    assert {f.path for f in released} < {f.path for f in complete}


def test_discard_removes_the_derived_files_and_retry_converts_again(northanc: Northanc) -> None:
    files = sorted(OTHER_GE_SERIES.glob("*.dcm"))
    northanc.storescu(files[:40] + files[41:])
    assert northanc.wait_for_conversions(1) == {"quarantined": 1}
    (request,) = requests(northanc)
    folder = northanc.settings.archive_root / "inbox" / ".quarantine" / str(request.id)
    assert any(folder.glob("*.nii.gz"))

    out = nora(northanc, "-p", "inbox", "--discard", str(request.id), "--reason", "duplicate of a later scan")
    assert out.returncode == 0, out.stderr
    assert not folder.exists() and requests(northanc)[0].state is ConversionState.DISCARDED
    refused(nora(northanc, "-p", "inbox", "--discard", str(request.id), "--reason", "x"), "discarded, not quarantined")

    assert nora(northanc, "--retry", str(request.id)).returncode == 0
    assert northanc.wait_for_conversions(1) == {"quarantined": 1}
    assert any(folder.glob("*.nii.gz"))
