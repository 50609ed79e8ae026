"""Streamline selection and track density (nifti_archive.tracts.geometry) against independent
computations over the streamlines nibabel's streamline API loads from small synthetic TCK and TRK
files written here: each streamline and each segment in a loop, with a different formula for a
point's distance to a segment (the perpendicular through a cross product) than the code's (a
clamped projection)."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from numpy.typing import NDArray

from nifti_archive.errors import InvalidValue
from nifti_archive.tracts import geometry
from nifti_archive.tracts.geometry import Action, Mask, Mode, Polylines, Step
from testbed.tractograms import curves, write_tck, write_trk

CENTRE = (4.0, -6.0, 3.0)
RADIUS = 4.0
# A 2 mm grid, oblique and shifted, so that rounding to the voxel goes through a real affine.
GRID_AFFINE = np.array([[2.0, 0.2, 0.0, -70.0], [0.0, 1.9, -0.3, -85.0], [0.1, 0.0, 2.1, -60.0], [0, 0, 0, 1]])
GRID_SHAPE = (70, 90, 60)


def distance_to_segment(c: NDArray[np.float64], a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Beyond either end, the distance to that end; between them, to the line through the segment."""
    d = b - a
    if np.dot(c - a, d) <= 0 or not np.any(d):
        return float(np.linalg.norm(c - a))
    if np.dot(c - b, -d) <= 0:
        return float(np.linalg.norm(c - b))
    return float(np.linalg.norm(np.cross(c - a, d)) / np.linalg.norm(d))


def hit_segments(streamline: NDArray[np.floating], centre: tuple[float, float, float], radius: float) -> list[int]:
    points = np.asarray(streamline, dtype=np.float64)
    c = np.asarray(centre)
    if len(points) == 1:
        return [0] if np.linalg.norm(points[0] - c) <= radius else []
    return [k for k in range(len(points) - 1) if distance_to_segment(c, points[k], points[k + 1]) <= radius]


def expected_sphere(path: Path, centre: tuple[float, float, float], radius: float) -> NDArray[np.bool_]:
    return np.array([bool(hit_segments(s, centre, radius)) for s in nib.streamlines.load(str(path)).streamlines])


def expected_waypoints(streamline: NDArray[np.floating], centres: list[tuple[float, float, float]], radius: float) -> bool:
    """Every choice of one hit segment per waypoint, in order, along the streamline or backwards."""
    hits = [hit_segments(streamline, c, radius) for c in centres]
    choices = itertools.product(*hits)
    return any(all(x <= y for x, y in itertools.pairwise(c)) or all(x >= y for x, y in itertools.pairwise(c)) for c in choices)


def lines_of(path: Path) -> Polylines:
    return Polylines.of(nib.streamlines.load(str(path)).streamlines)


@pytest.fixture(scope="module")
def coarse_tck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long steps (10 mm) beside a 4 mm sphere: many streamlines cross it between two points outside it."""
    streamlines = curves(600, seed=7, step_mm=10.0, points=(2, 12), half_axes=(20.0, 20.0, 20.0))
    streamlines.append(np.array([[4.0, -6.0, 30.0]], dtype=np.float32))
    streamlines.append(np.array([[4.5, -6.0, 3.0]], dtype=np.float32))
    return write_tck(tmp_path_factory.mktemp("tracts") / "coarse.tck", streamlines)


def test_a_sphere_keeps_exactly_the_streamlines_with_a_segment_within_its_radius(coarse_tck: Path) -> None:
    expected = expected_sphere(coarse_tck, CENTRE, RADIUS)
    by_vertex = np.array([bool(np.any(np.linalg.norm(np.asarray(s, dtype=np.float64) - CENTRE, axis=1) <= RADIUS))
                          for s in nib.streamlines.load(str(coarse_tck)).streamlines])
    # The file tells the two definitions apart: some streamlines cross with no point inside.
    assert np.sum(expected & ~by_vertex) >= 5
    assert 10 < expected.sum() < len(expected) - 10
    assert expected[-1] and not expected[-2]
    lines = lines_of(coarse_tck)
    assert np.array_equal(geometry.through_sphere(lines, CENTRE, RADIUS), expected)
    keep = geometry.select(lines, [Step(Mode.SPHERE, Action.KEEP, (CENTRE,), RADIUS)])
    delete = geometry.select(lines, [Step(Mode.SPHERE, Action.DELETE, (CENTRE,), RADIUS)])
    assert np.array_equal(keep, expected)
    assert np.array_equal(delete, ~expected)


def test_a_trk_is_selected_in_world_millimetres(tmp_path: Path) -> None:
    streamlines = curves(300, seed=3, step_mm=4.0, half_axes=(25.0, 25.0, 25.0))
    path = write_trk(tmp_path / "grid.trk", streamlines, GRID_AFFINE, GRID_SHAPE)
    expected = expected_sphere(path, CENTRE, 8.0)
    assert 10 < expected.sum() < len(expected) - 10
    assert np.array_equal(geometry.through_sphere(lines_of(path), CENTRE, 8.0), expected)


def test_steps_apply_one_after_the_other(coarse_tck: Path) -> None:
    other = (-8.0, 4.0, 0.0)
    first, second = expected_sphere(coarse_tck, CENTRE, RADIUS), expected_sphere(coarse_tck, other, 7.0)
    kept = geometry.select(lines_of(coarse_tck), [Step(Mode.SPHERE, Action.KEEP, (CENTRE,), RADIUS),
                                                  Step(Mode.SPHERE, Action.DELETE, (other,), 7.0)])
    assert np.array_equal(kept, first & ~second)
    assert 0 < kept.sum() < first.sum()


def test_a_point_set_keeps_the_streamlines_through_any_of_its_spheres(coarse_tck: Path) -> None:
    centres = [CENTRE, (-8.0, 4.0, 0.0), (10.0, 10.0, -10.0)]
    expected = np.logical_or.reduce([expected_sphere(coarse_tck, c, 4.0) for c in centres])
    kept = geometry.select(lines_of(coarse_tck), [Step(Mode.POINTS, Action.KEEP, tuple(centres), 4.0)])
    assert np.array_equal(kept, expected)


def polyline(*corners: tuple[float, float, float], step: float = 5.0) -> NDArray[np.float32]:
    """The corners joined by straight legs, a point at most ``step`` mm from the next."""
    legs = [np.linspace(a, b, max(2, int(np.ceil(np.linalg.norm(np.subtract(b, a)) / step)) + 1))[:-1]
            for a, b in itertools.pairwise(corners)]
    return np.concatenate([*legs, [corners[-1]]]).astype(np.float32)


def test_waypoints_must_be_met_in_order_in_either_direction(tmp_path: Path) -> None:
    a, b, c = (-20.0, 0.0, 0.0), (0.0, 0.0, 0.0), (20.0, 0.0, 0.0)
    straight = polyline((-30.0, 0, 0), (30.0, 0, 0))
    backwards = straight[::-1].copy()
    # Through a, b and c, then back through b only.
    hairpin = polyline((-25.0, 0, 0), (25.0, 0, 0), (25.0, 10, 0), (-2.0, 0.5, 0))
    # Through b, then a and c on a bow around b.
    detour = polyline((0.0, 0, 0.5), (0.0, 30, 0), (-20.0, 1, 0), (0.0, 8, 0), (20.0, 1, 0))
    lines = Polylines.of([straight, backwards, hairpin, detour])
    assert geometry.through_waypoints(lines, [a, b, c], 2.0).tolist() == [True, True, True, False]
    assert geometry.through_waypoints(lines, [a, c], 2.0).tolist() == [True, True, True, True]
    assert geometry.through_waypoints(lines, [b, a, c], 2.0).tolist() == [False, False, False, True]
    assert geometry.through_waypoints(lines, [a, c, b], 2.0).tolist() == [False, False, True, False]
    for streamline, centres in itertools.product([straight, backwards, hairpin, detour], itertools.permutations([a, b, c])):
        assert geometry.through_waypoints(Polylines.of([streamline]), list(centres), 2.0)[0] == expected_waypoints(
            streamline, list(centres), 2.0)
    path = write_tck(tmp_path / "waypoints.tck", curves(600, seed=9, step_mm=3.0, points=(5, 30), half_axes=(15.0, 15.0, 15.0)))
    loaded = nib.streamlines.load(str(path)).streamlines
    for centres in ([a, b, c], [a, c, b]):
        near = [(x / 2, y, z) for x, y, z in centres]
        expected = np.array([expected_waypoints(s, near, 6.0) for s in loaded])
        assert expected.sum() >= 2
        assert np.array_equal(geometry.through_waypoints(lines_of(path), near, 6.0), expected)


def _voxels_visited(streamline: NDArray[np.floating], affine: NDArray[np.float64], shape: tuple[int, ...]) -> set[tuple[int, ...]]:
    """The voxels of a streamline's points (its segments shorter than a quarter voxel: the points are enough)."""
    ijk = np.rint(apply_affine(np.linalg.inv(affine), np.asarray(streamline, dtype=np.float64))).astype(int)
    return {tuple(v) for v in ijk if all(0 <= v[i] < shape[i] for i in range(3))}


@pytest.fixture(scope="module")
def fine_tck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Steps of 0.4 mm on a grid whose smallest voxel edge is 1.9 mm: the points alone sample every segment."""
    streamlines = curves(200, seed=11, step_mm=0.4, points=(20, 120), half_axes=(30.0, 30.0, 30.0))
    return write_tck(tmp_path_factory.mktemp("tracts") / "fine.tck", streamlines)


def test_an_roi_keeps_the_streamlines_that_visit_its_voxels(fine_tck: Path) -> None:
    voxels = np.zeros(GRID_SHAPE, dtype=bool)
    voxels[30:40, 38:50, 25:35] = True
    inside = {tuple(v) for v in np.argwhere(voxels)}
    loaded = nib.streamlines.load(str(fine_tck)).streamlines
    expected = np.array([bool(_voxels_visited(s, GRID_AFFINE, GRID_SHAPE) & inside) for s in loaded])
    assert 5 < expected.sum() < len(expected) - 5
    roi = Mask(voxels, GRID_AFFINE, "box")
    lines = lines_of(fine_tck)
    assert np.array_equal(geometry.select(lines, [Step(Mode.ROI, Action.KEEP, roi=roi)]), expected)
    assert np.array_equal(geometry.select(lines, [Step(Mode.ROI, Action.DELETE, roi=roi)]), ~expected)


def test_an_roi_catches_a_segment_that_crosses_a_voxel_between_its_points() -> None:
    voxels = np.zeros((10, 10, 10), dtype=bool)
    voxels[5, 5, 5] = True
    roi = Mask(voxels, np.eye(4))
    across = np.array([[0.0, 5.0, 5.0], [9.0, 5.0, 5.0]], dtype=np.float32)
    beside = np.array([[0.0, 6.0, 5.0], [9.0, 6.0, 5.0]], dtype=np.float32)
    assert geometry.through_roi(Polylines.of([across, beside]), roi).tolist() == [True, False]


def test_track_density_counts_each_streamline_once_per_voxel(fine_tck: Path) -> None:
    loaded = nib.streamlines.load(str(fine_tck)).streamlines
    expected = np.zeros(GRID_SHAPE, dtype=np.int32)
    for streamline in loaded:
        for voxel in _voxels_visited(streamline, GRID_AFFINE, GRID_SHAPE):
            expected[voxel] += 1
    assert expected.max() > 1
    assert np.array_equal(geometry.density(lines_of(fine_tck), GRID_AFFINE, GRID_SHAPE), expected)


def test_track_density_on_the_bounding_box_covers_every_point(fine_tck: Path) -> None:
    lines = lines_of(fine_tck)
    affine, shape = geometry.bounding_grid(lines, 3.0)
    counts = geometry.density(lines, affine, shape)
    assert np.allclose(affine[:3, :3], np.eye(3) * 3.0)
    assert np.allclose(affine[:3, 3], lines.points.min(axis=0))
    # Every streamline lies wholly on the grid: each one visits at least one voxel, and no point falls off.
    ijk = np.rint(apply_affine(np.linalg.inv(affine), lines.points))
    assert ijk.min() >= 0 and np.all(ijk.max(axis=0) < shape)
    assert counts.max() <= lines.count and counts.sum() >= lines.count
    one_line = Polylines.of([np.array([[0.0, 0, 0], [10.0, 0, 0]], dtype=np.float32)] * 2)
    affine, shape = geometry.bounding_grid(one_line, 1.0)
    assert shape == (11, 1, 1)
    assert geometry.density(one_line, affine, shape).ravel().tolist() == [2] * 11


def test_steps_without_a_region_are_refused() -> None:
    lines = Polylines.of([np.zeros((2, 3), dtype=np.float32)])
    with pytest.raises(InvalidValue, match="positive radius"):
        geometry.select(lines, [Step(Mode.SPHERE, Action.KEEP, ((0.0, 0.0, 0.0),), 0.0)])
    with pytest.raises(InvalidValue, match="unknown selection mode 'cube': use one of"):
        Mode.named("cube")
    with pytest.raises(InvalidValue, match="larger voxels"):
        geometry.bounding_grid(Polylines.of([np.array([[0.0, 0, 0], [1000.0, 1000, 1000]], dtype=np.float32)]), 0.5)
