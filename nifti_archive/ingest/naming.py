"""Folder names from DICOM attributes by a project's templates.

Templates use Python's format syntax restricted to plain field names from a fixed list
(``{SeriesNumber:03d}_{SeriesDescription}``): no attribute access, no indexing, so a
template can never reach anything but the values given. Results are made safe as folder
names (see layout.FOLDER_ID); empty fields drop out with their separators.

Pseudonymised projects name folders without direct identifiers: subjects by their pseudonym,
studies by default by date and ``{StudyHash}`` (a short keyed hash of the StudyInstanceUID), and
their templates may use no field that names or identifies the patient or the study at the hospital.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping

from nifti_archive.errors import InvalidValue

FIELDS = frozenset(
    {
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "StudyInstanceUID",
        "StudyDescription",
        "SeriesNumber",
        "SeriesDescription",
        "ProtocolName",
        "SeriesInstanceUID",
        "Modality",
        "StudyHash",
    }
)
# Direct identifiers, and ids a hospital can look up: never in a pseudonymised project's folder names.
IDENTIFYING = frozenset(
    {"PatientName", "PatientID", "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID"}
)
# A pseudonymised project names subjects by their pseudonym, which stands for the PatientID.
PSEUDONYM_REPLACES = frozenset({"PatientID"})
PLAIN_STUDY_TEMPLATE = "{StudyDate}_{AccessionNumber}"
PSEUDONYMISED_STUDY_TEMPLATE = "{StudyDate}_{StudyHash}"
STUDY_HASH_FIELD = "StudyHash"
STUDY_HASH_LENGTH = 8
NUMERIC = frozenset({"SeriesNumber"})
MAX_NAME = 128

_formatter = string.Formatter()
_UNSAFE = re.compile(r"[^\w.+-]+")
_SEPARATOR_RUNS = re.compile(r"([_.+-])[_.+-]+")


def template_fields(template: str) -> list[str]:
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise InvalidValue(f"invalid template {template!r}: {exc}") from exc
    fields = []
    for _literal, field, _spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS or conversion is not None:
            raise InvalidValue(f"invalid template field {{{field}}} in {template!r}; allowed: {', '.join(sorted(FIELDS))}")
        fields.append(field)
    if not fields:
        raise InvalidValue(f"template {template!r} uses no field, so every series would get the same name")
    return fields


def identifying_fields(template: str) -> list[str]:
    return sorted(IDENTIFYING & set(template_fields(template)))


def check_template(template: str, pseudonymised: bool = False, replaced: frozenset[str] = frozenset()) -> str:
    """A valid template; in a pseudonymised project one without identifying fields (but ``replaced``)."""
    found = [field for field in identifying_fields(template) if field not in replaced]
    if pseudonymised and found:
        raise InvalidValue(
            f"template {template!r} would put {', '.join(found)} into a pseudonymised project's folder names; "
            f"use fields such as {{StudyDate}}, {{{STUDY_HASH_FIELD}}}, {{SeriesNumber}}, {{SeriesDescription}}"
        )
    return template


def _value(field: str, values: Mapping[str, str]) -> str | int:
    raw = str(values.get(field, "") or "").strip()
    if field in NUMERIC:
        try:
            return int(raw)
        except ValueError:
            return 0
    return raw


def safe_folder_name(text: str) -> str:
    """Letters, digits and ``._+-`` only, no runs of separators, starting with a letter or digit.

    Composed (NFC) first: file systems that normalise names would otherwise see one folder
    where the index has two."""
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFC", text))
    cleaned = _SEPARATOR_RUNS.sub(r"\1", cleaned)
    cleaned = cleaned.strip("_.+-")[:MAX_NAME].rstrip("_.+-")
    return cleaned or "unnamed"


def render(template: str, values: Mapping[str, str]) -> str:
    fields = template_fields(template)
    try:
        text = template.format(**{field: _value(field, values) for field in fields})
    except (ValueError, TypeError) as exc:
        raise InvalidValue(f"template {template!r} cannot format these values: {exc}") from exc
    return safe_folder_name(text)


def same_folder(a: str, b: str) -> bool:
    """Whether two names would be one folder on a case-insensitive file system (an export, a share)."""
    return a.casefold() == b.casefold()


def unique_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted_2``, ``wanted_3``, ... whichever differs from every taken name, case aside."""
    folded = {name.casefold() for name in taken}
    candidate, number = wanted, 2
    while candidate.casefold() in folded:
        candidate = f"{wanted[:MAX_NAME - 8]}_{number}"
        number += 1
    return candidate
