"""Which streamlines pass through a region, and how many streamlines visit each voxel of a grid.

Streamlines are polylines in world millimetres (RAS+, nibabel's ``rasmm``). The definitions, which
the viewer's fibre tool (``fibre_tool.js``) shares for the selections it computes itself:

- **Sphere** (centre c, radius r): a streamline passes through it when one of its segments (the
  closed line piece between two consecutive points) comes within r of c, that is
  ``min over t in [0, 1] of |a + t (b - a) - c| <= r``; a streamline of a single point passes when
  that point is within r. A segment can cross a small sphere with both of its ends outside it, so
  the vertices alone are not enough.
- **Point set** (points, one radius): the streamline passes through at least one of the spheres.
- **Waypoints** (points, one radius): it passes through every sphere in the order given, travelling
  along the streamline in either direction, since a tractogram's streamlines have no meaningful
  direction: there are segment indices ``i1 <= i2 <= ... <= ik`` with segment ``ij`` within r of
  waypoint j, along the streamline or along it reversed. Two waypoints may be met on one segment.
- **ROI** (a mask on some grid): the streamline passes through it when one of its points lies in a
  voxel of the mask; the points are its vertices and points along each segment at most a quarter of
  the grid's smallest voxel edge apart, and a point lies in the voxel whose centre is nearest
  (voxel coordinates rounded). Points off the grid lie in no voxel.
- **Track density**: per voxel of a grid, the number of streamlines that visit it, each counted once
  however many of its points lie there; visiting is as for ROIs.

Each selection step keeps the streamlines that pass (``Action.KEEP``) or deletes them
(``Action.DELETE``); steps apply one after the other, each to what the earlier ones left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from nibabel.streamlines.array_sequence import ArraySequence
from numpy.typing import NDArray

from nifti_archive.errors import InvalidValue, member_named

Point = tuple[float, float, float]
Bools = NDArray[np.bool_]
Indices = NDArray[np.int64]
# Samples along a segment for ROIs and densities: at most this fraction of the smallest voxel edge apart.
SAMPLES_PER_VOXEL = 4


class Mode(Enum):
    """How a selection step chooses the streamlines it acts on."""

    SPHERE = "sphere"
    POINTS = "points"
    WAYPOINTS = "waypoints"
    ROI = "roi"

    @classmethod
    def named(cls, text: str) -> Mode:
        return member_named(cls, text, "selection mode")


class Action(Enum):
    """What a selection step does with the streamlines that pass through its region."""

    KEEP = "keep"
    DELETE = "delete"

    @classmethod
    def named(cls, text: str) -> Action:
        return member_named(cls, text, "selection action")


@dataclass(frozen=True)
class Mask:
    """A region on a voxel grid: ``voxels`` true inside, ``affine`` from voxel indices to world mm."""

    voxels: Bools
    affine: NDArray[np.float64]
    name: str = ""


@dataclass(frozen=True)
class Step:
    """One selection step: a sphere, a point set or waypoints (``points`` and ``radius``), or an ROI."""

    mode: Mode
    action: Action
    points: tuple[Point, ...] = ()
    radius: float = 0.0
    roi: Mask | None = None

    def describe(self) -> str:
        """The step in words, for a saved selection's provenance."""
        if self.mode is Mode.ROI:
            return f"{self.action.value} through ROI {self.roi.name if self.roi else '?'}"
        shown = "; ".join(", ".join(f"{c:g}" for c in p) for p in self.points)
        return f"{self.action.value} {self.mode.value} ({shown}) radius {self.radius:g} mm"


@dataclass(frozen=True)
class Polylines:
    """Streamlines as one array of points (N, 3), float64, and where each streamline starts in it."""

    points: NDArray[np.float64]
    offsets: Indices
    lengths: Indices

    @classmethod
    def of(cls, streamlines: ArraySequence | Sequence[NDArray[np.floating]]) -> Polylines:
        lengths = np.fromiter((len(s) for s in streamlines), dtype=np.int64, count=len(streamlines))
        points = (np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 3) for s in streamlines])
                  if len(streamlines) else np.zeros((0, 3)))
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64) if len(lengths) else lengths
        return cls(points, offsets, lengths)

    @property
    def count(self) -> int:
        return len(self.lengths)

    def owners(self) -> Indices:
        """The streamline each point belongs to."""
        return np.repeat(np.arange(self.count, dtype=np.int64), self.lengths)

    def segment_starts(self) -> Indices:
        """Each segment as the index of its first point (its second is the next one)."""
        owners = self.owners()
        return np.flatnonzero(owners[:-1] == owners[1:]).astype(np.int64)


def _point(value: Sequence[float]) -> NDArray[np.float64]:
    return np.asarray(value, dtype=np.float64).reshape(3)


def _hit_positions(lines: Polylines, centre: Point, radius: float) -> Indices:
    """Sorted point indices where a streamline meets the sphere: a segment's first point, or a lone point."""
    c = _point(centre)
    starts = lines.segment_starts()
    a = lines.points[starts]
    d = lines.points[starts + 1] - a
    squared = np.einsum("ij,ij->i", d, d)
    # A segment of two equal points is that point: t = 0.
    t = np.clip(np.einsum("ij,ij->i", c - a, d) / np.where(squared > 0, squared, 1.0), 0.0, 1.0)
    nearest = a + t[:, None] * d
    segment_hits = starts[np.einsum("ij,ij->i", nearest - c, nearest - c) <= radius * radius]
    lone = lines.offsets[lines.lengths == 1]
    lone_hits = lone[np.sum((lines.points[lone] - c) ** 2, axis=1) <= radius * radius]
    return np.sort(np.concatenate((segment_hits, lone_hits)))


def _streamlines_at(lines: Polylines, positions: Indices) -> Bools:
    found = np.zeros(lines.count, dtype=np.bool_)
    found[lines.owners()[positions]] = True
    return found


def through_sphere(lines: Polylines, centre: Point, radius: float) -> Bools:
    """Per streamline: does it pass through the sphere (module docstring)?"""
    return _streamlines_at(lines, _hit_positions(lines, centre, radius))


def through_any(lines: Polylines, centres: Sequence[Point], radius: float) -> Bools:
    """Per streamline: does it pass through at least one of the spheres?"""
    found = np.zeros(lines.count, dtype=np.bool_)
    for centre in centres:
        found |= through_sphere(lines, centre, radius)
    return found


def _in_order(lines: Polylines, centres: Sequence[Point], radius: float) -> Bools:
    """Per streamline: segments i1 <= i2 <= ... meeting the spheres in this order, front to back.

    The earliest hit at or after the previous waypoint's is the best choice for the rest, so one
    greedy pass per waypoint decides."""
    position = lines.offsets.copy()
    ends = lines.offsets + lines.lengths
    found = lines.lengths > 0
    for centre in centres:
        hits = _hit_positions(lines, centre, radius)
        if not len(hits):
            return np.zeros(lines.count, dtype=np.bool_)
        index = np.searchsorted(hits, position, side="left")
        nxt = hits[np.minimum(index, len(hits) - 1)]
        found &= (index < len(hits)) & (nxt < ends)
        position = np.where(found, nxt, position)
    return found


def through_waypoints(lines: Polylines, centres: Sequence[Point], radius: float) -> Bools:
    """Per streamline: does it pass through every sphere in the order given, in either direction?"""
    return _in_order(lines, centres, radius) | _in_order(lines, list(reversed(centres)), radius)


def voxel_edges(affine: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0), dtype=np.float64)


def samples(lines: Polylines, step: float) -> tuple[NDArray[np.float64], Indices]:
    """The streamlines' vertices and points along every segment at most ``step`` mm apart, with their streamline."""
    owners = lines.owners()
    starts = lines.segment_starts()
    a = lines.points[starts]
    d = lines.points[starts + 1] - a
    pieces = np.maximum(np.ceil(np.linalg.norm(d, axis=1) / step).astype(np.int64), 1)
    inner = pieces - 1
    segment = np.repeat(np.arange(len(starts), dtype=np.int64), inner)
    k = np.arange(len(segment), dtype=np.int64) - np.repeat(np.cumsum(inner) - inner, inner) + 1
    t = (k / pieces[segment])[:, None]
    between = a[segment] + t * d[segment]
    return np.concatenate((lines.points, between)), np.concatenate((owners, owners[starts][segment]))


def voxels_of(points: NDArray[np.float64], affine: NDArray[np.float64], shape: Sequence[int]) -> tuple[Indices, Bools]:
    """Each point's voxel (nearest centre) as a flat index (C order) into ``shape``, and whether it lies on the grid."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    ijk = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    dims = np.asarray(shape[:3], dtype=np.int64)
    inside = np.all((ijk >= 0) & (ijk < dims), axis=1)
    flat = np.ravel_multi_index(tuple(np.where(inside[:, None], ijk, 0).T), tuple(int(n) for n in dims))
    return np.asarray(flat, dtype=np.int64), inside


def _visits(lines: Polylines, affine: NDArray[np.float64], shape: Sequence[int]) -> tuple[Indices, Indices]:
    """Every (streamline, voxel) pair once: a streamline's visits to the grid's voxels."""
    points, owners = samples(lines, float(voxel_edges(affine).min()) / SAMPLES_PER_VOXEL)
    flat, inside = voxels_of(points, affine, shape)
    size = int(np.prod(shape[:3]))
    pairs = np.unique(owners[inside] * size + flat[inside])
    return pairs // size, pairs % size


def through_roi(lines: Polylines, roi: Mask) -> Bools:
    """Per streamline: does it pass through the ROI's voxels (module docstring)?"""
    voxels = np.asarray(roi.voxels, dtype=np.bool_)
    owners, flat = _visits(lines, roi.affine, voxels.shape)
    found = np.zeros(lines.count, dtype=np.bool_)
    found[owners[voxels.reshape(-1)[flat]]] = True
    return found


def passing(lines: Polylines, step: Step) -> Bools:
    """Per streamline: does it pass through the step's region?"""
    if step.mode is Mode.ROI:
        if step.roi is None:
            raise InvalidValue("an ROI selection needs an ROI")
        return through_roi(lines, step.roi)
    if step.radius <= 0 or not step.points:
        raise InvalidValue(f"a {step.mode.value} selection needs points and a positive radius")
    if step.mode is Mode.SPHERE:
        if len(step.points) != 1:
            raise InvalidValue("a sphere selection has one centre")
        return through_sphere(lines, step.points[0], step.radius)
    if step.mode is Mode.POINTS:
        return through_any(lines, step.points, step.radius)
    return through_waypoints(lines, step.points, step.radius)


def select(lines: Polylines, steps: Sequence[Step], start: Bools | None = None) -> Bools:
    """Per streamline: kept after the steps, one after the other (all kept before the first, or ``start``)."""
    kept = np.ones(lines.count, dtype=np.bool_) if start is None else np.asarray(start, dtype=np.bool_).copy()
    for step in steps:
        hits = passing(lines, step)
        kept &= hits if step.action is Action.KEEP else ~hits
    return kept


def bounding_grid(lines: Polylines, voxel_mm: float) -> tuple[NDArray[np.float64], tuple[int, int, int]]:
    """A grid of ``voxel_mm`` cubes, axes along RAS+, whose voxel centres span the streamlines' points."""
    if voxel_mm <= 0:
        raise InvalidValue("the voxel size must be positive")
    if not len(lines.points):
        raise InvalidValue("the tractogram has no points: it has no bounding box")
    low = lines.points.min(axis=0)
    high = lines.points.max(axis=0)
    # Points round to the nearest voxel centre: up to half a voxel past the last centre is on the grid.
    counts = np.floor((high - low) / voxel_mm + 0.5).astype(np.int64) + 1
    if int(np.prod(counts)) > 512**3:
        raise InvalidValue(f"a {voxel_mm:g} mm grid over the tracts has {' x '.join(map(str, counts))} voxels; choose larger voxels")
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = low
    return affine, (int(counts[0]), int(counts[1]), int(counts[2]))


def density(lines: Polylines, affine: NDArray[np.float64], shape: Sequence[int]) -> NDArray[np.int32]:
    """The track-density map on the grid: per voxel, how many streamlines visit it."""
    _owners, flat = _visits(lines, affine, shape)
    grid = tuple(int(n) for n in shape[:3])
    return np.bincount(flat, minlength=int(np.prod(grid))).astype(np.int32).reshape(grid)
