"""Institutional log-in as an attacker tries it: redirects off the site, replayed and carried-over
callbacks, forged ID tokens, names that belong to someone else, LDAP injection, throttling dodged
by spelling, cross-site log-in forms, disabled accounts, secrets in the log.

One site offers the testbed's OpenID provider and a slapd directory together, so one name can
come from both.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import tomllib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from sqlalchemy import select
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.identity import oidc
from nifti_archive.identity.config import parse_providers
from nifti_archive.models import AccountOrigin, Project, User
from portal.app import create_app
from testbed.ldap_directory import GROUPS, PEOPLE, Directory, Person, start_directory
from testbed.oidc_provider import Account, OpenIdProvider
from tests.portal_site import PASSWORD, Site, SiteTemplate, copy_site

CLIENT_SECRET = "s3cret-of-the-attacked-site"
PEOPLE_IN_DIRECTORY = (
    Person("siteadmin", "the directory's siteadmin password"),
    Person("twin", "twin's directory password"),
    Person("mallory", "mallory's directory password", ("radiology",)),
    Person("quitter", "quitter's directory password"),
)
PASSWORDS = {person.uid: person.password for person in PEOPLE_IN_DIRECTORY}
# The provider runs in this process: its own server-side log names its client, secret included.
PROVIDER_SIDE_LOGGERS = ("authlib.oauth2.rfc6749.grants", "authlib.oauth2.rfc6749.authenticate_client")
OFF_SITE = [
    "//evil.example", "https://evil.example/x", "/\\evil.example", "/\\/evil.example", "\\\\evil.example",
    "javascript:alert(1)", "/\t/evil.example", "/\r\nSet-Cookie: x=1", "http:/evil.example", " //evil.example",
]


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    op = OpenIdProvider("northanc", CLIENT_SECRET).start()
    for account in (Account("sub-siteadmin", "siteadmin", ("northanc-admins",)), Account("sub-twin", "twin"),
                    Account("sub-ann", "ann", ("radiology",))):
        op.accounts[account.username] = account
    op.client.redirect_uris.add("http://localhost/login/oidc/callback")
    yield op
    op.stop()


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    server = start_directory(tmp_path_factory.mktemp("ldap") / "slapd", PEOPLE_IN_DIRECTORY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate, provider: OpenIdProvider,
         directory: Directory) -> Iterator[Site]:
    config = tomllib.loads(f"""
[oidc.hospital]
label = "Hospital"
issuer = "{provider.issuer}"
client_id = "northanc"
client_secret_file = "oidc_hospital"
scopes = ["openid", "profile", "groups"]
roles_claim = "groups"
[oidc.hospital.roles]
radiology = ["alpha:reader", "ghost:admin"]
[ldap.campus]
label = "Campus"
url = "{directory.ldaps_url}"
ca_file = "{directory.ca_file}"
user_dn = "uid={{username}},{PEOPLE}"
group_base = "{GROUPS}"
""")
    site = copy_site(portal_site, tmp_path_factory.mktemp("attacks") / "var", identity=parse_providers(**config))
    (site.archive.settings.secrets_dir / "oidc_hospital").write_text(CLIENT_SECRET + "\n")
    yield site
    site.archive.close()


@pytest.fixture(scope="module")
def app(site: Site) -> Flask:
    return create_app(site.archive.settings, site.archive)


def at(address: str, app: Flask) -> FlaskClient:
    """A browser at its own address: each test's wrong passwords count for it alone."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def csrf_of(client: FlaskClient) -> str:
    client.get("/login")
    with client.session_transaction() as session:
        return str(session["csrf_token"])


def ldap_log_in(client: FlaskClient, username: str, password: str, next_url: str = "/projects") -> TestResponse:
    return client.post("/login/ldap", data={"directory": "campus", "username": username, "password": password,
                                            "csrf_token": csrf_of(client), "next": next_url})


def callback_url(client: FlaskClient, who: str, next_url: str = "") -> str:
    """Through the provider's log-in, up to (not into) the callback the browser is sent to."""
    start = client.get("/login/oidc", query_string={"provider": "hospital", "next": next_url})
    assert start.status_code == 302, start.text
    answer = requests.post(start.headers["Location"], data={"provider_user": who}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    callback = urlsplit(answer.headers["Location"])
    return f"{callback.path}?{callback.query}"


def logged_in(client: FlaskClient) -> bool:
    return client.get("/api/v1/projects").status_code == 200


def origin(site: Site, username: str) -> AccountOrigin | None:
    with site.archive.sessions() as session:
        return session.scalar(select(User.origin).where(User.username == username))


# -- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", OFF_SITE)
def test_next_never_sends_a_user_off_the_site(app: Flask, target: str) -> None:
    client = at("10.1.0.1", app)
    after_oidc = client.get(callback_url(client, "ann", target))
    assert after_oidc.status_code == 302 and after_oidc.headers["Location"] == "/projects", after_oidc.headers
    after_ldap = ldap_log_in(at("10.1.0.2", app), "mallory", PASSWORDS["mallory"], target)
    assert after_ldap.status_code == 302 and after_ldap.headers["Location"] == "/projects"
    local = at("10.1.0.3", app)
    after_local = local.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf_of(local),
                                             "next": target})
    assert after_local.status_code == 302 and after_local.headers["Location"] == "/projects"


# -- the callback ----------------------------------------------------------------------------------


def test_a_callback_carried_to_another_browser_replayed_or_without_state_logs_nobody_in(app: Flask) -> None:
    victim, attacker = at("10.2.0.1", app), at("10.2.0.2", app)
    stolen = callback_url(victim, "ann")
    # The attacker's browser never began this log-in: no session, and the code is not redeemed.
    refused = attacker.get(stolen)
    assert refused.status_code == 400 and "did not start here" in refused.text
    assert not logged_in(attacker)
    assert victim.get(stolen).status_code == 302 and logged_in(victim)
    replayed = at("10.2.0.3", app)
    replayed.get("/login/oidc", query_string={"provider": "hospital"})
    assert replayed.get(stolen).status_code == 400 and not logged_in(replayed)  # another log-in's state
    assert victim.get(stolen).status_code == 400  # the same answer twice
    injected = at("10.2.0.4", app)
    injected.get("/login/oidc", query_string={"provider": "hospital"})
    code = dict(part.split("=", 1) for part in urlsplit(stolen).query.split("&"))["code"]
    assert injected.get("/login/oidc/callback", query_string={"code": code}).status_code == 400
    assert not logged_in(injected)


# -- forged ID tokens ----------------------------------------------------------------------------


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("forgery", [
    "alg none", "HS256 with the client secret", "HS256 with the public key", "kid and jku elsewhere",
    "no nonce", "another log-in's nonce", "issued in the future", "two audiences without azp",
])
def test_forged_id_tokens_are_refused(forgery: str) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "real"})
    provider = parse_providers(oidc={"op": {"issuer": "https://op.example", "client_id": "northanc",
                                            "client_secret_file": "s"}}).oidc[0]
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "https://op.example", "aud": "northanc", "sub": "s1", "nonce": "n1",
                              "iat": now, "exp": now + 300}
    header: dict[str, Any] = {"alg": "RS256", "kid": "real"}
    signer: Any = key
    if forgery == "alg none":
        token = f"{_segment({'alg': 'none'})}.{_segment(claims)}."
    else:
        if forgery.startswith("HS256"):
            secret = CLIENT_SECRET if "secret" in forgery else json.dumps(key.as_dict(private=False))
            header, signer = {"alg": "HS256", "kid": "real"}, OctKey.import_key(secret)
        elif forgery == "kid and jku elsewhere":
            signer = RSAKey.generate_key(2048, parameters={"kid": "mine"})
            header = {"alg": "RS256", "kid": "mine", "jku": "https://evil.example/jwks.json"}
        elif forgery == "no nonce":
            del claims["nonce"]
        elif forgery == "another log-in's nonce":
            claims["nonce"] = "n2"
        elif forgery == "issued in the future":
            claims["iat"] = now + 86400
        else:
            claims["aud"] = ["northanc", "other"]
        token = jwt.encode(header, claims, signer, algorithms=["HS256", "RS256"])
    with pytest.raises(oidc.InvalidIdToken):
        oidc.validate_id_token(token, KeySet([key]), provider, "n1")


# -- whose account --------------------------------------------------------------------------------


def test_a_provider_user_named_like_the_local_site_admin_gets_nothing(app: Flask, site: Site) -> None:
    through_oidc = at("10.3.0.1", app)
    answer = through_oidc.get(callback_url(through_oidc, "siteadmin"))
    assert answer.status_code == 403 and "belongs to another account" in answer.text
    through_ldap = at("10.3.0.2", app)
    answer = ldap_log_in(through_ldap, "siteadmin", PASSWORDS["siteadmin"])
    assert answer.status_code == 403 and "belongs to another account" in answer.text
    assert not logged_in(through_oidc) and not logged_in(through_ldap)
    assert origin(site, "siteadmin") is AccountOrigin.LOCAL


def test_two_sources_asserting_one_name_make_one_account(app: Flask, site: Site) -> None:
    assert ldap_log_in(at("10.4.0.1", app), "twin", PASSWORDS["twin"]).status_code == 302
    client = at("10.4.0.2", app)
    answer = client.get(callback_url(client, "twin"))
    assert answer.status_code == 403 and not logged_in(client)
    with site.archive.sessions() as session:
        twin = accounts.get_user(session, "twin")
        assert (twin.origin, twin.provider) == (AccountOrigin.LDAP, "campus")


def test_a_mapped_role_on_a_project_that_does_not_exist_creates_nothing(app: Flask, site: Site) -> None:
    client = at("10.5.0.1", app)
    assert client.get(callback_url(client, "ann")).status_code == 302
    with site.archive.sessions() as session:
        assert session.query(Project).filter_by(name="ghost").count() == 0
        assert {project for name, project, _role in accounts.list_roles(session) if name == "ann"} == {"alpha"}


# -- LDAP ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("username", "password"), [
    ("mallory", " "), ("mallory", "   "), ("*", PASSWORDS["mallory"]), ("mallory)(uid=*", PASSWORDS["mallory"]),
    ("mallory\\00", PASSWORDS["mallory"]), ("mallory\x00", PASSWORDS["mallory"]),
    ("mallory,ou=admins", PASSWORDS["mallory"]), ("m" * 5000, "x"), ("mаllory", PASSWORDS["mallory"]),  # Cyrillic а
    ("", PASSWORDS["mallory"]), ("", ""),
])
def test_injected_and_look_alike_names_bind_nobody(app: Flask, site: Site, username: str, password: str) -> None:
    client = at("10.6.0.1", app)
    with site.archive.sessions() as session:
        before = set(session.scalars(select(User.username)))
    answer = ldap_log_in(client, username, password)
    assert answer.status_code in (401, 429) and not logged_in(client)
    with site.archive.sessions() as session:
        assert set(session.scalars(select(User.username))) == before


def test_cross_site_ldap_form_is_refused(app: Flask) -> None:
    stranger = at("10.7.0.1", app)
    forged = stranger.post("/login/ldap", data={"directory": "campus", "username": "mallory",
                                                "password": PASSWORDS["mallory"], "next": "/projects"})
    assert forged.status_code == 403 and not logged_in(stranger)
    # A token from another browser's session is no better.
    other_token = csrf_of(at("10.7.0.2", app))
    forged = stranger.post("/login/ldap", data={"directory": "campus", "username": "mallory",
                                                "password": PASSWORDS["mallory"], "csrf_token": other_token})
    assert forged.status_code == 403 and not logged_in(stranger)


def test_spellings_of_one_name_share_one_throttle_across_ldap_and_local(app: Flask) -> None:
    # Each wrong password from its own address: only the account's count can stop the guessing.
    answers = [ldap_log_in(at(f"10.8.1.{n}", app), spelling, "not it").status_code
               for n, spelling in enumerate(["quitter", "Quitter", "QUITTER", "qUitter", "quItter", "quiTter"])]
    assert answers == [401] * 6
    # The sixth wrong guess blocked the name: any spelling from an address that failed is refused.
    again = at("10.8.1.5", app)
    assert ldap_log_in(again, "QuItTeR", PASSWORDS["quitter"]).status_code == 429
    local = again.post("/login", data={"username": "quitter", "password": "x", "csrf_token": csrf_of(again)})
    assert local.status_code == 429


def test_a_disabled_account_loses_its_session_and_tokens_at_once(app: Flask, site: Site) -> None:
    client = at("10.9.0.1", app)
    assert ldap_log_in(client, "mallory", PASSWORDS["mallory"]).status_code == 302
    with site.archive.unit_of_work() as (session, _journal):
        issued = accounts.create_token(session, accounts.get_user(session, "mallory"), "script")
    bearer = {"Authorization": f"Bearer {issued.secret}"}
    assert client.get("/api/v1/projects").status_code == 200
    assert app.test_client().get("/api/v1/projects", headers=bearer).status_code == 200
    with site.archive.unit_of_work() as (session, _journal):
        accounts.set_disabled(session, "mallory", True)
    assert client.get("/api/v1/projects").status_code == 401
    assert app.test_client().get("/api/v1/projects", headers=bearer).status_code == 401
    assert ldap_log_in(at("10.9.0.2", app), "mallory", PASSWORDS["mallory"]).status_code == 403
    with site.archive.unit_of_work() as (session, _journal):
        accounts.set_disabled(session, "mallory", False)


def test_secrets_never_reach_the_log(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = at("10.10.0.1", app)
    assert client.get(callback_url(client, "ann")).status_code == 302
    assert ldap_log_in(at("10.10.0.2", app), "mallory", PASSWORDS["mallory"]).status_code == 302
    ldap_log_in(at("10.10.0.3", app), "mallory", "a wrong password 91c2")
    logged = "\n".join(f"{record.getMessage()} {record.args}" for record in caplog.records
                       if not record.name.startswith(PROVIDER_SIDE_LOGGERS))
    assert logged, "nothing was logged: the check would pass vacuously"
    for secret in (CLIENT_SECRET, PASSWORDS["mallory"], "a wrong password 91c2"):
        assert secret not in logged
