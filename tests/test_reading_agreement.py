"""Agreement statistics against published values, their degenerate cases, and Dice on run-length masks."""

from __future__ import annotations

import random

import pytest

from nifti_archive.errors import InvalidValue
from nifti_archive.readings.agreement import (
    IccForm,
    Weighting,
    cohen_kappa,
    dice,
    fleiss_kappa,
    icc,
    weighted_kappa,
)


def from_table(table: list[list[int]], categories: list[int]) -> tuple[list[int], list[int]]:
    """Two raters' ratings from a contingency table (rows: first rater, columns: second)."""
    first: list[int] = []
    second: list[int] = []
    for row, counts in zip(categories, table, strict=True):
        for column, count in zip(categories, counts, strict=True):
            first += [row] * count
            second += [column] * count
    return first, second


def test_cohen_kappa_of_the_wikipedia_example() -> None:
    # Wikipedia, "Cohen's kappa", simple example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no; po 0.7, pe 0.5.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)


# Stata Base Reference Manual, [R] kappa, two radiologists' ratings of 85 xeromammograms (Boyd et al. 1982,
# in Altman 1991), normal/benign/suspect/cancer; rows radiologist B, columns radiologist A. The manual's
# kap gives kappa 0.4728 (agreement 63.53 %, expected 30.82 %), wgt(w) 0.5684 and wgt(w2) 0.6714.
XEROMAMMOGRAMS = [[21, 12, 0, 0], [4, 17, 1, 0], [3, 9, 15, 2], [0, 0, 0, 1]]


def test_kappas_of_the_stata_manuals_xeromammograms() -> None:
    first, second = from_table(XEROMAMMOGRAMS, [1, 2, 3, 4])
    assert len(first) == 85
    assert cohen_kappa(first, second) == pytest.approx(0.4728, abs=5e-5)
    assert weighted_kappa(first, second, [1, 2, 3, 4], Weighting.LINEAR) == pytest.approx(0.5684, abs=5e-5)
    assert weighted_kappa(first, second, [1, 2, 3, 4], Weighting.QUADRATIC) == pytest.approx(0.6714, abs=5e-5)
    # The raters swapped, the categories listed in another order or as floats: the same values.
    assert weighted_kappa(second, first, [4.0, 2.0, 3.0, 1.0], Weighting.LINEAR) == pytest.approx(0.5684, abs=5e-5)


def test_weighted_kappa_weighs_by_rank_on_the_scale_not_by_value() -> None:
    first, second = from_table(XEROMAMMOGRAMS, [1, 2, 3, 4])
    relabel = {1: 0.0, 2: 10.0, 3: 11.0, 4: 50.0}
    moved = weighted_kappa([relabel[r] for r in first], [relabel[r] for r in second], list(relabel.values()), Weighting.QUADRATIC)
    assert moved == pytest.approx(0.6714, abs=5e-5)


def test_kappas_of_identical_ratings_are_1_and_of_degenerate_ones_none() -> None:
    ratings = [1, 2, 3, 3, 2, 5]
    assert cohen_kappa(ratings, ratings) == 1.0
    assert weighted_kappa(ratings, ratings, [1, 2, 3, 4, 5], Weighting.LINEAR) == 1.0
    assert weighted_kappa(ratings, ratings, [1, 2, 3, 4, 5], Weighting.QUADRATIC) == 1.0
    # Both raters always said the same one thing: chance agreement is 1 and kappa undefined.
    assert cohen_kappa(["yes"] * 4, ["yes"] * 4) is None
    assert weighted_kappa([2, 2], [2, 2], [1, 2, 3], Weighting.LINEAR) is None
    assert weighted_kappa([2, 2], [2, 2], [2], Weighting.LINEAR) is None
    assert cohen_kappa([], []) is None
    assert weighted_kappa([], [], [1, 2], Weighting.QUADRATIC) is None
    # Complete disagreement on a balanced yes/no table.
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == -1.0


def test_kappas_refuse_unequal_lengths_and_ratings_off_the_scale() -> None:
    with pytest.raises(InvalidValue, match="the same cases: 2 and 3 ratings"):
        cohen_kappa([1, 2], [1, 2, 3])
    with pytest.raises(InvalidValue, match="the same cases"):
        weighted_kappa([1, 2], [1], [1, 2], Weighting.LINEAR)
    with pytest.raises(InvalidValue, match="rating 6 is not one of the categories"):
        weighted_kappa([1, 2], [1, 6], [1, 2, 3, 4, 5], Weighting.LINEAR)
    with pytest.raises(InvalidValue, match="categories must be finite numbers"):
        weighted_kappa([1], [1], [1, float("nan")], Weighting.LINEAR)


# Wikipedia, "Fleiss' kappa", worked example: 14 raters put each of 10 subjects into one of 5 categories;
# p_j 0.143 0.200 0.279 0.150 0.229, P-bar 0.378, P-bar-e 0.213, kappa 0.210. Rows: how many raters chose
# each category.
FLEISS_COUNTS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_of_the_wikipedia_example() -> None:
    ratings = [[category for category, count in enumerate(counts, 1) for _ in range(count)] for counts in FLEISS_COUNTS]
    assert all(len(subject) == 14 for subject in ratings)
    # The transcription checked against the page's category proportions.
    assert [round(sum(column) / 140, 3) for column in zip(*FLEISS_COUNTS, strict=True)] == [0.143, 0.2, 0.279, 0.15, 0.229]
    assert fleiss_kappa(ratings) == pytest.approx(0.210, abs=5e-4)
    # Raters are not identified: the order of a subject's ratings does not matter.
    assert fleiss_kappa([list(reversed(subject)) for subject in ratings]) == fleiss_kappa(ratings)


def test_fleiss_kappa_of_perfect_agreement_is_1_and_degenerate_cases() -> None:
    assert fleiss_kappa([["a", "a", "a"], ["b", "b", "b"], ["a", "a", "a"]]) == 1.0
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) is None
    assert fleiss_kappa([]) is None
    with pytest.raises(InvalidValue, match="the same number of ratings, at least 2"):
        fleiss_kappa([["a", "b"], ["a"]])
    with pytest.raises(InvalidValue, match="the same number of ratings, at least 2"):
        fleiss_kappa([["a"], ["b"]])


# Shrout & Fleiss (1979), "Intraclass correlations: uses in assessing rater reliability", Psychological
# Bulletin 86(2), Table 2: 6 targets rated by 4 judges; Table 4 gives ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


@pytest.mark.parametrize(("form", "value"), [(IccForm.ICC_1_1, 0.17), (IccForm.ICC_2_1, 0.29), (IccForm.ICC_3_1, 0.71)])
def test_icc_of_shrout_and_fleiss_table_2(form: IccForm, value: float) -> None:
    assert icc(SHROUT_FLEISS, form) == pytest.approx(value, abs=0.005)


def test_icc_of_agreeing_raters_is_1_and_degenerate_cases_are_none() -> None:
    agreeing: list[list[float]] = [[1.5, 1.5, 1.5], [3, 3, 3], [2, 2, 2]]
    assert all(icc(agreeing, form) == 1.0 for form in IccForm)
    # A constant offset between raters is disagreement to ICC(1,1) and ICC(2,1), not to ICC(3,1).
    offset = [[1, 2], [3, 4], [5, 6], [2, 3]]
    assert icc(offset, IccForm.ICC_3_1) == 1.0
    absolute = icc(offset, IccForm.ICC_2_1)
    assert absolute is not None and absolute < 1
    assert all(icc([[2, 2], [2, 2]], form) is None for form in IccForm)
    assert all(icc([[1, 2, 3]], form) is None for form in IccForm)
    assert all(icc([[1], [2]], form) is None for form in IccForm)
    assert icc([], IccForm.ICC_1_1) is None
    with pytest.raises(InvalidValue, match="a rating from every rater"):
        icc([[1, 2], [3]], IccForm.ICC_2_1)
    with pytest.raises(InvalidValue, match="finite numbers"):
        icc([[1, 2], [3, float("inf")]], IccForm.ICC_2_1)


def test_dice_of_hand_made_run_lists() -> None:
    # Voxels 0-2 and 1-3: 2 shared of 3 + 3.
    assert dice([0, 3], [1, 3]) == pytest.approx(2 * 2 / 6)
    # 0-1 and 10-14 against 1-10: voxels 1 and 10 shared, sizes 7 and 10.
    assert dice([0, 2, 10, 5], [1, 10]) == pytest.approx(2 * 2 / 17)
    assert dice([0, 2, 10, 5], [0, 2, 10, 5]) == 1.0
    assert dice([0, 2], [5, 2]) == 0.0
    assert dice([], [0, 4]) == 0.0
    assert dice([], []) is None


def test_dice_agrees_with_counting_voxel_sets() -> None:
    generator = random.Random(11)

    def random_runs() -> list[int]:
        runs: list[int] = []
        position = 0
        for _ in range(generator.randint(0, 12)):
            start = position + generator.randint(0, 6)
            length = generator.randint(1, 6)
            runs += [start, length]
            position = start + length
        return runs

    for _ in range(200):
        first, second = random_runs(), random_runs()
        one = {voxel for start, length in zip(first[::2], first[1::2], strict=True) for voxel in range(start, start + length)}
        other = {voxel for start, length in zip(second[::2], second[1::2], strict=True) for voxel in range(start, start + length)}
        expected = 2 * len(one & other) / (len(one) + len(other)) if one or other else None
        assert dice(first, second) == (pytest.approx(expected) if expected is not None else None)


def test_dice_refuses_runs_that_are_not_a_mask() -> None:
    with pytest.raises(InvalidValue, match="the second mask: runs must be a list of whole numbers"):
        dice([0, 1], [0, 1, 2])
    with pytest.raises(InvalidValue, match="the first mask: the run at 2 must start at or after 4"):
        dice([0, 4, 2, 1], [0, 1])
