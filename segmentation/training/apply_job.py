"""Applying a model as a batch job: the runner's trusted side of the ``segapply`` job.

The job runs in the sandbox, which sees neither the database nor the models folder: before it
starts, the runner (trusted) finds the model its STRING argument names, copies the file into the
staging folder and writes the job's config (``prepare``); after the run succeeded, it takes the
mask the job wrote and saves it as an ROI version of the model's label on the image, by the user
who launched the batch, with the model as its algorithm (``finish``). A mask that does not lie on
the image's grid is refused, as an upload would be.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
from sqlalchemy import select

from nifti_archive.archive import Archive
from nifti_archive.catalog.registration import sha256_of
from nifti_archive.errors import ArchiveError, Conflict, InvalidValue, NotFound
from nifti_archive.models import File, ModelState, Project, RoiOrigin, SegmentationModel, Study, Subject
from segmentation import model_registry
from segmentation.rois import RoiDraft, load_nifti, mask_from_nifti, reference_image, save_roi
from segmentation.training import APPLY_CONFIG

APPLIER = Path(__file__).resolve().parent / "apply_model.py"
_REFERENCE = re.compile(r"^(?P<name>\S+?)(?:\s+v(?P<version>[1-9]\d*))?$")


class ApplyFailed(ArchiveError):
    """The model cannot be applied, or its mask cannot be taken in; the run fails with this message."""


@dataclass(frozen=True)
class ModelReference:
    name: str
    version: int | None


def parse_model_reference(text: str) -> ModelReference:
    """``NAME`` (its published version) or ``NAME vN``."""
    match = _REFERENCE.match(text.strip())
    if match is None:
        raise InvalidValue(f"name a model as NAME or NAME vN (nora --models lists them), not {text!r}")
    return ModelReference(match["name"], int(match["version"]) if match["version"] else None)


def _model(archive: Archive, project: Project, reference: ModelReference) -> SegmentationModel:
    with archive.sessions() as session:
        newest = model_registry.find_model(session, project, reference.name, reference.version)
        if reference.version is not None:
            return newest
        published = [m for m in model_registry.list_models(session, project, offered_only=True) if m.name == reference.name]
        if not published:
            raise NotFound(f"model {reference.name!r} of project {project.name!r} has no published version; name one as "
                           f"'{reference.name} vN' or publish one (nora --model_publish)")
        return published[0]


def prepare(archive: Archive, project: Project, model_text: str, image: Path, index: int, staging: Path, workdir: Path) -> None:
    """The model's file and the config of job ``index``, in the staging folder; the runner's copy beside it."""
    try:
        model = _model(archive, project, parse_model_reference(model_text))
    except ArchiveError as exc:
        raise ApplyFailed(str(exc)) from exc
    if model.state is not ModelState.READY:
        raise ApplyFailed(f"model {model.name} v{model.version} is {model.state.value}, not ready")
    folder = staging / f"segapply-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_registry.model_path(archive.settings, model), folder / model_registry.MODEL_FILE)
    config = {
        "model": str(folder / model_registry.MODEL_FILE), "model_id": model.id, "model_name": f"{model.name} v{model.version}",
        "model_sha256": sha256_of(folder / model_registry.MODEL_FILE),
        "image": str(image), "output": str(folder / "mask.nii.gz"),
        "python": str(model_registry.assistant_python(archive.settings)), "script": str(APPLIER),
    }
    text = json.dumps(config, indent=2) + "\n"
    (workdir / APPLY_CONFIG.format(index=index)).write_text(text)
    (staging / APPLY_CONFIG.format(index=index)).write_text(text)


def _image_file(archive: Archive, image: Path) -> int:
    location = archive.layout.locate(image)
    with archive.sessions() as session:
        file_id = session.scalar(
            select(File.id)
            .join(Study, Study.id == File.study_id)
            .join(Subject, Subject.id == Study.subject_id)
            .join(Project, Project.id == Subject.project_id)
            .where(Project.name == location.project, Subject.patient_id == location.subject, Study.study_id == location.study,
                   File.path == location.path, File.trash_id.is_(None), Study.trash_id.is_(None))
        )
    if file_id is None:
        raise ApplyFailed(f"{location.path} is no longer in study {location.subject}#{location.study}")
    return file_id


def finish(archive: Archive, run_id: int, index: int, workdir: Path, staging: Path, author: str) -> str:
    """Save the mask job ``index`` wrote as an ROI version; returns the line the run's log shows."""
    config = json.loads((workdir / APPLY_CONFIG.format(index=index)).read_text())  # the runner's copy: the job could change its own
    output = staging / f"segapply-{index}" / "mask.nii.gz"
    file_id = _image_file(archive, Path(config["image"]))
    try:
        mask_image = load_nifti(output)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise ApplyFailed(f"the model's mask cannot be read: {exc}") from exc
    with archive.unit_of_work() as (session, journal):
        model = session.get(SegmentationModel, int(config["model_id"]))
        if model is None:
            raise Conflict(f"model {config['model_name']} was deleted while run {run_id} applied it")
        reference = reference_image(archive, session, file_id)
        mask = mask_from_nifti(mask_image, reference, f"the mask of model {config['model_name']}")
        draft = RoiDraft(model.label, mask, origin=RoiOrigin.ALGORITHM, algorithm=f"model {config['model_name']}",
                         note=f"batch run {run_id} applied model {config['model_name']} (sha256 {config['model_sha256']})")
        saved = save_roi(archive, session, journal, reference, draft, author)
        return f"--- ROI {saved.roi.label!r} v{saved.roi.version} on {reference.file.path}: {int(mask.sum())} voxels"
