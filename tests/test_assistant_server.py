"""The segmentation assistant: the real MONAI Label server, its gate, its tools and its models.

The tools are checked on a known structure inserted into a real series, through the server as
the portal calls it, with a simulated user who adds one corrective click per request: the
server's memory of the session's clicks is what makes the proposals converge.
"""

from __future__ import annotations

import dataclasses
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.sandbox import jobs_account
from nifti_archive.errors import InvalidValue, NotFound, ServiceUnavailable
from nifti_archive.settings import Settings, load_settings
from segmentation.assistant.proposals import unpack_mask
from segmentation.assistant_client import AssistantClient
from testbed.assistant import Assistant, start_assistant
from testbed.ports import free_port
from tests.simulated_user import Phantom, Structure, correction, dice, phantom

MAX_REQUESTS = 6
SPHERE = "p/sub-01/ses-01/003_phantom/sphere.nii.gz"
BOX = "p/sub-01/ses-01/004_phantom/box.nii.gz"


@pytest.fixture(scope="module")
def phantoms() -> dict[str, Phantom]:
    return {SPHERE: phantom(Structure.SPHERE), BOX: phantom(Structure.BOX)}


@pytest.fixture(scope="module")
def assistant(tmp_path_factory: pytest.TempPathFactory, phantoms: dict[str, Phantom]) -> Iterator[Assistant]:
    var = tmp_path_factory.mktemp("assistant-var")
    settings = load_settings({"NORTHANC_VAR": str(var)})
    for name, made in phantoms.items():
        made.save(settings.archive_root / name)
    running = start_assistant(settings)
    yield running
    running.stop()


def _first_interaction(tool: str, made: Phantom) -> dict[str, Any]:
    i, j, k = made.centre
    if tool == "points":
        return {"foreground": [[i, j, k]]}
    if tool == "scribbles":
        radius = int(round((made.truth.sum() * 3 / (4 * np.pi)) ** (1 / 3)))
        inside = [[i + d, j, k] for d in range(-radius // 2, radius // 2 + 1)]
        outside = [[i + d, j + radius + 6, k] for d in range(-radius, radius + 1)]
        return {"foreground_scribbles": inside, "background_scribbles": outside}
    return {"box": made.bounding_box(margin=3)}


def _correction_params(tool: str, foreground: bool, voxel: tuple[int, int, int]) -> dict[str, Any]:
    kind = "foreground" if foreground else "background"
    return {f"{kind}_scribbles" if tool == "scribbles" else kind: [list(voxel)]}


@pytest.mark.parametrize("image", [SPHERE, BOX])
@pytest.mark.parametrize("tool", ["points", "scribbles", "box"])
def test_each_tool_reaches_dice_090_within_a_few_requests(
    assistant: Assistant, phantoms: dict[str, Phantom], tool: str, image: str
) -> None:
    made = phantoms[image]
    session = f"dice-{tool}-{image}"
    params = _first_interaction(tool, made)
    scores = []
    for _ in range(MAX_REQUESTS):
        answer = assistant.client.infer(tool, image, {**params, "session": session})
        proposal = unpack_mask(answer["mask"], made.truth.shape)
        assert answer["voxels"] == int(proposal.sum())
        scores.append(dice(proposal, made.truth))
        if scores[-1] >= 0.9:
            break
        params = _correction_params(tool, *correction(proposal, made.truth))
    assert scores[-1] >= 0.9, f"{tool} on {image}: Dice per request {scores}"


def test_the_server_remembers_a_sessions_clicks_until_reset(assistant: Assistant, phantoms: dict[str, Phantom]) -> None:
    client = assistant.client
    i, j, k = phantoms[SPHERE].centre
    client.infer("points", SPHERE, {"session": "memory", "foreground": [[i, j, k]]})
    second = client.infer("points", SPHERE, {"session": "memory", "foreground": [[i + 1, j, k]]})
    assert second["interactions"]["foreground"] == 2
    elsewhere = client.infer("points", SPHERE, {"session": "someone else", "foreground": [[i, j, k]]})
    assert elsewhere["interactions"]["foreground"] == 1

    cleared = client.infer("points", SPHERE, {"session": "memory", "reset": True})
    assert cleared["reset"] is True and cleared["mask"] is None
    after = client.infer("points", SPHERE, {"session": "memory", "foreground": [[i, j, k]]})
    assert after["interactions"]["foreground"] == 1


def _raw(assistant: Assistant, path: str, token: str | None) -> int:
    request = urllib.request.Request(assistant.client.base + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_server_answers_only_the_portals_token_and_only_info_and_inference(assistant: Assistant) -> None:
    token = assistant.settings.read_secret("assistant_token")
    assert _raw(assistant, "/info/", token) == 200
    assert _raw(assistant, "/info/", None) == 401
    assert _raw(assistant, "/info/", token + "x") == 401
    # MONAI Label's own uploads, training, logs and DICOMweb proxy are never reachable.
    for path in ("/datastore/", "/logs/", "/train/", "/proxy/dicom/studies", "/session/", "/model/model", "/docs"):
        assert _raw(assistant, path, token) == 404, path


def test_the_offered_tools_are_weight_free_and_described(assistant: Assistant) -> None:
    models = assistant.client.info()["models"]
    assert set(models) == {"points", "scribbles", "box", "model"}
    for tool in ("points", "scribbles", "box"):
        assert "no trained weights" in models[tool]["description"]


@pytest.mark.parametrize("image", ["../outside.nii.gz", "/etc/hostname", "p/sub-01/missing.nii.gz", "p/sub-01"])
def test_an_image_outside_the_archive_is_not_found(assistant: Assistant, image: str) -> None:
    outside = assistant.settings.archive_root.parent / "outside.nii.gz"
    outside.write_bytes((assistant.settings.archive_root / SPHERE).read_bytes())
    with pytest.raises(NotFound):
        assistant.client.infer("points", image, {"foreground": [[1, 1, 1]]})


def test_a_click_outside_the_image_is_refused_with_the_point(assistant: Assistant) -> None:
    with pytest.raises(InvalidValue, match=r"outside"):
        assistant.client.infer("points", SPHERE, {"session": "outside", "foreground": [[500, 2, 2]]})
    with pytest.raises(InvalidValue, match=r"scribble"):
        assistant.client.infer("scribbles", SPHERE, {"session": "outside", "foreground_scribbles": [[1, 2]]})


def _torchscript(assistant: Assistant, target: Path, source: str) -> None:
    """A TorchScript file made by the assistant's own torch (traced: scripting needs a source file)."""
    script = (
        "import sys, torch\n" + source
        + "\ntorch.jit.save(torch.jit.trace(Model(), torch.zeros(1, 1, 4, 4, 4)), sys.argv[1])\n"
    )
    subprocess.run([str(assistant.settings.assistant_python), "-c", script, str(target)], check=True, timeout=120)


def test_a_models_proposal_comes_from_the_model_file(assistant: Assistant, phantoms: dict[str, Phantom]) -> None:
    made = phantoms[SPHERE]
    threshold = float(np.percentile(made.image, 97))
    models = assistant.settings.models_dir / "p" / "bright" / "v1"
    models.mkdir(parents=True, exist_ok=True)
    _torchscript(assistant, models / "model.ts", (
        "class Model(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        f"        return (x > {threshold}).float()\n"
    ))
    answer = assistant.client.infer("model", SPHERE, {"model_file": "p/bright/v1/model.ts"})
    assert np.array_equal(unpack_mask(answer["mask"], made.truth.shape), made.image > threshold)

    (models / "broken.ts").write_bytes(b"not a TorchScript archive")
    with pytest.raises(InvalidValue, match="does not load"):
        assistant.client.infer("model", SPHERE, {"model_file": "p/bright/v1/broken.ts"})
    with pytest.raises(NotFound):
        assistant.client.infer("model", SPHERE, {"model_file": "../secrets/assistant_token"})


def _descendants(pid: int) -> list[int]:
    children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]
    return [*children, *(grandchild for child in children for grandchild in _descendants(child))]


def test_the_assistant_runs_as_the_jobs_account_without_sight_of_secrets_or_logs(assistant: Assistant) -> None:
    """A registered model file is a user's code: the server running it is sandboxed like a job."""
    settings = assistant.settings
    # bwrap and its init carry the same command line as arguments; the server is the one it runs.
    servers = [pid for pid in _descendants(assistant.process.pid)
               if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"segmentation.assistant.serve"]]
    assert servers, "the assistant's server process is not running"
    account = jobs_account(settings.jobs_user)
    for pid in servers:
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert {int(uid) for uid in uids.split()[1:]} == {account.uid}
        seen = Path(f"/proc/{pid}/root")
        assert (seen / str(settings.archive_root).lstrip("/") / SPHERE).is_file()
        for hidden in (settings.secrets_dir, settings.log_dir):
            assert hidden.is_dir()
            assert not (seen / str(hidden).lstrip("/")).exists()
        assert b"assistant_token" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_stopped_assistant_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    settings = load_settings({"NORTHANC_VAR": str(tmp_path)})
    (settings.secrets_dir).mkdir(parents=True)
    (settings.secrets_dir / "assistant_token").write_text("t\n")
    closed: Settings = dataclasses.replace(settings, assistant_port=free_port())
    with pytest.raises(ServiceUnavailable, match="not running"):
        AssistantClient(closed).infer("points", SPHERE, {"foreground": [[1, 1, 1]]})
