"""How far versions of one ROI agree, and the consensus of several versions.

Versions are compared on one grid: each is resampled (nearest neighbour in world space) onto the grid
of the first version given, which is also the grid of the consensus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import KDTree
from scipy.special import expit

from nifti_archive.errors import InvalidValue
from segmentation.grid import Grid, bounding_box, check_mask, resample_mask
from segmentation.operations import erode

# The largest number of versions STAPLE takes: it counts voxels in a table with a row per possible pattern of votes.
MAX_STAPLE_VERSIONS = 20
# Sensitivities and specificities are kept this far from 0 and 1, where their logarithms would be infinite.
_PROBABILITY_FLOOR = 1e-10


@dataclass(frozen=True)
class PairAgreement:
    """How versions ``first`` and ``second`` (positions in the list given, first < second) agree.

    ``dice`` is None when both are empty and ``hausdorff95_mm`` when either is. Volumes are of each
    version on its own grid; the difference is second minus first, and the relative difference is that
    divided by the first's volume (None when the first is empty).
    """

    first: int
    second: int
    dice: float | None
    hausdorff95_mm: float | None
    first_volume_ml: float
    second_volume_ml: float
    volume_difference_ml: float
    relative_volume_difference: float | None


@dataclass(frozen=True)
class StapleResult:
    """The STAPLE consensus and what the estimate found about each version (in the order given).

    ``posterior`` is each voxel's probability of being in the true ROI; ``mask`` is where it is above 0.5.
    ``converged`` is False when ``iterations`` reached the limit before the estimates settled.
    """

    mask: NDArray[np.bool_]
    posterior: NDArray[np.float64]
    sensitivity: tuple[float, ...]
    specificity: tuple[float, ...]
    iterations: int
    converged: bool


def on_first_grid(versions: Sequence[tuple[NDArray[Any], Grid]]) -> tuple[list[NDArray[np.bool_]], Grid]:
    """The versions (mask and grid each), checked and resampled onto the first one's grid, and that grid."""
    return _onto_first_grid(_checked(versions)), versions[0][1]


def dice(first: NDArray[np.bool_], second: NDArray[np.bool_]) -> float | None:
    """Twice the overlap over the sum of the sizes: 1 for identical ROIs, 0 for disjoint ones; None if both are empty."""
    _check_same_shape(first, second)
    sizes = int(np.count_nonzero(first)) + int(np.count_nonzero(second))
    if sizes == 0:
        return None
    return 2.0 * int(np.count_nonzero(first & second)) / sizes


def hausdorff95_mm(first: NDArray[np.bool_], second: NDArray[np.bool_], grid: Grid) -> float | None:
    """The 95th-percentile symmetric Hausdorff distance in mm between two ROIs on ``grid``; None if either is empty.

    The surface of an ROI is its voxels with a face on background (the volume's edge counts as
    background). For each surface voxel of one ROI the distance to the nearest surface voxel of the other
    is taken; the result is the larger of the two directions' 95th percentiles (linear interpolation).
    Distances are between voxel centres in world space, so they are exact for any affine, oblique or sheared.
    """
    _check_same_shape(first, second)
    box = bounding_box(first | second)
    if box is None or not first.any() or not second.any():
        return None
    # The box holds both ROIs whole, so their surfaces are found inside it; only surfaces are measured,
    # which keeps the search to a fraction of the voxels (a nearest-point tree rather than a distance map).
    first_surface, second_surface = _surface(first[box]), _surface(second[box])
    offset = np.array([edge.start for edge in box])
    first_points = grid.world(np.argwhere(first_surface) + offset)
    second_points = grid.world(np.argwhere(second_surface) + offset)
    # Surface voxels the two share are 0 mm apart: only the others are looked up.
    shared = int(np.count_nonzero(first_surface & second_surface))
    to_second = _nearest_distances(grid.world(np.argwhere(first_surface & ~second_surface) + offset), second_points, shared)
    to_first = _nearest_distances(grid.world(np.argwhere(second_surface & ~first_surface) + offset), first_points, shared)
    return float(max(np.percentile(to_second, 95.0), np.percentile(to_first, 95.0)))


def pairwise(versions: Sequence[tuple[NDArray[Any], Grid]]) -> list[PairAgreement]:
    """Agreement of every pair of versions (mask and grid each), in the order (0, 1), (0, 2), ..., (1, 2), ..."""
    checked = _checked(versions)
    masks, grid = _onto_first_grid(checked), checked[0][1]
    # Counted on each version's own grid: resampling can change the count, not the ROI's volume.
    volumes = [int(np.count_nonzero(mask)) * own_grid.voxel_volume_ml for mask, own_grid in checked]
    pairs = []
    for first in range(len(masks)):
        for second in range(first + 1, len(masks)):
            difference = volumes[second] - volumes[first]
            pairs.append(
                PairAgreement(
                    first=first,
                    second=second,
                    dice=dice(masks[first], masks[second]),
                    hausdorff95_mm=hausdorff95_mm(masks[first], masks[second], grid),
                    first_volume_ml=volumes[first],
                    second_volume_ml=volumes[second],
                    volume_difference_ml=difference,
                    relative_volume_difference=difference / volumes[first] if volumes[first] else None,
                )
            )
    return pairs


def majority_vote(versions: Sequence[tuple[NDArray[Any], Grid]]) -> NDArray[np.bool_]:
    """Voxels in strictly more than half of the versions; with an even number, a tie (exactly half) is left out."""
    masks, _ = on_first_grid(versions)
    votes = np.zeros(masks[0].shape, dtype=np.min_scalar_type(len(masks)))
    for mask in masks:
        votes += mask
    return votes * 2 > len(masks)


def staple(versions: Sequence[tuple[NDArray[Any], Grid]], *, tolerance: float = 1e-6, max_iterations: int = 100) -> StapleResult:
    """The STAPLE consensus of binary versions (Warfield, Zou and Wells, IEEE TMI 23(7), 2004).

    Expectation-maximisation over the whole grid: each version has a sensitivity and a specificity
    (both starting at 0.99), the prior probability of a voxel being in the ROI is the mean of all votes
    over all voxels, and the estimates stop when none moves by more than ``tolerance`` in an iteration.
    As in the paper, the whole grid counts, so a larger field of view lowers the prior and raises the
    specificities. The consensus is where the posterior is above 0.5; a voxel at exactly 0.5 is left
    out, as a tie is in the majority vote.
    """
    if tolerance <= 0:
        raise InvalidValue(f"the tolerance must be above 0, not {tolerance}")
    if max_iterations < 1:
        raise InvalidValue(f"STAPLE needs at least one iteration, not {max_iterations}")
    if len(versions) > MAX_STAPLE_VERSIONS:
        raise InvalidValue(f"STAPLE takes at most {MAX_STAPLE_VERSIONS} versions, not {len(versions)}")
    masks, _ = on_first_grid(versions)
    # Voxels with the same votes get the same posterior, so EM runs over the patterns of votes that occur,
    # each voxel's packed one bit per version.
    codes = np.zeros(masks[0].shape, dtype=np.uint32)
    for bit, mask in enumerate(masks):
        codes |= mask.astype(np.uint32) << np.uint32(bit)
    counts = np.bincount(codes.ravel(), minlength=1 << len(masks))
    pattern_codes = np.flatnonzero(counts)
    pattern_counts = counts[pattern_codes]
    votes = ((pattern_codes[:, None] >> np.arange(len(masks))) & 1).astype(np.float64)
    weights = pattern_counts.astype(np.float64)
    prior = float(weights @ votes.sum(axis=1)) / (weights.sum() * len(masks))
    log_prior = np.log(np.clip([prior, 1.0 - prior], _PROBABILITY_FLOOR, 1.0))
    sensitivity = np.full(len(masks), 0.99)
    specificity = np.full(len(masks), 0.99)
    iterations, converged = 0, False
    while iterations < max_iterations and not converged:
        iterations += 1
        posterior = _posterior(votes, log_prior, sensitivity, specificity)
        in_roi, out_of_roi = weights * posterior, weights * (1.0 - posterior)
        new_sensitivity = _ratio(in_roi @ votes, in_roi.sum(), sensitivity)
        new_specificity = _ratio(out_of_roi @ (1.0 - votes), out_of_roi.sum(), specificity)
        change = max(np.max(np.abs(new_sensitivity - sensitivity)), np.max(np.abs(new_specificity - specificity)))
        sensitivity, specificity = new_sensitivity, new_specificity
        converged = bool(change < tolerance)
    by_code = np.zeros(counts.size)
    by_code[pattern_codes] = _posterior(votes, log_prior, sensitivity, specificity)
    voxel_posterior = by_code[codes]
    return StapleResult(
        mask=voxel_posterior > 0.5,
        posterior=voxel_posterior,
        sensitivity=tuple(float(p) for p in sensitivity),
        specificity=tuple(float(q) for q in specificity),
        iterations=iterations,
        converged=converged,
    )


def _checked(versions: Sequence[tuple[NDArray[Any], Grid]]) -> list[tuple[NDArray[np.bool_], Grid]]:
    if len(versions) < 2:
        raise InvalidValue(f"agreement needs at least two versions of the ROI, not {len(versions)}")
    return [(check_mask(mask, grid, what=f"version {number}"), grid) for number, (mask, grid) in enumerate(versions, start=1)]


def _onto_first_grid(checked: list[tuple[NDArray[np.bool_], Grid]]) -> list[NDArray[np.bool_]]:
    first_grid = checked[0][1]
    return [mask if grid.same_as(first_grid) else resample_mask(mask, grid, first_grid) for mask, grid in checked]


def _posterior(
    votes: NDArray[np.float64], log_prior: NDArray[np.float64], sensitivity: NDArray[np.float64], specificity: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The probability of each pattern of votes coming from a voxel in the ROI, in logarithms against underflow."""
    sensitivity = np.clip(sensitivity, _PROBABILITY_FLOOR, 1.0 - _PROBABILITY_FLOOR)
    specificity = np.clip(specificity, _PROBABILITY_FLOOR, 1.0 - _PROBABILITY_FLOOR)
    log_in = log_prior[0] + votes @ np.log(sensitivity) + (1.0 - votes) @ np.log(1.0 - sensitivity)
    log_out = log_prior[1] + (1.0 - votes) @ np.log(specificity) + votes @ np.log(1.0 - specificity)
    posterior: NDArray[np.float64] = expit(log_in - log_out)
    return posterior


def _ratio(numerator: NDArray[np.float64], denominator: float, fallback: NDArray[np.float64]) -> NDArray[np.float64]:
    """``numerator / denominator``, or the previous estimate where no voxel weighs in (nothing to learn from)."""
    return numerator / denominator if denominator > 0 else fallback


def _nearest_distances(points: NDArray[np.float64], others: NDArray[np.float64], shared: int) -> NDArray[np.float64]:
    """The distance from each of ``points`` to the nearest of ``others``, and ``shared`` zeros for the points in both."""
    distances, _ = KDTree(others).query(points) if len(points) else (np.empty(0), None)
    return np.concatenate([np.asarray(distances, dtype=np.float64), np.zeros(shared)])


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The ROI's voxels with at least one face on background."""
    return mask & ~erode(mask)


def _check_same_shape(first: NDArray[np.bool_], second: NDArray[np.bool_]) -> None:
    if first.shape != second.shape:
        raise InvalidValue(f"the ROIs to compare must be on one grid, but have shapes {first.shape} and {second.shape}")
