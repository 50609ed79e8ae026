"""Agreement between readers (and between one reader's repetitions): kappas, ICC and Dice.

Each statistic is None where it is undefined (no cases, or chance agreement already perfect), so that a
results table can show a blank rather than a misleading number. Counts are kept as integers or
fractions until the last division, so that the degenerate cases are recognised exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from enum import Enum
from fractions import Fraction

from nifti_archive.errors import InvalidValue
from nifti_archive.readings.forms import mask_runs


class Weighting(Enum):
    """How a weighted kappa counts a disagreement: by the distance between the categories' ranks, or its square."""

    LINEAR = "linear"
    QUADRATIC = "quadratic"


class IccForm(Enum):
    """The intraclass correlations of Shrout & Fleiss (1979) for single ratings.

    ICC(1,1): each target rated by different raters (one-way model). ICC(2,1): the raters are a random
    sample of raters, and their systematic differences count as disagreement (absolute agreement).
    ICC(3,1): these raters only, their systematic differences left out (consistency).
    """

    ICC_1_1 = "ICC(1,1)"
    ICC_2_1 = "ICC(2,1)"
    ICC_3_1 = "ICC(3,1)"


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' categories for the same cases; None if there are no cases or chance
    agreement is already 1 (both raters used one and the same category throughout)."""
    _check_pairs(first, second)
    cases = len(first)
    agreed = sum(1 for one, other in zip(first, second, strict=True) if one == other)
    firsts, seconds = Counter(first), Counter(second)
    # cases² times the agreement expected by chance.
    chance = sum(count * seconds[category] for category, count in firsts.items())
    if cases == 0 or chance == cases * cases:
        return None
    return (agreed * cases - chance) / (cases * cases - chance)


def weighted_kappa(first: Sequence[float], second: Sequence[float], categories: Sequence[float], weighting: Weighting) -> float | None:
    """Cohen's (1968) weighted kappa of two raters' ratings on an ordered scale.

    ``categories`` are the possible ratings; their order is their numeric order and a disagreement
    weighs the distance between the two ratings' ranks in it (linear) or its square (quadratic), the
    convention of Stata's ``kap, wgt(w)`` and ``wgt(w2)``. InvalidValue for a rating that is not one of
    the categories; None if there are no cases, fewer than 2 categories, or no disagreement is expected by chance.
    """
    _check_pairs(first, second)
    if not all(_finite(category) for category in categories):
        raise InvalidValue("the categories must be finite numbers")
    ranks = {category: rank for rank, category in enumerate(sorted(set(categories)))}
    for rating in (*first, *second):
        if rating not in ranks:
            raise InvalidValue(f"rating {rating!r} is not one of the categories")
    cases = len(first)
    observed = sum(_penalty(ranks[one] - ranks[other], weighting) for one, other in zip(first, second, strict=True))
    firsts, seconds = Counter(ranks[one] for one in first), Counter(ranks[other] for other in second)
    # cases times the disagreement expected by chance; the scale's 1 / (k - 1)**power cancels out of the ratio.
    expected = sum(count * other_count * _penalty(rank - other_rank, weighting)
                   for rank, count in firsts.items() for other_rank, other_count in seconds.items())
    if cases == 0 or expected == 0:
        return None
    return 1 - observed * cases / expected


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa: for each subject, the categories its raters chose (any raters, the same number for each).

    InvalidValue unless every subject has the same number of ratings, at least 2; None if there are no
    subjects or chance agreement is 1 (every rating is the same category).
    """
    if not ratings:
        return None
    raters = len(ratings[0])
    if raters < 2 or any(len(subject) != raters for subject in ratings):
        raise InvalidValue("every subject must have the same number of ratings, at least 2")
    totals: Counter[Hashable] = Counter()
    agreeing_pairs = 0
    for subject in ratings:
        counts = Counter(subject)
        totals.update(counts)
        agreeing_pairs += sum(count * (count - 1) for count in counts.values())
    ratings_made = len(ratings) * raters
    observed = Fraction(agreeing_pairs, len(ratings) * raters * (raters - 1))
    chance = Fraction(sum(total * total for total in totals.values()), ratings_made * ratings_made)
    if chance == 1:
        return None
    return float((observed - chance) / (1 - chance))


def icc(table: Sequence[Sequence[float]], form: IccForm) -> float | None:
    """The intraclass correlation ``form`` of a table with a row per subject (target) and a column per rater.

    From the two-way analysis of variance as in Shrout & Fleiss (1979). InvalidValue unless the rows have
    the same length and hold finite numbers; None with fewer than 2 subjects or raters, or when there
    is no variance to compare (every rating the same).
    """
    if any(len(row) != len(table[0]) for row in table):
        raise InvalidValue("every subject must have a rating from every rater")
    if not all(_finite(value) for row in table for value in row):
        raise InvalidValue("ratings must be finite numbers")
    subjects = len(table)
    raters = len(table[0]) if table else 0
    if subjects < 2 or raters < 2:
        return None
    # Exact arithmetic: identical ratings must give a zero denominator, not a rounding error's worth.
    values = [[Fraction(value) for value in row] for row in table]
    grand = sum((sum(row) for row in values), Fraction(0)) / (subjects * raters)
    row_means = [sum(row, Fraction(0)) / raters for row in values]
    column_means = [sum((row[column] for row in values), Fraction(0)) / subjects for column in range(raters)]
    total = sum(((value - grand) ** 2 for row in values for value in row), Fraction(0))
    between_subjects = raters * sum(((mean - grand) ** 2 for mean in row_means), Fraction(0))
    between_raters = subjects * sum(((mean - grand) ** 2 for mean in column_means), Fraction(0))
    bms = between_subjects / (subjects - 1)
    wms = (total - between_subjects) / (subjects * (raters - 1))
    jms = between_raters / (raters - 1)
    ems = (total - between_subjects - between_raters) / ((subjects - 1) * (raters - 1))
    if form is IccForm.ICC_1_1:
        numerator, denominator = bms - wms, bms + (raters - 1) * wms
    elif form is IccForm.ICC_2_1:
        numerator, denominator = bms - ems, bms + (raters - 1) * ems + raters * (jms - ems) / subjects
    else:
        numerator, denominator = bms - ems, bms + (raters - 1) * ems
    if denominator == 0:
        return None
    return float(numerator / denominator)


def dice(first: Sequence[int], second: Sequence[int]) -> float | None:
    """Dice's coefficient of two voxel masks given as runs ``[start0, length0, ...]`` on the same grid
    (the roi answer of a form): twice the overlap over the sum of the sizes; None when both are empty."""
    runs = []
    for which, mask in (("first", first), ("second", second)):
        try:
            runs.append(mask_runs(mask, None))
        except InvalidValue as error:
            raise InvalidValue(f"the {which} mask: {error}") from None
    one, other = runs
    sizes = sum(length for _, length in one) + sum(length for _, length in other)
    if sizes == 0:
        return None
    overlap = 0
    i = j = 0
    # Both lists are sorted and free of overlaps: walk them together, moving past whichever run ends first.
    while i < len(one) and j < len(other):
        one_end, other_end = one[i][0] + one[i][1], other[j][0] + other[j][1]
        overlap += max(0, min(one_end, other_end) - max(one[i][0], other[j][0]))
        if one_end <= other_end:
            i += 1
        else:
            j += 1
    return 2 * overlap / sizes


def _check_pairs(first: Sequence[object], second: Sequence[object]) -> None:
    if len(first) != len(second):
        raise InvalidValue(f"the two raters must rate the same cases: {len(first)} and {len(second)} ratings")


def _penalty(distance: int, weighting: Weighting) -> int:
    return abs(distance) if weighting is Weighting.LINEAR else distance * distance


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
