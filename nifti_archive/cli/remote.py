"""``nora`` inside a batch job: the archive through the portal's REST API, not its database.

A job runs in a sandbox with no database, no secrets and no network; the runner gives it
the portal's Unix socket (``NORTHANC_API_SOCKET``) and a token made for its run
(``NORTHANC_API_TOKEN``), which acts on the run's project only. Where the token is set,
``nora`` speaks HTTP over that socket (the standard library's client) and offers what the
API offers: ``-s PATTERN [--json [--byfilename]]`` and ``-s PATTERN --addtag/--rmtag TAGS``.
Any other flag is refused with a line that says so.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from nifti_archive.catalog.tags import split_tag_list
from nifti_archive.cli.commands import project_name, tagging_report, write_selection
from nifti_archive.cli.parser import Request, build_parser, resolve
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.layout import ArchiveLayout
from nifti_archive.query.selection import SelectedFile

TOKEN_VARIABLE = "NORTHANC_API_TOKEN"
SOCKET_VARIABLE = "NORTHANC_API_SOCKET"
ARCHIVE_ROOT_VARIABLE = "NORTHANC_ARCHIVE_ROOT"
TIMEOUT_SECONDS = 300
REMOTE_FLAGS = frozenset({"-p", "--project", "-s", "--select", "-j", "--json", "--byfilename", "--addtag", "--rmtag", "-h", "--help"})
OFFERED = "-s PATTERN [--json [--byfilename]] and -s PATTERN --addtag/--rmtag TAGS"


def active(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this ``nora`` runs inside a job (it has a run's token)."""
    return bool(environ.get(TOKEN_VARIABLE))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT_SECONDS)
        self.socket_path = path

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        connection.connect(self.socket_path)
        self.sock = connection


class ApiClient:
    """Calls of the REST API v1 with the run's token, over the portal's Unix socket."""

    def __init__(self, socket_path: str, token: str) -> None:
        self.socket_path = socket_path
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = _UnixConnection(self.socket_path)
        try:
            connection.request(method, "/api/v1" + path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", errors="replace")
        except OSError as exc:
            raise InvalidValue(f"cannot reach the archive's API at {self.socket_path}: {exc.strerror or exc}") from exc
        finally:
            connection.close()
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = {}
        if response.status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            error = NotFound if response.status == 404 else InvalidValue
            raise error(f"the archive answered {response.status}: {message or text.strip()[:200]}")
        return dict(answer)


def _check_flags(argv: Sequence[str]) -> None:
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag.startswith("-") and flag not in REMOTE_FLAGS:
            raise InvalidValue(
                f"{flag} is not available inside a job: nora there reaches the archive through its API, which offers {OFFERED}"
            )


def _select(client: ApiClient, request: Request, out: IO[str]) -> None:
    args = request.args
    project = project_name(request)
    adding = args.addtag is not None
    tag_text = args.addtag if adding else args.rmtag
    tags = split_tag_list(tag_text) if tag_text is not None else []
    answer = client.call("GET", f"/projects/{quote(project, safe='')}/select?{urlencode({'pattern': args.select})}")
    selected = [SelectedFile(f["id"], f["study_id"], f["subject"], f["study"], f["path"]) for f in answer["files"]]
    if not tags:
        write_selection(out, ArchiveLayout(Path(os.environ.get(ARCHIVE_ROOT_VARIABLE, "/"))), project, selected, request)
        return
    ids = [item.file_id for item in selected]
    count = 0
    if ids:
        body = {"level": "file", "ids": ids, "add" if adding else "remove": tags}
        count = int(client.call("POST", f"/projects/{quote(project, safe='')}/tags", body)["added" if adding else "removed"])
    out.write(tagging_report(adding, count, len(ids)))


def run(argv: Sequence[str], out: IO[str]) -> None:
    _check_flags(argv)
    request = resolve(build_parser().parse_args(list(argv)))
    if request.action != "select":
        raise InvalidValue(f"inside a job nora offers only {OFFERED}")
    _select(ApiClient(os.environ.get(SOCKET_VARIABLE, ""), os.environ[TOKEN_VARIABLE]), request, out)
