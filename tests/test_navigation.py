"""The navigation tool's geometry without servers: transforms checked against matrices built here
(scipy's rotations, hand-written translations), fields and resampling against hand-computed voxels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from nifti_archive.errors import InvalidValue
from segmentation.grid import Grid
from segmentation.navigation import (
    NIFTI_INTENT_VECTOR,
    AffineParameters,
    DisplacementMarker,
    Interpolation,
    KeypointStage,
    MarkerStage,
    TransformMode,
    compose,
    displacement_field,
    field_image,
    moved_affine,
    pull_back,
    resample,
    with_affine,
    world_grid,
)
from segmentation.navigation_actions import parse_request
from tests.portal_site import AXIAL


def shift(offset: list[float]) -> NDArray[np.float64]:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def turn(angles_deg: list[float]) -> NDArray[np.float64]:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    return matrix


def reread(raw: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(raw)


def test_a_known_rotation_gives_the_expected_affine() -> None:
    reference = nib.load(AXIAL)
    affine = np.asarray(reference.affine, dtype=np.float64)
    centre, translation, angles = [3.0, -12.5, 20.0], [4.0, -2.0, 7.5], [10.0, -25.0, 40.0]
    expected = shift(translation) @ shift(centre) @ turn(angles) @ shift([-c for c in centre]) @ affine
    transform = compose(AffineParameters(tuple(translation), tuple(angles), (1.0, 1.0, 1.0), tuple(centre)))  # type: ignore[arg-type]
    np.testing.assert_allclose(moved_affine(transform, affine), expected, rtol=0, atol=1e-6)
    raw = AXIAL.read_bytes()
    moved = reread(with_affine(raw, moved_affine(transform, affine)))
    # The file holds float32: equal to 1e-6 relative to each entry.
    np.testing.assert_allclose(moved.affine, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(moved.get_qform(), expected, rtol=0, atol=1e-4)
    assert int(moved.header["sform_code"]) > 0 and int(moved.header["qform_code"]) > 0
    # Only the geometry changed: every byte after the header is the original's.
    assert with_affine(raw, expected)[348:] == raw[348:]
    np.testing.assert_array_equal(moved.get_fdata(), reference.get_fdata())


def test_a_rotation_about_a_centre_keeps_the_centre_in_place() -> None:
    centre = (10.0, 20.0, 30.0)
    transform = compose(AffineParameters(rotation_deg=(0.0, 0.0, 90.0), centre=centre))
    np.testing.assert_allclose(transform @ [*centre, 1.0], [*centre, 1.0], atol=1e-12)
    # 90 degrees about z turns +x into +y (right-handed).
    np.testing.assert_allclose(transform @ [11.0, 20.0, 30.0, 1.0], [10.0, 21.0, 30.0, 1.0], atol=1e-12)


def test_scale_about_the_centre() -> None:
    transform = compose(AffineParameters(scale=(2.0, 1.0, 0.5), centre=(1.0, 1.0, 1.0)))
    np.testing.assert_allclose(transform @ [2.0, 3.0, 3.0, 1.0], [3.0, 3.0, 2.0, 1.0], atol=1e-12)


def test_a_shearing_affine_keeps_the_sform_and_drops_the_qform() -> None:
    raw = AXIAL.read_bytes()
    affine = np.asarray(nib.load(AXIAL).affine, dtype=np.float64)
    # Stretching along x after turning about z: the voxel axes are no longer at right angles.
    sheared = compose(AffineParameters(scale=(2.0, 1.0, 1.0))) @ compose(AffineParameters(rotation_deg=(0.0, 0.0, 30.0)))
    moved = reread(with_affine(raw, sheared @ affine))
    np.testing.assert_allclose(moved.affine, sheared @ affine, rtol=1e-6, atol=1e-6)
    assert int(moved.header["qform_code"]) == 0


def test_the_world_grid_covers_every_image_at_the_chosen_voxel_size() -> None:
    first = Grid((10, 10, 10), np.eye(4))
    second = Grid((4, 4, 4), np.diag([2.0, 2.0, 2.0, 1.0]) + shift([20.0, -5.0, 0.0]) - np.eye(4))
    grid = world_grid([first, second], 1.5)
    # Extents: x from -0.5 to 27 (27.5 mm), y from -6 to 9.5 (15.5 mm), z from -1 to 9.5 (10.5 mm).
    assert grid.shape == (19, 11, 7)
    np.testing.assert_allclose(grid.affine[:3, :3], np.diag([1.5, 1.5, 1.5]))
    low = grid.affine[:3, 3] - 0.75
    high = grid.affine[:3, 3] + (np.array(grid.shape) - 0.5) * 1.5
    assert np.all(low <= [-0.5, -6.0, -1.0]) and np.all(high >= [27.0, 9.5, 9.5])
    with pytest.raises(InvalidValue, match="voxel_mm"):
        world_grid([first], 0.0)


def test_a_displacement_at_a_known_point_moves_that_voxel_by_the_expected_amount() -> None:
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) + shift([-20.0, -20.0, -15.0]) - np.eye(4)
    grid = Grid((20, 20, 10), affine)
    image = np.zeros(grid.shape, dtype=np.int16)
    image[8, 10, 5] = 1000
    centre = affine @ [8, 10, 5, 1]
    # Three voxels along x (6 mm) and one along z (3 mm).
    marker = DisplacementMarker((float(centre[0]), float(centre[1]), float(centre[2])), (6.0, 0.0, 3.0), 4.0)
    field = displacement_field([MarkerStage((marker,))], grid)
    written = nib.Nifti1Image.from_bytes(field_image(field, grid).to_bytes())
    assert written.shape == (20, 20, 10, 1, 3)
    assert int(written.header["intent_code"]) == NIFTI_INTENT_VECTOR
    np.testing.assert_allclose(written.affine, affine)
    vectors = np.asarray(written.dataobj)[:, :, :, 0, :]
    # The pull-back vector at the target voxel points back to the marker's centre.
    np.testing.assert_allclose(vectors[11, 10, 6], [-6.0, 0.0, -3.0], atol=1e-6)
    # Far from the marker nothing moves.
    np.testing.assert_allclose(vectors[0, 0, 0], [0.0, 0.0, 0.0], atol=1e-6)
    warped = resample(image, affine, field, grid, Interpolation.LINEAR)
    assert warped[11, 10, 6] == 1000
    assert np.unravel_index(np.argmax(warped), grid.shape) == (11, 10, 6)
    assert warped.dtype == np.int16


def test_markers_of_one_stage_sum_and_dumped_stages_compose() -> None:
    first = DisplacementMarker((0.0, 0.0, 0.0), (2.0, 0.0, 0.0), 5.0)
    second = DisplacementMarker((10.0, 0.0, 0.0), (0.0, 1.0, 0.0), 3.0)
    points = np.array([[2.0, 0.0, 0.0], [10.0, 1.0, 0.0], [5.0, 5.0, 5.0]])

    def gaussian(marker: DisplacementMarker, x: NDArray[np.float64]) -> NDArray[np.float64]:
        squared = np.sum((x - np.add(marker.centre, marker.displacement)) ** 2, axis=1)
        return -np.exp(-squared / (2 * marker.sigma**2))[:, None] * np.asarray(marker.displacement)

    summed = MarkerStage((first, second)).displacement(points)
    np.testing.assert_allclose(summed, gaussian(first, points) + gaussian(second, points), atol=1e-12)
    dumped, on_top = MarkerStage((first,)), MarkerStage((second,))
    via_new = points + gaussian(second, points)
    np.testing.assert_allclose(pull_back([dumped, on_top], points), via_new + gaussian(first, via_new), atol=1e-12)


def test_keypoints_take_each_target_back_to_its_source() -> None:
    source = [(0.0, 0.0, 0.0), (10.0, 0.0, 0.0), (0.0, 12.0, 3.0)]
    target = [(1.0, 0.5, 0.0), (10.0, -2.0, 1.0), (0.0, 12.0, 0.0)]
    stage = KeypointStage.fit(source, target, 6.0)
    np.testing.assert_allclose(pull_back([stage], np.array(target)), np.array(source), atol=1e-9)
    np.testing.assert_allclose(stage.displacement(np.array([[500.0, 500.0, 500.0]])), [[0.0, 0.0, 0.0]], atol=1e-12)
    with pytest.raises(InvalidValue, match="coincide|too close"):
        KeypointStage.fit([(0.0, 0.0, 0.0), (1.0, 0.0, 0.0)], [(5.0, 5.0, 5.0), (5.0, 5.0, 5.0)], 6.0)


def test_label_images_are_resampled_by_nearest_neighbour() -> None:
    grid = Grid((6, 6, 6), np.eye(4))
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[2:4, 2:4, 2:4] = 7
    # Half a voxel: trilinear would mix 7 with 0.
    field = np.zeros((*grid.shape, 3), dtype=np.float32)
    field[..., 0] = 0.5
    nearest = resample(labels, grid.affine, field, grid, Interpolation.NEAREST)
    assert set(np.unique(nearest)) == {0, 7}
    assert set(np.unique(resample(labels, grid.affine, field, grid, Interpolation.LINEAR))) > {0, 7}


def test_four_dimensional_images_warp_volume_by_volume() -> None:
    grid = Grid((5, 5, 5), np.eye(4))
    series = np.zeros((5, 5, 5, 2), dtype=np.float32)
    series[1, 2, 2, 0], series[1, 2, 2, 1] = 1.0, 2.0
    field = np.zeros((*grid.shape, 3), dtype=np.float32)
    field[..., 0] = -1.0
    warped = resample(series, grid.affine, field, grid, Interpolation.LINEAR)
    assert warped.shape == (5, 5, 5, 2)
    assert warped[2, 2, 2, 0] == 1.0 and warped[2, 2, 2, 1] == 2.0


@pytest.mark.parametrize(("body", "named"), [
    ({"mode": "rigid"}, "moving"),
    ({"mode": "rigid", "moving": []}, "moving"),
    ({"mode": "spin", "moving": [1]}, "mode"),
    ({"mode": "rigid", "moving": [1], "transform": {"translation": [1, 2]}}, "transform.translation"),
    ({"mode": "rigid", "moving": [1], "transform": {"rotation_deg": [1, "a", 2]}}, "transform.rotation_deg"),
    ({"mode": "rigid", "moving": [1], "transform": {"scale": [2, 1, 1]}}, "transform.scale"),
    ({"mode": "affine", "moving": [1], "transform": {"scale": [0, 1, 1]}}, "transform.scale"),
    ({"mode": "affine", "moving": [1], "transform": {"shear": [0, 1, 1]}}, "shear"),
    ({"mode": "displacements", "moving": [1]}, "stages"),
    ({"mode": "displacements", "moving": [1], "stages": [{"markers": [{"centre": [0, 0, 0], "displacement": [1, 0, 0]}]}]},
     "stages[0].markers[0].sigma"),
    ({"mode": "keypoints", "moving": [1], "stages": [{"keypoints": {"source": [[0, 0, 0]], "target": [], "sigma": 5}}]},
     "stages[0].keypoints.target"),
    ({"mode": "rigid", "moving": [1], "fixed": [1]}, "fixed"),
    ({"mode": "rigid", "moving": [1], "interpolation": "cubic"}, "interpolation"),
])
def test_malformed_requests_name_the_field(body: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidValue) as error:
        parse_request(body)
    assert named in str(error.value)


def test_transform_modes_name_themselves() -> None:
    assert TransformMode.named("keypoints") is TransformMode.KEYPOINTS
    assert TransformMode.KEYPOINTS.deforms and not TransformMode.AFFINE.deforms

