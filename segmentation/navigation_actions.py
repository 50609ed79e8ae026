"""The navigation tool's requests and what applying one writes into a study.

Applying never changes a moving image: each gets new files under ``navigation/`` in its study,
registered with the moving image as their origin (``derived_from``) and the request's transform as
their provenance note (JSON):

* rigid / affine: ``navigation/<path of the image>.<mode>.nii.gz``, the image's bytes with the sform
  and qform ``T @ affine`` (voxels untouched);
* displacements / keypoints: ``navigation/<path>.<mode>.nii.gz``, the image resampled through the
  composed field onto its own grid (moved by the affine part, if any), and beside it
  ``navigation/<path>.<mode>.field.nii.gz``, that pull-back field (see :mod:`segmentation.navigation`).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, FileJournal
from nifti_archive.catalog.registration import Provenance, register_file
from nifti_archive.errors import InvalidValue
from nifti_archive.ingest.naming import unique_name
from nifti_archive.models import File, FileKind, Project, Study
from segmentation import navigation
from segmentation.grid import Grid
from segmentation.navigation import (
    AffineParameters,
    Deformation,
    DisplacementMarker,
    GridChoice,
    Interpolation,
    KeypointStage,
    MarkerStage,
    TransformMode,
)
from segmentation.roi_actions import ProjectFile, project_files

log = logging.getLogger(__name__)
FOLDER = "navigation"
TOOL = "navigation"
# Enough for any hand-made warp; a request with more is not a user's.
MAX_MARKERS = 1000
MAX_STAGES = 100
MAX_MOVING = 20
# Translations and centres beyond a few metres are typing mistakes, not positions in a scanner.
MAX_MM = 10_000.0
SCALE_RANGE = (0.01, 100.0)
GZIP_MAGIC = b"\x1f\x8b"
# The index's ids are 64-bit: a larger number names no file (a 400, not a driver's overflow).
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class NavigationRequest:
    """What to apply: to which moving images, against which fixed ones (recorded only)."""

    mode: TransformMode
    moving: tuple[int, ...]
    fixed: tuple[int, ...]
    affine: AffineParameters
    stages: tuple[Deformation, ...]
    interpolation: Interpolation | None
    # The request's transform as it came, for the provenance note.
    described: dict[str, Any]
    # Where a warp's output lies: the moving image's own grid, another image's (``grid_file``), or the
    # world box of the moving and fixed images at ``voxel_mm``.
    grid: GridChoice = GridChoice.OWN
    grid_file: int | None = None
    voxel_mm: float | None = None

    @property
    def matrix(self) -> NDArray[np.float64]:
        return navigation.compose(self.affine)


@dataclass(frozen=True)
class AppliedFile:
    moving: ProjectFile
    image: File
    field: File | None
    affine: NDArray[np.float64]


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidValue(f"{what} must be a number from {low:g} to {high:g}")
    return float(value)


def _vector(value: Any, what: str, low: float = -MAX_MM, high: float = MAX_MM) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise InvalidValue(f"{what} must be a list of three numbers (x, y, z)")
    x, y, z = (_number(v, what, low, high) for v in value)
    return (x, y, z)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _ids(value: Any, what: str, required: bool) -> tuple[int, ...]:
    if value is None or value == []:
        if required:
            raise InvalidValue(f"{what}: choose at least one {what} image")
        return ()
    if not isinstance(value, list) or not all(_is_id(v) for v in value):
        raise InvalidValue(f"{what} must be a list of file ids")
    if len(set(value)) != len(value):
        raise InvalidValue(f"{what} names a file twice")
    return tuple(int(v) for v in value)


def _affine(value: Any) -> AffineParameters:
    if value is None:
        return AffineParameters()
    if not isinstance(value, dict):
        raise InvalidValue("transform must be an object with translation, rotation_deg, scale and centre")
    unknown = set(value) - {"translation", "rotation_deg", "scale", "centre"}
    if unknown:
        raise InvalidValue(f"transform: unknown field {sorted(unknown)[0]!r}")
    defaults = AffineParameters()
    return AffineParameters(
        translation=_vector(value.get("translation", list(defaults.translation)), "transform.translation"),
        rotation_deg=_vector(value.get("rotation_deg", list(defaults.rotation_deg)), "transform.rotation_deg", -360.0, 360.0),
        scale=_vector(value.get("scale", list(defaults.scale)), "transform.scale", *SCALE_RANGE),
        centre=_vector(value.get("centre", list(defaults.centre)), "transform.centre"),
    )


def _sigma(value: Any, what: str) -> float:
    return _number(value, f"{what}.sigma", navigation.MIN_SIGMA_MM, navigation.MAX_SIGMA_MM)


def _marker_stage(value: Any, where: str) -> MarkerStage:
    if not isinstance(value, list) or not value or len(value) > MAX_MARKERS:
        raise InvalidValue(f"{where}.markers must be a list of 1 to {MAX_MARKERS} markers")
    markers = []
    for n, item in enumerate(value):
        what = f"{where}.markers[{n}]"
        if not isinstance(item, dict):
            raise InvalidValue(f"{what} must be an object with centre, displacement and sigma")
        markers.append(DisplacementMarker(
            _vector(item.get("centre"), f"{what}.centre"), _vector(item.get("displacement"), f"{what}.displacement"),
            _sigma(item.get("sigma"), what),
        ))
    return MarkerStage(tuple(markers))


def _keypoint_stage(value: Any, where: str) -> KeypointStage:
    what = f"{where}.keypoints"
    if not isinstance(value, dict):
        raise InvalidValue(f"{what} must be an object with source, target and sigma")
    pairs = []
    for side in ("source", "target"):
        points = value.get(side)
        if not isinstance(points, list) or not points or len(points) > MAX_MARKERS:
            raise InvalidValue(f"{what}.{side} must be a list of 1 to {MAX_MARKERS} points")
        pairs.append([_vector(p, f"{what}.{side}[{n}]") for n, p in enumerate(points)])
    try:
        return KeypointStage.fit(pairs[0], pairs[1], _sigma(value.get("sigma"), what))
    except InvalidValue as error:
        raise InvalidValue(str(error).replace("keypoints:", f"{what}:", 1)) from None


def _stages(value: Any, mode: TransformMode) -> tuple[Deformation, ...]:
    if not mode.deforms:
        if value:
            raise InvalidValue(f"stages: a {mode.value} transform has no deformation stages")
        return ()
    if not isinstance(value, list) or not value or len(value) > MAX_STAGES:
        raise InvalidValue(f"stages must be a list of 1 to {MAX_STAGES} stages for a {mode.value} warp")
    stages: list[Deformation] = []
    for n, stage in enumerate(value):
        where = f"stages[{n}]"
        if not isinstance(stage, dict) or len(stage.keys() & {"markers", "keypoints"}) != 1:
            raise InvalidValue(f"{where} must be an object with either markers or keypoints")
        if "markers" in stage:
            stages.append(_marker_stage(stage["markers"], where))
        else:
            stages.append(_keypoint_stage(stage["keypoints"], where))
    # The last stage is the tool's mode; earlier, dumped stages may be of either kind.
    last_is_markers = isinstance(stages[-1], MarkerStage)
    if last_is_markers != (mode is TransformMode.DISPLACEMENTS):
        wanted = "markers" if mode is TransformMode.DISPLACEMENTS else "keypoints"
        raise InvalidValue(f"stages: the last stage of a {mode.value} warp must hold {wanted}")
    return tuple(stages)


def _grid(value: Any, mode: TransformMode) -> tuple[GridChoice, int | None, float | None]:
    if value is None or value == GridChoice.OWN.value:
        return GridChoice.OWN, None, None
    if not mode.deforms:
        raise InvalidValue(f"grid: a {mode.value} move keeps the image's voxels; only warps are resampled onto another grid")
    if isinstance(value, dict) and set(value) == {"file_id"}:
        if not _is_id(value["file_id"]):
            raise InvalidValue("grid.file_id must be the id of an image")
        return GridChoice.IMAGE, int(value["file_id"]), None
    if isinstance(value, dict) and set(value) == {"voxel_mm"}:
        return GridChoice.WORLD, None, _number(value["voxel_mm"], "grid.voxel_mm", 0.1, 100.0)
    raise InvalidValue('grid must be "own", {"file_id": an image} or {"voxel_mm": the world grid\'s voxel size}')


def parse_request(body: Any) -> NavigationRequest:
    """A request as the REST API receives it (JSON), checked field by field; errors name the field."""
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    mode_name = body.get("mode", TransformMode.RIGID.value)
    if not isinstance(mode_name, str):
        raise InvalidValue("mode must be text")
    mode = TransformMode.named(mode_name)
    moving = _ids(body.get("moving"), "moving", required=True)
    if len(moving) > MAX_MOVING:
        raise InvalidValue(f"moving: at most {MAX_MOVING} images at once")
    fixed = _ids(body.get("fixed"), "fixed", required=False)
    if set(moving) & set(fixed):
        raise InvalidValue("fixed: an image cannot be moving and fixed at once")
    affine = _affine(body.get("transform"))
    if mode is TransformMode.RIGID and not affine.is_rigid:
        raise InvalidValue("transform.scale: a rigid transform does not scale; choose the affine mode")
    interpolation = body.get("interpolation")
    if interpolation is not None and not isinstance(interpolation, str):
        raise InvalidValue("interpolation must be text")
    grid, grid_file, voxel_mm = _grid(body.get("grid"), mode)
    described = {"transform": affine.as_dict(), "stages": body.get("stages") or [], "grid": body.get("grid") or GridChoice.OWN.value}
    return NavigationRequest(
        mode, moving, fixed, affine, _stages(body.get("stages"), mode),
        Interpolation.named(interpolation) if interpolation else None, described, grid, grid_file, voxel_mm,
    )


def _raw_nifti(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data


def _load(raw: bytes, shown: str) -> nib.Nifti1Image:
    try:
        image = nib.Nifti1Image.from_bytes(raw)
    except Exception as exc:  # nibabel raises many types for bytes that are no NIfTI-1
        log.info("navigation: %s is unreadable: %s", shown, exc)
        raise InvalidValue(f"moving: {shown} is not a readable NIfTI-1 image") from exc
    if len(image.shape) < 3:
        raise InvalidValue(f"moving: {shown} has shape {image.shape}; only 3D and 4D images move")
    return image


def _name(session: Session, study: Study, moving: str, suffix: str) -> str:
    """``navigation/<moving path without .nii[.gz]>.<suffix>``, numbered where taken."""
    stem = moving.removesuffix(".gz").removesuffix(".nii")
    folder = PurePosixPath(FOLDER, stem).parent
    taken = {
        PurePosixPath(path).name.removesuffix(".nii.gz")
        for path in session.scalars(select(File.path).where(File.study_id == study.id, File.path.startswith(f"{folder}/")))
    }
    wanted = f"{PurePosixPath(stem).name}.{suffix}"
    return f"{folder}/{unique_name(wanted, taken)}.nii.gz"


def _note(request: NavigationRequest, moving: ProjectFile, matrix: NDArray[np.float64], extra: dict[str, Any]) -> str:
    return json.dumps({
        "tool": TOOL, "mode": request.mode.value, "moving": moving.record.id, "fixed": list(request.fixed),
        "matrix": np.round(matrix, 12).tolist(), **request.described, **extra,
    })


def _store(
    archive: Archive, session: Session, journal: FileJournal, moving: ProjectFile, path: str, content: bytes,
    note: str,
) -> File:
    """Move ``content`` to ``path`` in the moving image's study and register it as derived from it.

    Its kind goes by the name (NIfTI): a moved copy of an ROI has no ROI record, so it
    must not claim to be one."""
    study = session.get_one(Study, moving.record.study_id)
    target = archive.layout.study_dir(moving.location.project, moving.location.subject, moving.location.study) / path
    spool = archive.settings.var_dir / "scratch"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool, prefix="navigation-") as scratch:
        staged = Path(scratch) / "out.nii.gz"
        staged.write_bytes(content)
        journal.move(staged, target)
    return register_file(session, study, path, target,
                         provenance=Provenance(derived_from_id=moving.record.id, note=note))


def _header_grid(archive: Archive, item: ProjectFile) -> Grid:
    """An image's grid from its header alone."""
    if item.record.kind not in (FileKind.NIFTI, FileKind.ROI):
        raise InvalidValue(f"grid: {item.record.path} is not a NIfTI image ({item.record.kind.value})")
    try:
        image = nib.load(archive.layout.file_path(item.location))
    except Exception as exc:  # nibabel raises many types for a file that is no image
        log.info("navigation: the grid of %s is unreadable: %s", item.record.path, exc)
        raise InvalidValue(f"grid: {item.record.path} is not a readable NIfTI image") from exc
    if not isinstance(image, nib.Nifti1Image):
        raise InvalidValue(f"grid: {item.record.path} is not a NIfTI-1 image")
    return Grid.of(image)


def output_grid(archive: Archive, session: Session, project: Project, request: NavigationRequest, moved: Grid) -> Grid:
    """The grid a warp of the moving image on ``moved`` is resampled onto, as the request chose it."""
    if request.grid is GridChoice.OWN:
        return moved
    if request.grid is GridChoice.IMAGE:
        assert request.grid_file is not None, "parse_request sets the file of an image grid"
        [item] = project_files(session, project, [request.grid_file], "grid image")
        return _header_grid(archive, item)
    assert request.voxel_mm is not None, "parse_request sets the voxel size of a world grid"
    # Meshes and tracts among the fixed layers have no voxels: the box is the images'.
    images = [item for item in project_files(session, project, list(request.fixed), "fixed image")
              if item.record.kind in (FileKind.NIFTI, FileKind.ROI)]
    fixed = [_header_grid(archive, item) for item in images]
    return navigation.world_grid([moved, *fixed], request.voxel_mm)


def warped(
    request: NavigationRequest, image: nib.Nifti1Image, kind: FileKind, grid: Grid
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The moving image (already moved by the affine part) resampled through the request's warp onto ``grid``, and the field."""
    affine = np.asarray(image.affine, dtype=np.float64)
    field = navigation.displacement_field(request.stages, grid)
    interpolation = request.interpolation or (Interpolation.NEAREST if kind is FileKind.ROI else Interpolation.LINEAR)
    data = np.asanyarray(image.dataobj)
    result = nib.Nifti1Image(navigation.resample(data, affine, field, grid, interpolation), grid.affine, header=image.header)
    navigation.set_geometry(result.header, grid.affine)
    return result, navigation.field_image(field, grid)


def _moved(request: NavigationRequest, image: nib.Nifti1Image) -> tuple[nib.Nifti1Image, Grid]:
    """The moving image with its affine moved by the request's transform, and its grid so moved."""
    affine = navigation.moved_affine(request.matrix, np.asarray(image.affine, dtype=np.float64))
    moved = nib.Nifti1Image(image.dataobj, affine, header=image.header)
    return moved, Grid((int(image.shape[0]), int(image.shape[1]), int(image.shape[2])), affine)


def apply(archive: Archive, project: Project, study_id: int, request: NavigationRequest) -> list[AppliedFile]:
    """Apply ``request`` to each moving image of study ``study_id``: new files, never the originals."""
    with archive.unit_of_work() as (session, journal):
        movings = project_files(session, project, list(request.moving), "moving image")
        project_files(session, project, list(request.fixed), "fixed image")
        applied = []
        for moving in movings:
            shown = moving.record.path
            if moving.record.study_id != study_id:
                raise InvalidValue(f"moving: {shown} is not in study {study_id}")
            if moving.record.kind not in (FileKind.NIFTI, FileKind.ROI):
                raise InvalidValue(f"moving: {shown} is not a NIfTI image ({moving.record.kind.value})")
            raw = _raw_nifti(archive.layout.file_path(moving.location))
            image = _load(raw, shown)
            study = session.get_one(Study, moving.record.study_id)
            name = _name(session, study, shown, request.mode.value)
            if not request.mode.deforms:
                affine = navigation.moved_affine(request.matrix, np.asarray(image.affine, dtype=np.float64))
                content = gzip.compress(navigation.with_affine(raw, affine), compresslevel=6)
                note = _note(request, moving, request.matrix, {})
                record = _store(archive, session, journal, moving, name, content, note)
                applied.append(AppliedFile(moving, record, None, affine))
                continue
            moved, moved_grid = _moved(request, image)
            grid = output_grid(archive, session, project, request, moved_grid)
            result, field = warped(request, moved, moving.record.kind, grid)
            affine = grid.affine
            field_name = name.removesuffix(".nii.gz") + ".field.nii.gz"
            note = _note(request, moving, request.matrix, {"field": field_name})
            record = _store(archive, session, journal, moving, name, gzip.compress(result.to_bytes(), compresslevel=6), note)
            field_record = _store(archive, session, journal, moving, field_name, gzip.compress(field.to_bytes(), compresslevel=6), note)
            applied.append(AppliedFile(moving, record, field_record, affine))
        log.info("navigation: %s applied to %s in study %d", request.mode.value, list(request.moving), study_id)
        return applied


def preview(archive: Archive, project: Project, study_id: int, request: NavigationRequest) -> bytes:
    """The first moving image as applying ``request`` would write it (uncompressed NIfTI), stored nowhere."""
    with archive.unit_of_work() as (session, _journal):
        [moving] = project_files(session, project, list(request.moving[:1]), "moving image")
        if moving.record.study_id != study_id:
            raise InvalidValue(f"moving: {moving.record.path} is not in study {study_id}")
        raw = _raw_nifti(archive.layout.file_path(moving.location))
        image = _load(raw, moving.record.path)
        if not request.mode.deforms:
            affine = navigation.moved_affine(request.matrix, np.asarray(image.affine, dtype=np.float64))
            return navigation.with_affine(raw, affine)
        moved, moved_grid = _moved(request, image)
        grid = output_grid(archive, session, project, request, moved_grid)
    result, _field = warped(request, moved, moving.record.kind, grid)
    content: bytes = result.to_bytes()
    return content


def describe(applied: Sequence[AppliedFile]) -> list[dict[str, Any]]:
    return [
        {
            "moving": item.moving.record.id,
            "image": {"id": item.image.id, "path": item.image.path},
            "field": {"id": item.field.id, "path": item.field.path} if item.field else None,
            "affine": item.affine.tolist(),
        }
        for item in applied
    ]
