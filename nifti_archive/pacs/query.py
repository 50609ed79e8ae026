"""Queries of a PACS (C-FIND), as users type them, validated and turned into DICOM matching keys.

The fields are those a researcher searches by: patient name (``Last^First``, ``*`` and ``?``
wildcards as DICOM defines them), patient id, study date (a day, a range ``A..B``, an open
range ``A..`` or ``..B``, or ``*``), modality, accession number and study description. A
query with nothing that narrows it would ask the PACS for everything it holds: it is refused
unless the caller confirms it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import date
from enum import Enum
from typing import Any

from nifti_archive.errors import InvalidValue


class QueryLevel(Enum):
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"

    @property
    def dicom(self) -> str:
        return self.value.capitalize()


_DAY = r"\d{4}-?\d{2}-?\d{2}"
_DATE_RANGE = re.compile(rf"(?P<low>{_DAY})?\.\.(?P<high>{_DAY})?")
_DATE = re.compile(_DAY)
_MODALITY = re.compile(r"[A-Z]{2,16}")
# DICOM's wildcard matching takes * and ?; a backslash would start a second value.
_FORBIDDEN = re.compile(r"[\\\x00-\x1f]")
MAX_LENGTH = 64
# What each level's answers carry; asked for with empty values, as C-FIND returns what it is asked.
RETURN_KEYS = {
    QueryLevel.PATIENT: ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"),
    QueryLevel.STUDY: ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
                       "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    QueryLevel.SERIES: ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
                        "Modality", "NumberOfSeriesRelatedInstances"),
}


def _day(text: str, field: str) -> date:
    digits = text.replace("-", "")
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise InvalidValue(f"{field}: {text!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from None


def dicom_date_range(text: str) -> str:
    """``2024-03-12`` -> ``20240312``; ``2024-01-01..2024-06-30`` -> ``20240101-20240630``;
    open ranges keep their open end; ``*`` or nothing -> any date (empty)."""
    text = text.strip()
    if text in ("", "*"):
        return ""
    if _DATE.fullmatch(text):
        return _day(text, "study date").strftime("%Y%m%d")
    bounds = _DATE_RANGE.fullmatch(text)
    if not bounds or not (bounds["low"] or bounds["high"]):
        raise InvalidValue(f"study date: {text!r} is not a date, a range A..B (A.. or ..B) or *")
    low = _day(bounds["low"], "study date") if bounds["low"] else None
    high = _day(bounds["high"], "study date") if bounds["high"] else None
    if low and high and low > high:
        raise InvalidValue(f"study date: the range {text!r} ends before it starts")
    return f"{low.strftime('%Y%m%d') if low else ''}-{high.strftime('%Y%m%d') if high else ''}"


def _text(value: str, field: str) -> str:
    value = value.strip()
    if len(value) > MAX_LENGTH or _FORBIDDEN.search(value):
        raise InvalidValue(f"{field}: at most {MAX_LENGTH} characters, no backslash or control characters")
    return value


@dataclass(frozen=True)
class PacsQuery:
    level: QueryLevel = QueryLevel.STUDY
    patient_name: str = ""
    patient_id: str = ""
    # DICOM's form, from dicom_date_range: YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-, or "".
    study_date: str = ""
    modality: str = ""
    accession_number: str = ""
    study_description: str = ""
    study_instance_uid: str = ""

    def narrows(self) -> bool:
        """Whether anything but the modality limits the answers (a modality alone is most of a PACS)."""
        wildcard_only = re.compile(r"[*?]*")
        return any(
            not wildcard_only.fullmatch(getattr(self, f.name))
            for f in fields(self) if f.name not in ("level", "modality")
        )

    def orthanc_body(self) -> dict[str, Any]:
        """The body of Orthanc's ``POST /modalities/{peer}/query``."""
        query = {key: "" for key in RETURN_KEYS[self.level]}
        # A study's modalities are ModalitiesInStudy; a series has one Modality.
        modality_key = "Modality" if self.level is QueryLevel.SERIES else "ModalitiesInStudy"
        matching = {
            "PatientName": self.patient_name, "PatientID": self.patient_id, "StudyDate": self.study_date,
            "AccessionNumber": self.accession_number, "StudyDescription": self.study_description,
            "StudyInstanceUID": self.study_instance_uid, modality_key: self.modality,
        }
        allowed = {QueryLevel.PATIENT: {"PatientName", "PatientID"}}.get(self.level)
        for key, value in matching.items():
            if value and (allowed is None or key in allowed):
                query[key] = value
        return {"Level": self.level.dicom, "Query": query}


def parse_query(values: dict[str, str], confirm_broad: bool = False) -> PacsQuery:
    """A query from a form or the command line: field names as in PacsQuery, every value text."""
    unknown = set(values) - {f.name for f in fields(PacsQuery)}
    if unknown:
        raise InvalidValue(f"unknown query field(s) {', '.join(sorted(unknown))}")
    try:
        level = QueryLevel(values.get("level", "study").lower())
    except ValueError:
        raise InvalidValue("level is patient, study or series") from None
    modality = values.get("modality", "").strip().upper()
    if modality and not _MODALITY.fullmatch(modality):
        raise InvalidValue(f"modality: {modality!r} is not a DICOM modality (MR, CT, PT, ...)")
    query = PacsQuery(
        level=level,
        patient_name=_text(values.get("patient_name", ""), "patient name"),
        patient_id=_text(values.get("patient_id", ""), "patient id"),
        study_date=dicom_date_range(values.get("study_date", "")),
        modality=modality,
        accession_number=_text(values.get("accession_number", ""), "accession number"),
        study_description=_text(values.get("study_description", ""), "study description"),
        study_instance_uid=_text(values.get("study_instance_uid", ""), "study instance UID"),
    )
    if level is QueryLevel.SERIES and not query.study_instance_uid:
        raise InvalidValue("a series query names its study (study_instance_uid)")
    if not query.narrows() and not confirm_broad:
        raise InvalidValue(
            "the query names no patient, id, date, accession number or description: it would list the whole "
            "PACS; narrow it, or confirm that you mean it"
        )
    return query
