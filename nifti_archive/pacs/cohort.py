"""Cohort lists for pulls from a PACS: the CSV researchers bring, and the report they get back.

A row names a study by ``AccessionNumber``, by ``PatientID`` with ``StudyDate``, or by its
``StudyInstanceUID`` (what the portal's query page selects); optional
``Modality`` and ``SeriesDescription`` columns narrow the series pulled. Column names are
matched without regard to case, spaces or underscores. Every row is checked before anything
is queued: a file with a bad row is refused whole, with each fault's line number.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nifti_archive.errors import InvalidValue
from nifti_archive.pacs.query import dicom_date_range

COLUMNS = {
    "accessionnumber": "accession_number",
    "patientid": "patient_id",
    "studydate": "study_date",
    "modality": "modality",
    "seriesdescription": "series_description",
    "studyinstanceuid": "study_instance_uid",
}
MAX_ROWS = 100_000
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
REPORT_COLUMNS = ("line", "accession_number", "patient_id", "study_date", "state", "attempts", "study_instance_uid",
                  "series", "message")


@dataclass(frozen=True)
class CohortRow:
    line: int
    accession_number: str = ""
    patient_id: str = ""
    # DICOM form (YYYYMMDD), from the CSV's YYYY-MM-DD or YYYYMMDD.
    study_date: str = ""
    modality: str = ""
    series_description: str = ""
    study_instance_uid: str = ""


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "")


def parse_cohort(text: str) -> list[CohortRow]:
    try:
        reader = csv.DictReader(io.StringIO(text), dialect=csv.Sniffer().sniff(text[:4096], delimiters=",;\t"))
    except csv.Error:
        reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [name for name in header if _key(name) not in COLUMNS]
    if unknown:
        raise InvalidValue(f"unknown column(s) {', '.join(unknown)}; columns are AccessionNumber, PatientID, StudyDate, "
                           "Modality, SeriesDescription")
    columns = {name: COLUMNS[_key(name)] for name in header}
    named = set(columns.values())
    if not ({"accession_number", "study_instance_uid"} & named or {"patient_id", "study_date"} <= named):
        raise InvalidValue("the cohort needs an AccessionNumber or StudyInstanceUID column, or PatientID and StudyDate columns")
    rows: list[CohortRow] = []
    faults: list[str] = []
    for record in reader:
        line = reader.line_num
        values = {columns[name]: (value or "").strip() for name, value in record.items() if name in columns}
        if not any(values.values()):
            continue
        try:
            rows.append(cohort_row(line, values))
        except InvalidValue as exc:
            faults.append(f"line {line}: {exc}")
        if len(rows) > MAX_ROWS:
            raise InvalidValue(f"a cohort has at most {MAX_ROWS} rows")
    if faults:
        raise InvalidValue("the cohort has faulty rows, nothing was queued:\n  " + "\n  ".join(faults[:50]))
    if not rows:
        raise InvalidValue("the cohort lists no study")
    return rows


def cohort_row(line: int, values: dict[str, str]) -> CohortRow:
    """One row, checked; ``values`` by CohortRow's field names."""
    accession, patient, day = values.get("accession_number", ""), values.get("patient_id", ""), values.get("study_date", "")
    uid = values.get("study_instance_uid", "")
    if not accession and not uid and not (patient and day):
        raise InvalidValue("needs an AccessionNumber, a StudyInstanceUID, or a PatientID and a StudyDate")
    if uid and not UID.fullmatch(uid):
        raise InvalidValue(f"StudyInstanceUID {uid!r} is not a DICOM UID")
    study_date = dicom_date_range(day) if day else ""
    if "-" in study_date:
        raise InvalidValue(f"StudyDate {day!r} must be one day")
    modality = values.get("modality", "").upper()
    if modality and not modality.isalpha():
        raise InvalidValue(f"Modality {modality!r} is not a DICOM modality")
    for name, value in (("AccessionNumber", accession), ("PatientID", patient)):
        if len(value) > 64 or "\\" in value or "*" in value or "?" in value:
            raise InvalidValue(f"{name} {value!r} must be one exact value of at most 64 characters")
    return CohortRow(line, accession, patient, study_date, modality, values.get("series_description", ""), uid)


def write_report(rows: Iterable[Sequence[object]]) -> str:
    """The report CSV: one line per cohort row, in REPORT_COLUMNS order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()
