"""Segmentation models: training on a project's ROIs as a sandboxed batch job, registering a user's
TorchScript file, publishing, and who may do which, through `nora` with real processes (the
segmentation assistant's Python checks and trains; the local executor runs the job).

`nora` runs in this process (the nora_in_process fixture: the same exit codes and messages without
an interpreter's start-up each time); the trainer, the checker and the job runner are processes.

The ROIs are synthetic: a bright ball with noise in a real EPI volume, a little off centre in each
subject, so that the trivial baseline (the mean training mask) finds part of it and the network
has to find the rest.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select

from nifti_archive import accounts
from nifti_archive.archive import Archive, get_project
from nifti_archive.models import (
    BatchLaunch,
    File,
    JobRun,
    JobState,
    ModelKind,
    ModelState,
    Roi,
    RoiOrigin,
    Role,
    SegmentationModel,
    SegmentationModelRoi,
)
from nifti_archive.settings import Settings
from segmentation import model_registry, rois
from segmentation.training.job import TRAINER
from tests.conftest import Nora
from tests.polling import wait_until
from tests.reference import DATA

SOURCE = DATA / "dcm_qa" / "Ref" / "ax_asc_35sl_6.nii"
IMAGE = "t1/img.nii.gz"
EPOCHS = 12
# Runs a TorchScript file on images as the assistant does, and scores it against their masks:
# MODEL IMAGE MASK [IMAGE MASK ...] -> a JSON list of {dice, shape}.
HELD_OUT_SCRIPT = """
import json, sys
import nibabel as nib, numpy as np, torch
model = torch.jit.load(sys.argv[1], map_location="cpu").eval()
scores = []
for image_path, mask_path in zip(sys.argv[2::2], sys.argv[3::2]):
    image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
    truth = np.asarray(nib.load(mask_path).dataobj) > 0
    with torch.no_grad():
        predicted = model(torch.from_numpy(image)[None, None])[0, 0].numpy() > 0.5
    scores.append({"dice": 2.0 * int((predicted & truth).sum()) / int(predicted.sum() + truth.sum()),
                   "shape": list(predicted.shape)})
sys.stdout.write(json.dumps(scores))
"""
TINY_MODEL_SCRIPT = """
import sys, torch
class Brightest(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image > image.mean()).float()
torch.jit.script(Brightest()).save(sys.argv[1])
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    return result.stderr


def ball(shape: tuple[int, ...], centre: NDArray[np.float64], radius: float) -> NDArray[np.bool_]:
    grid = np.indices(shape[:3]).transpose(1, 2, 3, 0)
    return np.asarray(np.linalg.norm(grid - centre, axis=-1) <= radius)


@pytest.fixture
def nora(nora_in_process: Nora) -> Nora:
    return nora_in_process


@pytest.fixture
def project(nora: Nora, archive: Archive, settings: Settings) -> Path:
    ok(nora("-c", "demo"))
    return settings.archive_root / "demo"


def add_cases(nora: Nora, archive: Archive, root: Path, count: int, label: str = "liver") -> None:
    """``count`` subjects, each an image with a ball in it and the ball saved as an ROI of ``label``."""
    source = rois.load_nifti(SOURCE)
    base = np.asarray(source.dataobj, dtype=np.float32)[..., 0]
    rng = np.random.default_rng(7)
    masks = {}
    for index in range(count):
        centre = np.array([32.0, 30.0, 17.0]) + rng.uniform([-6, -6, -3], [6, 6, 3])
        mask = ball(base.shape, centre, rng.uniform(6, 8))
        image = base + rng.normal(0, 0.05 * base.std(), base.shape)
        image[mask] += 0.8 * np.percentile(base, 99)
        path = root / f"P{index + 1}" / "S1" / IMAGE
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image.astype(np.int16), source.affine), path)
        masks[path] = mask
    ok(nora("-p", "demo", "-a", *map(str, masks)))
    with archive.unit_of_work() as (session, journal):
        references = session.scalars(select(File.id).where(File.path == IMAGE).order_by(File.id)).all()
        for reference_id, mask in zip(references, masks.values(), strict=True):
            reference = rois.reference_image(archive, session, reference_id)
            rois.save_roi(archive, session, journal, reference, rois.RoiDraft(label, mask), "alice")


def add_users(archive: Archive) -> None:
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, "demo")
        for name, role in (("vera", Role.VIEWER), ("rita", Role.READER), ("eddie", Role.EDITOR), ("ada", Role.ADMIN)):
            user, _password = accounts.create_user(session, name)
            accounts.grant_role(session, user, project, role)


def models(archive: Archive) -> list[SegmentationModel]:
    with archive.sessions() as session:
        return list(session.scalars(select(SegmentationModel).order_by(SegmentationModel.name, SegmentationModel.version)))


def offered(archive: Archive) -> list[tuple[str, int]]:
    with archive.sessions() as session:
        return [(m.name, m.version) for m in model_registry.list_models(session, get_project(session, "demo"), offered_only=True)]


def assistant_run(settings: Settings, script: str, folder: Path, *args: str) -> str:
    path = folder / "script.py"
    path.write_text(script)  # torch.jit.script reads its module's source from a file
    result = subprocess.run([str(settings.assistant_python), str(path), *args], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_too_few_rois_are_refused_with_the_count_needed(nora: Nora, archive: Archive, project: Path) -> None:
    add_cases(nora, archive, project, 2)
    assert refused(nora("-p", "demo", "--model_train", "liver")).strip() == \
        "nora: error: training 'liver' needs at least 4 ROIs; the project has 2"
    assert "the project has 0" in refused(nora("-p", "demo", "--model_train", "spleen"))
    assert models(archive) == []
    with archive.sessions() as session:
        assert session.scalars(select(JobRun)).all() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_model_trained_on_six_rois_beats_the_baseline_on_held_out_cases_and_can_be_published(
    nora: Nora, archive: Archive, settings: Settings, project: Path, tmp_path: Path,
) -> None:
    add_cases(nora, archive, project, 6)
    out = ok(nora("-p", "demo", "--model_train", "liver", "--epochs", str(EPOCHS), "--wait", "110"))
    assert "training model liver v1 ('liver') on 6 ROIs: run" in out and "on local" in out
    assert "model liver v1 ('liver') is ready: validation dice" in out

    [model] = models(archive)
    assert (model.kind, model.state, model.published, model.reason) == (ModelKind.TRAINED, ModelState.READY, False, "")
    assert (model.epochs, model.train_count, model.val_count) == (EPOCHS, 4, 2)
    assert model.val_dice is not None and model.baseline_dice is not None
    assert model.val_dice > 0.6 and model.val_dice > model.baseline_dice + 0.1, (model.val_dice, model.baseline_dice)
    with archive.sessions() as session:
        trained_on = session.execute(select(SegmentationModelRoi.roi_id, SegmentationModelRoi.roi_version)
                                     .where(SegmentationModelRoi.model_id == model.id)).all()
        roi_ids = session.scalars(select(File.id).where(File.path.like("rois/%.nii.gz"))).all()
        run = session.get_one(JobRun, model.job_run_id)
    assert sorted(trained_on) == sorted((roi_id, 1) for roi_id in roi_ids)

    # The run's log is what Gridstats shows: one line per epoch, the metrics, the model taken in.
    log = Path(run.log_path).read_text()
    assert f"epoch {EPOCHS}/{EPOCHS} loss" in log and "val dice" in log and "--- model liver v1 is ready" in log

    # The file the assistant will serve, run here on each held-out image at its own size, scores
    # what the trainer reported, above the baseline's score on the same image.
    path = model_registry.model_path(settings, model)
    assert path == settings.models_dir / "demo" / "liver" / "v1" / "model.ts"
    document = json.loads(path.with_name("model.json").read_text())
    assert (document["name"], document["label"], document["version"], document["kind"]) == ("liver", "liver", 1, "trained")
    held_out = [r["roi"] for r in document["training"]["rois"] if r["split"] == "validation"]
    reported = document["training"]["metrics"]["per_case"]
    assert [case["roi"] for case in reported] == held_out and len(held_out) == 2
    pairs = []
    with archive.sessions() as session:
        for roi_id in held_out:
            mask_path = rois.roi_path(archive, session, rois.live_roi(session, roi_id))
            pairs += [str(mask_path.parents[3] / IMAGE), str(mask_path)]
    answers = json.loads(assistant_run(settings, HELD_OUT_SCRIPT, tmp_path, str(path), *pairs))
    for answer, case in zip(answers, reported, strict=True):
        assert answer["shape"] == [64, 64, 35]
        assert answer["dice"] == pytest.approx(case["dice"], abs=1e-6)
        assert answer["dice"] > case["baseline_dice"] and answer["dice"] > 0.5

    assert offered(archive) == []
    assert "model liver v1 ('liver') is offered" in ok(nora("-p", "demo", "--model_publish", "liver"))
    assert offered(archive) == [("liver", 1)]
    listing = ok(nora("-p", "demo", "--models")).splitlines()
    assert listing[0].startswith(f"liver\tv1\tliver\ttrained\tready\tval dice {model.val_dice:.3f}\tbaseline ")
    assert listing[0].endswith("\tpublished\t")
    apply_to_a_new_study(nora, archive, project, "liver")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_trains_on_the_selected_studies_into_an_analysis_and_resumes_after_a_crash(
    nora: Nora, archive: Archive, project: Path,
) -> None:
    add_cases(nora, archive, project, 6)
    ok(nora("-p", "demo", "--create_analysis", "models"))
    epochs = 60
    batch = {"level": "project", "jobs": [{"job": "train", "args": {
        "f1": {"type": "FILE", "value": IMAGE}, "f2": {"type": "FILE", "value": "rois/*.nii.gz"},
        "s1": {"type": "STRING", "value": "lesion"}, "n1": {"type": "NUMERIC", "value": epochs},
        "p1": {"type": "PATHOUT", "value": "lesion", "study": "analysis:models"},
    }}]}
    assert ok(nora("-p", "demo", "--validate", json.dumps(batch))).splitlines()[-1] == "6 of 6 target(s) resolve"
    assert "1 run(s) on local" in ok(nora("-p", "demo", "--launch", json.dumps(batch)))  # one run over the six studies

    def run() -> JobRun:
        with archive.sessions() as session:
            [only] = session.scalars(select(JobRun)).all()
            return only

    # The trainer dies (the node went down, the kernel killed it) a few epochs in: the run errs,
    # and its rerun resumes after the last finished epoch instead of starting again.
    def logged(text: str) -> bool:
        log = Path(run().log_path)
        return log.is_file() and text in log.read_text()

    wait_until(lambda: logged("epoch 3/"), 110, "the third epoch")
    assert kill_processes_running(TRAINER) > 0
    wait_until(lambda: run().state is JobState.ERROR, 60, "the run to fail")
    ok(nora("-p", "demo", "--rerun", "--wait", "110", "--throwerror"))
    log = Path(run().log_path).read_text()
    resumed = int(log.split("resuming after epoch ")[1].split()[0])
    assert resumed >= 3 and f"epoch {resumed + 1}/{epochs} loss" in log and f"epoch {epochs}/{epochs} loss" in log
    [model] = models(archive)
    assert (model.name, model.label, model.state, model.epochs, model.train_count, model.val_count) == \
        ("lesion", "lesion", ModelState.READY, epochs, 4, 2)
    folder = project / "ANALYSIS#models" / "analysis" / "lesion"
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "model.ts"]
    assert json.loads((folder / "metrics.json").read_text())["epochs"] == epochs
    apply_to_a_new_study(nora, archive, project, "lesion v1")


def kill_processes_running(script: Path) -> int:
    """SIGKILL every process whose command line runs ``script``; how many there were."""
    killed = 0
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or gone
        if str(script).encode() in arguments:
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
    return killed


def apply_to_a_new_study(nora: Nora, archive: Archive, project: Path, model: str) -> None:
    """The published model applied by a batch job to a study it never saw: its mask is an ROI of
    the model's label, by the user who launched the batch, with the model as its algorithm."""
    source = rois.load_nifti(SOURCE)
    base = np.asarray(source.dataobj, dtype=np.float32)[..., 0]
    truth = ball(base.shape, np.array([33.0, 29.0, 18.0]), 7.0)
    image = base.copy()
    image[truth] += 0.8 * np.percentile(base, 99)
    path = project / "NEW" / "S1" / "held" / "img.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(image.astype(np.int16), source.affine), path)
    ok(nora("-p", "demo", "-a", str(path)))
    batch = {"jobs": [{"job": "segapply", "args": {"f1": {"type": "FILE", "value": "held/*.nii.gz"},
                                                   "s1": {"type": "STRING", "value": model}}}]}
    ok(nora("-p", "demo", "--launch", json.dumps(batch), "--filter", "held/*", "--wait", "110", "--throwerror"))
    name = model.split()[0]
    with archive.sessions() as session:
        image_id = session.scalars(select(File.id).where(File.path == "held/img.nii.gz")).one()
        [roi] = [r for r in session.scalars(select(Roi).where(Roi.reference_file_id == image_id))]
        mask_path = rois.roi_path(archive, session, roi)
        run = session.scalars(select(JobRun).order_by(JobRun.id.desc())).first()
        assert run is not None
        assert (roi.label, roi.origin, roi.algorithm, roi.version) == (name, RoiOrigin.ALGORITHM, f"model {name} v1", 1)
        assert roi.author == session.get_one(BatchLaunch, run.launch_id).launched_by
        assert roi.file.derived_from_id == image_id and f"batch run {run.id} applied model {name} v1" in (roi.file.provenance_note or "")
    found = np.asarray(nib.load(mask_path).dataobj) > 0
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert dice > 0.5, dice
    assert f"--- ROI '{name}' v1 on held/img.nii.gz: {int(found.sum())} voxels" in Path(run.log_path).read_text()
    missing = {"jobs": [{"job": "segapply", "args": {"f1": {"type": "FILE", "value": "held/*.nii.gz"},
                                                     "s1": {"type": "STRING", "value": "spleen"}}}]}
    refused_run = nora("-p", "demo", "--launch", json.dumps(missing), "--filter", "held/*", "--wait", "60", "--throwerror")
    assert refused_run.returncode == 2
    with archive.sessions() as session:
        last = session.scalars(select(JobRun).order_by(JobRun.id.desc())).first()
        assert last is not None and "no model 'spleen' in project 'demo'" in last.message


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_cancelled_training_leaves_its_model_failed_with_the_runs_end(
    nora: Nora, archive: Archive, settings: Settings, project: Path,
) -> None:
    add_cases(nora, archive, project, 4)
    ok(nora("-p", "demo", "--model_train", "liver", "--epochs", "500", "--name", "slow"))
    assert ok(nora("-p", "demo", "--cancel")) == "cancelled 1 run(s)\n"
    [model] = models(archive)
    assert model.state is ModelState.TRAINING  # nothing told the model yet: listing it settles it
    listing = ok(nora("-p", "demo", "--models"))
    assert listing.startswith("slow\tv1\tliver\ttrained\tfailed\tval dice -\tbaseline -\tunpublished\t")
    assert listing.endswith(f"training run {model.job_run_id} ended cancelled\n")
    assert "only a ready version can be published" in refused(nora("-p", "demo", "--model_publish", "slow"))
    # The runner, if it had started, stops with its job and clears its staging folder.
    staging = settings.var_dir / "jobs" / f"run-{model.job_run_id}" / "staging"
    wait_until(lambda: not staging.exists(), 60, "the cancelled training's runner to stop")


def test_a_file_that_does_not_load_is_recorded_failed_with_the_reason_and_never_offered(
    nora: Nora, archive: Archive, project: Path, tmp_path: Path,
) -> None:
    noise = tmp_path / "noise.ts"
    noise.write_bytes(np.random.default_rng(1).bytes(4096))
    pickled = tmp_path / "weights.pt"
    pickled.write_bytes(pickle.dumps({"conv.weight": [0.5, 0.25]}))
    for path, version in ((noise, 1), (pickled, 2)):
        error = refused(nora("-p", "demo", "--model_register", str(path), "--label", "liver", "--name", "mine"))
        assert f"model mine v{version} ('liver') does not load, recorded as failed and never offered: RuntimeError: " in error
        assert "PytorchStreamReader failed reading zip archive" in error
    failed = models(archive)
    assert [(m.version, m.state, m.kind, m.path) for m in failed] == [(1, ModelState.FAILED, ModelKind.REGISTERED, "")] + [
        (2, ModelState.FAILED, ModelKind.REGISTERED, "")]
    assert all(m.reason.startswith("RuntimeError: PytorchStreamReader") and "\n" not in m.reason for m in failed)
    assert "only a ready version can be published" in refused(nora("-p", "demo", "--model_publish", "mine:1"))
    assert offered(archive) == []
    assert "\tfailed\t" in ok(nora("-p", "demo", "--models"))


def test_a_torchscript_file_that_runs_is_ready_and_publishing_a_version_replaces_the_other(
    nora: Nora, archive: Archive, settings: Settings, project: Path, tmp_path: Path,
) -> None:
    tiny = tmp_path / "tiny.ts"
    assistant_run(settings, TINY_MODEL_SCRIPT, tmp_path, str(tiny))
    out = ok(nora("-p", "demo", "--model_register", str(tiny), "--label", "lesion core"))
    assert out == "registered model lesion_core v1 ('lesion core'): ready (nora --model_publish lesion_core:1 offers it)\n"
    ok(nora("-p", "demo", "--model_register", str(tiny), "--label", "lesion core"))
    first, second = models(archive)
    assert (first.state, second.state, second.version, second.kind) == (ModelState.READY, ModelState.READY, 2, ModelKind.REGISTERED)
    document = json.loads((settings.models_dir / "demo/lesion_core/v1/model.json").read_text())
    assert document["output_shape_on_check"] == [1, 1, 32, 32, 32] and document["training"] is None
    assert (settings.models_dir / "demo/lesion_core/v1/model.ts").read_bytes() == tiny.read_bytes()

    ok(nora("-p", "demo", "--model_publish", "lesion_core:1"))
    ok(nora("-p", "demo", "--model_publish", "lesion_core"))  # the newest
    assert offered(archive) == [("lesion_core", 2)]
    assert "segments 'lesion core', not 'liver'" in refused(
        nora("-p", "demo", "--model_register", str(tiny), "--label", "liver", "--name", "lesion_core"))
    assert "no model 'lesion_core' version 9" in refused(nora("-p", "demo", "--model_publish", "lesion_core:9"))
    assert "must start with a letter or digit" in refused(
        nora("-p", "demo", "--model_register", str(tiny), "--label", "liver", "--name", "../x"))


def test_viewers_readers_and_editors_may_not_train_register_or_publish(
    nora: Nora, archive: Archive, project: Path, tmp_path: Path,
) -> None:
    add_cases(nora, archive, project, 4)
    add_users(archive)
    # The role is checked before the file is read: any path will do.
    tiny = tmp_path / "tiny.ts"
    for user, role in (("vera", "viewer"), ("rita", "reader"), ("eddie", "editor")):
        as_user = {"NORA_USER": user}
        for args, what in ((("--model_train", "liver"), "training a model"),
                           (("--model_register", str(tiny), "--label", "liver"), "registering a model"),
                           (("--model_publish", "liver"), "publishing a model")):
            error = refused(nora("-p", "demo", *args, extra_env=as_user))
            assert error.strip() == f"nora: error: {what} needs the admin role in project 'demo'; you have {role}"
        assert ok(nora("-p", "demo", "--models", extra_env=as_user)) == ""
    with archive.unit_of_work() as (session, _journal):
        accounts.create_user(session, "stranger")
    assert refused(nora("-p", "demo", "--model_publish", "liver", extra_env={"NORA_USER": "stranger"})).strip() == \
        "nora: error: stranger has no role in project 'demo'"
    assert models(archive) == []
    with archive.sessions() as session:
        assert session.scalars(select(JobRun)).all() == []

