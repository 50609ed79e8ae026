"""XNAT's answer shapes and formats, as plain functions.

Listings are ``{"ResultSet": {"Result": [...], "totalRecords": "n"}}`` with every value a
string, as XNAT sends them; one object is ``{"items": [{"meta": ..., "data_fields": ...,
"children": [...]}]}``. XNAT serves many formats; this surface serves JSON for records and
zip for files, and says so (406) for the rest rather than answer a page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from werkzeug.exceptions import NotAcceptable


class Format(Enum):
    JSON = "json"
    ZIP = "zip"


# Formats XNAT clients ask for that are not served here (its XML, tables and pages).
KNOWN_ELSEWHERE = frozenset({"xml", "csv", "html", "xhtml", "xls", "tar.gz", "tgz", "tar", "txt"})


def negotiate(requested: str | None, served: Sequence[Format], default: Format) -> Format:
    """The format to answer in: ``format=`` when served here, ``default`` without one; 406 otherwise."""
    if requested is None or requested == "":
        return default
    for candidate in served:
        if requested.lower() == candidate.value:
            return candidate
    offered = ", ".join(f.value for f in served)
    known = "a format XNAT knows" if requested.lower() in KNOWN_ELSEWHERE else "an unknown format"
    raise NotAcceptable(f"format={requested[:40]!r} is {known} that this archive does not serve here; ask for {offered}")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def result_set(rows: Iterable[Mapping[str, object]], title: str = "") -> dict[str, Any]:
    listed = [{key: _text(value) for key, value in row.items()} for row in rows]
    return {"ResultSet": {"Result": listed, "totalRecords": str(len(listed)), "title": title}}


@dataclass(frozen=True)
class Child:
    """A nested list of an object's (XNAT's ``children``): e.g. ``fields/field`` entries."""

    field: str
    xsi_type: str
    entries: Sequence[Mapping[str, object]]


def _meta(xsi_type: str, start: datetime | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"isHistory": False, "xsi:type": xsi_type}
    if start is not None:
        meta["start_date"] = start.strftime("%a %b %d %H:%M:%S UTC %Y")
    return meta


def item(xsi_type: str, fields: Mapping[str, object], children: Sequence[Child] = (), created: datetime | None = None) -> dict[str, Any]:
    """One object as XNAT's JSON answers it: its current version only (no history kept here)."""
    return {"items": [{
        "meta": _meta(xsi_type, created),
        "data_fields": {key: value for key, value in fields.items() if value is not None},
        "children": [
            {"field": child.field, "items": [
                {"meta": _meta(child.xsi_type), "data_fields": dict(entry), "children": []} for entry in child.entries
            ]}
            for child in children
        ],
    }]}
