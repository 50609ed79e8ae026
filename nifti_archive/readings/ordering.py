"""The order in which a reader sees the cases of a reading, over its repetitions and stages."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from nifti_archive.errors import InvalidValue

MAX_REPETITIONS = 20
MAX_STAGES = 10


class CaseOrder(Enum):
    """NONE: the reading's own order (by subject and study). FULL: shuffled for each reader and session.
    IDHASH: by a hash of the study key, random but the same for every reader and session (NORA's StudyID hash)."""

    NONE = "none"
    FULL = "full"
    IDHASH = "idhash"


@dataclass(frozen=True)
class Slot:
    """One reading of case ``case`` (a reading case's id): 0-based stage and repetition."""

    stage: int
    repetition: int
    case: int


def case_order(cases: Sequence[tuple[int, str]], order: CaseOrder, seed: str) -> list[int]:
    """The case ids of ``cases`` ((case id, study key) in the reading's default order) in the order ``order``.

    ``seed`` drives FULL only: the caller makes it per reader and session so that each sees its own order.
    A string seed is hashed by ``random`` itself, so the order does not depend on PYTHONHASHSEED.
    """
    ids = [case for case, _ in cases]
    if order is CaseOrder.FULL:
        random.Random(seed).shuffle(ids)
    elif order is CaseOrder.IDHASH:
        keyed = sorted((hashlib.sha256(key.encode()).hexdigest(), case) for case, key in cases)
        ids = [case for _, case in keyed]
    return ids


def reading_sequence(ordered_cases: Sequence[int], repetitions: int, stages: int) -> list[Slot]:
    """Every slot a reader goes through: stage by stage, each stage every case ``repetitions`` times.

    A later stage comes only after the whole of the earlier one. Within a stage, repetition r is the
    ordered cases rotated left by r * (N // repetitions), N the number of cases: a repetition does not
    start with the cases the previous one started with, so the reader cannot recognise the sequence,
    and each case comes back at least N - N // repetitions slots after its previous reading, spread
    apart so that intra-rater agreement measures agreement rather than memory.
    """
    for what, value, most in (("repetitions", repetitions, MAX_REPETITIONS), ("stages", stages, MAX_STAGES)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise InvalidValue(f"{what} must be a whole number from 1 to {most}")
    shift = len(ordered_cases) // repetitions
    slots: list[Slot] = []
    for stage in range(stages):
        for repetition in range(repetitions):
            start = repetition * shift
            rotated = [*ordered_cases[start:], *ordered_cases[:start]]
            slots.extend(Slot(stage, repetition, case) for case in rotated)
    return slots
