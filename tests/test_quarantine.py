"""Quarantined series a project admin can act on: release with a reason, discard, and the later complete series."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from nifti_archive.models import AuditEvent, ConversionReason, ConversionRequest, ConversionState, File, Project
from portal.app import create_app
from testbed.northanc import Northanc
from tests.portal_site import Site, SiteTemplate, copy_site
from tests.reference import DATASETS
from tests.test_portal_access import log_in

GE_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0004"
OTHER_GE_SERIES = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0005"


def nora(northanc: Northanc, *args: str) -> subprocess.CompletedProcess[str]:
    return northanc.nora(*args)


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


@pytest.fixture
def held_site(tmp_path: Path, portal_site: SiteTemplate) -> Iterator[tuple[FlaskClient, Site, int]]:
    """The portal's test site with one series of P01's study held in quarantine, as ingestion leaves it."""
    site = copy_site(portal_site, tmp_path / "var", orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    archive = site.archive
    with archive.unit_of_work() as (session, _journal):
        request = ConversionRequest(
            orthanc_series_id="orthanc-series-1", instances_hash="h", instance_count=149, series_instance_uid="1.2.3.4",
            state=ConversionState.QUARANTINED, reason=ConversionReason.STABLE_SERIES, message="dcm2niix: missing images",
            project_id=session.scalar(select(Project.id).where(Project.name == "alpha")),
            study_id=site.studies["P01"], series_folder="004_epi",
        )
        session.add(request)
        session.flush()
        request_id = request.id
    folder = archive.settings.archive_root / "alpha" / ".quarantine" / str(request_id)
    folder.mkdir(parents=True)
    (folder / "s004.nii.gz").write_bytes(b"partial volume")
    yield create_app(archive.settings, archive).test_client(), site, request_id
    archive.close()


def test_the_portal_lists_held_series_and_only_admins_release_them(held_site: tuple[FlaskClient, Site, int]) -> None:
    client, site, request_id = held_site
    url = "/api/v1/projects/alpha/conversions"
    for role in ("viewer", "editor", "admin"):
        log_in(client, role)
        (row,) = client.get(url).json["conversions"]
        assert row["id"] == request_id and row["reason"] == "dcm2niix: missing images" and row["subject"] == "P01"
    csrf = log_in(client, "editor")
    answer = client.post(f"{url}/{request_id}/release", json={"reason": "usable"}, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 403
    csrf = log_in(client, "admin")
    headers = {"X-CSRF-Token": csrf}
    assert client.post(f"{url}/999/release", json={"reason": "x"}, headers=headers).status_code == 404
    assert client.post(f"{url}/{request_id}/release", json={}, headers=headers).json["error"].startswith("send JSON")
    answer = client.post(f"{url}/{request_id}/release", json={"reason": "usable for QC"}, headers=headers)
    assert answer.status_code == 200 and answer.json == {"id": request_id, "state": "released", "files": 1}
    files = client.get(f"/api/v1/projects/alpha/studies/{site.studies['P01']}").json["files"]
    released = [f for f in files if f["path"] == "004_epi/s004.nii.gz"]
    assert len(released) == 1
    assert client.get(url).json["conversions"] == []
    again = client.post(f"{url}/{request_id}/discard", json={"reason": "x"}, headers=headers)
    assert again.status_code == 400 and "released, not quarantined" in again.json["error"]
