"""The portal under attack, each attack beside the legitimate use that must keep working:
users' files that would script the portal, pages without inline script, log-in guessing and
enumeration, sessions that outlive their log-out or their token, NORA's URL call, project-scoped
(job) tokens, and bad input that must not become a stack trace."""

from __future__ import annotations

import http.client
import io
import json
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import expect
from sqlalchemy import delete, select

from nifti_archive import accounts, login_throttle
from nifti_archive.errors import InvalidValue
from nifti_archive.models import ApiToken, LoginThrottle, Project, Role, UserSession, ViewerPreset
from nifti_archive.settings import Settings
from portal import headers
from portal.access import Caller, Outcome, Rule, Scope, TokenScope, decide_scoped, scoped_role
from portal.access_log import redact_target
from portal.app import create_app
from testbed.portal import Portal, chromium, start_portal
from testbed.portal import log_in as browser_log_in
from tests.conftest import Nora
from tests.polling import wait_until
from tests.portal_site import AXIAL, PASSWORD, Site, build_site, site_archive
from tests.test_portal_access import page_token
from tests.test_portal_api import bearer, token_for

ATTACKER, OWNER, BYSTANDER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
SCRIPTED_HTML = b"<html><body><script>fetch('/admin/users',{method:'POST'})</script></body></html>"
SCRIPTED_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Flask, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("portal-security"), sqlite_template,
                           orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    built = build_site(archive)
    yield create_app(archive.settings, archive), built
    archive.close()


@pytest.fixture(autouse=True)
def no_throttles(site: tuple[Flask, Site]) -> None:
    """Each test starts with no wrong passwords counted (the site is shared by the module)."""
    with site[1].archive.unit_of_work() as (session, _journal):
        session.execute(delete(LoginThrottle))


def client_at(app: Flask, address: str = "127.0.0.1") -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def attempt(client: FlaskClient, username: str, password: str) -> int:
    return client.post("/login", data={"username": username, "password": password, "csrf_token": page_token(client)}).status_code


def logged_in_client(app: Flask, username: str, address: str = "127.0.0.1", password: str = PASSWORD) -> FlaskClient:
    client = client_at(app, address)
    assert attempt(client, username, password) == 302
    return client


def csrf_of(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return str(session["csrf_token"])


def new_user(site: Site, name: str, role: Role | None = None) -> None:
    with site.archive.unit_of_work() as (session, _journal):
        user, _one_time = accounts.create_user(session, name)
        accounts.set_password(user, PASSWORD)
        if role is not None:
            accounts.grant_role(session, user, session.scalars(select(Project).where(Project.name == "alpha")).one(), role)


# Item 3: files from users cannot run script on the portal's origin.

def upload(client: FlaskClient, auth: dict[str, str], study: int, *files: tuple[bytes, str]) -> dict[str, int]:
    """The files into the study's ``qc`` folder; their ids by file name."""
    answer = client.post(f"/api/v1/projects/alpha/studies/{study}/files", headers=auth, content_type="multipart/form-data",
                         data={"folder": "qc", "files": [(io.BytesIO(data), name) for data, name in files]})
    assert answer.status_code == 201, answer.json
    return {f["path"].removeprefix("qc/"): f["id"] for f in answer.json["files"]}


def test_uploaded_html_and_svg_reach_a_site_admin_only_as_attachments(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    ids = upload(client, bearer(token_for(built.archive, "editor")), built.studies["P03"],
                 (SCRIPTED_HTML, "qc.html"), (SCRIPTED_SVG, "overlay.svg"), (SCRIPTED_HTML, "report.htm"),
                 (b'{"volume": 12.5}', "stats.json"), (b"\x89PNG\r\n\x1a\n", "snapshot.png"))
    admin = bearer(token_for(built.archive, "siteadmin"))
    for name in ("qc.html", "overlay.svg", "report.htm"):
        answer = client.get(f"/api/v1/files/{ids[name]}/content", headers=admin)
        assert answer.status_code == 200 and answer.data.startswith(b"<")
        assert answer.mimetype == "application/octet-stream", name
        assert answer.headers["Content-Disposition"].startswith("attachment"), name
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in answer.headers["Content-Security-Policy"]
    # The legitimate uses: JSON and images shown inline with their own types, still without script.
    stats = client.get(f"/api/v1/files/{ids['stats.json']}/content", headers=admin)
    assert stats.mimetype == "application/json" and stats.json == {"volume": 12.5}
    assert stats.headers["Content-Disposition"].startswith("inline")
    picture = client.get(f"/api/v1/files/{ids['snapshot.png']}/content", headers=admin)
    assert picture.mimetype == "image/png" and "sandbox" in picture.headers["Content-Security-Policy"]


def test_nifti_is_binary_and_range_requests_still_work(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    auth = bearer(token_for(built.archive, "viewer"))
    part = client.get(f"/api/v1/files/{built.files['P01']}/content", headers={**auth, "Range": "bytes=0-347"})
    assert part.status_code == 206 and part.data == AXIAL.read_bytes()[:348]
    assert part.mimetype == "application/octet-stream" and part.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["foo.HTML", "x.svg", "a.xhtml", "b.js", "c.nii.gz", "d.txt", "e.xml", "noext", "f.json.html"])
def test_only_json_and_pictures_are_inline(path: str) -> None:
    assert headers.delivery(path) == headers.FileDelivery("application/octet-stream", True)
    assert headers.delivery("dir/x.JSON") == headers.FileDelivery("application/json", False)
    assert headers.delivery("y.jpeg") == headers.FileDelivery("image/jpeg", False)


PAGES = ("/login", "/projects", "/p/alpha", "/p/alpha/viewer", "/p/alpha/batchtool", "/p/alpha/gridstats", "/p/alpha/upload",
         "/p/alpha/pacs", "/p/alpha/pulls", "/p/alpha/members", "/account/tokens", "/account/password", "/admin/users",
         "/admin/pacs")


def test_every_page_forbids_inline_script_and_framing(site: tuple[Flask, Site]) -> None:
    app, _built = site
    client = logged_in_client(app, "siteadmin")
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, path
        policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
        script_sources = policy.get("script-src", policy["default-src"])
        assert "'unsafe-inline'" not in script_sources and "'unsafe-eval'" not in script_sources, path
        assert policy["frame-ancestors"] == "'none'" and page.headers["X-Frame-Options"] == "DENY"
        # The pages' own scripts are files of ours, so they still run under that policy.
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", page.text), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+\s*=", page.text), f"inline event handler on {path}"


def test_a_browser_runs_the_viewer_but_no_inline_script(site: tuple[Flask, Site], served: Portal) -> None:
    _app, built = site
    with chromium() as browser:
        context = browser.new_context(base_url=served.url)
        context.set_default_timeout(30_000)
        page = context.new_page()
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
        browser_log_in(page, "viewer", PASSWORD)
        page.goto(f"/p/alpha/viewer?study={built.studies['P01']}")
        expect(page.locator("#files li").first).to_be_visible()
        assert violations == [], violations
        page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.injected = true";
                                 document.head.append(s); }""")
        assert page.evaluate("window.injected === undefined")
        wait_until(lambda: violations, 10, "the browser to report the refused inline script")
        context.close()


# Item 6: log-in that cannot be used to enumerate accounts or to lock others out.

def test_unknown_and_known_names_get_the_same_answers(site: tuple[Flask, Site]) -> None:
    app, _built = site
    known = [attempt(client_at(app, ATTACKER), "reader", "guess") for _ in range(7)]
    unknown = [attempt(client_at(app, BYSTANDER), "nobody-here", "guess") for _ in range(7)]
    free = login_throttle.POLICIES[login_throttle.KeyKind.USER].free_failures
    assert known == unknown == [401] * free + [429] * 2


def test_unknown_names_cost_the_time_of_a_password_check(site: tuple[Flask, Site]) -> None:
    app, _built = site

    def seconds(username: str, index: int) -> float:
        client = client_at(app, f"127.0.1.{index}")
        token = page_token(client)
        start = time.perf_counter()
        client.post("/login", data={"username": username, "password": "guess", "csrf_token": token})
        return time.perf_counter() - start

    known = statistics.median(seconds("reader", i) for i in range(4))
    unknown = statistics.median(seconds(f"ghost{i}", 10 + i) for i in range(4))
    # An Argon2 check is tens of milliseconds; skipping it would make unknown names ~10x faster.
    assert unknown > 0.6 * known, (known, unknown)


def test_a_throttled_attempt_says_when_to_retry(site: tuple[Flask, Site]) -> None:
    app, _built = site
    client = client_at(app, ATTACKER)
    for _ in range(login_throttle.POLICIES[login_throttle.KeyKind.USER].free_failures):
        assert attempt(client, "admin", "guess") == 401
    refused = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": page_token(client)})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "try again in" in refused.text


def test_back_off_doubles_to_a_ceiling() -> None:
    policy = login_throttle.Policy(free_failures=3)
    delays = [login_throttle.delay_after(n, policy).total_seconds() for n in range(1, 30)]
    assert delays[:2] == [0, 0] and delays[2] == login_throttle.FIRST_DELAY.total_seconds()
    assert delays[3] == 2 * delays[2] and max(delays) == login_throttle.LONGEST_DELAY.total_seconds()
    assert delays == sorted(delays)


def test_a_spray_across_accounts_from_one_address_is_slowed(site: tuple[Flask, Site]) -> None:
    app, _built = site
    sprayer = client_at(app, ATTACKER)
    free = login_throttle.POLICIES[login_throttle.KeyKind.ADDRESS].free_failures
    assert [attempt(sprayer, f"user{n}", "Winter2026!") for n in range(free)] == [401] * free
    assert attempt(sprayer, "editor", "Winter2026!") == 429
    assert attempt(sprayer, "editor", PASSWORD) == 429
    # Everyone else, and the account the sprayer named last, are unaffected.
    assert attempt(client_at(app, OWNER), "editor", PASSWORD) == 302


def test_behind_a_proxy_the_throttle_keys_on_the_address_the_proxy_forwards(site: tuple[Flask, Site]) -> None:
    _app, built = site
    fronted = create_app(replace(built.archive.settings, proxy_hops=1), built.archive)

    def via_proxy(client_address: str) -> FlaskClient:
        client = client_at(fronted, "10.0.0.2")
        client.environ_base["HTTP_X_FORWARDED_FOR"] = client_address
        return client

    free = login_throttle.POLICIES[login_throttle.KeyKind.ADDRESS].free_failures
    sprayer = via_proxy(ATTACKER)
    assert [attempt(sprayer, f"user{n}", "Winter2026!") for n in range(free)] == [401] * free
    assert attempt(sprayer, "editor", PASSWORD) == 429
    # Everyone else comes through the same proxy, and is not the sprayer.
    assert attempt(via_proxy(OWNER), "editor", PASSWORD) == 302


def test_without_a_proxy_a_forged_forwarded_address_changes_nothing(site: tuple[Flask, Site]) -> None:
    app, _built = site
    free = login_throttle.POLICIES[login_throttle.KeyKind.ADDRESS].free_failures
    answers = []
    for n in range(free + 1):
        sprayer = client_at(app, ATTACKER)
        sprayer.environ_base["HTTP_X_FORWARDED_FOR"] = f"198.51.100.{n}"
        answers.append(attempt(sprayer, f"user{n}", "Winter2026!"))
    assert answers == [401] * free + [429]


def test_a_stranger_cannot_lock_a_site_admin_out(site: tuple[Flask, Site], nora: Nora) -> None:
    app, _built = site
    attacker = client_at(app, ATTACKER)
    outcomes = [attempt(attacker, "siteadmin", "guess") for _ in range(8)]
    assert outcomes[-1] == 429, outcomes
    assert attempt(attacker, "siteadmin", PASSWORD) == 429, "the attacker's address gets no further guesses"
    # The site admin at an address with no wrong passwords logs in while the attack goes on.
    owner = client_at(app, OWNER)
    assert attempt(owner, "siteadmin", PASSWORD) == 302
    # A typo from there counts: that address is now throttled for the attacked account ...
    mistyped = client_at(app, BYSTANDER)
    assert attempt(mistyped, "siteadmin", "typo") == 401
    assert attempt(mistyped, "siteadmin", PASSWORD) == 429
    # ... until a site admin lifts the account's back-off.
    assert nora("--admin", "user", "unlock", "siteadmin").returncode == 0
    assert attempt(mistyped, "siteadmin", PASSWORD) == 302
    refused = nora("--admin", "user", "unlock", "nobody-here")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "nobody-here" in refused.stderr


# Item 7: sessions end when they should.

def test_a_cookie_copied_before_log_out_is_dead_after_it(site: tuple[Flask, Site]) -> None:
    app, _built = site
    client = logged_in_client(app, "viewer")
    cookie = client.get_cookie("northanc_session")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("northanc_session", cookie.value)
    assert thief.get("/api/v1/projects").status_code == 200, "a copy works while the session lasts"
    assert client.post("/logout", data={"csrf_token": csrf_of(client)}).status_code == 302
    assert thief.get("/api/v1/projects").status_code == 401
    assert thief.get("/p/alpha").status_code == 302
    assert logged_in_client(app, "viewer").get("/api/v1/projects").status_code == 200, "logging in again works"


def test_a_new_password_ends_the_other_sessions(site: tuple[Flask, Site]) -> None:
    app, built = site
    new_user(built, "changer", Role.VIEWER)
    here, elsewhere = logged_in_client(app, "changer"), logged_in_client(app, "changer", OWNER)
    changed = here.post("/account/password", data={"current_password": PASSWORD, "new_password": "another long one",
                                                   "repeat_password": "another long one", "csrf_token": csrf_of(here)})
    assert changed.status_code == 302
    assert here.get("/api/v1/projects").status_code == 200, "the session that changed it goes on"
    assert elsewhere.get("/api/v1/projects").status_code == 401
    with built.archive.unit_of_work() as (session, _journal):
        accounts.reset_password(session, "changer")
    assert here.get("/api/v1/projects").status_code == 401, "a reset ends every session"


def url_call(secret: str, user: str, **choice: str) -> str:
    return "/?" + urlencode({"project": "alpha", "call": json.dumps({"pid": "P02", "sid": "S1", **choice, "user": user, "token": secret})})


def test_a_url_call_session_ends_with_its_token_and_its_redirect_has_no_token(site: tuple[Flask, Site]) -> None:
    app, built = site
    secret = token_for(built.archive, "reader")
    client = app.test_client()
    answer = client.get(url_call(secret, "reader"))
    assert answer.status_code == 302 and urlsplit(answer.headers["Location"]).path == "/p/alpha/viewer"
    assert secret not in answer.headers["Location"] and "token" not in answer.headers["Location"]
    assert client.get(answer.headers["Location"]).status_code == 200
    password_session = logged_in_client(app, "reader")
    with built.archive.unit_of_work() as (session, _journal):
        token = session.scalars(select(ApiToken).where(ApiToken.token_hash == accounts._token_hash(secret))).one()
        accounts.revoke_token(session, token.id)
        assert session.scalars(select(UserSession.token_id).where(UserSession.token_id == token.id)).all() == [token.id]
    assert client.get("/api/v1/projects").status_code == 401
    assert password_session.get("/api/v1/projects").status_code == 200, "the user's other sessions stay"
    assert client.get(url_call(secret, "reader")).status_code == 401


def test_a_url_call_for_another_user_asks_before_switching(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = logged_in_client(app, "viewer")
    secret = token_for(built.archive, "editor")
    answer = client.get(url_call(secret, "editor"))
    assert answer.status_code == 302 and answer.headers["Location"] == "/account/switch"
    question = client.get("/account/switch")
    assert question.status_code == 200 and 'id="switch-to">editor<' in question.text
    assert client.get("/api/v1/projects").json["projects"][0]["role"] == "viewer", "nothing switched yet"
    forged = client.post("/account/switch", data={"answer": "switch"})
    assert forged.status_code == 403, "another site cannot answer for the user"
    assert client.get("/api/v1/projects").json["projects"][0]["role"] == "viewer"
    switched = client.post("/account/switch", data={"answer": "switch", "csrf_token": csrf_of(client)})
    assert switched.status_code == 302 and switched.headers["Location"].startswith("/p/alpha/viewer?")
    assert client.get("/api/v1/projects").json["projects"][0]["role"] == "editor"
    # Declining keeps the session as it is.
    client.get(url_call(token_for(built.archive, "viewer"), "viewer"))
    stayed = client.post("/account/switch", data={"answer": "stay", "csrf_token": csrf_of(client)})
    assert stayed.status_code == 302 and client.get("/api/v1/projects").json["projects"][0]["role"] == "editor"


@pytest.mark.parametrize("target", [
    '/?project=alpha&call={"pid":"P01","user":"u","token":"nrt_SECRET-value_1"}',
    "/?project=alpha&call=%7B%22token%22%3A%22nrt_SECRET-value_1%22%2C%22user%22%3A%22u%22%7D",
    "/?call=not-json-nrt_SECRET-value_1",
    "/api/v1/projects?token=SECRET-value_1",
])
def test_redacted_targets_keep_everything_but_the_token(target: str) -> None:
    redacted = redact_target(target)
    assert "SECRET-value_1" not in redacted and "redacted" in redacted, redacted
    assert redacted.startswith(target.split("?")[0])
    assert redact_target("/p/alpha/viewer?pid=P01&sid=S1") == "/p/alpha/viewer?pid=P01&sid=S1"


# Scoped tokens: a job's token acts on its project's REST API only, as at most an editor.

def test_scoped_role_is_capped_at_editor_on_its_project_only() -> None:
    scope = TokenScope(project_id=7)
    assert scoped_role(scope, 7, Role.ADMIN) is Role.EDITOR
    assert scoped_role(scope, 7, Role.READER) is Role.READER
    assert scoped_role(scope, 7, None) is None, "a launcher who lost the role has none"
    assert scoped_role(TokenScope(project_id=7, for_service=True), 7, None) is Role.EDITOR
    assert scoped_role(TokenScope(project_id=7, for_service=True), 8, None) is None
    assert scoped_role(scope, 8, Role.ADMIN) is None
    editor = Caller(True, site_admin=True, project_role=Role.EDITOR)
    assert decide_scoped(Rule(Scope.PROJECT, Role.EDITOR), editor, api_route=True) is Outcome.ALLOW
    assert decide_scoped(Rule(Scope.PROJECT, Role.ADMIN), editor, api_route=True) is Outcome.FORBIDDEN
    assert decide_scoped(Rule(Scope.SITE_ADMIN), editor, api_route=True) is Outcome.FORBIDDEN
    assert decide_scoped(Rule(Scope.USER), editor, api_route=False) is Outcome.FORBIDDEN
    assert decide_scoped(Rule(Scope.PROJECT, Role.VIEWER), Caller(True), api_route=True) is Outcome.HIDDEN
    assert decide_scoped(Rule(Scope.PUBLIC), Caller(True), api_route=False) is Outcome.ALLOW


def scoped_token(site: Site, username: str, project: str) -> str:
    with site.archive.unit_of_work() as (session, _journal):
        issued = accounts.create_token(session, accounts.get_user(session, username), "run", 1)
        issued.token.project_id = session.scalars(select(Project.id).where(Project.name == project)).one()
        return issued.secret


def test_a_scoped_token_acts_on_its_project_only(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    # A launcher who has (or lost) no role on the project gets nothing through the run's token.
    lost = bearer(scoped_token(built, "norole", "alpha"))
    assert client.get("/api/v1/projects/alpha/studies", headers=lost).status_code == 404
    with built.archive.unit_of_work() as (session, _journal):
        accounts.service_user(session, built.archive.settings.jobs_user)
    job = bearer(scoped_token(built, built.archive.settings.jobs_user, "alpha"))
    assert client.get("/api/v1/projects", headers=job).json["projects"] == [
        {"name": "alpha", "description": "the test project", "role": "editor"}]
    tagged = client.post("/api/v1/projects/alpha/tags", headers=job, json={"level": "study", "ids": [built.studies["P03"]], "add": ["job"]})
    assert tagged.status_code == 200 and tagged.json["added"] == 1
    assert client.get(f"/api/v1/files/{built.files['P01']}/content", headers=job).status_code == 200
    assert client.get("/api/v1/projects/beta/studies", headers=job).status_code == 404
    assert client.get(f"/api/v1/files/{built.other_file}/content", headers=job).status_code == 404
    # A site admin's job token is no site admin, and no project admin either.
    admin_job = bearer(scoped_token(built, "siteadmin", "alpha"))
    refused = client.post("/api/v1/pacs", headers=admin_job, json={"name": "x", "aet": "X", "host": "127.0.0.1", "port": 104})
    assert refused.status_code == 403 and "scoped" in refused.json["error"]
    assert client.get("/api/v1/projects/beta", headers=admin_job).status_code == 404
    assert client.get("/p/alpha/members", headers=admin_job).status_code == 403
    # It mints no tokens and changes no password.
    minted = client.post("/account/tokens", headers=admin_job, data={"name": "escape"})
    assert minted.status_code == 403
    assert client.post("/account/password", headers=admin_job, data={"current_password": PASSWORD}).status_code == 403
    assert client.get(url_call(scoped_token(built, "editor", "alpha"), "editor")).status_code == 401, "nor opens a session"
    # The same users' own tokens keep their full rights.
    assert client.get("/api/v1/projects/beta", headers=bearer(token_for(built.archive, "siteadmin"))).status_code == 200


# Item 9: no stack traces, no server paths.

def test_a_body_nested_beyond_reason_is_a_400_not_a_crash(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    auth = bearer(token_for(built.archive, "viewer"))
    answer = client.post("/api/v1/projects/alpha/links", headers={**auth, "Content-Type": "application/json"},
                         data="[" * 100_000)
    assert answer.status_code == 400 and "Traceback" not in answer.text
    sane = {"layout": "1x1", "crosshair": None,
            "viewports": [[{"file_id": built.files["P01"], "colormap": "gray", "opacity": 1.0, "window": None}]]}
    assert client.post("/api/v1/projects/alpha/links", headers=auth, json=sane).status_code in (200, 201)


def test_a_token_lifetime_out_of_range_is_a_400_with_the_reason(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = logged_in_client(app, "reader")
    before = len(client.get("/account/tokens").text)
    refused = client.post("/account/tokens", data={"name": "x", "expires_in_days": "99999999999", "csrf_token": csrf_of(client)})
    assert refused.status_code == 400 and "99999999999" in refused.text and "Traceback" not in refused.text
    assert len(client.get("/account/tokens").text) == before, "no token was created"
    made = client.post("/account/tokens", data={"name": "x", "expires_in_days": "30", "csrf_token": csrf_of(client)})
    assert made.status_code == 200 and 'id="issued-token">nrt_' in made.text
    with built.archive.unit_of_work() as (session, _journal), pytest.raises(InvalidValue, match="1 to 3650 days"):
        accounts.create_token(session, accounts.get_user(session, "reader"), "x", 10**11)


def test_numbers_beyond_the_index_are_refused_not_crashed_on(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    auth = bearer(token_for(built.archive, "editor"))
    huge = 10**30
    assert client.get(f"/api/v1/files/{huge}/content", headers=auth).status_code == 404
    for url, body in (("/api/v1/projects/alpha/tags", {"level": "study", "ids": [huge], "add": ["x"]}),
                      ("/api/v1/projects/alpha/links", {"layout": "1x1", "viewports": [[{"file_id": huge}]]}),
                      ("/api/v1/projects/alpha/launches", {"saved": "stats", "studies": [huge]})):
        answer = client.post(url, json=body, headers=auth)
        assert answer.status_code == 400 and answer.json["error"], url
    paged = client.get("/api/v1/projects/alpha/studies", query_string={"offset": str(huge)}, headers=auth)
    assert paged.status_code == 400 and "offset" in paged.json["error"]
    assert client.get("/api/v1/projects/alpha/studies", query_string={"offset": "2"}, headers=auth).status_code == 200


def test_an_unexpected_failure_is_a_500_without_details(site: tuple[Flask, Site], served: Portal) -> None:
    _app, built = site
    secret = token_for(built.archive, "viewer")
    target = "/api/v1/projects/alpha/presets"
    assert request_from(served, "127.0.0.1", "GET", target, authorization=secret).status == 200
    with built.archive.unit_of_work() as (session, _journal):
        project_id = session.scalars(select(Project.id).where(Project.name == "alpha")).one()
        session.add(ViewerPreset(project_id=project_id, name="damaged", spec="{not json"))
    try:
        answer = request_from(served, "127.0.0.1", "GET", target, authorization=secret)
        assert answer.status == 500 and set(json.loads(answer.read_text)) == {"error"}
        assert "Traceback" not in answer.read_text and str(built.archive.settings.var_dir) not in answer.read_text
        server_log = built.archive.settings.log_dir / "portal.log"
        wait_until(lambda: "JSONDecodeError" in server_log.read_text(), 30, "the trace in the portal's log")
    finally:
        with built.archive.unit_of_work() as (session, _journal):
            session.execute(delete(ViewerPreset).where(ViewerPreset.name == "damaged"))


# End to end under gunicorn: the access log and client addresses as the server sees them.

@pytest.fixture
def settings(site: tuple[Flask, Site]) -> Settings:
    """The module's archive, for the ``nora`` fixture."""
    return site[1].archive.settings


@pytest.fixture(scope="module")
def served(site: tuple[Flask, Site]) -> Iterator[Portal]:
    portal = start_portal(site[1].archive.settings)
    yield portal
    portal.stop()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    read_text: str


def request_from(portal: Portal, address: str, method: str, target: str, form: dict[str, str] | None = None,
                 cookie: str = "", authorization: str = "") -> Answer:
    """One request from a client bound to ``address`` (any 127.x address reaches the portal)."""
    parts = urlsplit(portal.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30, source_address=(address, 0))
    body = urlencode(form).encode() if form is not None else None
    sent = {"Cookie": cookie, **({"Content-Type": "application/x-www-form-urlencoded"} if body else {}),
            **({"Authorization": f"Bearer {authorization}"} if authorization else {})}
    try:
        connection.request(method, target, body=body, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


def form_login(portal: Portal, address: str, username: str, password: str) -> int:
    """The log-in form as a browser at ``address`` submits it; the answer's status."""
    page = request_from(portal, address, "GET", "/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.read_text)
    assert csrf is not None
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    form = {"username": username, "password": password, "csrf_token": csrf.group(1)}
    return request_from(portal, address, "POST", "/login", form, cookie=cookie).status


def test_under_gunicorn_an_attacked_admin_logs_in_from_another_address(served: Portal) -> None:
    statuses = [form_login(served, ATTACKER, "siteadmin", "guess") for _ in range(7)]
    assert statuses[-1] == 429, statuses
    assert form_login(served, OWNER, "siteadmin", PASSWORD) == 302


def test_the_access_log_never_holds_a_token(site: tuple[Flask, Site], served: Portal) -> None:
    _app, built = site
    secret = token_for(built.archive, "reader")
    answer = request_from(served, "127.0.0.1", "GET", url_call(secret, "reader"))
    assert answer.status == 302 and secret not in answer.headers["Location"]
    log = built.archive.settings.log_dir / "portal-access.log"
    line = wait_until(lambda: next((x for x in log.read_text().splitlines() if "call=" in x), None), 30,
                      "the URL call in the access log")
    assert secret not in line and "nrt_" not in line and "P02" in line
    assert secret not in log.read_text()


def test_an_xnat_session_cookie_travels_only_over_tls_like_the_portals(site: tuple[Flask, Site]) -> None:
    """Behind a TLS-terminating proxy the request is plain HTTP; the JSESSIONID must still be Secure."""
    app, _built = site
    response = client_at(app).get("/data/JSESSION", auth=("viewer", PASSWORD))
    assert response.status_code == 200, response.text
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("JSESSIONID=") and "Secure" in cookie and "HttpOnly" in cookie, cookie
