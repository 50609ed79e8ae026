"""Folder names from DICOM attributes by a project's templates.

Templates use Python's format syntax restricted to plain field names from a fixed list
(``{SeriesNumber:03d}_{SeriesDescription}``): no attribute access, no indexing, so a
template can never reach anything but the values given. Results are made safe as folder
names (see layout.FOLDER_ID); empty fields drop out with their separators.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from .errors import InvalidValue

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
    }
)
# Fields that name a person: not allowed where a project replaces patient ids by pseudonyms.
IDENTIFYING = frozenset({"PatientName"})
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


def check_template(template: str, pseudonymised: bool = False) -> str:
    fields = template_fields(template)
    if pseudonymised and IDENTIFYING & set(fields):
        raise InvalidValue(f"template {template!r} would put a patient's name into a pseudonymised project")
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
    """Letters, digits and ``._+-`` only, no runs of separators, starting with a letter or digit."""
    cleaned = _UNSAFE.sub("_", text)
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


def unique_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted_2``, ``wanted_3``, ... whichever is free first."""
    if wanted not in taken:
        return wanted
    number = 2
    while f"{wanted}_{number}" in taken:
        number += 1
    return f"{wanted}_{number}"
