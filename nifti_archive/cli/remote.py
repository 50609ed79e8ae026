"""``nora`` inside a batch job: the archive through the portal's REST API, not its database.

A job runs in a sandbox with no database, no secrets and no network; the runner gives it
the portal's Unix socket (``NORTHANC_API_SOCKET``) and a token made for its run
(``NORTHANC_API_TOKEN``), which acts on the run's project only. Where the token is set,
``nora`` speaks HTTP over that socket (the standard library's client) and offers what the
API offers: ``-s PATTERN [--json [--byfilename]]``, ``-s PATTERN --addtag/--rmtag TAGS``,
``--bids OUT [--filter EXPR]`` (the API's zip, unpacked), ``--analyses [--json]`` and
``--create_analysis NAME`` (a job's results spanning studies). Any other flag is refused with
a line that says so.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import quote, urlencode

from nifti_archive.bids.dataset import is_update
from nifti_archive.catalog.analyses import ANALYSIS_STUDY, analysis_subject_id, check_analysis_name
from nifti_archive.catalog.tags import split_tag_list
from nifti_archive.cli.commands import created_analysis_report, project_name, tagging_report, write_analyses, write_selection
from nifti_archive.cli.parser import Request, build_parser, resolve
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.layout import ArchiveLayout
from nifti_archive.query.selection import SelectedFile

TOKEN_VARIABLE = "NORTHANC_API_TOKEN"
SOCKET_VARIABLE = "NORTHANC_API_SOCKET"
ARCHIVE_ROOT_VARIABLE = "NORTHANC_ARCHIVE_ROOT"
TIMEOUT_SECONDS = 300
REMOTE_FLAGS = frozenset({
    "-p", "--project", "-s", "--select", "-j", "--json", "--byfilename", "--addtag", "--rmtag", "--bids", "--filter", "-h", "--help",
    "--analyses", "--create_analysis",
})
OFFERED = ("-s PATTERN [--json [--byfilename]], -s PATTERN --addtag/--rmtag TAGS, --bids OUT [--filter EXPR], "
           "--analyses [--json] and --create_analysis NAME")
CHUNK = 1 << 20


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
        payload = None if body is None else json.dumps(body).encode()
        buffer = io.BytesIO()
        self._exchange(method, path, payload, buffer)
        try:
            answer = json.loads(buffer.getvalue())
        except json.JSONDecodeError:
            answer = {}
        return dict(answer)

    def download(self, path: str, target: IO[bytes]) -> None:
        """A GET whose answer is written to ``target`` as it arrives (a zip, say)."""
        self._exchange("GET", path, None, target)

    def _exchange(self, method: str, path: str, payload: bytes | None, target: IO[bytes]) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        connection = _UnixConnection(self.socket_path)
        try:
            connection.request(method, "/api/v1" + path, body=payload, headers=headers)
            response = connection.getresponse()
            if response.status >= 400:
                _refuse(response.status, response.read().decode("utf-8", errors="replace"))
            while chunk := response.read(CHUNK):
                target.write(chunk)
        except OSError as exc:
            raise InvalidValue(f"cannot reach the archive's API at {self.socket_path}: {exc.strerror or exc}") from exc
        finally:
            connection.close()


def _refuse(status: int, text: str) -> NoReturn:
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        answer = {}
    message = answer.get("error") if isinstance(answer, dict) else None
    error = NotFound if status == 404 else InvalidValue
    raise error(f"the archive answered {status}: {message or text.strip()[:200]}")


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


def _bids(client: ApiClient, request: Request, out: IO[str]) -> None:
    """The export the API zips, unpacked beside ``--bids OUT`` and renamed into place. A job sees the
    archive on a read-only mount of its own, where hard links are refused: its files are copies."""
    target = Path(request.args.bids).absolute()
    if is_update(target):
        raise InvalidValue(f"inside a job --bids writes a new dataset, and {target} has one")
    project = project_name(request)
    query = urlencode({"filter": request.args.filter or ""})
    with tempfile.TemporaryFile() as bundle, tempfile.TemporaryDirectory(prefix=f".{target.name}.partial-", dir=target.parent) as staging:
        client.download(f"/projects/{quote(project, safe='')}/bids.zip?{query}", bundle)
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(staging)  # zipfile drops absolute parts and '..' from member names
            files = len([name for name in archive.namelist() if not name.endswith("/")])
        if target.exists():
            target.rmdir()
        os.rename(Path(staging) / f"{project}_bids", target)
    out.write(f"BIDS dataset {target}: {files} file(s), copies (a job cannot hard-link the archive's files)\n")


def _analyses(client: ApiClient, request: Request, out: IO[str]) -> None:
    answer = client.call("GET", f"/projects/{quote(project_name(request), safe='')}/analyses")
    write_analyses(out, list(answer["analyses"]), request.args.json)


def _create_analysis(client: ApiClient, request: Request, out: IO[str]) -> None:
    """The analysis, made through the API; its folder as this job sees the archive (NORTHANC_ARCHIVE_ROOT)."""
    project = project_name(request)
    name = check_analysis_name(request.args.create_analysis)
    client.call("POST", f"/projects/{quote(project, safe='')}/analyses", {"name": name})
    folder = ArchiveLayout(Path(os.environ.get(ARCHIVE_ROOT_VARIABLE, "/"))).study_dir(project, analysis_subject_id(name), ANALYSIS_STUDY)
    out.write(created_analysis_report(project, name, str(folder)))


def run(argv: Sequence[str], out: IO[str]) -> None:
    _check_flags(argv)
    request = resolve(build_parser().parse_args(list(argv)))
    client = ApiClient(os.environ.get(SOCKET_VARIABLE, ""), os.environ[TOKEN_VARIABLE])
    if request.action == "select":
        _select(client, request, out)
    elif request.action == "bids":
        _bids(client, request, out)
    elif request.action == "analyses":
        _analyses(client, request, out)
    elif request.action == "create_analysis":
        _create_analysis(client, request, out)
    else:
        raise InvalidValue(f"inside a job nora offers only {OFFERED}")
