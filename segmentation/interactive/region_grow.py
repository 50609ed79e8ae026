"""The points tool: region growing from foreground clicks, kept away from background clicks.

The image is smoothed a little (noise would otherwise break the region into specks). Each click's
intensity, a background click's as well as a foreground one's, is the median of the values around it
(click_values: its neighbourhood, on its side of an edge through it). The region is the set of voxels
connected to a foreground click (sharing a face) whose intensity is within a few noise widths of a
foreground click's and nearer to it than to any background click's: a background click on a leak
claims the intensities of the leak. The edge is then settled by nearest intensity: a voxel beside the
region joins when its intensity is nearer a foreground click's than those of the region's
surroundings and of the background clicks, so that the boundary falls midway through the blurred edge
instead of wherever the noise-sized tolerance stopped. A background click still inside (its
intensity the structure's, or a bridge's the tolerance let through) splits the region between the
clicks along its cheapest section, an edge or a narrow neck (split). Narrowing the tolerance instead
would cut the bridge only if its intensity were off by just so much, and a click's intensity is a
noisy estimate: narrowed around one a little off, the region falls apart into specks.

The work happens in a window around the foreground clicks, enlarged while the region reaches its
faces and the window stays within a budget of voxels; a region larger than that is cut at the window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from segmentation.interactive.click_values import click_values
from segmentation.interactive.components import connected_to, dilate, extent
from segmentation.interactive.interactions import Interaction, InteractionError
from segmentation.interactive.marks import Marks, mask_of, require_in_box
from segmentation.interactive.noise import noise_level
from segmentation.interactive.split import split
from segmentation.interactive.windows import Window

# Gaussian sigma in voxels: enough to quiet the noise, little enough to keep edges within a voxel.
_SMOOTHING = 0.75
# Half-width of the intensity interval around a click's intensity, in noise standard deviations.
_TOLERANCE = 3.0
# How many voxels beyond the grown region the edge may still move.
_EDGE_STEPS = 4
# How far around the region its surroundings are sampled.
_SURROUNDINGS = 3
_FIRST_MARGIN = 16
# Weight of a smooth cut when the region must be split between the clicks (see split).
_SPLIT_SMOOTHNESS = 2.0
# The most voxels a window may have: one pass over this many takes about 0.3 s.
_MOST_VOXELS = 3_000_000
# Clicks whose intensities are taken: a painted stroke has thousands of voxels saying the same.
_MOST_CLICKS = 64


def grow_from_points(volume: NDArray[Any], interaction: Interaction) -> NDArray[np.bool_]:
    """The region grown from the interaction's foreground marks; a box, if drawn, confines it."""
    marks = Marks.of(interaction)
    foreground = marks.foreground
    if not len(foreground):
        raise InteractionError(
            "the points tool needs at least one foreground click (or foreground scribble) to grow the region from; got none"
        )
    limit = Window.whole(volume.shape)
    if interaction.box is not None:
        limit = Window.of_box(interaction.box)
        require_in_box(foreground, limit, "points")
    background = marks.background
    window = limit.around(foreground, _FIRST_MARGIN)
    while True:
        region = _grow(window.crop(volume), window.local(foreground), mask_of(background, window))
        if window == limit or not window.spills(region, limit):
            break
        reach = window.low + extent(region)
        # Half the region's size again on every side: a region that fits needs one more pass, and a
        # leak grows the window geometrically rather than by a margin at a time.
        larger = limit.around(np.concatenate([foreground, reach]), max(_FIRST_MARGIN, int(np.ptp(reach, axis=0).max()) // 2))
        if int(np.prod(larger.shape)) > _MOST_VOXELS:
            break
        window = larger
    return window.paste(region, volume.shape)


def _grow(image: NDArray[np.float32], clicks: NDArray[np.intp], stops: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The region grown from ``clicks`` (foreground voxels of the window, in the order the user made them)."""
    smooth = ndimage.gaussian_filter(image, _SMOOTHING)
    noise = noise_level(smooth)
    raw_noise = noise_level(image)
    seeds = np.zeros(image.shape, dtype=bool)
    seeds[clicks[:, 0], clicks[:, 1], clicks[:, 2]] = True
    wanted, unwanted = _intensities(image, clicks, raw_noise), _intensities(image, np.argwhere(stops), raw_noise)
    # A background click with the structure's own intensity cannot be told apart by intensity: it only
    # splits the region. A click's intensity, the median of a few noisy voxels, is uncertain by about
    # the raw noise over the square root of their number: two of them within the raw noise may be equal.
    unwanted = unwanted[_distance(unwanted, wanted) > max(raw_noise, _TOLERANCE * noise)]
    first = np.zeros(image.shape, dtype=bool)
    first[tuple(clicks[0])] = True
    wanted = _trusted(smooth, first, wanted, unwanted, _TOLERANCE * noise)
    region = _region(smooth, seeds, wanted, unwanted, _TOLERANCE * noise)
    return split(smooth, region, seeds, stops, _SPLIT_SMOOTHNESS)


def _trusted(
    smooth: NDArray[np.float32], first: NDArray[np.bool_], wanted: NDArray[np.float64], unwanted: NDArray[np.float64], width: float
) -> NDArray[np.float64]:
    """The intensities, first click's first, of the clicks that mean the structure rather than its surroundings.

    Corrective clicks land where the region fell short, at its edge, often on a voxel that noise made
    look like the surroundings; growing from that intensity would take the surroundings whole. A
    later click whose intensity is nearer the surroundings of the region grown from the first click
    than to any trusted click's is kept as a voxel of the structure, but its intensity is not grown from.
    """
    if len(wanted) == 1:
        return wanted
    surrounding = _surrounding(smooth, _region(smooth, first, wanted[:1], unwanted, width))
    if surrounding is None:
        return wanted
    trusted = [float(wanted[0])]
    for intensity in wanted[1:]:
        if min(abs(intensity - known) for known in trusted) <= abs(intensity - surrounding):
            trusted.append(float(intensity))
    return np.asarray(trusted)


def _region(
    smooth: NDArray[np.float32], seeds: NDArray[np.bool_], wanted: NDArray[np.float64], unwanted: NDArray[np.float64], width: float
) -> NDArray[np.bool_]:
    """The voxels within ``width`` of a wanted intensity and nearer to it than to an unwanted one, connected to a seed."""
    near = _within(smooth, wanted - width, wanted + width)
    near[near] = _nearer(smooth[near], wanted, unwanted)
    return _settle_edge(smooth, connected_to(near | seeds, seeds), wanted, unwanted)


def _intensities(image: NDArray[np.float32], clicks: NDArray[np.intp], noise: float) -> NDArray[np.float64]:
    """The intensity each click means, in order (of an even sample of the clicks, the first among them)."""
    taken = clicks[np.linspace(0, len(clicks) - 1, min(len(clicks), _MOST_CLICKS)).astype(np.intp)]
    return np.asarray([np.median(click_values(image, (int(i), int(j), int(k)), noise)) for i, j, k in taken], dtype=np.float64)


def _within(smooth: NDArray[np.float32], lows: NDArray[np.float64], highs: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Voxels whose intensity lies in any of the intervals, merged first so that overlapping clicks cost one test."""
    inside: NDArray[np.bool_] = np.zeros(smooth.shape, dtype=bool)
    order = np.argsort(lows)
    start, end = lows[order[0]], highs[order[0]]
    for low, high in zip(lows[order[1:]], highs[order[1:]], strict=True):
        if low > end:
            inside |= (smooth >= start) & (smooth <= end)
            start = low
        end = max(end, high)
    inside |= (smooth >= start) & (smooth <= end)
    return inside


def _nearer(values: NDArray[np.floating[Any]], wanted: NDArray[np.float64], unwanted: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which values are nearer some wanted intensity than every unwanted one (all, when nothing is unwanted)."""
    if not len(unwanted):
        return np.ones(values.shape, dtype=bool)
    return _distance(values, wanted) < _distance(values, unwanted)


def _distance(values: NDArray[np.floating[Any]], intensities: NDArray[np.float64]) -> NDArray[np.float64]:
    nearest = np.full(values.shape, np.inf)
    for intensity in np.unique(intensities):
        np.minimum(nearest, np.abs(values - intensity), out=nearest)
    return nearest


def _surrounding(smooth: NDArray[np.float32], region: NDArray[np.bool_]) -> float | None:
    """The median intensity of the shell 2 to _SURROUNDINGS voxels outside the region (None: the region fills the window)."""
    near = dilate(region)
    shell = dilate(near, _SURROUNDINGS - 1) & ~near
    return float(np.median(smooth[shell])) if shell.any() else None


def _settle_edge(
    smooth: NDArray[np.float32], region: NDArray[np.bool_], wanted: NDArray[np.float64], unwanted: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """The region with voxels beside it added while their intensity is nearer a wanted one than the surroundings' and unwanted ones.

    The surroundings are the shell 2 to _SURROUNDINGS voxels out, sampled again after each step: while
    the region is still well inside the structure (the tolerance stopped short of a blurred edge), its
    first surroundings are the structure's rim, and only the grown region's show what lies beyond.
    """
    for _ in range(_EDGE_STEPS):
        surrounding = _surrounding(smooth, region)
        competing = unwanted if surrounding is None else np.append(unwanted, surrounding)
        beside = dilate(region) & ~region
        joins = np.zeros(region.shape, dtype=bool)
        joins[beside] = _nearer(smooth[beside], wanted, competing)
        if not joins.any():
            break
        region = region | joins
    return region
