"""A project's segmentation models: versions of TorchScript files under the models folder.

A version is ``<models>/<project>/<name>/v<version>/model.ts`` with ``model.json`` beside it (name,
label, version, kind, the file's SHA-256, the shape it was checked on, training data and metrics)
and its ``SegmentationModel`` row. Versions count up per project and name, failed ones included.

A file is taken only if it loads and runs in the segmentation assistant's environment (torch
there, not here): ``training/check_model.py`` runs it once on zeros. One that does not is kept as
a FAILED row with the first line of the error and no file, and is never offered. Users are offered
the published version of each name, which must be READY.

The contract a model keeps with the assistant: it takes a (1, 1, I, J, K) float32 tensor, the
image's voxels in the NIfTI's array order, and returns (1, C, I, J, K) on the same grid: with C = 1
the foreground probability, with more channels class scores whose channel 1 is the label.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from nifti_archive.catalog.registration import sha256_of
from nifti_archive.errors import Conflict, Forbidden, InvalidValue, NotFound, ServiceUnavailable
from nifti_archive.models import ModelKind, ModelState, Project, Role, SegmentationModel, SegmentationModelRoi, as_utc
from nifti_archive.settings import Settings
from segmentation.rois import check_label

MODEL_FILE = "model.ts"
DOCUMENT_FILE = "model.json"
CHECKER = Path(__file__).resolve().parent / "training" / "check_model.py"
# The input the check runs a model on when nothing else is recorded: a small volume, so that a
# large network is checked in seconds.
CHECK_SHAPE = (1, 1, 32, 32, 32)
CHECK_TIMEOUT_SECONDS = 300
# Folder names: no separators, no dot files, nothing a shell or URL needs to quote.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_REASON = 500
# The checker's environment, built from nothing: it runs a foreign file and needs no secret.
CHECK_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}

# Turns the checker's command line into the one that runs it (the runner's sandbox); identity by default.
Wrap = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = ""
    output_shape: tuple[int, ...] = ()
    torch_version: str = ""


@dataclass(frozen=True)
class TrainingRecord:
    """What a trained model learnt from and how it did: its run, ROI versions and metrics."""

    job_run_id: int
    # (ROI id, ROI version, "training" or "validation")
    rois: tuple[tuple[int, int, str], ...]
    metrics: dict[str, Any] = field(default_factory=dict)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidValue(
            f"model name {name!r} must start with a letter or digit and hold at most 64 letters, digits, '.', '_' or '-'"
        )
    return name


def default_name(label: str) -> str:
    """A model's name when none is given: its label, with what a folder name cannot hold replaced."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[:64]
    return cleaned or "model"


def check_may_manage(role: Role | None, project: Project, what: str) -> None:
    """Training, registering and publishing need a project admin; ``role`` None is the
    installation's operator (the command line acting for no archive account)."""
    if role is not None and not role.allows(Role.ADMIN):
        raise Forbidden(f"{what} needs the admin role in project {project.name!r}; you have {role.value}")


def _first_line(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def assistant_python(settings: Settings) -> Path:
    """The assistant environment's Python by its real path: the environment's folder is a link,
    which a sandbox does not show (it shows the folder). Not the interpreter's own real path: a
    virtual environment's Python is a link too, and only through it does it find its packages."""
    return settings.assistant_venv.resolve() / "bin" / "python"


def check_model_file(settings: Settings, path: Path, shape: Sequence[int] = CHECK_SHAPE, wrap: Wrap | None = None) -> CheckResult:
    """Whether ``path`` loads and runs in the assistant's environment (see check_model.py)."""
    python = assistant_python(settings)
    if not python.exists():
        raise ServiceUnavailable(f"the segmentation assistant's environment is not installed ({python} is missing); setup.sh builds it")
    argv = [str(python), "-I", str(CHECKER), str(path), ",".join(str(n) for n in shape)]
    try:
        result = subprocess.run(
            wrap(argv) if wrap else argv, env=CHECK_ENVIRONMENT, cwd="/tmp", stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        return CheckResult(False, f"the model did not run within {CHECK_TIMEOUT_SECONDS} s on a {tuple(shape)} input")
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        # No answer at all: the interpreter itself died (a crash in torch's loader, a signal).
        detail = _first_line(result.stderr) or f"the checker exited with status {result.returncode} and said nothing"
        return CheckResult(False, detail)
    if not answer.get("ok"):
        return CheckResult(False, _first_line(str(answer.get("error", ""))) or "the model does not load")
    return CheckResult(True, "", tuple(int(n) for n in answer["output_shape"]), str(answer.get("torch", "")))


def _free_name(session: Session, project: Project, name: str, label: str) -> tuple[str, str]:
    """The checked name and label; a name keeps its label across versions."""
    name, label = check_name(name), check_label(label)
    earlier = session.scalar(
        select(SegmentationModel.label).where(SegmentationModel.project_id == project.id, SegmentationModel.name == name).limit(1)
    )
    if earlier is not None and earlier != label:
        raise Conflict(f"model {name!r} of project {project.name!r} segments {earlier!r}, not {label!r}; give another name")
    return name, label


def new_version(session: Session, project: Project, name: str, label: str, kind: ModelKind, user: str,
                state: ModelState) -> SegmentationModel:
    """A new version row of ``name`` (flushed, so that two at once cannot take the same number)."""
    name, label = _free_name(session, project, name, label)
    version = session.scalar(
        select(func.coalesce(func.max(SegmentationModel.version), 0))
        .where(SegmentationModel.project_id == project.id, SegmentationModel.name == name)
    )
    model = SegmentationModel(project_id=project.id, name=name, label=label, version=int(version or 0) + 1, kind=kind,
                              state=state, created_by=user)
    session.add(model)
    session.flush()
    return model


@dataclass(frozen=True)
class CheckedFile:
    """A candidate model file, its digest and what the check said of it."""

    path: Path
    digest: str
    check: CheckResult
    shape: tuple[int, ...]


def check_file(settings: Settings, path: Path, shape: Sequence[int] = CHECK_SHAPE, wrap: Wrap | None = None) -> CheckedFile:
    """Check a candidate file where it lies (a sandbox may see it there and not the models
    folder); ``store`` copies the same bytes, which the digest confirms. Touches no database:
    the check takes seconds and must not hold the archive's write lock."""
    if not path.is_file():
        raise NotFound(f"no file {path}")
    digest = sha256_of(path)
    return CheckedFile(path, digest, check_model_file(settings, path, shape, wrap), tuple(shape))


def _document(model: SegmentationModel, project: Project, checked: CheckedFile, training: TrainingRecord | None) -> dict[str, Any]:
    return {
        "project": project.name, "name": model.name, "label": model.label, "version": model.version,
        "kind": model.kind.value, "created_by": model.created_by, "created": as_utc(model.created_at).isoformat(),
        "file": MODEL_FILE, "sha256": checked.digest,
        "input": {"layout": "(1, 1, I, J, K) float32: the image's voxels in the NIfTI's array order",
                  "check_shape": list(checked.shape)},
        "output_shape_on_check": list(checked.check.output_shape), "torch": checked.check.torch_version,
        "training": None if training is None else {
            "job_run_id": training.job_run_id,
            "rois": [{"roi": roi, "version": version, "split": split} for roi, version, split in training.rois],
            "metrics": training.metrics,
        },
    }


def store(session: Session, settings: Settings, project: Project, model: SegmentationModel, checked: CheckedFile,
          training: TrainingRecord | None = None) -> SegmentationModel:
    """``model`` READY with a copy of the checked file, or FAILED with the check's reason and no file."""
    if training is not None:
        _record_training(session, model, training)
    if not checked.check.ok:
        model.state, model.reason, model.path = ModelState.FAILED, checked.check.reason, ""
        session.flush()
        return model
    folder = settings.models_dir / project.name / model.name / f"v{model.version}"
    folder.mkdir(parents=True, exist_ok=True)
    # A version whose transaction did not commit may have left files here; its number is free
    # again, and this version's files replace them.
    shutil.copyfile(checked.path, folder / MODEL_FILE)
    if sha256_of(folder / MODEL_FILE) != checked.digest:
        raise Conflict(f"{checked.path} changed while it was registered; register it again")
    (folder / DOCUMENT_FILE).write_text(json.dumps(_document(model, project, checked, training), indent=2) + "\n")
    model.state, model.reason = ModelState.READY, ""
    model.path = str((folder / MODEL_FILE).relative_to(settings.models_dir))
    session.flush()
    return model


def _record_training(session: Session, model: SegmentationModel, training: TrainingRecord) -> None:
    metrics = training.metrics
    model.job_run_id = training.job_run_id
    model.val_dice, model.baseline_dice = metrics.get("val_dice"), metrics.get("baseline_dice")
    model.epochs, model.train_count, model.val_count = metrics.get("epochs"), metrics.get("train_count"), metrics.get("val_count")
    session.execute(delete(SegmentationModelRoi).where(SegmentationModelRoi.model_id == model.id))
    session.add_all(SegmentationModelRoi(model_id=model.id, roi_id=roi, roi_version=version) for roi, version, _split in training.rois)


def register_model(session: Session, settings: Settings, project: Project, name: str, label: str, source_file: Path,
                   user: str, wrap: Wrap | None = None) -> SegmentationModel:
    """A user's own TorchScript file as the next version of ``name``: READY if it loads and runs
    (the check run through ``wrap``: the jobs sandbox), else FAILED with the reason (never offered)."""
    _free_name(session, project, name, label)  # a bad name is refused before the check's seconds
    checked = check_file(settings, source_file, wrap=wrap)
    model = new_version(session, project, name, label, ModelKind.REGISTERED, user, ModelState.FAILED)
    return store(session, settings, project, model, checked)


def list_models(session: Session, project: Project, offered_only: bool = False) -> list[SegmentationModel]:
    query = select(SegmentationModel).where(SegmentationModel.project_id == project.id)
    if offered_only:
        query = query.where(SegmentationModel.state == ModelState.READY, SegmentationModel.published.is_(True))
    return list(session.scalars(query.order_by(SegmentationModel.name, SegmentationModel.version)))


def find_model(session: Session, project: Project, name: str, version: int | None = None) -> SegmentationModel:
    """Version ``version`` of ``name``, or its newest version."""
    query = select(SegmentationModel).where(SegmentationModel.project_id == project.id, SegmentationModel.name == name)
    if version is not None:
        query = query.where(SegmentationModel.version == version)
    model = session.scalar(query.order_by(SegmentationModel.version.desc()).limit(1))
    if model is None:
        which = f"{name!r} version {version}" if version is not None else repr(name)
        raise NotFound(f"no model {which} in project {project.name!r} (nora -p {project.name} --models lists them)")
    return model


def publish_model(session: Session, project: Project, name: str, version: int | None = None) -> SegmentationModel:
    """Offer this version of ``name`` to the project's users, in place of any other of its versions."""
    model = find_model(session, project, name, version)
    if model.state is not ModelState.READY:
        why = f": {model.reason}" if model.reason else ""
        raise Conflict(f"model {model.name} v{model.version} is {model.state.value}{why}; only a ready version can be published")
    session.execute(
        update(SegmentationModel)
        .where(SegmentationModel.project_id == project.id, SegmentationModel.name == model.name, SegmentationModel.id != model.id)
        .values(published=False)
    )
    model.published = True
    session.flush()
    return model


def model_path(settings: Settings, model: SegmentationModel) -> Path:
    """The model's TorchScript file."""
    if model.state is not ModelState.READY or not model.path:
        raise Conflict(f"model {model.name} v{model.version} is {model.state.value} and has no file")
    return settings.models_dir / model.path
