"""A project's BIDS mapping: which series become which BIDS files.

The rules are a small JSON document, kept with the project's settings::

    {"rules": [
        {"description": "(?i)localizer", "ignore": true},
        {"description": "(?i)mprage", "suffix": "T1w", "entities": {"acq": "mprage"}},
        {"description": "(?i)rs_fmri", "sequence": "EP", "suffix": "bold", "entities": {"task": "rest"}},
        {"description": "(?i)pe=(?P<dir>ap|pa)", "image_type": ["M"], "suffix": "epi"}
     ],
     "defaults": true}

A rule matches a series when every condition it names holds: ``description`` (a regular
expression searched in the series description, or the protocol name where there is none),
``sequence`` (searched in the scanning sequence, sequence variant, sequence name and pulse
sequence name, joined by spaces) and ``image_type`` (values that must all be in ImageType).
The first rule that matches decides; ``"defaults": true`` (the default) tries the built-in
rules after the project's own. Named groups of a rule's regular expressions that carry an
entity's name (``(?P<dir>...)``) set that entity from the series; the rule's ``entities``
give the values where no such group matched. ``datatype`` may be given and must then be
the suffix's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nifti_archive.bids.naming import label
from nifti_archive.bids.vocabulary import ALLOWED, DATATYPE_OF, REQUIRED, Datatype, Entity, Suffix
from nifti_archive.errors import InvalidValue

MAX_RULES = 200
_RULE_KEYS = frozenset({"description", "sequence", "image_type", "suffix", "datatype", "entities", "ignore"})
_DOCUMENT_KEYS = frozenset({"rules", "defaults"})
_SEQUENCE_FIELDS = ("ScanningSequence", "SequenceVariant", "SequenceName", "PulseSequenceName")
_FIELDMAP_DESCRIPTION = r"(?i)field_?map|fmap|b0_?map"

# Scanners name series freely, so the defaults only claim what a description says plainly;
# everything else is reported as unmapped rather than guessed.
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"description": r"(?i)flair", "suffix": "FLAIR"},
    {"description": _FIELDMAP_DESCRIPTION, "image_type": ["P"], "suffix": "phasediff"},
    {"description": _FIELDMAP_DESCRIPTION, "image_type": ["M"], "suffix": "magnitude1"},
    {"description": r"(?i)(?:^|[^a-z])pe[=_-]?(?P<dir>ap|pa|lr|rl|si|is)(?:$|[^a-z])", "sequence": r"\bEP\b", "suffix": "epi"},
    {"description": r"(?i)dwi|dti|diff", "suffix": "dwi"},
    {"description": r"(?i)sbref", "sequence": r"\bEP\b", "suffix": "sbref", "entities": {"task": "fmri"}},
    # The look-ahead is tried first, at the start, so a "task-" anywhere wins over an earlier "bold".
    {"description": r"(?i)^(?=.*task[-_](?P<task>[a-z0-9]+))|bold|fmri|rest", "sequence": r"\bEP\b", "suffix": "bold",
     "entities": {"task": "fmri"}},
    {"description": r"(?i)t1|mp-?rage|spgr|bravo", "suffix": "T1w"},
    {"description": r"(?i)t2", "suffix": "T2w"},
    {"description": r"(?i)(?:^|[^a-z])pd", "suffix": "PDw"},
)


@dataclass(frozen=True)
class SeriesInfo:
    """What the rules look at, from a series' dcm2niix sidecar."""

    description: str
    sequence: str
    image_type: frozenset[str]

    @classmethod
    def from_sidecar(cls, sidecar: Mapping[str, Any]) -> SeriesInfo:
        description = sidecar.get("SeriesDescription") or sidecar.get("ProtocolName") or ""
        sequence = " ".join(str(sidecar[name]) for name in _SEQUENCE_FIELDS if sidecar.get(name))
        image_type = sidecar.get("ImageType") or []
        return cls(str(description), sequence, frozenset(str(value) for value in image_type))


@dataclass(frozen=True)
class Rule:
    where: str  # "rules[2]" or "default rule 4", for messages
    description: re.Pattern[str] | None
    sequence: re.Pattern[str] | None
    image_type: frozenset[str]
    suffix: Suffix | None  # None: the series is left out on purpose
    entities: Mapping[Entity, str]

    def matches(self, info: SeriesInfo) -> dict[Entity, str] | None:
        """The entities the series gets from this rule, or None when the rule does not match it."""
        found = dict(self.entities)
        for pattern, text in ((self.description, info.description), (self.sequence, info.sequence)):
            if pattern is None:
                continue
            hit = pattern.search(text)
            if hit is None:
                return None
            found.update({Entity(name): label(value) for name, value in hit.groupdict().items() if value and label(value)})
        if not self.image_type <= info.image_type:
            return None
        return found


@dataclass(frozen=True)
class Match:
    rule: Rule
    suffix: Suffix
    entities: Mapping[Entity, str]

    @property
    def datatype(self) -> Datatype:
        return DATATYPE_OF[self.suffix]


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def match(self, info: SeriesInfo) -> Match | Rule | None:
        """The first matching rule's mapping, or the rule itself where it leaves the series out; None
        where no rule matches. A rule whose named group for a needed entity took no part in the
        match does not match."""
        for rule in self.rules:
            entities = rule.matches(info)
            if entities is None:
                continue
            if rule.suffix is None:
                return rule
            if not REQUIRED.get(rule.suffix, frozenset()) <= entities.keys():
                continue
            return Match(rule, rule.suffix, entities)
        return None


def _fail(where: str, message: str) -> InvalidValue:
    return InvalidValue(f"BIDS rules: {where}: {message}")


def _regex(where: str, value: object) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise _fail(where, "must be a non-empty regular expression")
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise _fail(where, f"not a regular expression: {exc}") from exc
    for name in pattern.groupindex:
        if name not in {entity.value for entity in Entity}:
            raise _fail(where, f"group name {name!r} is not an entity ({', '.join(e.value for e in Entity)})")
    return pattern


def _suffix(where: str, value: object) -> Suffix:
    try:
        return Suffix(value)
    except ValueError:
        raise _fail(where, f"{value!r} is not a suffix the export writes ({', '.join(s.value for s in Suffix)})") from None


def _entities(where: str, value: object) -> dict[Entity, str]:
    if not isinstance(value, dict):
        raise _fail(where, 'must be an object such as {"acq": "mprage"}')
    entities = {}
    for key, text in value.items():
        try:
            entity = Entity(key)
        except ValueError:
            raise _fail(where, f"{key!r} is not an entity a rule may set ({', '.join(e.value for e in Entity)})") from None
        if not isinstance(text, str) or not text or label(text) != text:
            raise _fail(f"{where}.{key}", f"{text!r} is not a BIDS label (letters and digits only)")
        entities[entity] = text
    return entities


def _rule(where: str, document: object) -> Rule:
    if not isinstance(document, dict):
        raise _fail(where, "must be an object")
    unknown = sorted(set(document) - _RULE_KEYS)
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
    if not {"description", "sequence", "image_type"} & document.keys():
        raise _fail(where, "names no condition (description, sequence or image_type): it would take every series")
    description = _regex(f"{where}.description", document["description"]) if "description" in document else None
    sequence = _regex(f"{where}.sequence", document["sequence"]) if "sequence" in document else None
    image_type = document.get("image_type", [])
    if not isinstance(image_type, list) or not all(isinstance(v, str) and v for v in image_type):
        raise _fail(f"{where}.image_type", 'must be a list of values such as ["ORIGINAL", "M"]')
    ignore = document.get("ignore", False)
    if not isinstance(ignore, bool):
        raise _fail(f"{where}.ignore", "must be true or false")
    if ignore:
        if {"suffix", "datatype", "entities"} & document.keys():
            raise _fail(where, "a rule that ignores series names no suffix, datatype or entities")
        return Rule(where, description, sequence, frozenset(image_type), None, {})
    if "suffix" not in document:
        raise _fail(where, 'needs a "suffix" (or "ignore": true)')
    suffix = _suffix(f"{where}.suffix", document["suffix"])
    if "datatype" in document and document["datatype"] != DATATYPE_OF[suffix].value:
        raise _fail(f"{where}.datatype", f"{suffix.value} belongs to {DATATYPE_OF[suffix].value}, not {document['datatype']!r}")
    entities = _entities(f"{where}.entities", document.get("entities", {}))
    grouped = {Entity(name) for pattern in (description, sequence) if pattern for name in pattern.groupindex}
    not_allowed = sorted(e.value for e in (entities.keys() | grouped) - ALLOWED[suffix])
    if not_allowed:
        raise _fail(where, f"{suffix.value} takes no {not_allowed[0]} entity (it takes {_names(ALLOWED[suffix])})")
    missing = sorted(e.value for e in REQUIRED.get(suffix, frozenset()) - entities.keys() - grouped)
    if missing:
        raise _fail(where, f"{suffix.value} needs a {missing[0]} entity: set it in entities or as a named group")
    return Rule(where, description, sequence, frozenset(image_type), suffix, entities)


def _names(entities: frozenset[Entity]) -> str:
    return ", ".join(e.value for e in Entity if e in entities)


def _rules(documents: Sequence[object], where: str) -> tuple[Rule, ...]:
    return tuple(_rule(where.format(index), document) for index, document in enumerate(documents))


DEFAULTS = _rules(DEFAULT_RULES, "default rule {}")


def parse_rules(text: str | None) -> RuleSet:
    """A project's rules from their JSON text (None or empty: the defaults alone)."""
    if not text:
        return RuleSet(DEFAULTS)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"BIDS rules: not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise _fail("the document", 'must be an object {"rules": [...], "defaults": true}')
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        raise _fail("the document", f"unknown key {unknown[0]!r} (known: defaults, rules)")
    rules = document.get("rules", [])
    if not isinstance(rules, list):
        raise _fail("rules", "must be a list of rules")
    if len(rules) > MAX_RULES:
        raise _fail("rules", f"at most {MAX_RULES} rules")
    defaults = document.get("defaults", True)
    if not isinstance(defaults, bool):
        raise _fail("defaults", "must be true or false")
    return RuleSet(_rules(rules, "rules[{}]") + (DEFAULTS if defaults else ()))


def normalised(text: str) -> str:
    """The rules as they are stored: checked, and as compact JSON ('' for the defaults)."""
    if not text.strip():
        return ""
    parse_rules(text)
    return json.dumps(json.loads(text), separators=(",", ":"))
