"""REST API v1 for the segmentation assistant: what it offers on a project, and its proposals.

The assistant (``segmentation/assistant_service.py``) answers the portal only; the portal decides
who may ask. Whoever may save an ROI on an image (an editor of its project) may ask for a proposal
on it. The assistant keeps a session's clicks until it is reset; the portal names that session
after the caller, so two users on one image never refine each other's proposal.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy.orm import Session

from nifti_archive.errors import InvalidValue, NotFound, ServiceUnavailable
from nifti_archive.models import FileKind, Project, RoiOrigin, Role, SegmentationModel
from portal.auth import archive, current_user, db, project_role
from portal.ids import is_id
from segmentation import model_registry, roi_actions
from segmentation.assistant_client import AssistantClient
from segmentation.interactive.tools import Tool

blueprint = Blueprint("api_assistant", __name__, url_prefix="/api/v1")
# The longest stroke set one request may carry: a scribble across a 512² slice, many times over.
MAX_VOXELS = 100_000
# A session name the browser chooses (one per viewer page and image); the user's id is put before it.
_SESSION = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEFAULT_SESSION = "default"
# The longest name of what made an ROI that the index keeps (Roi.algorithm).
MAX_ALGORITHM = 64
# Proposals one ROI upload may account for: one per click of a long session is far fewer.
MAX_ACCEPTED = 1000
# The assistant's task that runs a project's model, named per request.
MODEL_TASK = "model"


def _tool(text: str) -> Tool:
    try:
        return Tool(text)
    except ValueError:
        raise InvalidValue(f"no assistant tool {text!r}; the tools are {', '.join(t.value for t in Tool)}") from None


# What each tool takes from the caller: its voxel lists, and the box.
MARKS = {
    Tool.POINTS: ("foreground", "background"),
    Tool.SCRIBBLES: ("foreground_scribbles", "background_scribbles"),
    Tool.BOX: (),
}
BOX = "box"
INTERACTION_KEYS = ("foreground", "background", "foreground_scribbles", "background_scribbles", BOX)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidValue("send a JSON object")
    return body


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _voxels(value: object, name: str) -> list[list[int]]:
    if not isinstance(value, list) or len(value) > MAX_VOXELS:
        raise InvalidValue(f"{name} must be a list of voxel indices [i, j, k] (at most {MAX_VOXELS})")
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 3 and all(_is_index(c) for c in entry)):
            raise InvalidValue(f"{name}: {json.dumps(entry)[:60]} is not a voxel [i, j, k] of three whole numbers")
    return value


def _interaction(tool: Tool, body: dict[str, Any]) -> dict[str, Any]:
    """The assistant's parameters from the caller's body: checked in form here, against the image there."""
    taken = (*MARKS[tool], *((BOX,) if tool is Tool.BOX else ()))
    foreign = [key for key in INTERACTION_KEYS if key not in taken and body.get(key) is not None]
    if foreign:
        raise InvalidValue(f"the {tool.value} tool takes {' and '.join(taken)}, not {', '.join(foreign)}")
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise InvalidValue("reset must be true or false")
    params: dict[str, Any] = {"reset": reset}
    for key in MARKS[tool]:
        if body.get(key) is not None:
            params[key] = _voxels(body[key], key)
    if tool is Tool.BOX and body.get(BOX) is not None:
        corners = _voxels(body[BOX], BOX)
        if len(corners) != 2:
            raise InvalidValue("box must be two opposite corners [[i, j, k], [i, j, k]]")
        params[BOX] = corners
    if not reset and not any(params.get(key) for key in taken):
        raise InvalidValue(f"nothing to segment: send {' or '.join(taken)} (or reset)")
    return params


def _session(body: dict[str, Any]) -> str:
    name = body.get("session", DEFAULT_SESSION)
    if not isinstance(name, str) or not _SESSION.match(name):
        raise InvalidValue("session must be 1 to 64 letters, digits, '.', '_', ':' or '-'")
    user = current_user()
    assert user is not None, "project_role lets only logged-in users through"
    return f"user-{user.id}:{name}"


def _image(file_id: int) -> str:
    """The project's NIfTI ``file_id`` as the assistant names it: its path inside the archive."""
    [found] = roi_actions.project_files(db(), g.project, [file_id], "image")
    if found.record.kind is not FileKind.NIFTI:
        raise InvalidValue(f"{found.record.path} is not a NIfTI image; the assistant segments images")
    path = archive().layout.file_path(found.location).resolve()
    return path.relative_to(archive().settings.archive_root.resolve()).as_posix()


def _client() -> AssistantClient:
    return AssistantClient(archive().settings)


def _model_json(model: SegmentationModel) -> dict[str, Any]:
    return {
        "id": model.id, "name": model.name, "version": model.version, "label": model.label, "kind": model.kind.value,
        "val_dice": model.val_dice, "baseline_dice": model.baseline_dice, "epochs": model.epochs,
        "train_count": model.train_count, "val_count": model.val_count,
    }


def _offered_model(model_id: object) -> SegmentationModel:
    if not is_id(model_id):
        raise InvalidValue("model must be the id of one of the project's published models")
    for model in model_registry.list_models(db(), g.project, offered_only=True):
        if model.id == model_id:
            return model
    raise NotFound(f"no published, ready model {model_id} in project {g.project.name!r}")


@blueprint.route("/projects/<project>/assistant")
@project_role(Role.EDITOR)
def assistant_status(project: str) -> Any:
    """Whether the segmentation assistant answers, its tools and the project's published models; when it does not answer, why."""
    models = [_model_json(m) for m in model_registry.list_models(db(), g.project, offered_only=True)]
    try:
        tasks = _client().info().get("models") or {}
    except ServiceUnavailable as exc:
        return jsonify({"available": False, "reason": str(exc), "tools": [], "models": models})
    tools = [
        {"name": tool.value, "description": str(tasks[tool.value].get("description", ""))}
        for tool in Tool if isinstance(tasks.get(tool.value), dict)
    ]
    return jsonify({"available": True, "reason": "", "tools": tools, "models": models if MODEL_TASK in tasks else []})


@blueprint.route("/projects/<project>/files/<int:file_id>/assistant/<tool>", methods=["POST"])
@project_role(Role.EDITOR)
def assistant_proposal(project: str, file_id: int, tool: str) -> Any:
    """A proposal of ``tool`` (points, scribbles or box) on image ``file_id`` from your clicks so far: a packed mask."""
    chosen = _tool(tool)
    image = _image(file_id)
    body = _json_body()
    params = {**_interaction(chosen, body), "session": _session(body)}
    return jsonify(_client().infer(chosen.value, image, params))


@blueprint.route("/projects/<project>/files/<int:file_id>/assistant/model", methods=["POST"])
@project_role(Role.EDITOR)
def assistant_model(project: str, file_id: int) -> Any:
    """A proposal of the project's published model ``model`` (its id) on image ``file_id``: a packed mask."""
    image = _image(file_id)
    model = _offered_model(_json_body().get("model"))
    settings = archive().settings
    model_file = model_registry.model_path(settings, model).relative_to(settings.models_dir).as_posix()
    answer = _client().infer(MODEL_TASK, image, {"model_file": model_file})
    return jsonify({**answer, "model": _model_json(model)})


def _counted(tool: Tool, counts: object) -> str:
    if not isinstance(counts, dict):
        raise InvalidValue("an accepted proposal's interactions must be an object of counts")
    parts = []
    for key in INTERACTION_KEYS:
        value = counts.get(key, 0)
        if not (_is_index(value) or isinstance(value, bool)) or value < 0:
            raise InvalidValue(f"an accepted proposal's {key} must be a count")
        if value:
            parts.append(key.replace("_", " ") if key == BOX else f"{int(value)} {key.replace('_', ' ')}")
    return f"{tool.value} ({', '.join(parts) or 'no interaction'})"


def _model_named(session: Session, project: Project, model_id: object) -> str:
    # Any version of the project's: it was offered when proposed, and may have been replaced since.
    for model in model_registry.list_models(session, project):
        if is_id(model_id) and model.id == model_id:
            return f"{model.name} v{model.version}"
    raise InvalidValue(f"an accepted proposal names no model {json.dumps(model_id)[:20]} of project {project.name!r}")


def accepted(text: str, session: Session, project: Project) -> roi_actions.Provenance | None:
    """The ``assistant`` field of an ROI upload: a JSON list of the proposals merged into the mask,
    each ``{"tool": name, "interactions": counts}`` or ``{"model": id}`` as the assistant answered them."""
    if not text:
        return None
    try:
        proposals = json.loads(text)
    except ValueError as exc:
        raise InvalidValue("assistant must be a JSON list of accepted proposals") from exc
    if not isinstance(proposals, list) or not proposals or len(proposals) > MAX_ACCEPTED:
        raise InvalidValue("assistant must be a non-empty JSON list of accepted proposals")
    tools: list[str] = []
    notes: list[str] = []
    steered = False
    for proposal in proposals:
        if not isinstance(proposal, dict):
            raise InvalidValue("each accepted proposal must be an object with its tool and interactions, or its model")
        if "model" in proposal:
            name = _model_named(session, project, proposal["model"])
            tools.append(name)
            notes.append(f"model {name}")
            continue
        tool = _tool(str(proposal.get("tool", "")))
        steered = True
        tools.append(tool.value)
        notes.append(_counted(tool, proposal.get("interactions")))
    algorithm = "assistant " + "+".join(dict.fromkeys(tools))
    origin = RoiOrigin.ASSISTED if steered else RoiOrigin.ALGORITHM
    return roi_actions.Provenance(origin, algorithm[:MAX_ALGORITHM], "segmentation assistant: " + "; ".join(notes))
