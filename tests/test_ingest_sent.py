"""A new series sent over DICOM is converted once its senders are done, without waiting for
Orthanc's StableAge; instances that arrive another way still wait for it.

Orthanc runs with a StableAge far longer than any test, so whatever is converted here was
enqueued because its sender closed the association.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from nifti_archive.models import ConversionReason, ConversionRequest
from testbed.northanc import Northanc, northanc_settings
from tests.reference import compare, references, sidecar_key
from tests.test_ingest import GE_SERIES, MOSAIC, live_files, project_of

NEVER_STABLE = 3600


@pytest.fixture
def patient_northanc(tmp_path: Path) -> Iterator[Northanc]:
    running = Northanc.start(replace(northanc_settings(tmp_path / "var"), stable_age=NEVER_STABLE))
    yield running
    running.stop()


def requests(northanc: Northanc) -> list[ConversionRequest]:
    with northanc.archive.sessions() as session:
        return list(session.scalars(select(ConversionRequest).order_by(ConversionRequest.id)))


def test_series_converts_when_its_sender_is_done(patient_northanc: Northanc) -> None:
    patient_northanc.storescu(sorted(GE_SERIES.glob("*.dcm")))
    assert patient_northanc.wait_for_conversions(1) == {"done": 1}
    [request] = requests(patient_northanc)
    assert (request.reason, request.instance_count) == (ConversionReason.SENT, 150)
    [(subject, study, path, record)] = live_files(patient_northanc, ".nii.gz")
    folder = patient_northanc.settings.archive_root / project_of(patient_northanc, record) / subject / study
    sidecar = json.loads((folder / path.replace(".nii.gz", ".json")).read_text())
    reference = references("dcm_qa_nih")[sidecar_key(sidecar)]
    assert compare(folder / path, sidecar, reference) == []


def test_series_uploaded_over_rest_waits_for_stable_age(patient_northanc: Northanc) -> None:
    for path in sorted(MOSAIC.glob("MR*")):
        patient_northanc.rest.store(path.read_bytes())
    # A series sent over DICOM afterwards: once it is converted, the upload was looked at too.
    patient_northanc.storescu(sorted(GE_SERIES.glob("*.dcm")))
    patient_northanc.wait_for_conversions(1)
    [request] = requests(patient_northanc)
    assert request.instance_count == 150 and request.reason is ConversionReason.SENT
    assert [r.orthanc_series_id for _s, _t, _p, r in live_files(patient_northanc, ".nii.gz")] == [request.orthanc_series_id]


def test_series_announced_incomplete_waits_for_stable_age(patient_northanc: Northanc) -> None:
    files = sorted(GE_SERIES.glob("*.dcm"))
    patient_northanc.storescu(files[:70])
    patient_northanc.storescu(sorted(MOSAIC.glob("MR*")))
    patient_northanc.wait_for_conversions(1)
    assert [(r.reason, r.instance_count) for r in requests(patient_northanc)] == [(ConversionReason.SENT, 2)]
