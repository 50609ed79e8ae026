"""The portal as the notebook hub's OAuth2 provider, and the attacks on the code flow."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from nifti_archive.models import OAuthGrant
from nifti_archive.notebooks import oauth
from portal.app import create_app
from tests.portal_site import PASSWORD, Site, SiteTemplate, copy_site

CALLBACK = "https://hub.example/hub/oauth_callback"


@pytest.fixture
def site(tmp_path: Path, portal_site: SiteTemplate) -> Iterator[tuple[Flask, Site, str]]:
    built = copy_site(portal_site, tmp_path / "var")
    with built.archive.unit_of_work() as (session, _journal):
        secret = oauth.register_client(session, "hub", CALLBACK)
        oauth.register_client(session, "other", "https://other.example/callback")
    yield create_app(built.archive.settings, built.archive), built, secret
    built.archive.close()


def logged_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    assert client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf}).status_code == 302
    return client


def authorize(client: FlaskClient, redirect_uri: str = CALLBACK, client_id: str = "hub") -> tuple[int, str]:
    answer = client.get("/oauth/authorize", query_string={
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s-1 2&x"})
    return answer.status_code, answer.headers.get("Location", answer.text)


def code_from(location: str) -> str:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == CALLBACK
    query = parse_qs(parts.query)
    assert query["state"] == ["s-1 2&x"]
    return query["code"][0]


def exchange(client: FlaskClient, code: str, secret: str, basic: bool = True, redirect_uri: str = CALLBACK) -> tuple[int, dict[str, str]]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    headers = {}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"hub:{secret}".encode()).decode()
    else:
        form |= {"client_id": "hub", "client_secret": secret}
    answer = client.post("/oauth/token", data=form, headers=headers)
    return answer.status_code, answer.json or {}


def userinfo(client: FlaskClient, token: str) -> tuple[int, object]:
    answer = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code, answer.json


def test_the_code_flow_names_the_user_and_their_projects(site: tuple[Flask, Site, str]) -> None:
    app, _built, secret = site
    browser, hub = logged_in(app, "editor"), app.test_client()
    status, location = authorize(browser)
    assert status == 302
    status, body = exchange(hub, code_from(location), secret)
    assert status == 200 and body["token_type"] == "Bearer", body
    assert userinfo(hub, body["access_token"]) == (200, {"name": "editor", "projects": ["alpha"]})
    # client_secret_post works as well as client_secret_basic.
    status, body = exchange(hub, code_from(authorize(browser)[1]), secret, basic=False)
    assert status == 200
    assert userinfo(hub, body["access_token"]) == (200, {"name": "editor", "projects": ["alpha"]})
    assert userinfo(logged_in(app, "norole"), body["access_token"])[0] == 200  # the token, not the cookie, counts
    assert userinfo(hub, body["access_token"] + "x")[0] == 401


def test_a_visitor_logs_in_first(site: tuple[Flask, Site, str]) -> None:
    app, _built, _secret = site
    status, location = authorize(app.test_client())
    assert status == 302 and urlsplit(location).path == "/login"


def test_a_redirect_uri_other_than_the_registered_one_gets_no_code(site: tuple[Flask, Site, str]) -> None:
    app, _built, _secret = site
    browser = logged_in(app, "editor")
    for wrong in (CALLBACK + "/", CALLBACK + "?next=https://evil.example", "https://evil.example/hub/oauth_callback",
                  CALLBACK.upper(), ""):
        status, text = authorize(browser, wrong)
        assert status == 400 and "redirect URI" in text, wrong
    assert authorize(browser, CALLBACK, client_id="nobody")[0] == 400


def test_a_code_is_exchanged_once_and_a_replay_ends_its_token(site: tuple[Flask, Site, str]) -> None:
    app, _built, secret = site
    browser, hub = logged_in(app, "viewer"), app.test_client()
    code = code_from(authorize(browser)[1])
    status, body = exchange(hub, code, secret)
    assert status == 200
    status, replay = exchange(hub, code, secret)
    assert (status, replay["error"]) == (400, "invalid_grant")
    assert userinfo(hub, body["access_token"])[0] == 401


def test_the_secret_client_and_redirect_uri_must_match(site: tuple[Flask, Site, str]) -> None:
    app, built, secret = site
    browser, hub = logged_in(app, "viewer"), app.test_client()
    code = code_from(authorize(browser)[1])
    status, body = exchange(hub, code, secret + "x")
    assert (status, body["error"]) == (401, "invalid_client")
    assert exchange(hub, code, "", basic=False)[0] == 401
    # Another registered client cannot redeem the hub's code with its own secret.
    with built.archive.unit_of_work() as (session, _journal):
        other = oauth.register_client(session, "other", "https://other.example/callback")
    answer = hub.post("/oauth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                            "client_id": "other", "client_secret": other})
    assert (answer.status_code, answer.json["error"]) == (400, "invalid_grant")
    status, body = exchange(hub, code, secret, redirect_uri="https://evil.example/cb")
    assert (status, body["error"]) == (400, "invalid_grant")
    # The refused attempts above did not use the code up; the mismatched redirect URI did.
    assert exchange(hub, code, secret)[0] == 400


def test_an_expired_code_is_refused(site: tuple[Flask, Site, str]) -> None:
    app, built, secret = site
    code = code_from(authorize(logged_in(app, "viewer"))[1])
    with built.archive.unit_of_work() as (session, _journal):
        session.execute(update(OAuthGrant).values(expires_at=datetime.now(UTC)))
    status, body = exchange(app.test_client(), code, secret)
    assert (status, body["error"]) == (400, "invalid_grant") and "expired" in body["error_description"]


def test_the_stored_secrets_are_hashes(site: tuple[Flask, Site, str]) -> None:
    app, built, secret = site
    code = code_from(authorize(logged_in(app, "viewer"))[1])
    dump = "\n".join(built.archive.sessions().connection().connection.dbapi_connection.iterdump())  # type: ignore[union-attr]
    assert secret not in dump and code not in dump


def test_a_pkce_code_needs_its_verifier(site: tuple[Flask, Site, str]) -> None:
    app, _built, secret = site
    browser, hub = logged_in(app, "viewer"), app.test_client()
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": "hub", "redirect_uri": CALLBACK, "state": "s-1 2&x"}
    plain = browser.get("/oauth/authorize", query_string={**query, "code_challenge": challenge})
    assert plain.status_code == 400 and "S256" in plain.text
    for sent in ("", "w" * 64, verifier):
        answer = browser.get("/oauth/authorize", query_string={**query, "code_challenge": challenge, "code_challenge_method": "S256"})
        form = {"grant_type": "authorization_code", "code": code_from(answer.headers["Location"]), "redirect_uri": CALLBACK,
                "client_id": "hub", "client_secret": secret, **({"code_verifier": sent} if sent else {})}
        exchanged = hub.post("/oauth/token", data=form)
        assert exchanged.status_code == (200 if sent == verifier else 400), (sent, exchanged.json)
