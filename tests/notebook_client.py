"""Talking to the notebook hub and its servers as a browser and JupyterLab do."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket

from nifti_archive.models import BatchLaunch, Executor, JobRun, JobState, Study
from testbed.jupyterhub import Hub, on_free_ports, start_hub
from testbed.portal import Portal, start_portal
from tests.portal_site import PASSWORD, Site

EXECUTE_SECONDS = 120


@dataclass
class Stack:
    site: Site
    portal: Portal
    hub: Hub


def hub_log_in(stack: Stack, username: str) -> requests.Session:
    """A browser's way in: the hub sends it to the portal, which asks for the password once and
    sends it back with a code; no password ever reaches the hub."""
    browser = requests.Session()
    login = browser.get(stack.hub.url + "hub/oauth_login", timeout=30)
    assert urlsplit(login.url).path == "/login", login.url
    form = dict(re.findall(r'<input type="hidden" name="(csrf_token|next)" value="([^"]*)"', login.text))
    back = browser.post(login.url.split("?")[0], timeout=30,
                        data={"username": username, "password": PASSWORD, **{k: html.unescape(v) for k, v in form.items()}})
    assert back.url.startswith(stack.hub.url), back.url
    assert browser.get(stack.hub.url + "hub/api/user", timeout=30).json()["name"] == username
    return browser


def server_ready(hub: Hub, username: str, server: str) -> dict[str, Any] | None:
    model = hub.api("GET", f"users/{username}").json()["servers"].get(server)
    return model if model and model["ready"] else None


def run_in_kernel(browser: requests.Session, base: str, code: str) -> str:
    """Runs ``code`` in a new kernel of the server at ``base`` (Jupyter's REST and websocket
    protocols, as JupyterLab speaks them); returns what it printed."""
    browser.get(base, timeout=60)  # the server's own OAuth round with the hub sets its cookie
    xsrf = browser.cookies.get("_xsrf", path=urlsplit(base).path.rstrip("/") + "/") or browser.cookies.get("_xsrf")
    kernel = browser.post(base + "api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": xsrf or ""}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    url = base.replace("http://", "ws://") + f"api/kernels/{kernel.json()['id']}/channels"
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    channel = websocket.create_connection(url, header=[f"Cookie: {cookie}"], timeout=EXECUTE_SECONDS)
    try:
        message_id = uuid.uuid4().hex
        channel.send(json.dumps({
            "header": {"msg_id": message_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False},
        }))
        printed = []
        while True:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != message_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                printed.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(printed)
    finally:
        channel.close()


KERNEL_CODE = """
import os, socket, subprocess
print("uid", os.getuid())
print("var", os.path.exists(VAR))
print("beta", os.path.exists(BETA))
print(subprocess.run(["nora", "-s", "*"], capture_output=True, text=True, check=True).stdout)
try:
    socket.create_connection(PORTAL, timeout=10).close()
    print("reached the portal's port")
except OSError:
    print("no network")
try:
    open(os.path.join(ALPHA, "written"), "w")
    print("wrote into the project")
except OSError:
    print("project read-only")
"""


def assert_sees_its_project_only(stack: Stack, browser: requests.Session, username: str, server: str) -> None:
    """A kernel of the server runs as the jobs account, reads its project (read-only) through
    ``nora``, sees neither var/ nor another project, and, like a job, has no network: the
    portal's port, open to anyone on the host, is not there for it."""
    settings = stack.site.archive.settings
    portal = urlsplit(stack.portal.url)
    code = (f"VAR = {str(settings.secrets_dir)!r}\nBETA = {str(settings.archive_root / 'beta')!r}\n"
            f"ALPHA = {str(settings.archive_root / 'alpha')!r}\nPORTAL = {(portal.hostname, portal.port)!r}\n"
            + KERNEL_CODE)
    assert requests.get(stack.portal.url + "/login", timeout=30).status_code == 200
    printed = run_in_kernel(browser, stack.hub.url + f"user/{username}/{server}/", code)
    lines = printed.splitlines()
    assert lines[0] != "uid 0" and lines[1:3] == ["var False", "beta False"], printed
    assert "project read-only" in printed and "no network" in printed, printed
    listed = [line for line in lines if line.startswith(str(settings.archive_root))]
    assert listed and all(line.startswith(str(settings.archive_root / "alpha")) for line in listed), printed


@contextmanager
def notebook_stack(site: Site, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """The portal and the hub for ``site``, stopped afterwards."""
    portal = start_portal(on_free_ports(site.archive.settings))
    try:
        hub = start_hub(portal.settings, extra_env)
        try:
            yield Stack(site, portal, hub)
        finally:
            hub.stop()
    finally:
        portal.stop()


def portal_log_in(stack: Stack, username: str) -> tuple[requests.Session, str]:
    """A browser logged in at the portal, with the CSRF token its pages carry."""
    browser = requests.Session()
    login = browser.get(stack.portal.url + "/login", timeout=30)
    form = dict(re.findall(r'<input type="hidden" name="(csrf_token|next)" value="([^"]*)"', login.text))
    projects = browser.post(stack.portal.url + "/login", timeout=30,
                            data={"username": username, "password": PASSWORD, "csrf_token": html.unescape(form["csrf_token"])})
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', projects.text)
    assert csrf is not None, projects.text
    browser.headers["X-CSRF-Token"] = html.unescape(csrf.group(1))
    return browser, browser.headers["X-CSRF-Token"]


FAILING = {"name": "copy", "level": "study", "jobs": [{
    "job": "bash", "script": 'cp "$f1" "$o1" && exit 3',
    "args": {"f1": {"type": "FILE", "value": "001_ax/*.nii"}, "o1": {"type": "OUT", "value": "copies/ax.nii"}},
}]}


def ended_run(site: Site, state: JobState) -> int:
    """A run of P01 that ended in ``state``, as the runner leaves one."""
    with site.archive.unit_of_work() as (session, _journal):
        study = session.get_one(Study, site.studies["P01"])
        launch = BatchLaunch(project_id=study.subject.project_id, name="copy", spec=json.dumps(FAILING),
                             executor=Executor.LOCAL, launched_by="editor")
        session.add(launch)
        session.flush()
        run = JobRun(project_id=launch.project_id, subject_id=study.subject_id, study_id=study.id, state=state,
                     launch_id=launch.id, message="job 1 (bash) exited with status 3; see the log")
        session.add(run)
        session.flush()
        return run.id
