"""PACS queries as users type them: dates, ranges, wildcards, narrowing, and what goes to C-FIND."""

from __future__ import annotations

import pytest

from nifti_archive.errors import InvalidValue
from nifti_archive.pacs.query import QueryLevel, dicom_date_range, parse_query


@pytest.mark.parametrize(("typed", "dicom"), [
    ("2024-03-12", "20240312"),
    ("20240312", "20240312"),
    ("2024-01-01..2024-06-30", "20240101-20240630"),
    ("2024-01-01..", "20240101-"),
    ("..20240630", "-20240630"),
    ("*", ""),
    ("", ""),
])
def test_dates_and_ranges_become_dicom_ranges(typed: str, dicom: str) -> None:
    assert dicom_date_range(typed) == dicom


@pytest.mark.parametrize(("typed", "message"), [
    ("2024-13-01", "is not a date"),
    ("2024-02-30", "is not a date"),
    ("last week", "is not a date, a range"),
    ("..", "is not a date, a range"),
    ("2024-06-30..2024-01-01", "ends before it starts"),
])
def test_malformed_dates_are_refused_with_the_reason(typed: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        dicom_date_range(typed)


def test_a_study_query_asks_for_its_return_keys_and_matches_on_what_was_typed() -> None:
    query = parse_query({"patient_name": "Doe^J*", "study_date": "2020-01-01..2020-12-31", "modality": "mr"})
    body = query.orthanc_body()
    assert body["Level"] == "Study"
    assert body["Query"]["PatientName"] == "Doe^J*"
    assert body["Query"]["StudyDate"] == "20200101-20201231"
    assert body["Query"]["ModalitiesInStudy"] == "MR"
    assert body["Query"]["StudyInstanceUID"] == "" and body["Query"]["AccessionNumber"] == ""


def test_patient_and_series_levels_use_their_own_keys() -> None:
    patient = parse_query({"level": "patient", "patient_id": "12345", "study_date": "2020-01-01"}).orthanc_body()
    assert patient["Level"] == "Patient" and patient["Query"]["PatientID"] == "12345"
    assert "StudyDate" not in patient["Query"], "a patient-level C-FIND has no study keys"
    series = parse_query({"level": "series", "study_instance_uid": "1.2.3", "modality": "CT"}).orthanc_body()
    assert series["Query"]["Modality"] == "CT" and "ModalitiesInStudy" not in series["Query"]
    with pytest.raises(InvalidValue, match="names its study"):
        parse_query({"level": "series", "patient_id": "1"})


@pytest.mark.parametrize("values", [{}, {"modality": "MR"}, {"patient_name": "*"}, {"study_date": "*"}])
def test_a_query_that_narrows_nothing_needs_confirmation(values: dict[str, str]) -> None:
    with pytest.raises(InvalidValue, match="whole PACS"):
        parse_query(values)
    assert parse_query(values, confirm_broad=True).level is QueryLevel.STUDY


@pytest.mark.parametrize(("values", "message"), [
    ({"patient_name": "Doe\\Roe"}, "no backslash"),
    ({"patient_id": "x" * 65}, "at most 64"),
    ({"modality": "M R"}, "not a DICOM modality"),
    ({"level": "image", "patient_id": "1"}, "level is patient, study or series"),
    ({"patientname": "Doe"}, "unknown query field"),
])
def test_bad_fields_are_refused_by_name(values: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        parse_query(values)
