"""XNAT identifiers for the archive's records, and back.

XNAT gives subjects and experiments site-wide accession ids (``XNAT_S00001``) and labels unique
in their project; clients address them by either. Here the id carries the record's key, the
subject's label is its folder name (a pseudonym where the project asks) and an experiment's
label joins the subject's and the study's, since study ids repeat across subjects.

Both ids may hold ``_``, so a plain join would give subject ``P_1`` with study ``S`` and subject
``P`` with study ``1_S`` one label. The subject's own underscores are doubled: the first single
``_`` of a label is then the join, the label names one (subject, study) pair, and it depends on
nothing but those two ids (the same label for ever). Subjects without ``_`` keep the plain join.

An accession id is only a way to spell a record's key: a subject or study may be labelled
``NRT_S00001`` too, so whoever resolves a name tries it as an id, then as a label.
"""

from __future__ import annotations

import re
from enum import Enum

SUBJECT_PREFIX = "NRT_S"
EXPERIMENT_PREFIX = "NRT_E"
_ACCESSION = re.compile(r"NRT_([SE])(\d{5,19})")


class Level(Enum):
    SUBJECT = "S"
    EXPERIMENT = "E"


def accession(level: Level, key: int) -> str:
    return f"NRT_{level.value}{key:05d}"


def parse_accession(level: Level, text: str) -> int | None:
    """The record key an accession id of ``level`` names; None for anything else (a label)."""
    match = _ACCESSION.fullmatch(text)
    if match is None or match.group(1) != level.value:
        return None
    key = int(match.group(2))
    return key if 0 < key < 2**63 else None


def experiment_label(subject_label: str, study_id: str) -> str:
    return f"{subject_label.replace('_', '__')}_{study_id}"


def parse_experiment_label(text: str) -> tuple[str, str] | None:
    """The (subject label, study id) an experiment label joins; None where it joins none."""
    subject: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("__", index):
            subject.append("_")
            index += 2
        elif text[index] == "_":
            study = text[index + 1:]
            return ("".join(subject), study) if subject and study else None
        else:
            subject.append(text[index])
            index += 1
    return None

