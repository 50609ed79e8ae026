"""Agreement between versions of an ROI and their consensus: Dice, HD95, volumes, majority vote, STAPLE."""

from __future__ import annotations

import math
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.spatial.distance import cdist

from nifti_archive.errors import InvalidValue
from segmentation.agreement import PairAgreement, dice, hausdorff95_mm, majority_vote, pairwise, staple
from segmentation.grid import Grid
from segmentation.operations import dilate, erode


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> NDArray[np.bool_]:
    i, j, k = np.indices(shape)
    return np.asarray((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius**2, dtype=bool)


def test_dice_of_identical_disjoint_and_overlapping_rois() -> None:
    first = np.zeros((4, 4, 4), dtype=bool)
    second = np.zeros((4, 4, 4), dtype=bool)
    first[0, 0, 0:4] = True
    second[0, 0, 1:4] = True
    second[1, 1, 1:4] = True
    assert dice(first, first) == 1.0
    assert dice(first, ~first) == 0.0
    # 3 shared voxels; sizes 4 and 6.
    assert dice(first, second) == pytest.approx(0.6)
    assert dice(np.zeros((4, 4, 4), dtype=bool), np.zeros((4, 4, 4), dtype=bool)) is None


@pytest.mark.parametrize(("axis", "offset"), [(0, 1), (1, 2), (2, 3)])
def test_hd95_of_plates_offset_along_an_axis_is_offset_times_spacing(axis: int, offset: int) -> None:
    spacing = (0.8, 1.5, 3.0)
    grid = Grid((12, 12, 12), np.diag([*spacing, 1.0]))
    first = np.zeros(grid.shape, dtype=bool)
    plate: list[slice | int] = [slice(2, 9)] * 3
    plate[axis] = 2
    first[tuple(plate)] = True
    second = np.roll(first, offset, axis=axis)
    assert hausdorff95_mm(first, second, grid) == pytest.approx(offset * spacing[axis])
    assert hausdorff95_mm(first, first, grid) == 0.0


def surface_distances_brute_force(first: NDArray[np.bool_], second: NDArray[np.bool_], grid: Grid) -> float:
    """HD95 from every pair of surface voxel centres in world space."""

    def surface(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1]
        neighbours_all_in = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                neighbours_all_in &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.asarray(nib.affines.apply_affine(grid.affine, np.argwhere(inner & ~neighbours_all_in)), dtype=np.float64)

    distances = cdist(surface(first), surface(second))
    return float(max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95)))


def rotated_anisotropic() -> NDArray[np.float64]:
    angle = math.radians(35)
    turn = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-10.0, 4.0, 30.0]
    return affine


def sheared() -> NDArray[np.float64]:
    # Slices stacked at an angle to their plane, as a gantry-tilted CT gives them.
    return np.array([[0.8, 0.0, 0.0, 5.0], [0.0, 0.8, 1.1, -3.0], [0.0, 0.0, 2.4, 12.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [rotated_anisotropic(), sheared()], ids=["rotated", "sheared"])
def test_hd95_matches_brute_force_in_world_space(affine: NDArray[np.float64]) -> None:
    grid = Grid((24, 22, 20), affine)
    rng = np.random.default_rng(3)
    first = ball(grid.shape, (11, 10, 9), 7) & (rng.random(grid.shape) > 0.1)
    second = ball(grid.shape, (13, 9, 10), 6)
    # The first ROI reaches the volume's edge, whose voxels are surface too.
    first[0, 8:12, 8:12] = True
    assert hausdorff95_mm(first, second, grid) == pytest.approx(surface_distances_brute_force(first, second, grid), rel=1e-9)


def test_hd95_is_undefined_with_an_empty_roi() -> None:
    grid = Grid((5, 5, 5), np.eye(4))
    some = np.zeros(grid.shape, dtype=bool)
    some[2, 2, 2] = True
    assert hausdorff95_mm(some, np.zeros(grid.shape, dtype=bool), grid) is None


def test_pairwise_compares_every_pair_on_the_first_grid() -> None:
    grid = Grid((6, 6, 6), np.diag([2.0, 2.0, 2.0, 1.0]))
    first = np.zeros(grid.shape, dtype=bool)
    first[1:3, 1:3, 1:3] = True
    # The same voxels, on a grid whose voxel 0 is at world x = 2 mm: one index further along x in the first's grid.
    shifted_grid = Grid((6, 6, 6), np.array([[2.0, 0, 0, 2.0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]))
    third = np.zeros(grid.shape, dtype=np.uint8)
    third[1:3, 1:3, 1:4] = 1
    pairs = pairwise([(first, grid), (first, shifted_grid), (third, grid)])
    assert [(pair.first, pair.second) for pair in pairs] == [(0, 1), (0, 2), (1, 2)]
    assert pairs[0] == PairAgreement(0, 1, 0.5, pytest.approx(2.0), pytest.approx(0.064), pytest.approx(0.064), 0.0, 0.0)
    assert pairs[1].dice == pytest.approx(2 * 8 / 20)
    assert pairs[1].volume_difference_ml == pytest.approx(0.032)
    assert pairs[1].relative_volume_difference == pytest.approx(0.5)
    empty = np.zeros(grid.shape, dtype=bool)
    assert pairwise([(empty, grid), (first, grid)])[0] == PairAgreement(
        0, 1, 0.0, None, 0.0, pytest.approx(0.064), pytest.approx(0.064), None
    )


def test_majority_vote_needs_more_than_half() -> None:
    grid = Grid((1, 1, 4), np.eye(4))
    raters = [np.array([[[1, 1, 0, 0]]]), np.array([[[1, 0, 1, 0]]]), np.array([[[1, 1, 0, 1]]])]
    assert majority_vote([(rater, grid) for rater in raters]).tolist() == [[[True, True, False, False]]]
    # Two versions: a voxel in one of them is a tie, and left out.
    assert majority_vote([(raters[0], grid), (raters[1], grid)]).tolist() == [[[True, False, False, False]]]


def test_staple_of_identical_versions_is_that_mask() -> None:
    grid = Grid((20, 20, 20), np.eye(4))
    truth = ball(grid.shape, (10, 10, 10), 6)
    result = staple([(truth, grid)] * 3)
    assert np.array_equal(result.mask, truth)
    assert result.converged
    assert result.sensitivity == pytest.approx((1.0,) * 3) and result.specificity == pytest.approx((1.0,) * 3)


def test_staple_outvotes_a_noisy_rater() -> None:
    grid = Grid((40, 40, 40), np.diag([1.0, 1.0, 2.0, 1.0]))
    truth = ball(grid.shape, (20, 20, 20), 12)
    near_the_edge = dilate(truth, iterations=3) & ~erode(truth, iterations=3)
    rng = np.random.default_rng(5)

    def rater(error_rate: float) -> NDArray[np.bool_]:
        wrong = near_the_edge & (rng.random(grid.shape) < error_rate)
        return truth ^ wrong

    careful, also_careful, noisy = rater(0.03), rater(0.03), rater(0.3)
    result = staple([(careful, grid), (also_careful, grid), (noisy, grid)])
    assert result.converged
    staple_dice, noisy_dice = dice(result.mask, truth), dice(noisy, truth)
    assert staple_dice is not None and noisy_dice is not None
    assert staple_dice > 0.97 and noisy_dice < 0.85
    # The estimates single out the noisy rater.
    assert result.sensitivity[2] < min(result.sensitivity[:2]) and result.specificity[2] < min(result.specificity[:2])
    assert np.array_equal(result.mask, result.posterior > 0.5)


def test_staple_of_nothing_is_nothing() -> None:
    grid = Grid((5, 5, 5), np.eye(4))
    result = staple([(np.zeros(grid.shape), grid)] * 2)
    assert not result.mask.any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda grid: pairwise([(np.zeros((3, 3, 3)), grid)]), r"agreement needs at least two versions of the ROI, not 1"),
        (lambda grid: staple([]), r"agreement needs at least two versions of the ROI, not 0"),
        (
            lambda grid: majority_vote([(np.zeros((3, 3, 3)), grid), (np.zeros((3, 3, 4)), grid)]),
            r"version 2 has shape \(3, 3, 4\) but its grid has shape \(3, 3, 3\)",
        ),
        (
            lambda grid: pairwise([(np.zeros((3, 3, 3)), grid), (np.full((3, 3, 3), 255), grid)]),
            r"version 2 must be binary \(0 and 1 only\) but holds 255",
        ),
        (lambda grid: staple([(np.zeros((3, 3, 3)), grid)] * 2, tolerance=0), r"the tolerance must be above 0, not 0"),
        (lambda grid: staple([(np.zeros((3, 3, 3)), grid)] * 21), r"STAPLE takes at most 20 versions, not 21"),
        (
            lambda grid: dice(np.zeros((3, 3, 3), dtype=bool), np.zeros((3, 3, 2), dtype=bool)),
            r"the ROIs to compare must be on one grid, but have shapes \(3, 3, 3\) and \(3, 3, 2\)",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message(call: Callable[[Grid], object], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        call(Grid((3, 3, 3), np.eye(4)))
