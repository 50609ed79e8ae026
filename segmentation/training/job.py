"""Training a model as a batch job: submitting it, and the runner's trusted side of the ``segtrain`` job.

A training is one run of a one-job batch (``segtrain``), on the local executor or on Slurm like any
other, so its state and its log are where every run's are (``nora --jobs``, Gridstats). Runs belong
to a subject; a training's run is filed under the subject of its first ROI, and its batch's name
says what it trains ("segtrain liver v3").

The job runs in the sandbox, where there is no database: the runner (trusted) writes its config
before it starts (``prepare``: the cases as they are at that moment, the assistant's Python) and
takes its result in after it ends (``finish``: checks the model in the sandbox, stores it as the
model version the submission reserved, with its training ROIs and metrics). The sandbox also sees
the assistant's environment, read-only, and the machine's GPUs where it has some.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from jobs import runs, service
from jobs.arguments import ResolutionError, StudyListing, matching_file
from jobs.spec import Job, parse_batch
from nifti_archive.archive import Archive, get_project
from nifti_archive.errors import ArchiveError, InvalidValue
from nifti_archive.models import Executor, File, JobRun, ModelKind, ModelState, Project, Role, SegmentationModel
from nifti_archive.settings import Settings
from segmentation import model_registry
from segmentation.training import CHECKPOINT, CONFIG_FILE, MAX_EPOCHS, SEGTRAIN, dataset

TRAINER = Path(__file__).resolve().parent / "train_unet.py"
OUTPUT_FOLDER = "model"
METRICS_FILE = "metrics.json"
# The cube every image is resampled to for the network: small enough for a CPU, and the
# exported model resamples to it itself.
GRID = 48
SEED = 0
# A shape unlike the training grid, so that the check also runs the model's own resampling.
TRAINED_CHECK_SHAPE = (1, 1, 24, 28, 20)
RESOURCES = {"cpus": 4, "memory_mb": 8000, "time_minutes": 12 * 60}
# Metrics the trainer reports, as the model's columns hold them.
_FRACTIONS = ("val_dice", "baseline_dice")
_COUNTS = ("epochs", "train_count", "val_count")


@dataclass(frozen=True)
class Submission:
    model: SegmentationModel
    run_id: int
    launch_id: int
    executor: Executor
    cases: int


class TrainingFailed(ArchiveError):
    """The run cannot train or its result cannot be taken in; the run fails with this message."""


def submit(archive: Archive, project_name: str, label: str, epochs: int, name: str | None, executor: Executor,
           user: str, role: Role | None) -> Submission:
    """Reserve the next version of the model and queue its training run."""
    if not 1 <= epochs <= MAX_EPOCHS:
        raise InvalidValue(f"epochs must be between 1 and {MAX_EPOCHS}, not {epochs}")
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        model_registry.check_may_manage(role, project, "training a model")
        cases = dataset.collect(archive, session, project, label)
        model = model_registry.new_version(session, project, name or model_registry.default_name(label), label,
                                           ModelKind.TRAINED, user, ModelState.TRAINING)
        model.epochs = epochs
        document: dict[str, Any] = {
            "name": f"{SEGTRAIN} {model.name} v{model.version}", "level": "subject",
            "jobs": [{"job": SEGTRAIN, "args": {"n1": {"type": "NUMERIC", "value": epochs}}}],
            "resources": RESOURCES,
        }
        record, run_ids = runs.launch(session, project, document, executor, user, study_ids=[cases[0].study_pk])
        model.job_run_id = run_ids[0]
        resources = runs.resources_for(project, parse_batch(document))
    service.start(archive, record.executor, record.id, run_ids, resources)
    return Submission(model, run_ids[0], record.id, record.executor, len(cases))


def software(settings: Settings) -> tuple[Path, ...]:
    """What the sandbox must show besides the archive's own: the assistant's environment, where
    it really is (``assistant_venv`` is a link, and a bind of a link shows the link, dangling)."""
    return (settings.assistant_venv.resolve(),)


def _model_of_run(session: Session, run_id: int) -> SegmentationModel:
    model = session.scalar(select(SegmentationModel).where(SegmentationModel.job_run_id == run_id))
    if model is None:
        raise TrainingFailed(f"a {SEGTRAIN} job trains the model a submission reserved: start it with nora --model_train")
    return model


def _write_config(archive: Archive, label: str, epochs: int, cases: list[dataset.TrainingCase], output: Path,
                  staging: Path, workdir: Path) -> None:
    """The job's config in its staging folder, the runner's own copy beside it; and the checkpoint
    an earlier attempt of the run left (the runner keeps it), for the trainer to resume from."""
    kept = workdir / CHECKPOINT
    if kept.exists():
        shutil.copyfile(kept, staging / CHECKPOINT)
    config = {
        "label": label, "epochs": epochs, "grid": GRID, "seed": SEED,
        "cases": [case.manifest_entry() for case in cases], "output": str(output), "checkpoint": str(staging / CHECKPOINT),
        "python": str(model_registry.assistant_python(archive.settings)), "trainer": str(TRAINER),
    }
    text = json.dumps(config, indent=2) + "\n"
    (workdir / CONFIG_FILE).write_text(text)
    (staging / CONFIG_FILE).write_text(text)


def prepare(archive: Archive, run_id: int, job: Job, staging: Path, workdir: Path) -> None:
    """The config of a training ``nora --model_train`` submitted: the label's ROIs as they are now."""
    with archive.unit_of_work() as (session, _journal):
        model = _model_of_run(session, run_id)
        project = session.get_one(Project, model.project_id)
        model.state, model.reason = ModelState.TRAINING, ""  # a rerun of a failed training trains again
        cases = dataset.collect(archive, session, project, model.label)
        label = model.label
    _write_config(archive, label, int(job.arg("n1").value), cases, staging / OUTPUT_FOLDER, staging, workdir)


def prepare_from_files(archive: Archive, run_id: int, project: Project, job: Job, studies: list[StudyListing], output: Path,
                       staging: Path, workdir: Path, user: str) -> list[str]:
    """The config of a batch's ``train`` job: in each study, the image (f1) and mask (f2) its
    patterns name; the model version it trains is reserved on its first attempt. Returns the
    lines the run's log shows for the studies left out, and why."""
    name = model_registry.check_name(str(job.arg("s1").value))
    epochs = job.arg("n1").value
    if not float(epochs).is_integer() or not 1 <= epochs <= MAX_EPOCHS:
        raise TrainingFailed(f"n1: the epochs must be a whole number from 1 to {MAX_EPOCHS}, not {epochs}")
    found, skipped = [], []
    for study in studies:
        try:
            found.append((study, matching_file(job.arg("f1"), study, {}), matching_file(job.arg("f2"), study, {})))
        except ResolutionError as problem:
            skipped.append(f"--- study {study.subject}#{study.study_id} left out: {problem}")
    with archive.unit_of_work() as (session, _journal):
        images = [(study.pk, image) for study, image, _mask in found]
        ids = dict(session.execute(select(File.study_id, File.id).where(
            tuple_(File.study_id, File.path).in_(images), File.trash_id.is_(None))).tuples().all())
        cases = [dataset.TrainingCase(None, None, ids[study.pk], study.pk or 0, study.folder / image, study.folder / mask)
                 for study, image, mask in found if study.pk in ids]
        if len(cases) < dataset.MIN_TRAINING_ROIS:
            raise TrainingFailed(f"training {name!r} needs at least {dataset.MIN_TRAINING_ROIS} studies with an image and a mask;"
                                 f" {len(cases)} of {len(studies)} have both")
        model = session.scalar(select(SegmentationModel).where(SegmentationModel.job_run_id == run_id))
        if model is None:
            model = model_registry.new_version(session, project, name, name, ModelKind.TRAINED, user, ModelState.TRAINING)
            model.job_run_id = run_id
        model.state, model.reason, model.epochs = ModelState.TRAINING, "", int(epochs)
    _write_config(archive, name, int(epochs), dataset.split(cases), output, staging, workdir)
    return skipped


def _metrics(output: Path) -> dict[str, Any]:
    """The trainer's metrics, checked: they come out of the sandbox and become the model's columns."""
    try:
        metrics = json.loads((output / METRICS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise TrainingFailed(f"the trainer left no readable {METRICS_FILE}: {exc}") from exc
    if not isinstance(metrics, dict):
        raise TrainingFailed(f"the trainer's {METRICS_FILE} is not a JSON object")
    for key in _FRACTIONS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise TrainingFailed(f"the trainer's {key} is {value!r}, not a Dice between 0 and 1")
    for key in _COUNTS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TrainingFailed(f"the trainer's {key} is {value!r}, not a count")
    return dict(metrics)


def finish(archive: Archive, run_id: int, workdir: Path, staging: Path, wrap: model_registry.Wrap) -> SegmentationModel:
    """Take the trained model in as the reserved version: READY, or FAILED when it does not load."""
    config = json.loads((workdir / CONFIG_FILE).read_text())  # the runner's copy: the job could change its own
    output = Path(config["output"])
    metrics = _metrics(output)
    checked = model_registry.check_file(archive.settings, output / model_registry.MODEL_FILE, TRAINED_CHECK_SHAPE, wrap)
    rois = tuple((int(c["roi"]), int(c["version"]), str(c["split"])) for c in config["cases"] if c["roi"] is not None)
    with archive.unit_of_work() as (session, _journal):
        model = _model_of_run(session, run_id)
        project = session.get_one(Project, model.project_id)
        training = model_registry.TrainingRecord(run_id, rois, metrics)
        return model_registry.store(session, archive.settings, project, model, checked, training)


def failed(archive: Archive, run_id: int, message: str) -> None:
    """The run failed: its model, if still training, failed with the run's message."""
    with archive.unit_of_work() as (session, _journal):
        model = session.scalar(select(SegmentationModel).where(SegmentationModel.job_run_id == run_id))
        if model is not None and model.state is ModelState.TRAINING:
            model.state, model.reason = ModelState.FAILED, f"training run {run_id} failed: {message}"


def settle(session: Session, project: Project) -> None:
    """Models still training whose run ended without a word (cancelled, or stopped by Slurm) failed."""
    stale = session.execute(
        select(SegmentationModel, JobRun)
        .outerjoin(JobRun, JobRun.id == SegmentationModel.job_run_id)
        .where(SegmentationModel.project_id == project.id, SegmentationModel.state == ModelState.TRAINING)
    ).all()
    for model, run in stale:
        if run is None:
            model.state, model.reason = ModelState.FAILED, "its training run was deleted"
        elif run.state not in runs.ACTIVE:
            said = f": {run.message}" if run.message else ""
            model.state, model.reason = ModelState.FAILED, f"training run {run.id} ended {run.state.value}{said}"
