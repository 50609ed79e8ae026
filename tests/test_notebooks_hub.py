"""Project notebooks through a real JupyterHub: log-in at the portal (OAuth), a server for a
project in the job sandbox, a kernel that runs ``nora`` there, refusal without a role, stop."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import requests
import websocket
from sqlalchemy import select

from nifti_archive.models import ApiToken
from testbed.jupyterhub import Hub, start_hub
from testbed.portal import Portal, start_portal
from tests.polling import wait_until
from tests.portal_site import PASSWORD, Site, SiteTemplate, copy_site

EXECUTE_SECONDS = 120


@dataclass
class Stack:
    site: Site
    portal: Portal
    hub: Hub


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[Stack]:
    site = copy_site(portal_site, tmp_path_factory.mktemp("notebooks") / "var", secure_cookies=False)
    portal = start_portal(site.archive.settings)
    try:
        hub = start_hub(site.archive, portal.settings)
        try:
            yield Stack(site, portal, hub)
        finally:
            hub.stop()
    finally:
        portal.stop()
        site.archive.close()


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
import os, subprocess
print("uid", os.getuid())
print("var", os.path.exists(VAR))
print("beta", os.path.exists(BETA))
print(subprocess.run(["nora", "-s", "*"], capture_output=True, text=True, check=True).stdout)
try:
    open(os.path.join(ALPHA, "written"), "w")
    print("wrote into the project")
except OSError:
    print("project read-only")
"""


def test_a_notebook_sees_its_project_as_a_job_does(stack: Stack) -> None:
    site, hub = stack.site, stack.hub
    settings = site.archive.settings
    browser = hub_log_in(stack, "editor")
    answer = hub.api("POST", "users/editor/servers/alpha", {"project": "alpha", "executor": "local"})
    assert answer.status_code in (201, 202), answer.text
    wait_until(lambda: server_ready(hub, "editor", "alpha"), 120, "the notebook server to be ready")
    code = (f"VAR = {str(settings.secrets_dir)!r}\nBETA = {str(settings.archive_root / 'beta')!r}\n"
            f"ALPHA = {str(settings.archive_root / 'alpha')!r}\n" + KERNEL_CODE)
    printed = run_in_kernel(browser, hub.url + "user/editor/alpha/", code)
    lines = printed.splitlines()
    assert lines[0] != "uid 0" and lines[1:3] == ["var False", "beta False"], printed
    assert "project read-only" in printed
    listed = [line for line in lines if line.startswith(str(settings.archive_root))]
    assert listed and all(line.startswith(str(settings.archive_root / "alpha")) for line in listed), printed
    with site.archive.sessions() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == "notebook alpha")).one()
        assert token.project_id is not None and token.expires_at is not None and token.revoked_at is None
    assert hub.api("DELETE", "users/editor/servers/alpha").status_code in (202, 204)
    wait_until(lambda: "alpha" not in hub.api("GET", "users/editor").json()["servers"], 60, "the server to stop")
    assert not [p.info for p in psutil.process_iter(["cmdline"]) if "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or [])]
    with site.archive.sessions() as session:
        assert session.scalars(select(ApiToken).where(ApiToken.name == "notebook alpha")).one().revoked_at is not None


def test_a_user_without_a_role_on_the_project_is_refused(stack: Stack) -> None:
    hub = stack.hub
    hub_log_in(stack, "norole")
    answer = hub.api("POST", "users/norole/servers/alpha", {"project": "alpha"})
    assert answer.status_code == 403, answer.text
    assert "no role" in answer.json()["message"]
    bad = hub.api("POST", "users/norole/servers/x", {"project": "alpha", "partition": "a; rm -rf /"})
    assert bad.status_code == 400, bad.text


def test_the_hub_never_holds_a_password(stack: Stack) -> None:
    text = Path(stack.hub.log).read_text()
    assert PASSWORD not in text
