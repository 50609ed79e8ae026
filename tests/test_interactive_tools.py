"""The weight-free interactive tools (segmentation/interactive): reading interactions, and each tool driven
by a simulated user on a real series with a structure of known extent inserted into it."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import SupportsInt

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import ndimage

from segmentation.interactive import DESCRIPTIONS, Interaction, InteractionError, Tool, parse_interaction, segment
from tests.reference import DATA

# An 86×86×36 multiband EPI of a head; its first volume is the base image.
SERIES = DATA / "dcm_qa" / "Ref" / "fMRI_MB_asc_25.nii"
BIGGER = (128, 128, 96)
# The simulated user adds at most this many corrective clicks, and must reach this Dice by then.
MOST_CORRECTIONS = 5
TARGET_DICE = 0.9
PACKAGE = Path(__file__).resolve().parents[1] / "segmentation" / "interactive"

Voxel = tuple[int, int, int]
Volume = NDArray[np.float32]
Mask = NDArray[np.bool_]


@pytest.fixture(scope="module")
def series() -> Volume:
    return np.asarray(nib.load(SERIES).dataobj, dtype=np.float32)[..., 0]


@pytest.fixture(scope="module")
def bigger(series: Volume) -> Volume:
    """The series resampled onto a larger grid, so that a structure is a small part of the image and windows matter."""
    return np.asarray(ndimage.zoom(series, np.divide(BIGGER, series.shape), order=1), dtype=np.float32)


def with_structure(base: Volume, kind: str) -> tuple[Volume, Mask]:
    """``base`` with a bright structure of ``kind`` at its centre, and Gaussian noise: the volume and the structure's mask.

    A sphere, a cuboid, or a sphere with a smaller one of the same intensity touching it, which is not
    part of the structure (only where they touch, or a click inside the neighbour, can tell them apart).
    The structure is 1.8 times the 99th percentile of the series; the noise's standard deviation is a
    seventh of that, about a third of the contrast with the tissue around it.
    """
    size = min(base.shape[0], base.shape[1]) / 12
    centre = np.asarray(base.shape) / 2
    grid = np.indices(base.shape, dtype=np.float32)
    reach = [(grid[axis] - centre[axis]) / (size * (1 if axis < 2 else base.shape[2] / base.shape[0] * 2)) for axis in range(3)]
    neighbour = np.zeros(base.shape, dtype=bool)
    if kind == "cuboid":
        truth = (np.abs(reach[0]) <= 1) & (np.abs(reach[1]) <= 0.7) & (np.abs(reach[2]) <= 0.8)
    else:
        truth = reach[0] ** 2 + reach[1] ** 2 + reach[2] ** 2 <= 1
    if kind == "twin":
        neighbour = (reach[0] ** 2 + (reach[1] - 1.55) ** 2 + reach[2] ** 2 <= 0.75**2) & ~truth
    level = 1.8 * float(np.percentile(base, 99))
    noise = np.random.default_rng(7).normal(0, level / 7, base.shape)
    return np.asarray(np.where(truth | neighbour, level, base) + noise, dtype=np.float32), truth


def dice(mask: Mask, truth: Mask) -> float:
    return float(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))


def first_interaction(tool: Tool, truth: Mask) -> Interaction:
    """What a user does first: a click at the centre, a short stroke inside and one outside, or a box with a margin."""
    voxels = np.argwhere(truth)
    low, high = voxels.min(axis=0), voxels.max(axis=0)
    centre = _voxel((low + high) // 2)
    if tool is Tool.POINTS:
        return Interaction(foreground=(centre,))
    if tool is Tool.BOX:
        margin = 3
        corner = np.minimum(high + margin, np.asarray(truth.shape) - 1)
        return Interaction(box=(_voxel(np.maximum(low - margin, 0)), _voxel(corner)))
    # The outside stroke lies on the side away from a touching neighbour, where a user would put it.
    outside = int(low[1]) - 4
    return Interaction(
        foreground_scribbles=tuple((centre[0] + step, centre[1], centre[2]) for step in range(-2, 3)),
        background_scribbles=tuple((centre[0] + step, outside, centre[2]) for step in range(-2, 3)),
    )


def correction(mask: Mask, truth: Mask) -> Interaction:
    """A click at the deepest voxel of the largest wrong region: foreground where it was missed, background where it was taken."""
    missed, taken = truth & ~mask, mask & ~truth
    errors = [missed, taken]
    sizes = [_largest_part(error).sum() for error in errors]
    wrong = _largest_part(errors[int(np.argmax(sizes))])
    depth = ndimage.distance_transform_edt(np.pad(wrong, 1))[1:-1, 1:-1, 1:-1]
    voxel = _voxel(np.unravel_index(int(np.argmax(depth)), depth.shape))
    return Interaction(foreground=(voxel,)) if sizes[0] >= sizes[1] else Interaction(background=(voxel,))


def corrections_needed(tool: Tool, volume: Volume, truth: Mask) -> tuple[int | None, list[float]]:
    """How many corrective clicks the simulated user needs to reach the target Dice (None: not within
    MOST_CORRECTIONS), and the Dice after each step."""
    interaction = first_interaction(tool, truth)
    scores: list[float] = []
    for clicks in range(MOST_CORRECTIONS + 1):
        mask = segment(tool, volume, interaction)
        assert mask.dtype == np.bool_ and mask.shape == volume.shape
        scores.append(dice(mask, truth))
        if scores[-1] >= TARGET_DICE:
            return clicks, scores
        interaction = interaction.merged(correction(mask, truth))
    return None, scores


@pytest.mark.parametrize("kind", ["sphere", "cuboid", "twin"])
@pytest.mark.parametrize("tool", list(Tool))
@pytest.mark.parametrize("base_name", ["series", "bigger"])
def test_simulated_user_reaches_the_target(tool: Tool, kind: str, base_name: str, request: pytest.FixtureRequest) -> None:
    volume, truth = with_structure(request.getfixturevalue(base_name), kind)
    clicks, scores = corrections_needed(tool, volume, truth)
    assert clicks is not None, f"{tool.value} on a {kind} in the {base_name}: Dice after each step {[round(s, 3) for s in scores]}"


@pytest.mark.parametrize("tool", list(Tool))
def test_a_background_click_in_a_touching_look_alike_takes_it_away(tool: Tool, series: Volume) -> None:
    """The neighbour of the same intensity comes along with the first interaction (within the box, for
    the box tool); the simulated user's background click in it takes it away."""
    volume, truth = with_structure(series, "twin")
    first = first_interaction(tool, truth)
    before = segment(tool, volume, first)
    click = correction(before, truth)
    assert click.background
    after = dice(segment(tool, volume, first.merged(click)), truth)
    assert after >= TARGET_DICE
    assert after > dice(before, truth) + 0.03


@pytest.mark.parametrize("tool", list(Tool))
def test_marks_keep_their_labels(tool: Tool, series: Volume) -> None:
    volume, truth = with_structure(series, "sphere")
    interaction = first_interaction(tool, truth).merged(correction(np.zeros_like(truth), truth))
    outside = _voxel(np.argwhere(truth).min(axis=0) - 2)
    interaction = interaction.merged(Interaction(background=(outside,)))
    mask = segment(tool, volume, interaction)
    for voxel in interaction.foreground + interaction.foreground_scribbles:
        assert mask[voxel]
    for voxel in interaction.background + interaction.background_scribbles:
        assert not mask[voxel]


def test_a_box_confines_the_points_tool(series: Volume) -> None:
    volume, truth = with_structure(series, "sphere")
    centre = _voxel(np.argwhere(truth).mean(axis=0).round())
    box = ((centre[0] - 2, centre[1] - 2, centre[2] - 2), (centre[0] + 2, centre[1] + 2, centre[2] + 2))
    mask = segment(Tool.POINTS, volume, Interaction(foreground=(centre,), box=box))
    assert mask.any()
    assert not mask[: box[0][0]].any() and not mask[box[1][0] + 1 :].any()


def test_tools_accept_their_names_and_integer_volumes(series: Volume) -> None:
    volume, truth = with_structure(series, "sphere")
    mask = segment("points", volume.astype(np.int16), first_interaction(Tool.POINTS, truth))  # type: ignore[arg-type]
    assert dice(mask, truth) >= TARGET_DICE


def test_every_tool_has_an_honest_description() -> None:
    assert set(DESCRIPTIONS) == set(Tool)
    for description in DESCRIPTIONS.values():
        assert "no trained weights" in description


# --- reading interactions ---

SHAPE = (256, 256, 176)


def test_parse_reads_every_kind_of_mark_and_ignores_other_keys() -> None:
    interaction = parse_interaction(
        {
            "foreground": [[1, 2, 3], [1, 2, 3], [4, 5, 6]],
            "background": [(7, 8, 9)],
            "foreground_scribbles": [[10, 10, 10], [11, 10, 10]],
            "background_scribbles": [],
            "box": [[20, 30, 40], [10, 35, 5]],
            "label": "tumour",
            "model": "box",
        },
        SHAPE,
    )
    assert interaction == Interaction(
        foreground=((1, 2, 3), (4, 5, 6)),
        background=((7, 8, 9),),
        foreground_scribbles=((10, 10, 10), (11, 10, 10)),
        box=((10, 30, 5), (20, 35, 40)),
    )
    assert parse_interaction({"foreground": None, "box": None}, SHAPE).is_empty


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"foreground": [[300, 12, 5]]}, "foreground point 1 (300, 12, 5) lies outside the image of 256×256×176 voxels"),
        ({"background": [[1, 1, 1], [0, -1, 0]]}, "background point 2 (0, -1, 0) lies outside"),
        ({"foreground_scribbles": [[0, 0, 176]]}, "foreground scribble voxel 1 (0, 0, 176) lies outside"),
        ({"background_scribbles": [[255, 255, 175], [256, 0, 0]]}, "background scribble voxel 2 (256, 0, 0)"),
        ({"foreground": [[1.5, 2, 3]]}, "1.5 is not a voxel index"),
        ({"foreground": [[1.0, 2, 3]]}, "1.0 is not a voxel index"),
        ({"foreground": [[True, 2, 3]]}, "True is not a voxel index"),
        ({"foreground": [["1", 2, 3]]}, "'1' is not a voxel index"),
        ({"foreground": [[1, 2]]}, "foreground point 1 [1, 2] must be three voxel indices"),
        ({"foreground": [[1, 2, 3, 4]]}, "must be three voxel indices"),
        ({"foreground": "1,2,3"}, "the foreground points must be a list [[i, j, k], ...], got str '1,2,3'"),
        ({"foreground": [5]}, "foreground point 1 must be a list [i, j, k], got int 5"),
        ({"background": {"i": 1}}, "the background points must be a list"),
        ({"box": [[1, 2, 3]]}, "got 1 entries"),
        ({"box": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}, "got 3 entries"),
        ({"box": [[1, 2, 3], [4, 500, 6]]}, "box corner 2 (4, 500, 6) lies outside"),
        ({"box": [[1, 2, 3], [4, 5.5, 6]]}, "box corner 2 [4, 5.5, 6]: 5.5 is not a voxel index"),
        ({"box": "everything"}, "the box must be a list [[i, j, k], [i, j, k]]"),
        ({"foreground": [[3, 4, 5]], "background_scribbles": [[3, 4, 5]]}, "voxel (3, 4, 5) is marked both foreground and background"),
    ],
)
def test_parse_refuses_what_it_cannot_place_and_names_it(params: dict[str, object], named: str) -> None:
    with pytest.raises(InteractionError) as refused:
        parse_interaction(params, SHAPE)
    assert named in str(refused.value)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
    fractions=st.lists(st.tuples(st.floats(0, 0.999), st.floats(0, 0.999), st.floats(0, 0.999)), max_size=6),
    past=st.integers(0, 2),
    axis=st.integers(0, 2),
)
def test_parse_takes_every_voxel_inside_and_names_the_first_outside(
    shape: tuple[int, int, int], fractions: list[tuple[float, float, float]], past: int, axis: int
) -> None:
    voxels = [[int(fraction * size) for fraction, size in zip(point, shape, strict=True)] for point in fractions]
    parsed = parse_interaction({"foreground": voxels}, shape)
    assert list(parsed.foreground) == list(dict.fromkeys(tuple(voxel) for voxel in voxels))
    outside = [0, 0, 0]
    outside[axis] = shape[axis] + past
    with pytest.raises(InteractionError, match=rf"foreground point {len(voxels) + 1} \({outside[0]}, {outside[1]}, {outside[2]}\)"):
        parse_interaction({"foreground": [*voxels, outside]}, shape)


def test_merged_accumulates_marks_and_a_newer_box_replaces_the_old() -> None:
    first = Interaction(foreground=((1, 1, 1),), foreground_scribbles=((2, 2, 2),), box=((0, 0, 0), (9, 9, 9)))
    second = Interaction(foreground=((3, 3, 3), (1, 1, 1)), background=((4, 4, 4),), background_scribbles=((5, 5, 5),))
    both = first.merged(second)
    assert both.foreground == ((1, 1, 1), (3, 3, 3))
    assert both.background == ((4, 4, 4),)
    assert both.foreground_scribbles == ((2, 2, 2),)
    assert both.background_scribbles == ((5, 5, 5),)
    assert both.box == ((0, 0, 0), (9, 9, 9))
    assert both.merged(Interaction(box=((1, 1, 1), (5, 5, 5)))).box == ((1, 1, 1), (5, 5, 5))


def test_merged_lets_a_newer_mark_overrule_an_older_one_on_the_same_voxel() -> None:
    older = Interaction(foreground=((1, 1, 1),), background_scribbles=((2, 2, 2),))
    newer = Interaction(background=((1, 1, 1),), foreground_scribbles=((2, 2, 2),))
    both = older.merged(newer)
    assert both.foreground == () and both.background == ((1, 1, 1),)
    assert both.background_scribbles == () and both.foreground_scribbles == ((2, 2, 2),)


def test_an_empty_interaction_merges_to_nothing_new_and_segments_nothing(series: Volume) -> None:
    empty = parse_interaction({}, (86, 86, 36))
    assert empty.is_empty and empty == Interaction()
    some = Interaction(foreground=((1, 2, 3),))
    assert some.merged(empty) == some and empty.merged(some) == some
    assert not some.is_empty and not Interaction(box=((0, 0, 0), (1, 1, 1))).is_empty
    for tool in Tool:
        with pytest.raises(InteractionError, match="nothing to segment from"):
            segment(tool, series, empty)


# --- what each tool needs ---


@pytest.mark.parametrize(
    ("tool", "interaction", "named"),
    [
        (Tool.POINTS, Interaction(background=((40, 40, 18),)), "needs at least one foreground click"),
        (
            Tool.POINTS,
            Interaction(foreground=((40, 40, 18),), box=((0, 0, 0), (10, 10, 10))),
            "foreground mark (40, 40, 18) lies outside the box",
        ),
        (Tool.SCRIBBLES, Interaction(foreground_scribbles=((40, 40, 18), (41, 40, 18))), "got 2 foreground and no background voxels"),
        (Tool.SCRIBBLES, Interaction(background_scribbles=((40, 40, 18),)), "got no foreground and 1 background voxels"),
        (Tool.BOX, Interaction(foreground=((40, 40, 18),)), "the box tool needs a box"),
        (Tool.BOX, Interaction(box=((30, 30, 10), (31, 50, 20))), "at least 3 voxels wide"),
        (Tool.BOX, Interaction(box=((0, 0, 0), (85, 85, 35))), "the box covers the whole image"),
        (
            Tool.BOX,
            Interaction(box=((30, 30, 10), (50, 50, 20)), foreground=((60, 40, 15),)),
            "foreground mark (60, 40, 15) lies outside the box",
        ),
        (Tool.BOX, Interaction(box=((30, 30, 10), (50, 50, 20)), background=((40, 40, 15),)), "add a foreground click on the structure"),
        (Tool.POINTS, Interaction(foreground=((86, 40, 18),)), "foreground point 1 (86, 40, 18) lies outside the image of 86×86×36 voxels"),
        (Tool.BOX, Interaction(box=((0, 0, 0), (10, 10, 36))), "box corner 2 (10, 10, 36) lies outside"),
    ],
)
def test_a_tool_refuses_an_interaction_it_cannot_use_and_says_why(tool: Tool, interaction: Interaction, named: str, series: Volume) -> None:
    with pytest.raises(InteractionError) as refused:
        segment(tool, series, interaction)
    assert named in str(refused.value)


def test_a_box_on_the_image_edge_keeps_that_face_open(series: Volume) -> None:
    """A box reaching the edge of a thin volume along an axis has no border there: the structure may run out of the image."""
    volume, truth = with_structure(series, "sphere")
    low, high = np.argwhere(truth).min(axis=0), np.argwhere(truth).max(axis=0)
    box = ((int(low[0]) - 3, int(low[1]) - 3, 0), (int(high[0]) + 3, int(high[1]) + 3, series.shape[2] - 1))
    assert dice(segment(Tool.BOX, volume, Interaction(box=box)), truth) >= TARGET_DICE


def test_a_box_may_be_given_by_any_two_opposite_corners(series: Volume) -> None:
    volume, truth = with_structure(series, "cuboid")
    (low, high) = first_interaction(Tool.BOX, truth).box or ((0, 0, 0), (0, 0, 0))
    other = ((low[0], high[1], low[2]), (high[0], low[1], high[2]))
    expected = segment(Tool.BOX, volume, Interaction(box=(low, high)))
    assert np.array_equal(segment(Tool.BOX, volume, Interaction(box=(high, low))), expected)
    assert np.array_equal(segment(Tool.BOX, volume, Interaction(box=other)), expected)


@pytest.mark.parametrize(("volume", "message"), [(np.zeros((4, 4)), "3D volumes"), (np.zeros((4, 4, 4), dtype=complex), "real-valued")])
def test_segment_refuses_what_is_not_a_volume(volume: NDArray[np.generic], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segment(Tool.POINTS, volume, Interaction(foreground=((1, 1, 1),)))


def test_the_package_imports_only_the_standard_library_numpy_and_scipy() -> None:
    """The MONAI Label app imports it from an environment that has nothing else of ours."""
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy"}
    for module in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                ours = name == "segmentation.interactive" or name.startswith("segmentation.interactive.")
                assert ours or name.split(".")[0] in allowed, f"{module.name} imports {name}"


def _largest_part(mask: Mask) -> Mask:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, range(1, count + 1))
    largest: Mask = labels == int(np.argmax(sizes)) + 1
    return largest


def _voxel(index: Iterable[SupportsInt]) -> Voxel:
    first, second, third = (int(value) for value in index)
    return first, second, third
