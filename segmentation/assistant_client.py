"""The portal's side of the segmentation assistant: its address, its token, its answers.

The assistant is another process that may be down, still starting, or not installed; each of
those is a ServiceUnavailable with what to do, never a hang: calls have a deadline.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from nifti_archive.errors import ConfigError, InvalidValue, NotFound, ServiceUnavailable
from nifti_archive.settings import Settings

log = logging.getLogger(__name__)
INFER_TIMEOUT_SECONDS = 120.0
INFO_TIMEOUT_SECONDS = 5.0


class AssistantClient:
    def __init__(self, settings: Settings) -> None:
        self.base = f"http://127.0.0.1:{settings.assistant_port}"
        self._settings = settings

    def _token(self) -> str:
        try:
            return self._settings.read_secret("assistant_token")
        except ConfigError as exc:
            raise ServiceUnavailable("the segmentation assistant is not set up (run `nora --admin init`)") from exc

    def _call(self, path: str, body: bytes | None, content_type: str, timeout: float) -> Any:
        request = urllib.request.Request(self.base + path, data=body, method="POST" if body is not None else "GET")
        request.add_header("Authorization", f"Bearer {self._token()}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code == 404:
                raise NotFound(detail) from exc
            if exc.code in (400, 422):
                raise InvalidValue(detail) from exc
            log.error("the segmentation assistant answered %s on %s: %s", exc.code, path, detail)
            raise ServiceUnavailable(f"the segmentation assistant failed ({exc.code}): {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceUnavailable(
                f"the segmentation assistant is not running at {self.base}; drawing by hand still works"
            ) from exc

    def info(self) -> dict[str, Any]:
        """The app's description: its tasks (``models``) with their descriptions."""
        answer = self._call("/info/", None, "", INFO_TIMEOUT_SECONDS)
        if not isinstance(answer, dict):
            raise ServiceUnavailable("the segmentation assistant gave no description of itself")
        return answer

    def infer(self, task: str, image: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run ``task`` on ``image`` (a path inside the archive) with ``params``; the task's JSON answer."""
        query = urllib.parse.urlencode({"image": image, "output": "json"})
        # The portal takes the packed mask from the JSON; the label image is for OHIF's panel.
        params = {**params, "label_image": False}
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
            f"{json.dumps(params)}\r\n--{boundary}--\r\n"
        ).encode()
        answer = self._call(f"/infer/{urllib.parse.quote(task, safe='')}?{query}", body,
                            f"multipart/form-data; boundary={boundary}", INFER_TIMEOUT_SECONDS)
        if not isinstance(answer, dict):
            raise ServiceUnavailable(f"the segmentation assistant gave no answer for {task}")
        return answer


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(error.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return str(detail) if detail else f"HTTP {error.code}"
