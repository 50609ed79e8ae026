"""The order of a reader's cases: none, shuffled per reader and session, or by a hash of the study key;
and the sequence of slots over repetitions and stages."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from nifti_archive.errors import InvalidValue
from nifti_archive.readings.ordering import CaseOrder, Slot, case_order, reading_sequence

CASES = [(10 + index, f"1.2.826.0.1.{index}") for index in range(30)]
IDS = [case for case, _ in CASES]


def test_none_keeps_the_readings_order() -> None:
    assert case_order(CASES, CaseOrder.NONE, "reader 1") == IDS
    assert case_order([], CaseOrder.NONE, "x") == []


def test_idhash_is_the_same_for_every_seed_and_whatever_the_input_order() -> None:
    ordered = case_order(CASES, CaseOrder.IDHASH, "reader 1, session 1")
    assert sorted(ordered) == IDS
    assert ordered != IDS
    assert case_order(CASES, CaseOrder.IDHASH, "reader 2, session 7") == ordered
    shuffled = list(CASES)
    random.Random(3).shuffle(shuffled)
    assert case_order(shuffled, CaseOrder.IDHASH, "") == ordered
    assert case_order(list(reversed(CASES)), CaseOrder.IDHASH, "") == ordered


def test_idhash_breaks_ties_between_equal_study_keys_by_case_id() -> None:
    assert case_order([(7, "same"), (3, "same"), (5, "same")], CaseOrder.IDHASH, "") == [3, 5, 7]


def test_full_is_a_permutation_that_differs_between_seeds_and_repeats_for_a_seed() -> None:
    seeds = [f"reader {reader}, session {session}" for reader in range(3) for session in range(3)]
    orders = [case_order(CASES, CaseOrder.FULL, seed) for seed in seeds]
    assert all(sorted(order) == IDS for order in orders)
    # 30! orders: nine seeds giving fewer than nine different ones would be a broken shuffle.
    assert len({tuple(order) for order in orders}) == len(seeds)
    assert all(order != IDS for order in orders)
    assert [case_order(CASES, CaseOrder.FULL, seed) for seed in seeds] == orders


def test_one_repetition_and_stage_is_the_order_itself() -> None:
    assert reading_sequence([4, 2, 9], 1, 1) == [Slot(0, 0, 4), Slot(0, 0, 2), Slot(0, 0, 9)]
    assert reading_sequence([], 3, 2) == []


def test_repetitions_are_rotations() -> None:
    # 7 cases, 3 repetitions: each repetition starts 7 // 3 = 2 cases further on.
    slots = reading_sequence([1, 2, 3, 4, 5, 6, 7], 3, 1)
    assert [slot.case for slot in slots] == [1, 2, 3, 4, 5, 6, 7, 3, 4, 5, 6, 7, 1, 2, 5, 6, 7, 1, 2, 3, 4]
    assert [slot.repetition for slot in slots] == [0] * 7 + [1] * 7 + [2] * 7


@pytest.mark.parametrize("cases", [1, 2, 3, 5, 10, 17, 40])
@pytest.mark.parametrize("repetitions", [2, 3, 4, 7, 20])
def test_a_case_comes_back_at_least_n_minus_n_over_r_slots_later(cases: int, repetitions: int) -> None:
    slots = reading_sequence(list(range(100, 100 + cases)), repetitions, 1)
    positions: dict[int, list[int]] = {}
    for position, slot in enumerate(slots):
        positions.setdefault(slot.case, []).append(position)
    gaps = [later - earlier for seen in positions.values() for earlier, later in zip(seen, seen[1:], strict=False)]
    assert min(gaps) >= cases - cases // repetitions


@pytest.mark.parametrize(("cases", "repetitions", "stages"), [(5, 1, 3), (6, 2, 2), (9, 4, 10), (1, 20, 1)])
def test_stages_come_one_after_another_each_with_every_case_and_repetition_once(cases: int, repetitions: int, stages: int) -> None:
    ordered = case_order(CASES[:cases], CaseOrder.FULL, "seed")
    slots = reading_sequence(ordered, repetitions, stages)
    assert len(slots) == cases * repetitions * stages
    assert [slot.stage for slot in slots] == sorted(slot.stage for slot in slots)
    for stage in range(stages):
        in_stage = Counter((slot.case, slot.repetition) for slot in slots if slot.stage == stage)
        assert in_stage == Counter({(case, repetition): 1 for case in ordered for repetition in range(repetitions)})
    # Every stage repeats the first one's sequence.
    first = [(slot.repetition, slot.case) for slot in slots if slot.stage == 0]
    assert all([(slot.repetition, slot.case) for slot in slots if slot.stage == stage] == first for stage in range(stages))


@pytest.mark.parametrize(("repetitions", "stages", "message"), [
    (0, 1, "repetitions must be a whole number from 1 to 20"),
    (21, 1, "repetitions must be a whole number from 1 to 20"),
    (True, 1, "repetitions must be a whole number from 1 to 20"),
    (1, 0, "stages must be a whole number from 1 to 10"),
    (1, 11, "stages must be a whole number from 1 to 10"),
])
def test_repetitions_and_stages_out_of_range_are_refused(repetitions: int, stages: int, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        reading_sequence([1, 2, 3], repetitions, stages)
