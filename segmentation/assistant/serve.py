"""Run the assistant: ``python -m segmentation.assistant.serve --archive A --models M --port P``
with the portal's token in ``NORTHANC_ASSISTANT_TOKEN``, the assistant's own Python and our
packages on ``PYTHONPATH``.

MONAI Label's server offers far more than the portal needs (uploads into its datastore, training,
its logs, a DICOMweb proxy) and has no notion of our users. So it listens on localhost only, and
in front of it sits a gate: a request without the portal's token, or for anything but the app's
description and inference, gets 401 or 404 before MONAI Label sees it.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
# Paths the portal forwards: the app's tools and models, and running one of them.
OPEN_PREFIXES = ("/info", "/infer/")
TOKEN_VARIABLE = "NORTHANC_ASSISTANT_TOKEN"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def monailabel_environment(archive: Path, models: Path) -> dict[str, str]:
    """MONAI Label's settings (it reads them from the environment when first imported)."""
    return {
        "MONAI_LABEL_APP_DIR": str(APP_DIR),
        "MONAI_LABEL_STUDIES": str(archive),
        "MONAI_LABEL_APP_CONF": json.dumps({"models": str(models)}),
        "MONAI_LABEL_TASKS_TRAIN": "false",
        "MONAI_LABEL_TASKS_STRATEGY": "false",
        "MONAI_LABEL_TASKS_SCORING": "false",
        "MONAI_LABEL_TASKS_BATCH_INFER": "false",
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
        "MONAI_LABEL_SESSIONS": "false",
        "MONAI_LABEL_TRACKING_ENABLED": "false",
        "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    }


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def gate(app: Asgi, token: str) -> Asgi:
    """``app`` behind the token check and the path whitelist."""
    expected = f"Bearer {token}".encode()

    async def gated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(given, expected):
            await _reply(send, 401, "the assistant answers the portal only")
            return
        if not str(scope.get("path", "")).startswith(OPEN_PREFIXES):
            await _reply(send, 404, "not offered")
            return
        await app(scope, receive, send)

    return gated


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m segmentation.assistant.serve")
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # MONAI Label logs every request in full at INFO (scribbles are thousands of voxels).
    logging.getLogger("monailabel").setLevel(logging.WARNING)
    os.environ.update(monailabel_environment(options.archive, options.models))
    # Its own environment only (it cannot read the portal's secrets folder), and not its children's.
    token = os.environ.pop(TOKEN_VARIABLE)

    import uvicorn
    from monailabel.app import app

    uvicorn.run(gate(app, token), host="127.0.0.1", port=options.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
