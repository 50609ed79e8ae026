"""Tags as XNAT custom fields: each subject or study tag is a field named after it, valued
``true``. Clients set fields with XPath-keyed query parameters
(``xnat:mrSessionData/fields/field[name=control]/field=true``); true adds the tag, false or
XNAT's ``NULL`` (what a delete sends) removes it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from nifti_archive.errors import InvalidValue

_FIELD = re.compile(r"[\w:]+/fields/field\[name=(?P<name>[^\]]+)\]/(?P<part>.+)")
ON = frozenset({"true", "1", "yes"})
OFF = frozenset({"false", "0", "no", "null", ""})
# Query parameters that say how to write, not what: taken and ignored.
IGNORED = frozenset({"xsiType", "req_format", "event_reason", "event_type", "event_action", "format"})


@dataclass
class TagChanges:
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def tag_changes(parameters: Iterable[tuple[str, str]]) -> TagChanges:
    """The tags a PUT's query adds and removes; 400 for anything else it tries to set."""
    changes = TagChanges()
    for key, value in parameters:
        if key in IGNORED:
            continue
        match = _FIELD.fullmatch(key)
        if match is None:
            raise InvalidValue(f"{key[:80]!r} cannot be set here: only fields/field (the tags) can be changed through this API")
        name, part = match.group("name"), match.group("part")
        if part == name and value.upper() == "NULL":
            continue  # a delete names the field twice; the value part below removes it
        if part != "field":
            raise InvalidValue(f"{key[:80]!r}: a field's value is set through .../field")
        if value.lower() in ON:
            changes.add.append(name)
        elif value.lower() in OFF:
            changes.remove.append(name)
        else:
            raise InvalidValue(f"field {name[:40]!r} is a tag: set it to true or false, not {value[:40]!r}")
    return changes


def tag_fields(tags: Iterable[str]) -> list[dict[str, object]]:
    return [{"name": tag, "field": "true"} for tag in sorted(tags)]
