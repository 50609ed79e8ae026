"""Marker sets (NORA's Marker-Tool): named sets of points in a study, in world mm (NIfTI RAS+).

Points are world coordinates, not voxel indices, so a set stays put whichever image of the
study it is shown on. Deleting a set puts it in the trash like a file delete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.catalog.trash import new_entry
from nifti_archive.errors import Conflict, Forbidden, InvalidValue, NotFound
from nifti_archive.models import MarkerPoint, MarkerSet, Project, Study, as_utc, utcnow

MAX_NAME = 64
MAX_POINTS = 10_000


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    z: float
    name: str = ""


def _check_name(name: str, what: str) -> str:
    text = name.strip()
    if len(text) > MAX_NAME:
        raise InvalidValue(f"{what} {text[:20]!r}... is longer than {MAX_NAME} characters")
    return text


def parse_points(document: Any) -> list[Point]:
    """Points from JSON: a list of {"x", "y", "z", "name"?} objects with finite numbers."""
    if not isinstance(document, list):
        raise InvalidValue("points must be a list of {x, y, z, name} objects")
    if len(document) > MAX_POINTS:
        raise InvalidValue(f"a marker set holds at most {MAX_POINTS} points, not {len(document)}")
    points = []
    for index, item in enumerate(document, 1):
        if not isinstance(item, dict):
            raise InvalidValue(f"point {index} is not an object with x, y and z")
        values: list[Any] = [item.get(axis) for axis in ("x", "y", "z")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise InvalidValue(f"point {index} needs finite numbers x, y and z (mm)")
        name = item.get("name", "")
        if not isinstance(name, str):
            raise InvalidValue(f"point {index}'s name must be text")
        points.append(Point(float(values[0]), float(values[1]), float(values[2]), _check_name(name, f"point {index}'s name")))
    return points


def live_sets(session: Session, study_id: int) -> list[MarkerSet]:
    return list(session.scalars(
        select(MarkerSet).where(MarkerSet.study_id == study_id, MarkerSet.trash_id.is_(None)).order_by(MarkerSet.name)
    ))


def live_set(session: Session, set_id: int) -> MarkerSet:
    found = session.scalar(select(MarkerSet).where(MarkerSet.id == set_id, MarkerSet.trash_id.is_(None)))
    if found is None:
        raise NotFound(f"no marker set {set_id}")
    return found


def _name_free(session: Session, study_id: int, name: str, keep: int | None = None) -> str:
    text = _check_name(name, "marker set name")
    if not text:
        raise InvalidValue("a marker set needs a name")
    clash = session.scalar(select(MarkerSet.id).where(
        MarkerSet.study_id == study_id, MarkerSet.name == text, MarkerSet.trash_id.is_(None)))
    if clash is not None and clash != keep:
        raise Conflict(f"the study has a marker set named {text!r} already")
    return text


def _set_points(marker_set: MarkerSet, points: Sequence[Point]) -> None:
    marker_set.points.clear()
    marker_set.points.extend(
        MarkerPoint(position=index, x=p.x, y=p.y, z=p.z, name=p.name) for index, p in enumerate(points)
    )


def create(session: Session, study: Study, name: str, points: Sequence[Point], author: str) -> MarkerSet:
    marker_set = MarkerSet(study_id=study.id, name=_name_free(session, study.id, name), author=author)
    session.add(marker_set)
    _set_points(marker_set, points)
    session.flush()
    return marker_set


def _check_owner(marker_set: MarkerSet, user: str, may_change_others: bool, what: str) -> None:
    if marker_set.author != user and not may_change_others:
        raise Forbidden(f"marker set {marker_set.name!r} is {marker_set.author}'s; only a project admin {what} others' sets")


def update(
    session: Session, marker_set: MarkerSet, name: str | None, points: Sequence[Point] | None, changed_by: str,
    may_change_others: bool,
) -> MarkerSet:
    """Rename ``marker_set`` or replace its points (nothing goes to the trash, so only its author or an admin may)."""
    _check_owner(marker_set, changed_by, may_change_others, "changes")
    if name is not None:
        marker_set.name = _name_free(session, marker_set.study_id, name, keep=marker_set.id)
    if points is not None:
        _set_points(marker_set, points)
    marker_set.modified_at = utcnow()
    session.flush()
    return marker_set


def delete(session: Session, project: Project, marker_set: MarkerSet, deleted_by: str, may_delete_others: bool) -> int:
    """Into the trash (``nora --restore`` brings it back); returns the trash entry's id."""
    _check_owner(marker_set, deleted_by, may_delete_others, "deletes")
    entry = new_entry(session, project, f"marker set {marker_set.name!r}", deleted_by)
    marker_set.trash_id = entry.id
    return entry.id


def describe(marker_set: MarkerSet) -> dict[str, Any]:
    return {
        "id": marker_set.id, "study_id": marker_set.study_id, "name": marker_set.name, "author": marker_set.author,
        "modified": as_utc(marker_set.modified_at).isoformat(),
        "points": [{"x": p.x, "y": p.y, "z": p.z, "name": p.name} for p in marker_set.points],
    }
