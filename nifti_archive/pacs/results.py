"""A PACS's study answers as the portal shows them: patients with their studies, identities
shown only to roles that may see them (the others get "patient 1", "patient 2", ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

STUDY_FIELDS = {
    "StudyInstanceUID": "study_instance_uid", "StudyDate": "study_date", "StudyDescription": "study_description",
    "AccessionNumber": "accession_number", "ModalitiesInStudy": "modalities",
    "NumberOfStudyRelatedSeries": "series", "NumberOfStudyRelatedInstances": "instances",
}


def group_by_patient(answers: Sequence[dict[str, str]], identities: bool) -> list[dict[str, Any]]:
    """Patients in order of their id, each with its studies newest first."""
    patients: dict[str, list[dict[str, str]]] = {}
    for answer in answers:
        patients.setdefault(answer.get("PatientID", ""), []).append(answer)
    grouped = []
    for number, (patient_id, studies) in enumerate(sorted(patients.items()), start=1):
        grouped.append({
            "label": f"patient {number}",
            "patient_id": patient_id if identities else None,
            "patient_name": studies[0].get("PatientName", "") if identities else None,
            "studies": [
                {field: study.get(key, "") for key, field in STUDY_FIELDS.items()}
                for study in sorted(studies, key=lambda s: s.get("StudyDate", ""), reverse=True)
            ],
        })
    return grouped


def page(grouped: list[dict[str, Any]], offset: int, limit: int) -> list[dict[str, Any]]:
    """A page of patients (a patient's studies stay together)."""
    return grouped[offset : offset + limit]
