"""Tractograms of the archive: reading them, and saving a selection or a track-density map into the
tract's study as new files (never over an existing one), registered with their provenance.

A selection is saved from the original file's streamlines (the indices of those kept), so what the
viewer drew is never encoded again on the way back. The new TCK lies beside its source, named
``<source>_<name>.tck``; a density map ``<source>_tdi.nii.gz``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.streamlines.tck import TckFile
from nibabel.streamlines.tractogram import Tractogram
from nibabel.streamlines.tractogram_file import TractogramFile
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, FileJournal
from nifti_archive.catalog.registration import Provenance, register_file
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.ingest.naming import safe_folder_name, unique_name
from nifti_archive.layout import Location
from nifti_archive.models import File, Project, Study, Subject
from nifti_archive.tracts import geometry
from nifti_archive.tracts.geometry import Action, Mask, Mode, Polylines, Step

log = logging.getLogger(__name__)
TRACT_SUFFIXES = (".tck", ".trk")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
CONVERTER = "northanc tracts"
# The header fields nibabel writes itself, or that describe the source's bytes rather than its streamlines.
_OWN_FIELDS = {"count", "datatype", "file", "magic_number", "nb_streamlines", "endianness", "voxel_to_rasmm"}
# More steps than a person makes by hand: the list is refused, not truncated.
MAX_STEPS = 100
MAX_POINTS = 1000
MAX_RADIUS_MM = 1000.0


@dataclass(frozen=True)
class ArchivedFile:
    """A live file of the archive and where it lies."""

    file: File
    study: Study
    subject: Subject
    path: Path


def archived_file(archive: Archive, session: Session, project: Project, file_id: int) -> ArchivedFile:
    """The live file ``file_id`` of ``project``."""
    row = session.execute(
        select(File, Study, Subject)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(File.id == file_id, File.trash_id.is_(None), Subject.project_id == project.id)
    ).first()
    if row is None:
        raise NotFound(f"no file {file_id} in project {project.name!r}")
    record, study, subject = row
    path = archive.layout.file_path(Location(project.name, subject.patient_id, study.study_id, record.path))
    return ArchivedFile(record, study, subject, path)


def is_tract(path: str) -> bool:
    return path.lower().endswith(TRACT_SUFFIXES)


def tract_file(archive: Archive, session: Session, project: Project, file_id: int) -> ArchivedFile:
    """The live tractogram ``file_id`` of ``project``; any other file is refused."""
    found = archived_file(archive, session, project, file_id)
    if not is_tract(found.file.path):
        raise InvalidValue(f"{found.file.path} is not a tractogram (TCK or TRK)")
    return found


def load_tractogram(tract: ArchivedFile) -> TractogramFile:
    """The whole file read, in world mm; a file nibabel cannot read is the user's to fix."""
    try:
        loaded: TractogramFile = nib.streamlines.load(str(tract.path), lazy_load=False)
    # A damaged file fails anywhere in nibabel's parsers, with whatever exception they happen to raise.
    except Exception as exc:
        log.info("unreadable tractogram %s: %s", tract.path, exc)
        raise InvalidValue(f"{tract.file.path} is not a readable tractogram: {exc}") from exc
    data = loaded.streamlines.get_data()
    if len(data) and not np.all(np.isfinite(data)):
        raise InvalidValue(f"{tract.file.path} has coordinates that are not numbers (NaN or infinite)")
    return loaded


def polylines(tract: ArchivedFile) -> Polylines:
    return Polylines.of(load_tractogram(tract).streamlines)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise InvalidValue(f"{what} must be a number")
    return float(value)


def _points(value: Any) -> tuple[geometry.Point, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_POINTS:
        raise InvalidValue(f"points must be a list of 1 to {MAX_POINTS} points [x, y, z] in mm")
    parsed = []
    for point in value:
        if not isinstance(point, list) or len(point) != 3:
            raise InvalidValue("each point must be [x, y, z] in mm")
        x, y, z = (_number(c, "a coordinate") for c in point)
        parsed.append((x, y, z))
    return tuple(parsed)


def load_nifti(found: ArchivedFile, purpose: str) -> nib.Nifti1Image:
    """A 3D (or more) NIfTI of the archive, for ``purpose``."""
    if not found.file.path.lower().endswith(NIFTI_SUFFIXES):
        raise InvalidValue(f"{found.file.path} is not a NIfTI image; {purpose}")
    try:
        image = nib.load(found.path)
    # As for tractograms: a damaged file fails anywhere in nibabel.
    except Exception as exc:
        raise InvalidValue(f"{found.file.path} is not a readable NIfTI image: {exc}") from exc
    if not isinstance(image, nib.Nifti1Image) or len(image.shape) < 3:
        raise InvalidValue(f"{found.file.path} is not a 3D NIfTI image; {purpose}")
    return image


def load_mask(archive: Archive, session: Session, project: Project, file_id: int) -> Mask:
    """A NIfTI of the project (an ROI, or any image: non-zero is inside) as a region."""
    found = archived_file(archive, session, project, file_id)
    image = load_nifti(found, "an ROI selection needs a mask")
    data = np.asanyarray(image.dataobj)
    voxels = data.reshape(data.shape[:3] + (-1,))[..., 0] != 0
    return Mask(voxels, np.asarray(image.affine, dtype=np.float64), found.file.path)


def parse_steps(archive: Archive, session: Session, project: Project, value: Any) -> list[Step]:
    """Selection steps as JSON: ``[{"mode": "sphere", "action": "keep", "points": [[x, y, z]], "radius": 5},
    {"mode": "roi", "action": "delete", "roi_file_id": 12}, ...]``."""
    if not isinstance(value, list) or len(value) > MAX_STEPS:
        raise InvalidValue(f"steps must be a list of at most {MAX_STEPS} selection steps")
    steps = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidValue("each step must be an object with mode and action")
        mode = Mode.named(str(item.get("mode", "")))
        action = Action.named(str(item.get("action", "keep")))
        if mode is Mode.ROI:
            roi_id = item.get("roi_file_id")
            if isinstance(roi_id, bool) or not isinstance(roi_id, int):
                raise InvalidValue("an ROI step needs roi_file_id, the id of a mask")
            steps.append(Step(mode, action, roi=load_mask(archive, session, project, roi_id)))
            continue
        radius = _number(item.get("radius"), "radius")
        if not 0 < radius <= MAX_RADIUS_MM:
            raise InvalidValue(f"radius must be more than 0 and at most {MAX_RADIUS_MM:g} mm")
        steps.append(Step(mode, action, _points(item.get("points")), radius))
    return steps


def parse_indices(value: Any, total: int) -> NDArray[np.int64]:
    """Streamline indices as sent: distinct, each naming a streamline of the file; returned in file order."""
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise InvalidValue("indices must be a list of streamline numbers (0 is the first)")
    indices = np.asarray(value, dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= total):
        raise InvalidValue(f"indices must lie between 0 and {total - 1}: the file has {total} streamlines")
    ordered = np.unique(indices)
    if len(ordered) != len(indices):
        raise InvalidValue("indices name a streamline more than once")
    return ordered


def _free_name(session: Session, source: ArchivedFile, stem: str, suffix: str) -> str:
    """``stem + suffix`` in the source's folder, or with a number after the stem: a name neither the study's
    files (live or in the trash) nor the folder on disk has."""
    folder = PurePosixPath(source.file.path).parent
    names = {PurePosixPath(p).name for p in session.scalars(select(File.path).where(File.study_id == source.study.id))
             if PurePosixPath(p).parent == folder}
    names |= {p.name for p in source.path.parent.iterdir()}
    taken = {name[: -len(suffix)] for name in names if name.lower().endswith(suffix)}
    name = unique_name(stem, taken) + suffix
    return str(folder / name) if str(folder) != "." else name


def _stem(path: str, suffixes: Sequence[str]) -> str:
    name = PurePosixPath(path).name
    lowered = name.lower()
    return next((name[: -len(s)] for s in suffixes if lowered.endswith(s)), name)


def _tck_header(loaded: TractogramFile) -> dict[str, str]:
    """The source's own TCK fields worth keeping (step size, method, ...); TRK headers describe voxels, not kept."""
    if not isinstance(loaded, TckFile):
        return {}
    return {key: value for key, value in loaded.header.items()
            if isinstance(key, str) and key.lower() not in _OWN_FIELDS and not key.startswith("_")
            and isinstance(value, str) and ":" not in value and "\n" not in value}


def _register(session: Session, journal: FileJournal, source: ArchivedFile, written: Path, relative: str, note: str) -> File:
    study_dir = source.path.parents[len(PurePosixPath(source.file.path).parts) - 1]
    target = study_dir / relative
    journal.move(written, target)
    return register_file(session, source.study, relative, target,
                         provenance=Provenance(converter=CONVERTER, note=note, derived_from_id=source.file.id))


def describe_selection(source: str, kept: int, total: int, steps: Sequence[Step]) -> str:
    done = "; ".join(step.describe() for step in steps) or "streamlines chosen in the viewer"
    return f"{kept} of {total} streamlines of {source}: {done}"


def save_selection(
    archive: Archive, session: Session, journal: FileJournal, source: ArchivedFile, indices: NDArray[np.int64], name: str,
    steps: Sequence[Step],
) -> File:
    """The streamlines ``indices`` of ``source`` as a new TCK beside it, registered with the selection as its provenance."""
    loaded = load_tractogram(source)
    total = len(loaded.streamlines)
    stem = f"{_stem(source.file.path, TRACT_SUFFIXES)}_{safe_folder_name(name or 'selection')}"
    relative = _free_name(session, source, stem, ".tck")
    subset = Tractogram(loaded.streamlines[indices], affine_to_rasmm=np.eye(4))
    spool = archive.settings.var_dir / "scratch"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool, prefix="tracts-") as scratch:
        written = Path(scratch) / "selection.tck"
        TckFile(subset, header=_tck_header(loaded)).save(str(written))
        record = _register(session, journal, source, written, relative,
                           describe_selection(source.file.path, len(indices), total, steps))
    log.info("saved %d of %d streamlines of %s as %s", len(indices), total, source.file.path, relative)
    return record


@dataclass(frozen=True)
class Grid:
    """Where a density map lies: a reference image's grid, or the tracts' bounding box at a voxel size."""

    affine: NDArray[np.float64]
    shape: tuple[int, int, int]
    described: str
    sform_code: int = 1
    qform_code: int = 0


def reference_grid(archive: Archive, session: Session, project: Project, file_id: int) -> Grid:
    found = archived_file(archive, session, project, file_id)
    image = load_nifti(found, "a density map needs a grid to lie on")
    shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
    header = image.header
    return Grid(np.asarray(image.affine, dtype=np.float64), shape, f"the grid of {found.file.path}",
                int(header["sform_code"]) or 1, int(header["qform_code"]))


def box_grid(lines: Polylines, voxel_mm: float) -> Grid:
    affine, shape = geometry.bounding_grid(lines, voxel_mm)
    return Grid(affine, shape, f"the tracts' bounding box at {voxel_mm:g} mm")


def save_density(
    archive: Archive, session: Session, journal: FileJournal, source: ArchivedFile, lines: Polylines, grid: Grid,
    kept: NDArray[np.int64] | None,
) -> File:
    """The track-density map of ``source`` (only the streamlines ``kept``, where given) on ``grid``, as a NIfTI beside it."""
    chosen = lines if kept is None else Polylines.of([lines.points[o:o + n] for o, n in
                                                       zip(lines.offsets[kept], lines.lengths[kept], strict=True)])
    counts = geometry.density(chosen, grid.affine, grid.shape)
    image = nib.Nifti1Image(counts, grid.affine)
    image.set_sform(grid.affine, grid.sform_code)
    image.set_qform(grid.affine, grid.qform_code)
    image.header.set_data_dtype(np.int32)
    relative = _free_name(session, source, f"{_stem(source.file.path, TRACT_SUFFIXES)}_tdi", ".nii.gz")
    spool = archive.settings.var_dir / "scratch"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool, prefix="tracts-") as scratch:
        written = Path(scratch) / "tdi.nii.gz"
        nib.save(image, written)
        note = (f"track density of {chosen.count} of {lines.count} streamlines of {source.file.path} "
                f"on {grid.described}, {' x '.join(map(str, grid.shape))} voxels")
        record = _register(session, journal, source, written, relative, note)
    log.info("saved the track density of %s as %s", source.file.path, relative)
    return record
