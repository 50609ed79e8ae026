"""Image statistics inside ROIs: hand-computed cases, numpy on a real volume, other grids, the table and its CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray

from nifti_archive.errors import InvalidValue
from segmentation.grid import Grid
from segmentation.statistics import CSV_COLUMNS, RoiStatistics, roi_statistics, slice_axis, table, write_csv

REFERENCE = Path(__file__).parent / "data" / "dcm_qa" / "Ref" / "ax_asc_35sl_6.nii"


@pytest.fixture(scope="module")
def real_image() -> tuple[NDArray[np.int16], Grid]:
    image = nib.load(REFERENCE)
    return np.asarray(image.dataobj), Grid.of(image)


def expected_statistics(values: NDArray[np.float64]) -> tuple[float, float, float, float, float]:
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return float(values.mean()), float(values.std(ddof=0)), float(median), float(p25), float(p75)


def value_statistics(found: RoiStatistics) -> tuple[float | None, ...]:
    return found.mean, found.std, found.median, found.p25, found.p75


def test_hand_computed_values_and_volume() -> None:
    grid = Grid((4, 4, 4), np.diag([2.0, 2.0, 3.0, 1.0]))
    image = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    mask = np.zeros(grid.shape, dtype=np.uint8)
    mask[0, 0, :] = 1  # values 0 1 2 3
    mask[1, 1, 0:2] = 1  # values 20 21
    found = roi_statistics(image, grid, mask, grid)
    assert found.voxels == 6 and found.outside_voxels == 0
    assert found.mean == pytest.approx(47 / 6)
    assert found.median == 2.5
    assert found.p25 == 1.25 and found.p75 == 15.75
    assert found.std == pytest.approx(math.sqrt(sum((v - 47 / 6) ** 2 for v in (0, 1, 2, 3, 20, 21)) / 6))
    # 2 x 2 x 3 mm voxels hold 12 µL each.
    assert found.volume_ml == pytest.approx(6 * 0.012)
    assert found.area_cm2 is None


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 1000])
def test_percentiles_match_numpy_for_any_count(count: int) -> None:
    rng = np.random.default_rng(count)
    grid = Grid((10, 10, 10), np.eye(4))
    image = rng.integers(0, 50, size=grid.shape).astype(np.uint8)
    mask = np.zeros(1000, dtype=bool)
    mask[rng.choice(1000, size=count, replace=False)] = True
    mask = mask.reshape(grid.shape)
    found = roi_statistics(image, grid, mask, grid)
    assert value_statistics(found) == pytest.approx(expected_statistics(image[mask].astype(np.float64)), rel=1e-12, abs=1e-12)


def test_a_nan_inside_the_roi_makes_the_values_nan() -> None:
    grid = Grid((3, 3, 3), np.eye(4))
    image = np.ones(grid.shape)
    image[1, 1, 1] = np.nan
    found = roi_statistics(image, grid, np.ones(grid.shape), grid)
    assert found.voxels == 27 and all(value is not None and math.isnan(value) for value in value_statistics(found))


def test_area_of_a_one_slice_roi() -> None:
    grid = Grid((5, 5, 5), np.diag([2.0, 2.0, 3.0, 1.0]))
    image = np.ones(grid.shape)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[1:3, 1:4, 2] = True
    found = roi_statistics(image, grid, mask, grid)
    assert found.area_cm2 == pytest.approx(6 * 0.04)
    assert found.volume_ml == pytest.approx(6 * 0.012)


def test_a_line_lies_in_the_slice_across_the_widest_spacing() -> None:
    grid = Grid((5, 5, 5), np.diag([2.0, 3.0, 2.5, 1.0]))
    line = np.zeros(grid.shape, dtype=bool)
    line[0:4, 2, 1] = True
    # Shared index along axes 1 (3 mm) and 2 (2.5 mm): the slice is across axis 1, its voxel face 2 x 2.5 mm.
    assert slice_axis(line, grid) == 1
    assert roi_statistics(np.ones(grid.shape), grid, line, grid).area_cm2 == pytest.approx(4 * 0.05)
    isotropic = Grid((5, 5, 5), np.eye(4))
    assert slice_axis(line, isotropic) == 2
    assert slice_axis(np.zeros(grid.shape, dtype=bool), grid) is None


def test_area_follows_an_oblique_slice_plane() -> None:
    angle = math.radians(20)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]) @ np.diag(
        [0.5, 0.8, 4.0]
    )
    grid = Grid((6, 6, 6), affine)
    mask = np.zeros(grid.shape, dtype=bool)
    mask[1:4, 2:4, 3] = True
    assert roi_statistics(np.ones(grid.shape), grid, mask, grid).area_cm2 == pytest.approx(6 * 0.5 * 0.8 / 100)


def test_empty_roi_has_no_values() -> None:
    grid = Grid((3, 3, 3), np.eye(4))
    found = roi_statistics(np.ones(grid.shape), grid, np.zeros(grid.shape, dtype=bool), grid)
    assert found == RoiStatistics(0, 0, None, None, None, None, None, 0.0, None)


def test_roi_voxels_outside_the_image_are_counted_and_left_out() -> None:
    image_grid = Grid((4, 4, 4), np.eye(4))
    roi_grid = Grid((6, 4, 4), np.eye(4))
    image = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    mask = np.zeros(roi_grid.shape, dtype=bool)
    mask[2:6, 1, 1] = True
    found = roi_statistics(image, image_grid, mask, roi_grid)
    assert (found.voxels, found.outside_voxels) == (2, 2)
    assert found.mean == pytest.approx((image[2, 1, 1] + image[3, 1, 1]) / 2)
    assert found.volume_ml == pytest.approx(4 * 0.001)
    assert found.area_cm2 == pytest.approx(4 * 0.01)


def test_roi_wholly_outside_the_image() -> None:
    image_grid = Grid((4, 4, 4), np.eye(4))
    roi_grid = Grid((4, 4, 4), np.array([[1.0, 0, 0, 10.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    found = roi_statistics(np.ones((4, 4, 4)), image_grid, np.ones((4, 4, 4)), roi_grid)
    assert found == RoiStatistics(0, 64, None, None, None, None, None, pytest.approx(0.064), None)


def test_real_volume_matches_numpy(real_image: tuple[NDArray[np.int16], Grid]) -> None:
    data, grid = real_image
    first = data[..., 0]
    mask = first > np.median(first)
    found = roi_statistics(data, grid, mask, grid)
    assert found.voxels == np.count_nonzero(mask) and found.outside_voxels == 0
    assert value_statistics(found) == pytest.approx(expected_statistics(first[mask].astype(np.float64)), rel=1e-12)
    assert found.volume_ml == pytest.approx(np.count_nonzero(mask) * 3.25 * 3.25 * 3.6 / 1000, rel=1e-6)
    second = roi_statistics(data, grid, mask, grid, volume=1)
    assert value_statistics(second) == pytest.approx(expected_statistics(data[..., 1][mask].astype(np.float64)), rel=1e-12)


@pytest.mark.parametrize("reorder", ["flip", "transpose"])
def test_image_on_a_reordered_grid_gives_the_same_statistics(real_image: tuple[NDArray[np.int16], Grid], reorder: str) -> None:
    data, grid = real_image
    first = data[..., 0]
    mask = first > np.median(first)
    if reorder == "flip":
        # Voxel i' of the flipped image is voxel length - 1 - i' of the original, at the same place in world space.
        reordered = first[::-1]
        old_from_new = np.array([[-1.0, 0, 0, first.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    else:
        # Voxel (a, b, c) of the transposed image is voxel (b, c, a) of the original.
        reordered = first.transpose(2, 0, 1)
        old_from_new = np.array([[0.0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    reordered_grid = Grid((reordered.shape[0], reordered.shape[1], reordered.shape[2]), grid.affine @ old_from_new)
    assert roi_statistics(reordered, reordered_grid, mask, grid) == roi_statistics(first, grid, mask, grid)


def test_image_on_an_oblique_grid_is_read_at_the_nearest_voxel(real_image: tuple[NDArray[np.int16], Grid]) -> None:
    data, image_grid = real_image
    image = data[..., 0]
    angle = math.radians(25)
    affine = image_grid.affine.copy()
    turn = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    affine[:3, :3] = turn @ np.diag([2.0, 2.5, 3.0])
    # About 40 mm above the image's centre, so that the ROI's top reaches past the image's last slice; off
    # the round numbers, so that no ROI voxel centre lies halfway between two image voxels.
    image_centre = nib.affines.apply_affine(image_grid.affine, (np.array(image_grid.shape) - 1) / 2)
    affine[:3, 3] = image_centre + [0.37, 0.21, 40.13] - affine[:3, :3] @ [19.5, 19.5, 19.5]
    roi_grid = Grid((40, 40, 40), affine)
    mask = np.zeros(roi_grid.shape, dtype=bool)
    mask[5:35, 5:35, 10:30] = True

    world = nib.affines.apply_affine(roi_grid.affine, np.argwhere(mask))
    nearest = np.floor(nib.affines.apply_affine(np.linalg.inv(image_grid.affine), world) + 0.5).astype(int)
    inside = np.all((nearest >= 0) & (nearest < image_grid.shape), axis=1)
    expected = image[tuple(nearest[inside].T)].astype(np.float64)

    found = roi_statistics(image, image_grid, mask, roi_grid)
    assert (found.voxels, found.outside_voxels) == (inside.sum(), (~inside).sum())
    assert 0 < found.outside_voxels < np.count_nonzero(mask)
    assert value_statistics(found) == pytest.approx(expected_statistics(expected), rel=1e-12)


def test_a_centre_halfway_between_image_voxels_reads_the_higher_index() -> None:
    image_grid = Grid((4, 1, 1), np.eye(4))
    image = np.arange(4, dtype=np.float64).reshape(4, 1, 1)
    half_up = Grid((4, 1, 1), np.array([[1.0, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    found = roi_statistics(image, image_grid, np.ones((4, 1, 1)), half_up)
    assert (found.voxels, found.outside_voxels, found.mean) == (3, 1, 2.0)
    half_down = Grid((4, 1, 1), np.array([[1.0, 0, 0, -0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    found = roi_statistics(image, image_grid, np.ones((4, 1, 1)), half_down)
    assert (found.voxels, found.outside_voxels, found.mean) == (4, 0, 1.5)


def test_table_and_csv_cover_every_pair() -> None:
    grid = Grid((4, 4, 4), np.diag([2.0, 2.0, 3.0, 1.0]))
    ramp = np.arange(64, dtype=np.float64).reshape(4, 4, 4)
    images = {"ramp": (ramp, grid), "ones": (np.ones((4, 4, 4, 2)), grid)}
    slab = np.zeros(grid.shape, dtype=bool)
    slab[:, :, 1] = True
    rois = {"slab": (slab, grid), "nothing": (np.zeros(grid.shape, dtype=bool), grid)}
    rows = table(images, rois)
    assert [(row.image, row.roi) for row in rows] == [("ramp", "slab"), ("ramp", "nothing"), ("ones", "slab"), ("ones", "nothing")]
    assert rows[0].statistics == roi_statistics(ramp, grid, slab, grid)
    assert rows[2].statistics.mean == 1.0 and rows[2].statistics.std == 0.0

    stream = io.StringIO(newline="")
    write_csv(rows, stream)
    lines = stream.getvalue().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    parsed = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert len(parsed) == 4
    assert parsed[0]["image"] == "ramp" and parsed[0]["roi"] == "slab" and parsed[0]["voxels"] == "16"
    assert float(parsed[0]["mean"]) == rows[0].statistics.mean
    assert float(parsed[0]["area_cm2"]) == pytest.approx(16 * 0.04)
    assert parsed[1] == {
        "image": "ramp", "roi": "nothing", "voxels": "0", "outside_voxels": "0", "mean": "", "std": "", "median": "",
        "p25": "", "p75": "", "volume_ml": "0.0", "area_cm2": "",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("image", "mask", "volume", "message"),
    [
        (np.ones((4, 4, 5)), np.ones((4, 4, 4)), 0, r"the image has shape \(4, 4, 5\) but its grid has shape \(4, 4, 4\)"),
        (np.ones((4, 4, 4)), np.ones((4, 4, 3)), 0, r"the ROI has shape \(4, 4, 3\) but its grid has shape \(4, 4, 4\)"),
        (np.ones((4, 4, 4)), np.full((4, 4, 4), 0.5), 0, r"the ROI must be binary \(0 and 1 only\) but holds 0.5"),
        (np.ones((4, 4, 4, 2)), np.ones((4, 4, 4)), 2, r"the image has 2 volumes \(0 to 1\): there is no volume 2"),
        (np.ones((4, 4, 4)), np.ones((4, 4, 4)), 1, r"the image is 3D: it has no volume 1"),
        (np.ones((4, 4, 4, 2, 2)), np.ones((4, 4, 4)), 0, r"only 3D images and 4D series"),
    ],
)
def test_bad_input_is_refused_with_a_message(image: NDArray[np.float64], mask: NDArray[np.float64], volume: int, message: str) -> None:
    grid = Grid((4, 4, 4), np.eye(4))
    with pytest.raises(InvalidValue, match=message):
        roi_statistics(image, grid, mask, grid, volume=volume)


def test_table_reads_images_sharing_a_grid_like_one_at_a_time(real_image: tuple[NDArray[np.int16], Grid]) -> None:
    data, grid = real_image
    angle = math.radians(15)
    turn = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    turned = grid.affine.copy()
    turned[:3, :3] = turn @ grid.affine[:3, :3]
    image_grid = Grid(grid.shape, turned)
    roi = data[..., 0] > np.median(data[..., 0])
    rows = table({"first": (data[..., 0], image_grid), "second": (data[..., 1], image_grid)}, {"bright": (roi, grid)})
    assert [row.statistics for row in rows] == [roi_statistics(data, image_grid, roi, grid, volume=volume) for volume in (0, 1)]
    assert 0 < rows[0].statistics.outside_voxels < np.count_nonzero(roi)


def test_table_names_the_faulty_input() -> None:
    grid = Grid((4, 4, 4), np.eye(4))
    with pytest.raises(InvalidValue, match=r"ROI 'lesion' must be binary \(0 and 1 only\) but holds 2, 3"):
        table({"t1": (np.ones((4, 4, 4)), grid)}, {"lesion": (np.arange(64).reshape(4, 4, 4) % 4, grid)})
