"""Meta data export as CSV (NORA's ``--exportmeta STUDIES JSONPATTERN [--keys ...]``).

One row per study. A column is ``<json>.<key>.<key>...`` where ``<json>`` is the JSON
file's path below the study without ``.json``. ``--keys`` takes comma-separated key
sequences whose first part names the JSON file (by its name or path, ``*`` allowed) and
whose later parts walk into it (``*`` allowed at any level): ``*.mask.volume``.
Without ``--keys`` every leaf value of every matching JSON file is exported.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import IO, Any

from sqlalchemy.orm import Session

from nifti_archive.errors import InvalidValue
from nifti_archive.layout import ArchiveLayout, split_psid
from nifti_archive.models import Project
from nifti_archive.query.selection import select_files, studies_by_name

log = logging.getLogger(__name__)

Row = dict[str, Any]


def parse_keys(text: str) -> list[list[str]]:
    sequences = [part.strip().split(".") for part in text.split(",") if part.strip()]
    if not sequences or any(not all(sequences_part) for sequences_part in sequences):
        raise InvalidValue(f"invalid --keys {text!r}: give comma-separated dotted key sequences such as *.mask.volume")
    return sequences


def _leaves(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaves(inner, (*prefix, str(key)))
    else:
        yield prefix, value


def _walk(value: Any, keys: list[str], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if not keys:
        yield prefix, value
        return
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        if fnmatchcase(str(key), keys[0]):
            yield from _walk(inner, keys[1:], (*prefix, str(key)))


def _cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _json_name_matches(relative: str, pattern: str) -> bool:
    stem_path = relative[: -len(".json")] if relative.endswith(".json") else relative
    return fnmatchcase(PurePosixPath(stem_path).name, pattern) or fnmatchcase(stem_path, pattern)


def collect(
    session: Session,
    layout: ArchiveLayout,
    project: Project,
    study_pattern: str,
    json_pattern: str,
    keys: list[list[str]] | None,
) -> tuple[list[str], list[Row]]:
    studies = _matching_studies(session, project, study_pattern)
    by_study: dict[int, Row] = {
        pk: {"subject": subject, "study": study} for pk, subject, study in studies
    }
    columns: list[str] = []
    for selected in select_files(session, project, json_pattern):
        row = by_study.get(selected.study_pk)
        if row is None or not selected.path.endswith(".json"):
            continue
        path = layout.file_path(selected.location(project.name))
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipped %s: %s", path, exc)
            continue
        name = selected.path[: -len(".json")]
        if keys is None:
            found = _leaves(document)
        else:
            found = (
                (key_path, value)
                for sequence in keys
                if _json_name_matches(selected.path, sequence[0])
                for key_path, value in _walk(document, sequence[1:])
            )
        for key_path, value in found:
            column = ".".join((name, *key_path))
            if column not in columns:
                columns.append(column)
            row[column] = _cell(value)
    return ["subject", "study", *columns], list(by_study.values())


def _matching_studies(session: Session, project: Project, pattern: str) -> list[tuple[int, str, str]]:
    """Studies named by ``SUBJECT`` or ``SUBJECT#STUDY`` patterns (``*`` for all)."""
    subject_text, study_text = split_psid(pattern)
    rows = session.execute(studies_by_name(project.id, subject_text or "*", study_text or "*"))
    return [(pk, subject, study) for pk, subject, study in rows]


def write_csv(out: IO[str], columns: list[str], rows: list[Row]) -> None:
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
