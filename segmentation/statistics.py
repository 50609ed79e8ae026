"""Statistics of image values inside ROIs, one image and one ROI at a time or as a table of all pairs.

An image is read at the centre of every ROI voxel, carried through world space onto the image's grid
(nearest neighbour: the value of the image voxel whose centre is nearest; no interpolation). ROI voxels
whose centre falls outside the image are left out of the statistics and counted. Image values are used
as they are: a NaN inside the ROI makes every value statistic NaN.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from segmentation.grid import Grid, Sampler, check_image, check_mask


@dataclass(frozen=True)
class RoiStatistics:
    """What an image holds inside an ROI.

    ``voxels`` counts the ROI voxels the values come from (those inside the image) and
    ``outside_voxels`` the ones left out. The value statistics are None when no voxel is left to measure:
    ``std`` is the population standard deviation (divided by the count, ddof=0) and the percentiles
    interpolate linearly between the sorted values (numpy's default). ``volume_ml`` is the volume of the
    whole ROI, inside the image or not. ``area_cm2`` is the ROI's area when it lies in one slice (see
    :func:`slice_axis`), otherwise None.
    """

    voxels: int
    outside_voxels: int
    mean: float | None
    std: float | None
    median: float | None
    p25: float | None
    p75: float | None
    volume_ml: float
    area_cm2: float | None


@dataclass(frozen=True)
class TableRow:
    """The statistics of one image inside one ROI, under the names they were given."""

    image: str
    roi: str
    statistics: RoiStatistics


CSV_COLUMNS = ("image", "roi", "voxels", "outside_voxels", "mean", "std", "median", "p25", "p75", "volume_ml", "area_cm2")


def roi_statistics(image: NDArray[Any], image_grid: Grid, mask: NDArray[Any], mask_grid: Grid, *, volume: int = 0) -> RoiStatistics:
    """Statistics of ``image`` (3D, or volume ``volume`` of a 4D series; the first by default) inside the ROI ``mask``."""
    values = check_image(image, image_grid, volume)
    roi = check_mask(mask, mask_grid)
    return _measure(values, Sampler(image_grid, roi, mask_grid), _extent(roi, mask_grid))


def slice_axis(mask: NDArray[np.bool_], grid: Grid) -> int | None:
    """The grid axis across which a non-empty ROI is one slice thick, or None if it is thicker.

    An ROI is in one slice when all its voxels share one index along a grid axis. A line or a single
    voxel shares one along two or three axes; of those, the axis with the widest voxel spacing is the
    slice axis, since a 2D ROI is drawn on the image's planes of finest detail, across its thick slices
    (on ties, the later axis: the slice axis of images as dcm2niix writes them).
    """
    single = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        occupied = np.count_nonzero(np.any(mask, axis=others))
        if occupied == 0:
            return None
        if occupied == 1:
            single.append(axis)
    if not single:
        return None
    spacing = grid.spacing_mm
    return max(single, key=lambda axis: (spacing[axis], axis))


def table(
    images: Mapping[str, tuple[NDArray[Any], Grid]], rois: Mapping[str, tuple[NDArray[Any], Grid]], *, volume: int = 0
) -> list[TableRow]:
    """Statistics for every image × ROI pair, images in the outer order, each named by its key.

    ``volume`` is the volume measured in 4D images, as for :func:`roi_statistics`. Each ROI's volume
    and area are worked out once, and where its voxels fall once per image grid, however many images
    share that grid.
    """
    checked_images = {name: (check_image(data, grid, volume, what=f"image {name!r}"), grid) for name, (data, grid) in images.items()}
    checked_rois = {name: (check_mask(mask, grid, what=f"ROI {name!r}"), grid) for name, (mask, grid) in rois.items()}
    extents = {name: _extent(roi, grid) for name, (roi, grid) in checked_rois.items()}
    samplers: dict[tuple[str, Grid], Sampler] = {}
    rows = []
    for image_name, (values, image_grid) in checked_images.items():
        for roi_name, (roi, roi_grid) in checked_rois.items():
            sampler = samplers.get((roi_name, image_grid))
            if sampler is None:
                sampler = samplers[roi_name, image_grid] = Sampler(image_grid, roi, roi_grid)
            rows.append(TableRow(image_name, roi_name, _measure(values, sampler, extents[roi_name])))
    return rows


def write_csv(rows: Iterable[TableRow], stream: TextIO) -> None:
    """The table as CSV: a header row of :data:`CSV_COLUMNS`, then one row per pair; None is an empty cell.

    Open files with ``newline=""``, as the csv module asks.
    """
    writer = csv.writer(stream)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        cells = (getattr(row.statistics, column) for column in CSV_COLUMNS[2:])
        writer.writerow([row.image, row.roi, *("" if cell is None else cell for cell in cells)])


def _extent(roi: NDArray[np.bool_], grid: Grid) -> tuple[float, float | None]:
    """The ROI's volume in mL and, for a one-slice ROI, its area in cm²: what does not depend on the image."""
    count = int(np.count_nonzero(roi))
    axis = slice_axis(roi, grid)
    return count * grid.voxel_volume_ml, None if axis is None else count * grid.face_area_cm2(axis)


def _measure(image: NDArray[Any], sampler: Sampler, extent: tuple[float, float | None]) -> RoiStatistics:
    """The statistics of one 3D image inside the ROI of ``sampler``, whose :func:`_extent` is known."""
    volume_ml, area_cm2 = extent
    if sampler.voxels == 0:
        return RoiStatistics(0, sampler.outside, None, None, None, None, None, volume_ml, area_cm2)
    # A new array (see Sampler.values): the percentiles may reorder it in place.
    values = sampler.values(image).astype(np.float64, copy=False)
    mean = float(values.mean())
    deviations = values - mean
    std = math.sqrt(float(np.dot(deviations, deviations)) / values.size)
    p25, median, p75 = _quartiles(values) if not math.isnan(mean) else (math.nan,) * 3
    return RoiStatistics(values.size, sampler.outside, mean, std, median, p25, p75, volume_ml, area_cm2)


def _quartiles(values: NDArray[np.float64]) -> tuple[float, float, float]:
    """The 25th, 50th and 75th percentiles as numpy's default (linear) method has them, reordering ``values`` in place.

    One partial sort for all three, where ``np.percentile`` would spend twice as long on large ROIs.
    """
    positions = np.array([0.25, 0.5, 0.75]) * (values.size - 1)
    below = np.floor(positions).astype(np.intp)
    above = np.minimum(below + 1, values.size - 1)
    values.partition(np.union1d(below, above))
    low, high = values[below], values[above]
    p25, median, p75 = (float(q) for q in low + (high - low) * (positions - below))
    return p25, median, p75
