"""The segmentation assistant through the portal's API, with the real assistant (MONAI Label) running.

One assistant and one portal app for the module, on a copy of the site archive with one more image
in study P01: dcm2niix's sagittal acquisition (its scanner geometry, its tissue) with a bright ball
painted in, so that a click on the ball's centre has one right answer. The model test registers a
TorchScript model (scripted in the assistant's environment, checked by the archive's own check) that
thresholds the ball. Expected masks are computed here from the image, never read from the code under test.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from scipy import ndimage
from sqlalchemy import select
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.archive import Archive
from nifti_archive.catalog.registration import add_files
from nifti_archive.models import ModelKind, ModelState, Project, Role, SegmentationModel, Study, Subject
from portal.app import create_app
from segmentation import model_registry
from segmentation.assistant.proposals import unpack_mask
from testbed.assistant import Assistant, start_assistant
from testbed.ports import free_port
from tests.portal_site import SAGITTAL, SiteTemplate, copy_site
from tests.test_portal_api import bearer, token_for

USERS = ("viewer", "reader", "editor", "editor2", "admin", "norole")
BRIGHT_FOLDER = "003_bright"
# The ball: off the volume's centre in every axis, clear of its edges; brighter than anything in the head.
CENTRE = (40, 22, 12)
RADIUS = 5
BALL_INTENSITY = 3500
FORBIDDEN = "this needs editor on the project"
HIDDEN = "no such project, or you have no role on it"
# A model in the contract the assistant keeps (model_registry's docstring): foreground probability
# in one channel, here of voxels brighter than the head's brightest.
MODEL_SOURCE = """
import sys
import torch

class Bright(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((image - 3000.0) / 50.0)

torch.jit.script(Bright()).save(sys.argv[1])
"""


@dataclass(frozen=True)
class BrightImage:
    file_id: int
    path: Path
    ball: NDArray[np.bool_]


def ball_mask(shape: tuple[int, int, int]) -> NDArray[np.bool_]:
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return np.asarray((i - CENTRE[0]) ** 2 + (j - CENTRE[1]) ** 2 + (k - CENTRE[2]) ** 2 <= RADIUS**2)


def add_bright_image(archive: Archive, project: str, study_id: int) -> BrightImage:
    """The sagittal reference's first volume with the ball in it, registered in the study."""
    source = nib.Nifti1Image.from_filename(SAGITTAL)
    data = np.asanyarray(source.dataobj)[..., 0].astype(np.int16)
    ball = ball_mask((int(data.shape[0]), int(data.shape[1]), int(data.shape[2])))
    texture = np.random.default_rng(7).normal(0, 40, size=int(ball.sum()))
    data[ball] = (BALL_INTENSITY + texture).astype(np.int16)
    image = nib.Nifti1Image(data, source.affine, source.header)
    with archive.unit_of_work() as (session, _journal):
        study, subject = session.execute(
            select(Study, Subject).join(Subject, Subject.id == Study.subject_id).where(Study.id == study_id)
        ).one()
        target = archive.layout.study_dir(project, subject.patient_id, study.study_id) / BRIGHT_FOLDER / "bright.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(image, target)
        owner = session.scalars(select(Project).where(Project.name == project)).one()
        [record] = add_files(session, archive.layout, owner, [target])
        return BrightImage(record.id, target, ball)


def register_bright_model(archive: Archive, scratch: Path) -> tuple[int, int]:
    """A published, ready model that finds the ball (its id), and a ready one never published (its id)."""
    settings = archive.settings
    source = scratch / "bright.ts"
    script = scratch / "bright.py"
    script.write_text(MODEL_SOURCE)  # torch.jit.script reads a module's source from its file
    subprocess.run([str(settings.assistant_python), str(script), str(source)], check=True, timeout=300, capture_output=True)
    with archive.unit_of_work() as (session, _journal):
        alpha = session.scalars(select(Project).where(Project.name == "alpha")).one()
        published = model_registry.register_model(session, settings, alpha, "bright", "ball", source, "admin")
        assert published.state is ModelState.READY, published.reason
        model_registry.publish_model(session, alpha, "bright", published.version)
        draft = SegmentationModel(project_id=alpha.id, name="draft", label="ball", version=1, kind=ModelKind.REGISTERED,
                                  state=ModelState.READY, published=False, path=published.path, created_by="admin")
        session.add(draft)
        session.flush()
        return published.id, draft.id


@dataclass
class AssistantApi:
    client: FlaskClient
    auth: dict[str, dict[str, str]]
    image: BrightImage
    study: int
    other_file: int
    model: int
    draft_model: int

    def call(self, user: str, method: str, url: str, **kwargs: Any) -> TestResponse:
        return self.client.open(f"/api/v1{url}", method=method, headers=self.auth[user], **kwargs)

    def propose(self, user: str, tool: str, body: dict[str, Any], file_id: int | None = None) -> TestResponse:
        target = self.image.file_id if file_id is None else file_id
        return self.call(user, "POST", f"/projects/alpha/files/{target}/assistant/{tool}", json=body)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[tuple[Archive, Assistant]]:
    built = copy_site(portal_site, tmp_path_factory.mktemp("assistant-api") / "var",
                      orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    built.archive.close()
    assistant = start_assistant(built.archive.settings)
    # The portal must reach this assistant: its settings carry the assistant's port.
    archive = Archive(assistant.settings)
    yield archive, assistant
    assistant.stop()
    archive.close()


@pytest.fixture(scope="module")
def api(running: tuple[Archive, Assistant], portal_site: SiteTemplate, tmp_path_factory: pytest.TempPathFactory) -> AssistantApi:
    archive, _assistant = running
    with archive.unit_of_work() as (session, _journal):
        second, _one_time = accounts.create_user(session, "editor2")
        accounts.grant_role(session, second, session.scalars(select(Project).where(Project.name == "alpha")).one(), Role.EDITOR)
    study = portal_site.site.studies["P01"]
    image = add_bright_image(archive, "alpha", study)
    model, draft = register_bright_model(archive, tmp_path_factory.mktemp("models"))
    app = create_app(archive.settings, archive)
    auth = {user: bearer(token_for(archive, user)) for user in USERS}
    return AssistantApi(app.test_client(), auth, image, study, portal_site.site.other_file, model, draft)


def proposal(answer: TestResponse, shape: tuple[int, int, int]) -> NDArray[np.bool_]:
    assert answer.status_code == 200, answer.json
    return unpack_mask(answer.json["mask"], shape)


def is_the_ball(mask: NDArray[np.bool_], ball: NDArray[np.bool_]) -> bool:
    """Whether ``mask`` is ``ball`` up to one voxel at its edge (the tools smooth the image a little)."""
    return bool(np.all(mask[ndimage.binary_erosion(ball)]) and not np.any(mask & ~ndimage.binary_dilation(ball)))


def test_status_offers_the_tools_and_the_published_model(api: AssistantApi) -> None:
    answer = api.call("editor", "GET", "/projects/alpha/assistant")
    assert answer.status_code == 200, answer.json
    status = answer.json
    assert status["available"] is True and status["reason"] == ""
    assert [tool["name"] for tool in status["tools"]] == ["points", "scribbles", "box"]
    assert all(tool["description"] for tool in status["tools"])
    assert [(m["id"], m["name"], m["version"], m["label"]) for m in status["models"]] == [(api.model, "bright", 1, "ball")]


def test_a_click_on_a_bright_ball_proposes_the_ball(api: AssistantApi) -> None:
    answer = api.propose("editor", "points", {"session": "ball", "foreground": [list(CENTRE)]})
    mask = proposal(answer, api.image.ball.shape)
    assert mask[CENTRE]
    assert is_the_ball(mask, api.image.ball)
    assert answer.json["tool"] == "points"
    assert answer.json["voxels"] == int(mask.sum())
    assert answer.json["interactions"]["foreground"] == 1


def test_clicks_add_up_until_reset(api: AssistantApi) -> None:
    inside = [CENTRE[0] + 2, CENTRE[1], CENTRE[2]]
    first = api.propose("editor", "points", {"session": "reset", "foreground": [list(CENTRE)]})
    assert first.json["interactions"]["foreground"] == 1
    second = api.propose("editor", "points", {"session": "reset", "foreground": [inside]})
    assert second.json["interactions"]["foreground"] == 2
    cleared = api.propose("editor", "points", {"session": "reset", "reset": True})
    assert cleared.status_code == 200, cleared.json
    assert cleared.json["reset"] is True and cleared.json["mask"] is None
    again = api.propose("editor", "points", {"session": "reset", "foreground": [inside]})
    assert again.json["interactions"]["foreground"] == 1


def test_another_users_clicks_are_not_shared(api: AssistantApi) -> None:
    mine = api.propose("editor", "points", {"session": "shared", "foreground": [list(CENTRE)]})
    assert mine.json["interactions"]["foreground"] == 1
    # The same session name on the same image: the portal keeps the two users apart.
    theirs = api.propose("editor2", "points", {"session": "shared", "foreground": [[CENTRE[0], CENTRE[1] + 1, CENTRE[2]]],
                                               "background": [[5, 5, 5]]})
    assert (theirs.json["interactions"]["foreground"], theirs.json["interactions"]["background"]) == (1, 1)
    mine = api.propose("editor", "points", {"session": "shared", "foreground": [[CENTRE[0] - 1, CENTRE[1], CENTRE[2]]]})
    assert (mine.json["interactions"]["foreground"], mine.json["interactions"]["background"]) == (2, 0)


@pytest.mark.parametrize(("user", "status", "message"), [
    ("viewer", 403, FORBIDDEN), ("reader", 403, FORBIDDEN), ("norole", 404, HIDDEN),
])
def test_callers_who_may_not_save_an_roi_get_no_proposal(api: AssistantApi, user: str, status: int, message: str) -> None:
    for answer in (
        api.call(user, "GET", "/projects/alpha/assistant"),
        api.propose(user, "points", {"foreground": [list(CENTRE)]}),
        api.propose(user, "box", {"box": [[30, 12, 2], [50, 32, 22]]}),
        api.propose(user, "model", {"model": api.model}),
    ):
        assert answer.status_code == status, answer.json
        assert answer.json == {"error": message}


def test_a_click_outside_the_image_is_refused_with_where(api: AssistantApi) -> None:
    answer = api.propose("editor", "points", {"session": "outside", "foreground": [[64, 0, 0]]})
    assert answer.status_code == 400
    assert answer.json["error"] == ("foreground point 1 (64, 0, 0) lies outside the image of 64×64×36 voxels "
                                    "(indices run 0–63, 0–63, 0–35)")


@pytest.mark.parametrize(("tool", "body", "message"), [
    ("points", {"foreground": [[1, 2]]}, "foreground: [1, 2] is not a voxel [i, j, k] of three whole numbers"),
    ("points", {"foreground": [[1, 2.5, 3]]}, "foreground: [1, 2.5, 3] is not a voxel [i, j, k] of three whole numbers"),
    ("points", {"foreground": [[1, True, 3]]}, "foreground: [1, true, 3] is not a voxel [i, j, k] of three whole numbers"),
    ("points", {"foreground": "1,2,3"}, "foreground must be a list of voxel indices [i, j, k] (at most 100000)"),
    ("points", {}, "nothing to segment: send foreground or background (or reset)"),
    ("points", {"box": [[1, 2, 3], [4, 5, 6]]}, "the points tool takes foreground and background, not box"),
    ("scribbles", {"foreground": [[1, 2, 3]]}, "the scribbles tool takes foreground_scribbles and background_scribbles, not foreground"),
    ("box", {"box": [[1, 2, 3]]}, "box must be two opposite corners [[i, j, k], [i, j, k]]"),
    ("points", {"foreground": [[1, 2, 3]], "reset": "yes"}, "reset must be true or false"),
    ("points", {"foreground": [[1, 2, 3]], "session": "a b"}, "session must be 1 to 64 letters, digits, '.', '_', ':' or '-'"),
    ("wand", {"foreground": [[1, 2, 3]]}, "no assistant tool 'wand'; the tools are points, scribbles, box"),
    ("model", {"model": "bright"}, "model must be the id of one of the project's published models"),
])
def test_malformed_requests_are_refused_before_the_assistant(api: AssistantApi, tool: str, body: dict[str, Any], message: str) -> None:
    answer = api.propose("editor", tool, body)
    assert answer.status_code == 400
    assert answer.json == {"error": message}


def test_unknown_and_foreign_images_are_not_found(api: AssistantApi) -> None:
    for file_id in (999_999, api.other_file):
        for tool, body in (("points", {"foreground": [list(CENTRE)]}), ("model", {"model": api.model})):
            answer = api.propose("editor", tool, body, file_id=file_id)
            assert answer.status_code == 404
            assert answer.json == {"error": f"no image {file_id} in project 'alpha'"}


def test_a_box_around_the_ball_proposes_the_ball(api: AssistantApi) -> None:
    low = [c - RADIUS - 3 for c in CENTRE]
    high = [c + RADIUS + 3 for c in CENTRE]
    mask = proposal(api.propose("editor", "box", {"session": "box", "box": [high, low]}), api.image.ball.shape)
    assert is_the_ball(mask, api.image.ball)


def test_scribbles_on_and_around_the_ball_propose_the_ball(api: AssistantApi) -> None:
    i, j, k = CENTRE
    inside = [[i + d, j, k] for d in range(-3, 4)]
    around = [[i + d, j + RADIUS + 3, k] for d in range(-6, 7)] + [[i + RADIUS + 3, j + d, k] for d in range(-6, 7)]
    answer = api.propose("editor", "scribbles", {"session": "scribbles", "foreground_scribbles": inside,
                                                 "background_scribbles": around})
    mask = proposal(answer, api.image.ball.shape)
    assert mask[CENTRE] and is_the_ball(mask, api.image.ball)
    assert answer.json["interactions"]["foreground_scribbles"] == len(inside)


def test_the_published_model_proposes_the_ball_and_no_other_model_runs(api: AssistantApi) -> None:
    answer = api.propose("editor", "model", {"model": api.model})
    mask = proposal(answer, api.image.ball.shape)
    # The model thresholds above anything in the head and below anything in the ball: exactly the ball.
    assert np.array_equal(mask, api.image.ball)
    assert answer.json["model"]["name"] == "bright" and answer.json["model"]["version"] == 1
    refused = api.propose("editor", "model", {"model": api.draft_model})
    assert refused.status_code == 404
    assert refused.json == {"error": f"no published, ready model {api.draft_model} in project 'alpha'"}


def _save(api: AssistantApi, mask: NDArray[np.bool_], label: str, accepted: object) -> TestResponse:
    reference = nib.Nifti1Image.from_filename(api.image.path)
    payload = nib.Nifti1Image(mask.astype(np.uint8), reference.affine).to_bytes()
    data = {"mask": (io.BytesIO(payload), "mask.nii"), "label": label, "reference_file_id": str(api.image.file_id),
            "assistant": accepted if isinstance(accepted, str) else json.dumps(accepted)}
    return api.call("editor", "POST", f"/projects/alpha/studies/{api.study}/rois", data=data, content_type="multipart/form-data")


def test_a_saved_proposal_is_an_roi_of_algorithm_origin(api: AssistantApi, running: tuple[Archive, Assistant]) -> None:
    archive, _assistant = running
    answer = api.propose("editor", "points", {"session": "save", "foreground": [list(CENTRE)]})
    mask = proposal(answer, api.image.ball.shape)
    accepted = [{"tool": "points", "interactions": answer.json["interactions"]}, {"model": api.model}]
    saved = _save(api, mask, "ball", accepted)
    assert saved.status_code == 201, saved.json
    roi = saved.json["roi"]
    assert (roi["origin"], roi["algorithm"]) == ("assisted", "assistant points+bright v1")
    sidecar = json.loads((api.image.path.parents[1] / roi["path"].replace(".nii.gz", ".json")).read_text())
    assert sidecar["origin"] == "assisted"
    assert sidecar["note"] == "segmentation assistant: points (1 foreground); model bright v1"
    stored = np.asanyarray(nib.Nifti1Image.from_filename(api.image.path.parents[1] / roi["path"]).dataobj) > 0
    assert np.array_equal(stored, mask)
    drawn = _save(api, mask, "ball", "")
    assert drawn.json["roi"]["origin"] == "drawn" and drawn.json["roi"]["algorithm"] is None


@pytest.mark.parametrize(("accepted", "message"), [
    ("[{", "assistant must be a JSON list of accepted proposals"),
    ([], "assistant must be a non-empty JSON list of accepted proposals"),
    (["points"], "each accepted proposal must be an object with its tool and interactions, or its model"),
    ([{"tool": "wand", "interactions": {}}], "no assistant tool 'wand'; the tools are points, scribbles, box"),
    ([{"tool": "points", "interactions": {"foreground": -1}}], "an accepted proposal's foreground must be a count"),
    ([{"model": 999_999}], "an accepted proposal names no model 999999 of project 'alpha'"),
])
def test_a_bad_account_of_accepted_proposals_is_refused(api: AssistantApi, accepted: object, message: str) -> None:
    answer = _save(api, api.image.ball, "refused", accepted)
    assert answer.status_code == 400
    assert answer.json == {"error": message}


def test_without_the_assistant_the_status_says_why_and_proposals_are_unavailable(
    api: AssistantApi, running: tuple[Archive, Assistant]
) -> None:
    archive, _assistant = running
    # Nothing listens on a port just found free: the assistant as a stopped one leaves it.
    settings = dataclasses.replace(archive.settings, assistant_port=free_port())
    elsewhere = Archive(settings)
    try:
        client = create_app(settings, elsewhere).test_client()
        status = client.get("/api/v1/projects/alpha/assistant", headers=api.auth["editor"])
        assert status.status_code == 200
        reason = f"the segmentation assistant is not running at http://127.0.0.1:{settings.assistant_port}; drawing by hand still works"
        assert status.json == {"available": False, "reason": reason, "tools": [], "models": status.json["models"]}
        for tool, body in (("points", {"foreground": [list(CENTRE)]}), ("model", {"model": api.model})):
            answer = client.post(f"/api/v1/projects/alpha/files/{api.image.file_id}/assistant/{tool}", json=body,
                                 headers=api.auth["editor"])
            assert answer.status_code == 503
            assert answer.json == {"error": reason}
    finally:
        elsewhere.close()
