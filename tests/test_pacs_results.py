"""Grouping a PACS's answers by patient, and hiding identities from roles that may not see them."""

from __future__ import annotations

from nifti_archive.pacs.results import group_by_patient, page

ANSWERS = [
    {"PatientID": "B2", "PatientName": "Roe^John", "StudyInstanceUID": "1.2", "StudyDate": "20200101"},
    {"PatientID": "A1", "PatientName": "Doe^Jane", "StudyInstanceUID": "1.1", "StudyDate": "20190101"},
    {"PatientID": "B2", "PatientName": "Roe^John", "StudyInstanceUID": "1.3", "StudyDate": "20210101"},
]


def test_studies_are_grouped_under_their_patient_newest_first() -> None:
    grouped = group_by_patient(ANSWERS, identities=True)
    assert [(p["patient_id"], p["patient_name"]) for p in grouped] == [("A1", "Doe^Jane"), ("B2", "Roe^John")]
    assert [s["study_instance_uid"] for s in grouped[1]["studies"]] == ["1.3", "1.2"]


def test_without_the_right_identities_become_labels() -> None:
    grouped = group_by_patient(ANSWERS, identities=False)
    assert [(p["label"], p["patient_id"], p["patient_name"]) for p in grouped] == [("patient 1", None, None), ("patient 2", None, None)]
    assert "Doe" not in repr(grouped) and "A1" not in repr(grouped)


def test_a_page_keeps_a_patients_studies_together() -> None:
    grouped = group_by_patient(ANSWERS, identities=True)
    assert [p["patient_id"] for p in page(grouped, 1, 10)] == ["B2"]
    assert len(page(grouped, 1, 10)[0]["studies"]) == 2
