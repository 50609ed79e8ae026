"""A reading's configuration as the API and the configuration page send it, checked field by field.

Pure: it parses and checks, it reads nothing. The cases are chosen by the studies table's filter
bars (``{"files": "*.nii* & STAG:reading", "study_date": "2021..2022"}``), in the archive's
filter language, never SQL; each bar is parsed here so a typo is refused when the reading is saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from nifti_archive.catalog.viewer_documents import check_preset_name
from nifti_archive.errors import FilterSyntaxError, InvalidValue, PatternError
from nifti_archive.models import ReadingMode
from nifti_archive.query.filter_sql import Column
from nifti_archive.query.filters import parse_filter
from nifti_archive.query.patterns import parse_file_pattern
from nifti_archive.readings.ordering import CaseOrder

NAME = re.compile(r"[\w .+-]{1,128}")
FORM_NAME = re.compile(r"[\w.+-]{1,64}")
BLINDING = ("identity", "dates", "description", "other_readers", "own_earlier")
FIELDS = {
    "name", "form", "cases", "training_cases", "preset", "mode", "blinding", "order", "repetitions", "stages",
    "instructions", "instructions_url", "allow_restart_training", "allow_restart_serious", "readers",
}
MOST_STAGES = 10
MOST_REPETITIONS = 20
MOST_READERS = 200
MOST_INSTRUCTIONS = 20_000
Choice = TypeVar("Choice", ReadingMode, CaseOrder)


@dataclass(frozen=True)
class StageConfig:
    name: str
    overlay: str | None


@dataclass(frozen=True)
class ReadingConfig:
    name: str
    form: str
    cases: dict[Column, str]
    training_cases: dict[Column, str] | None
    preset: str | None
    mode: ReadingMode
    blinding: frozenset[str]
    order: CaseOrder
    repetitions: int
    stages: tuple[StageConfig, ...]
    instructions: str
    instructions_url: str
    allow_restart_training: bool
    allow_restart_serious: bool
    readers: tuple[str, ...]


def check_form_name(name: str) -> str:
    if not FORM_NAME.fullmatch(name):
        raise InvalidValue(f"invalid form name {name!r}: up to 64 letters, digits, '.', '+', '-' or '_'")
    return name


def _flag(document: Mapping[str, Any], field: str) -> bool:
    value = document.get(field, False)
    if not isinstance(value, bool):
        raise InvalidValue(f"{field} must be true or false")
    return value


def _text(document: Mapping[str, Any], field: str, most: int) -> str:
    value = document.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > most:
        raise InvalidValue(f"{field} must be text of at most {most} characters")
    return value


def _choice(document: Mapping[str, Any], field: str, vocabulary: type[Choice], default: Choice) -> Choice:
    value = document.get(field, default.value)
    try:
        return vocabulary(value)
    except ValueError:
        raise InvalidValue(f"{field} must be one of {', '.join(m.value for m in vocabulary)}") from None


def parse_bars(value: Any, field: str) -> dict[Column, str]:
    """Filter bars by column; each parsed, so a syntax error names its bar and position."""
    if not isinstance(value, dict) or not value:
        raise InvalidValue(f"{field} must be an object of filter bars, e.g. {{\"files\": \"*.nii*\"}}")
    known = {column.value: column for column in Column}
    bars: dict[Column, str] = {}
    for key, text in value.items():
        if key not in known:
            raise InvalidValue(f"{field}: unknown filter bar {key!r}; the bars are {', '.join(known)}")
        if not isinstance(text, str):
            raise InvalidValue(f"{field}.{key} must be filter text")
        try:
            parse_filter(text)
        except FilterSyntaxError as exc:
            raise InvalidValue(f"{field}.{key}: {exc}") from None
        if text.strip():
            bars[known[key]] = text
    if not bars:
        raise InvalidValue(f"{field}: every filter bar is empty; name the cases (e.g. \"files\": \"*.nii*\")")
    return bars


def _stages(value: Any) -> tuple[StageConfig, ...]:
    if value is None:
        return (StageConfig("reading", None),)
    if not isinstance(value, list) or not 1 <= len(value) <= MOST_STAGES:
        raise InvalidValue(f"stages must be a list of 1 to {MOST_STAGES} stages")
    stages = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) - {"name", "overlay"}:
            raise InvalidValue(f"stages[{index}] must be an object with name and overlay")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidValue(f"stages[{index}].name must be 1 to 128 letters, digits, spaces, '.', '+', '-' or '_'")
        overlay = entry.get("overlay") or None
        if overlay is not None:
            if not isinstance(overlay, str) or len(overlay) > 512:
                raise InvalidValue(f"stages[{index}].overlay must be a file pattern")
            try:
                parse_file_pattern(overlay)
            except PatternError as exc:
                raise InvalidValue(f"stages[{index}].overlay: {exc}") from None
        stages.append(StageConfig(name, overlay))
    if len({stage.name for stage in stages}) != len(stages):
        raise InvalidValue("stages must have distinct names")
    return tuple(stages)


def _readers(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MOST_READERS or not all(isinstance(v, str) and v for v in value):
        raise InvalidValue(f"readers must be a list of up to {MOST_READERS} user names")
    return tuple(dict.fromkeys(value))


def parse_config(document: Any) -> ReadingConfig:
    if not isinstance(document, dict):
        raise InvalidValue("send the reading's configuration as a JSON object")
    unknown = set(document) - FIELDS
    if unknown:
        raise InvalidValue(f"unknown field {sorted(unknown)[0]!r}; the fields are {', '.join(sorted(FIELDS))}")
    name = document.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidValue("name must be 1 to 128 letters, digits, spaces, '.', '+', '-' or '_'")
    form = document.get("form")
    if not isinstance(form, str):
        raise InvalidValue("form must name a reading form of the project")
    blinding = document.get("blinding") or {}
    if not isinstance(blinding, dict) or set(blinding) - set(BLINDING):
        raise InvalidValue(f"blinding is an object with the flags {', '.join(BLINDING)}")
    repetitions = document.get("repetitions", 1)
    if not isinstance(repetitions, int) or isinstance(repetitions, bool) or not 1 <= repetitions <= MOST_REPETITIONS:
        raise InvalidValue(f"repetitions must be a whole number from 1 to {MOST_REPETITIONS}")
    preset = document.get("preset") or None
    if preset is not None and not isinstance(preset, str):
        raise InvalidValue("preset must name a viewer preset")
    training = document.get("training_cases")
    url = _text(document, "instructions_url", 2000)
    if url and not url.startswith(("https://", "http://")):
        raise InvalidValue("instructions_url must be an http(s) address")
    return ReadingConfig(
        name=name,
        form=check_form_name(form),
        cases=parse_bars(document.get("cases"), "cases"),
        training_cases=parse_bars(training, "training_cases") if training else None,
        preset=check_preset_name(preset) if preset else None,
        mode=_choice(document, "mode", ReadingMode, ReadingMode.INDIVIDUAL),
        blinding=frozenset(flag for flag in BLINDING if _flag(blinding, flag)),
        order=_choice(document, "order", CaseOrder, CaseOrder.NONE),
        repetitions=repetitions,
        stages=_stages(document.get("stages")),
        instructions=_text(document, "instructions", MOST_INSTRUCTIONS),
        instructions_url=url,
        allow_restart_training=_flag(document, "allow_restart_training"),
        allow_restart_serious=_flag(document, "allow_restart_serious"),
        readers=_readers(document.get("readers")),
    )


def config_document(config: ReadingConfig) -> dict[str, Any]:
    """The configuration as the API returns it: what ``parse_config`` reads back unchanged."""
    return {
        "name": config.name,
        "form": config.form,
        "cases": {column.value: text for column, text in config.cases.items()},
        "training_cases": {c.value: t for c, t in config.training_cases.items()} if config.training_cases else None,
        "preset": config.preset,
        "mode": config.mode.value,
        "blinding": {flag: flag in config.blinding for flag in BLINDING},
        "order": config.order.value,
        "repetitions": config.repetitions,
        "stages": [{"name": stage.name, "overlay": stage.overlay} for stage in config.stages],
        "instructions": config.instructions,
        "instructions_url": config.instructions_url,
        "allow_restart_training": config.allow_restart_training,
        "allow_restart_serious": config.allow_restart_serious,
        "readers": list(config.readers),
    }
