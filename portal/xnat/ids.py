"""XNAT identifiers for the archive's records, and back.

XNAT gives subjects and experiments site-wide accession ids (``XNAT_S00001``) and labels unique
in their project; clients address them by either. Here the id carries the record's key, the
subject's label is its folder name (a pseudonym where the project asks) and an experiment's
label joins the subject's and the study's, since study ids repeat across subjects.
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
    return f"{subject_label}_{study_id}"

