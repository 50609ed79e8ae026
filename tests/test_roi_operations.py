"""ROI operations and moving masks between grids: hand-computed cases, and scipy on a real volume."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from nifti_archive.errors import InvalidValue
from segmentation.grid import Grid, check_mask, resample_mask
from segmentation.operations import apply, close, dilate, erode, open_, remove_salt
from segmentation.vocabulary import Operation

REFERENCE = Path(__file__).parent / "data" / "dcm_qa" / "Ref" / "ax_asc_35sl_6.nii"
CROSS = ndimage.generate_binary_structure(3, 1)


def unit_grid(shape: tuple[int, int, int] = (5, 5, 5)) -> Grid:
    return Grid(shape, np.eye(4))


def voxels(mask: NDArray[np.bool_]) -> set[tuple[int, ...]]:
    return {tuple(int(i) for i in index) for index in np.argwhere(mask)}


def box(shape: tuple[int, int, int], low: tuple[int, int, int], high: tuple[int, int, int]) -> NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=bool)
    mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = True
    return mask


@pytest.fixture(scope="module")
def real_roi() -> tuple[NDArray[np.bool_], Grid]:
    image = nib.load(REFERENCE)
    data = np.asarray(image.dataobj)[..., 0]
    return data > np.median(data), Grid.of(image)


def test_erode_a_cube_leaves_its_centre() -> None:
    cube = box((5, 5, 5), (1, 1, 1), (4, 4, 4))
    assert voxels(erode(cube)) == {(2, 2, 2)}


def test_dilate_one_voxel_gives_the_seven_voxel_cross() -> None:
    one = box((5, 5, 5), (2, 2, 2), (3, 3, 3))
    assert voxels(dilate(one)) == {(2, 2, 2), (1, 2, 2), (3, 2, 2), (2, 1, 2), (2, 3, 2), (2, 2, 1), (2, 2, 3)}


def test_iterations_repeat_the_step() -> None:
    one = box((7, 7, 7), (3, 3, 3), (4, 4, 4))
    # Two face steps reach every voxel within city-block distance 2: 1 + 6 + 18 = 25 voxels.
    assert np.count_nonzero(dilate(one, iterations=2)) == 25
    cube = box((9, 9, 9), (2, 2, 2), (7, 7, 7))
    assert voxels(erode(cube, iterations=2)) == {(4, 4, 4)}
    assert np.array_equal(erode(cube, iterations=0), cube)


def test_open_removes_a_protruding_voxel() -> None:
    rounded = dilate(box((9, 9, 9), (3, 3, 3), (6, 6, 6)))
    spiked = rounded.copy()
    spiked[4, 4, 8] = True
    assert np.array_equal(open_(spiked), rounded)


def test_close_fills_a_one_voxel_hole() -> None:
    cube = box((9, 9, 9), (2, 2, 2), (7, 7, 7))
    holed = cube.copy()
    holed[4, 4, 4] = False
    assert np.array_equal(close(holed), cube)


def test_close_keeps_voxels_on_the_volume_edge() -> None:
    touching = box((6, 6, 6), (0, 0, 0), (3, 6, 6))
    touching[1, 3, 3] = False
    closed = close(touching, iterations=2)
    expected = box((6, 6, 6), (0, 0, 0), (3, 6, 6))
    assert np.array_equal(closed, expected)
    # scipy's own closing erodes against background beyond the edge and loses them.
    assert not ndimage.binary_closing(touching, structure=CROSS, iterations=2)[0, 0, 0]


def test_erode_treats_beyond_the_edge_as_background() -> None:
    full = np.ones((4, 5, 6), dtype=bool)
    assert np.array_equal(erode(full), box((4, 5, 6), (1, 1, 1), (3, 4, 5)))


def test_remove_salt_drops_components_below_the_size() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1, 1, 1] = True
    mask[5, 5, 5:7] = True
    mask[8, 1:6, 8] = True
    assert voxels(remove_salt(mask, 2)) == voxels(mask) - {(1, 1, 1)}
    assert voxels(remove_salt(mask, 3)) == {(8, j, 8) for j in range(1, 6)}
    assert np.array_equal(remove_salt(mask, 0), mask)
    assert not remove_salt(mask, 6).any()


def test_remove_salt_connectivity_26_joins_corner_neighbours() -> None:
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True
    assert not remove_salt(mask, 2).any()
    assert np.array_equal(remove_salt(mask, 2, connectivity=26), mask)


def test_set_operations_count_voxels() -> None:
    grid = unit_grid((6, 6, 6))
    first = box(grid.shape, (0, 0, 0), (4, 4, 4))
    second = box(grid.shape, (2, 2, 2), (6, 6, 6))
    assert np.count_nonzero(apply(Operation.UNION, first, grid, other=second, other_grid=grid)) == 64 + 64 - 8
    assert np.count_nonzero(apply(Operation.INTERSECTION, first, grid, other=second, other_grid=grid)) == 8
    assert np.count_nonzero(apply("difference", first, grid, other=second, other_grid=grid)) == 56


def test_second_roi_shifted_one_voxel_in_world_lands_one_index_over() -> None:
    grid = unit_grid()
    shifted = Grid((5, 5, 5), np.array([[1.0, 0, 0, 1.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    other = np.zeros((5, 5, 5), dtype=bool)
    other[2, 2, 2] = other[4, 0, 0] = True
    combined = apply(Operation.UNION, np.zeros((5, 5, 5), dtype=np.uint8), grid, other=other, other_grid=shifted)
    # Index 4 along x is at x = 5 mm, past this grid's last voxel: it falls off.
    assert voxels(combined) == {(3, 2, 2)}


def test_second_roi_with_a_flipped_axis_lands_mirrored() -> None:
    grid = unit_grid()
    flipped = Grid((5, 5, 5), np.array([[-1.0, 0, 0, 4.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    other = np.zeros((5, 5, 5), dtype=bool)
    other[1, 3, 0] = True
    assert voxels(resample_mask(other, flipped, grid)) == {(3, 3, 0)}
    assert np.array_equal(resample_mask(resample_mask(other, flipped, grid), grid, flipped), other)


def test_resampling_onto_a_coarser_grid_picks_the_nearest_fine_voxel() -> None:
    fine = Grid((10, 10, 10), np.diag([0.5, 0.5, 0.5, 1.0]))
    coarse = unit_grid()
    mask = np.zeros(fine.shape, dtype=bool)
    mask[2:6, 4, 4] = True
    # Coarse voxel i is at i mm, the centre of fine voxel 2i.
    assert voxels(resample_mask(mask, fine, coarse)) == {(1, 2, 2), (2, 2, 2)}


def lookup_voxel_by_voxel(mask: NDArray[np.bool_], source: Grid, target: Grid) -> NDArray[np.bool_]:
    """Nearest-neighbour resampling the slow way: every target centre through world space, rounded half up."""
    expected = np.zeros(target.shape, dtype=bool)
    to_source = np.linalg.inv(source.affine) @ target.affine
    for index in np.ndindex(target.shape):
        nearest = np.floor(nib.affines.apply_affine(to_source, index) + 0.5).astype(int)
        if np.all(nearest >= 0) and np.all(nearest < source.shape):
            expected[index] = mask[tuple(nearest)]
    return expected


def test_resampling_onto_an_oblique_grid_matches_voxel_by_voxel_lookup() -> None:
    rng = np.random.default_rng(7)
    source = Grid((7, 8, 9), np.diag([1.2, 1.0, 2.0, 1.0]))
    mask = rng.random(source.shape) > 0.6
    angle = math.radians(30)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 1.5])
    affine[:3, 3] = [2.0, -1.0, 0.5]
    target = Grid((9, 9, 10), affine)
    expected = lookup_voxel_by_voxel(mask, source, target)
    assert expected.any()
    assert np.array_equal(resample_mask(mask, source, target), expected)


@pytest.mark.parametrize(
    "axes",
    [
        [[0, 1.2, 0, 2.4], [1, 0, 0, -1.0], [0, 0, 2, 0.0]],
        [[0, 0, -1.2, 9.6], [-1, 0, 0, 7.0], [0, 2, 0, -4.0]],
        [[1.2, 0, 0, -2.4], [0, -1, 0, 12.0], [0, 0, 2, 4.0]],
        [[0, 1, 0, 2.0], [1, 0, 0, -1.0], [0, 0, 1, 0.3]],
    ],
)
def test_resampling_between_permuted_flipped_shifted_grids_matches_voxel_by_voxel_lookup(axes: list[list[float]]) -> None:
    rng = np.random.default_rng(11)
    source = Grid((7, 8, 9), np.diag([1.2, 1.0, 2.0, 1.0]))
    mask = rng.random(source.shape) > 0.5
    target = Grid((8, 10, 6), np.array([*axes, [0, 0, 0, 1]]))
    expected = lookup_voxel_by_voxel(mask, source, target)
    assert expected.any()
    assert np.array_equal(resample_mask(mask, source, target), expected)


@pytest.mark.parametrize("iterations", [1, 2])
def test_morphology_matches_scipy_on_a_real_volume(real_roi: tuple[NDArray[np.bool_], Grid], iterations: int) -> None:
    roi, grid = real_roi
    padded = np.pad(roi, iterations)
    inner = (slice(iterations, -iterations),) * 3
    expected = {
        Operation.ERODE: ndimage.binary_erosion(roi, CROSS, iterations=iterations),
        Operation.DILATE: ndimage.binary_dilation(roi, CROSS, iterations=iterations),
        Operation.OPEN: ndimage.binary_opening(roi, CROSS, iterations=iterations),
        Operation.CLOSE: ndimage.binary_closing(padded, CROSS, iterations=iterations)[inner],
    }
    for operation, scipy_result in expected.items():
        assert np.array_equal(apply(operation, roi, grid, iterations=iterations), scipy_result), operation


def test_remove_salt_matches_scipy_labels_on_a_real_volume(real_roi: tuple[NDArray[np.bool_], Grid]) -> None:
    roi, grid = real_roi
    labels, _ = ndimage.label(roi, CROSS)
    sizes = np.bincount(labels.ravel())
    expected = (sizes[labels] >= 20) & roi
    assert 0 < np.count_nonzero(expected) < np.count_nonzero(roi)
    assert np.array_equal(apply(Operation.REMOVE_SALT, roi, grid, min_voxels=20), expected)


def test_set_operations_with_a_real_roi_on_a_flipped_grid(real_roi: tuple[NDArray[np.bool_], Grid]) -> None:
    roi, grid = real_roi
    length = roi.shape[0]
    flip = np.array([[-1.0, 0, 0, length - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    flipped_grid = Grid(roi.shape, grid.affine @ flip)
    flipped_roi = roi[::-1]
    assert np.array_equal(apply(Operation.INTERSECTION, roi, grid, other=flipped_roi, other_grid=flipped_grid), roi)
    assert not apply(Operation.DIFFERENCE, roi, grid, other=flipped_roi, other_grid=flipped_grid).any()


def test_operation_names_are_the_closed_vocabulary() -> None:
    assert [operation.value for operation in Operation] == [
        "erode", "dilate", "open", "close", "union", "intersection", "difference", "remove_salt"
    ]  # fmt: skip
    with pytest.raises(InvalidValue, match=r"unknown ROI operation 'shrink': use one of erode, dilate, open, close, union, "):
        apply("shrink", np.zeros((5, 5, 5)), unit_grid())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: apply("erode", np.zeros((4, 5, 5)), unit_grid()), r"the ROI has shape \(4, 5, 5\) but its grid has shape \(5, 5, 5\)"),
        (lambda: apply("erode", np.full((5, 5, 5), 2), unit_grid()), r"the ROI must be binary \(0 and 1 only\) but holds 2$"),
        (lambda: apply("erode", np.zeros((5, 5, 5)), unit_grid(), iterations=-1), r"iterations must be 0 or more, not -1"),
        (lambda: apply("union", np.zeros((5, 5, 5)), unit_grid()), r"union needs a second ROI and its grid"),
        (
            lambda: apply("union", np.zeros((5, 5, 5)), unit_grid(), other=np.zeros((5, 5, 6)), other_grid=unit_grid()),
            r"the second ROI has shape \(5, 5, 6\) but its grid has shape \(5, 5, 5\)",
        ),
        (
            lambda: apply("dilate", np.zeros((5, 5, 5)), unit_grid(), other=np.zeros((5, 5, 5)), other_grid=unit_grid()),
            r"dilate works on one ROI, but a second one was given",
        ),
        (lambda: apply("remove_salt", np.zeros((5, 5, 5)), unit_grid()), r"remove_salt needs the smallest component to keep"),
        (lambda: apply("remove_salt", np.zeros((5, 5, 5)), unit_grid(), min_voxels=-3), r"0 voxels or more, not -3"),
        (
            lambda: apply("remove_salt", np.zeros((5, 5, 5)), unit_grid(), min_voxels=3, connectivity=18),
            r"connectivity must be 6 \(faces\) or 26 \(edges, corners too\), not 18",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        call()


def test_grids_are_validated() -> None:
    with pytest.raises(InvalidValue, match=r"three positive voxel counts, not \(5, 5\)"):
        Grid((5, 5), np.eye(4))  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match=r"4x4 matrix, not an array of shape \(3, 3\)"):
        Grid((5, 5, 5), np.eye(3))
    with pytest.raises(InvalidValue, match="singular"):
        Grid((5, 5, 5), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(InvalidValue, match=r"the ROI must be a binary mask of numbers 0 and 1, not of <U1"):
        check_mask(np.full((5, 5, 5), "a"), unit_grid())


def test_grid_measures_and_comparison() -> None:
    grid = Grid((4, 5, 6), np.diag([2.0, 2.0, 3.0, 1.0]))
    assert grid.spacing_mm == (2.0, 2.0, 3.0)
    assert grid.voxel_volume_ml == pytest.approx(0.012)
    assert grid.face_area_cm2(2) == pytest.approx(0.04)
    nudged = Grid((4, 5, 6), grid.affine + np.diag([1e-6, 1e-6, 1e-6, 0.0]))
    assert grid.same_as(nudged) and grid != nudged
    assert grid == Grid((4, 5, 6), np.diag([2.0, 2.0, 3.0, 1.0])) and hash(grid) == hash(Grid((4, 5, 6), grid.affine.copy()))
    assert not grid.same_as(Grid((4, 5, 7), grid.affine))
