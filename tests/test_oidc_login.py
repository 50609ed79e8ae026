"""Log-in through an OpenID Connect provider: the provider is testbed's Authlib server on a free port.

The flow's checks run through Flask's test client (the portal in this process, the provider in
a thread); one test walks it in Chromium against the portal under gunicorn.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from playwright.sync_api import Page, expect
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.archive import Archive
from nifti_archive.errors import ConfigError
from nifti_archive.identity import linking, oidc
from nifti_archive.identity.config import AccountPolicy, RoleGrant, RoleMapping, parse_providers
from nifti_archive.models import AccountOrigin, Role, User
from nifti_archive.settings import load_settings
from portal.app import create_app
from testbed.oidc_provider import Account, Fault, OpenIdProvider
from testbed.portal import Portal, start_portal
from testbed.ports import free_port
from tests.portal_site import Site, SiteTemplate, copy_site

CLIENT_SECRET = "s3cret-for-the-test-provider"
ACCOUNTS = (
    Account("sub-ann", "ann", ("radiology",)),
    Account("sub-lead", "lead", ("radiology", "imaging-leads")),
    Account("sub-boss", "boss", ("northanc-admins",)),
    Account("sub-dan", "dan"),
    Account("sub-editor", "editor"),  # a name a local account already has
    Account("sub-pre", "pre"),
    Account("sub-carla", "carla", ("imaging-leads",)),
    Account("sub-eve", "eve", ("radiology",)),
)


def _config(provider: OpenIdProvider) -> str:
    return f"""
[northanc.oidc.hospital]
label = "Hospital"
issuer = "{provider.issuer}"
client_id = "northanc"
client_secret_file = "oidc_hospital"
scopes = ["openid", "profile", "groups"]
roles_claim = "groups"

[northanc.oidc.hospital.roles]
radiology = "alpha:reader"
imaging-leads = ["alpha:admin", "beta:editor"]
northanc-admins = "site-admin"

[northanc.oidc.partner]
label = "Partner"
issuer = "{provider.issuer}"
client_id = "northanc"
client_secret_file = "oidc_hospital"
accounts = "link"

[northanc.oidc.offline]
label = "Offline"
issuer = "http://127.0.0.1:{free_port()}"
client_id = "northanc"
client_secret_file = "oidc_hospital"
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    op = OpenIdProvider("northanc", CLIENT_SECRET).start()
    op.accounts.update({account.username: account for account in ACCOUNTS})
    op.client.redirect_uris.add("http://localhost/login/oidc/callback")
    yield op
    op.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate, provider: OpenIdProvider) -> Iterator[Site]:
    var = tmp_path_factory.mktemp("oidc") / "var"
    config = _config(provider)
    # The in-process portal gets what the portal under gunicorn reads from the config file.
    site = copy_site(portal_site, var, identity=parse_providers(**tomllib.loads(config)["northanc"]))
    (var / "northanc.toml").write_text(config)
    (site.archive.settings.secrets_dir / "oidc_hospital").write_text(CLIENT_SECRET + "\n")
    yield site
    site.archive.close()


@pytest.fixture(scope="module")
def app(site: Site) -> Flask:
    return create_app(site.archive.settings, site.archive)


@pytest.fixture(scope="module")
def served(site: Site, provider: OpenIdProvider) -> Iterator[tuple[Portal, Site]]:
    portal = start_portal(site.archive.settings)
    provider.client.redirect_uris.add(f"{portal.url}/login/oidc/callback")
    yield portal, site
    portal.stop()


@pytest.fixture(autouse=True)
def no_fault(provider: OpenIdProvider) -> None:
    provider.fault = None


def through_provider(client: FlaskClient, who: str, provider: str = "hospital", next_url: str = "") -> TestResponse:
    """The browser's walk: to the provider, its log-in form, back to the callback; the callback's answer."""
    start = client.get("/login/oidc", query_string={"provider": provider, "next": next_url})
    assert start.status_code == 302, start.text
    answer = requests.post(start.headers["Location"], data={"provider_user": who}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    callback = urlsplit(answer.headers["Location"])
    return client.get(f"{callback.path}?{callback.query}")


def whoami(client: FlaskClient) -> str | None:
    page = client.get("/projects")
    match = re.search(r'href="/account/tokens">([^<]+)<', page.text)
    return match.group(1).strip() if page.status_code == 200 and match else None


def user(site: Site, username: str) -> User:
    with site.archive.sessions() as session:
        return accounts.get_user(session, username)


def roles_of(site: Site, username: str) -> dict[str, Role]:
    with site.archive.sessions() as session:
        return {name: role for name_, name, role in accounts.list_roles(session) if name_ == username}


# Pure logic: settings, role mapping, ID token checks.

def test_provider_settings_parse_into_typed_values() -> None:
    providers = parse_providers(oidc={"h": {
        "issuer": "https://login.example.org/realms/x/", "client_id": "c", "client_secret_file": "oidc_h",
        "roles_claim": "groups", "roles": {"rad": "alpha:reader", "adm": ["site-admin", "beta:admin"]},
        "accounts": "link",
    }})
    hospital = providers.oidc_named("h")
    assert hospital is not None
    assert hospital.issuer == "https://login.example.org/realms/x"
    assert hospital.accounts is AccountPolicy.LINK
    assert hospital.scopes == ("openid", "profile", "email")
    assert hospital.roles.grants["adm"] == (RoleGrant(site_admin=True), RoleGrant(project="beta", role=Role.ADMIN))


@pytest.mark.parametrize(("table", "message"), [
    ({"client_id": "c", "client_secret_file": "s"}, "[northanc.oidc.h] issuer: missing"),
    ({"issuer": "http://login.example.org", "client_id": "c", "client_secret_file": "s"}, "must be https://"),
    ({"issuer": "https://x.org", "client_id": "c", "client_secret_file": "../etc/passwd"}, "a file name in <var>/secrets"),
    ({"issuer": "https://x.org", "client_id": "c", "client_secret_file": "s", "scopes": ["email"]}, "including 'openid'"),
    ({"issuer": "https://x.org", "client_id": "c", "client_secret_file": "s", "roles": {"a": "alpha:reader"}},
     "needs roles_claim"),
    ({"issuer": "https://x.org", "client_id": "c", "client_secret_file": "s", "roles_claim": "g",
      "roles": {"a": "alpha:boss"}}, "neither 'site-admin' nor '<project>:<role>'"),
    ({"issuer": "https://x.org", "client_id": "c", "client_secret_file": "s", "accounts": "maybe"},
     "accounts: must be one of create, link"),
    ({"issuer": "https://x.org", "client_id": "c", "client_secret_file": "s", "clientid": "c"}, "unknown key(s) ['clientid']"),
])
def test_a_wrong_provider_setting_is_named_precisely(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_providers(oidc={"h": table})
    assert message in str(caught.value)


def test_the_config_file_names_the_faulty_table(tmp_path: Path) -> None:
    (tmp_path / "northanc.toml").write_text('[northanc.oidc.Bad-Name]\nissuer = "https://x.org"\n')
    with pytest.raises(ConfigError, match=r"northanc.toml: \[northanc.oidc.Bad-Name\]: a provider's name"):
        load_settings({"NORTHANC_VAR": str(tmp_path)})


def test_claims_map_to_the_highest_role_per_project_and_to_site_admin() -> None:
    mapping = RoleMapping({
        "rad": (RoleGrant(project="alpha", role=Role.READER),),
        "lead": (RoleGrant(project="alpha", role=Role.ADMIN), RoleGrant(project="beta", role=Role.EDITOR)),
        "adm": (RoleGrant(site_admin=True),),
    })
    plan = linking.plan_roles(mapping, ["rad", "lead", "unmapped"])
    assert plan == linking.RolePlan(False, {"alpha": Role.ADMIN, "beta": Role.EDITOR})
    assert linking.plan_roles(mapping, ["adm"]) == linking.RolePlan(True, {"alpha": None, "beta": None})
    assert linking.plan_roles(RoleMapping(), ["adm"]) == linking.RolePlan(None, {})


def _token(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": "https://op.example", "aud": "northanc", "sub": "s1", "nonce": "n1", "iat": now, "exp": now + 300}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, {**base, **claims}, key)


@pytest.mark.parametrize(("claims", "refused"), [
    ({}, False),
    ({"aud": ["northanc", "other"], "azp": "northanc"}, False),
    ({"aud": "other"}, True),
    ({"aud": ["northanc", "other"]}, True),
    ({"iss": "https://evil.example"}, True),
    ({"exp": int(time.time()) - 3600}, True),
    ({"nonce": "replayed"}, True),
    ({"sub": None}, True),
])
def test_id_token_checks(claims: dict[str, Any], refused: bool) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    settings = parse_providers(oidc={"op": {"issuer": "https://op.example", "client_id": "northanc", "client_secret_file": "s"}})
    provider = settings.oidc[0]
    keys = KeySet([key])
    token = _token(key, **{k: v for k, v in claims.items() if v is not None})
    if claims.get("sub", "") is None:
        token = jwt.encode({"alg": "RS256", "kid": "k"}, {"iss": "https://op.example", "aud": "northanc", "nonce": "n1",
                                                          "exp": int(time.time()) + 300}, key)
    if refused:
        with pytest.raises(oidc.InvalidIdToken):
            oidc.validate_id_token(token, keys, provider, "n1")
    else:
        assert oidc.validate_id_token(token, keys, provider, "n1")["sub"] == "s1"
    foreign = RSAKey.generate_key(2048, parameters={"kid": "k"})
    with pytest.raises(oidc.InvalidIdToken):
        oidc.validate_id_token(_token(foreign), keys, provider, "n1")


# The flow against the provider.

def test_log_in_creates_the_account_with_mapped_roles(app: Flask, site: Site) -> None:
    client = app.test_client()
    answer = through_provider(client, "lead", next_url="/p/alpha")
    assert answer.status_code == 302 and answer.headers["Location"] == "/p/alpha"
    assert whoami(client) == "lead"
    made = user(site, "lead")
    assert (made.origin, made.provider, made.is_site_admin) == (AccountOrigin.OIDC, "hospital", False)
    assert roles_of(site, "lead") == {"alpha": Role.ADMIN, "beta": Role.EDITOR}
    assert client.get("/p/beta").status_code == 200


def test_roles_follow_the_claims_at_every_log_in(app: Flask, site: Site, provider: OpenIdProvider) -> None:
    through_provider(app.test_client(), "carla")
    assert roles_of(site, "carla") == {"alpha": Role.ADMIN, "beta": Role.EDITOR}
    provider.accounts["carla"] = Account("sub-carla", "carla", ("radiology",))
    through_provider(app.test_client(), "carla")
    assert roles_of(site, "carla") == {"alpha": Role.READER}
    through_provider(app.test_client(), "boss")
    assert user(site, "boss").is_site_admin


def test_a_local_name_is_not_taken_over(app: Flask, site: Site) -> None:
    answer = through_provider(app.test_client(), "editor")
    assert answer.status_code == 403
    assert "belongs to another account" in answer.text
    assert user(site, "editor").origin is AccountOrigin.LOCAL


def test_link_only_provider_needs_a_pre_created_account(app: Flask, site: Site) -> None:
    client = app.test_client()
    refused = through_provider(client, "pre", provider="partner")
    assert refused.status_code == 403 and "ask a site admin to create one" in refused.text
    with site.archive.unit_of_work() as (session, _journal):
        linking.precreate(session, "pre", AccountOrigin.OIDC, "partner")
    assert through_provider(client, "pre", provider="partner").status_code == 302
    assert whoami(client) == "pre"
    assert user(site, "pre").external_id is not None


def test_an_account_follows_the_subject_not_the_user_name(app: Flask, site: Site, provider: OpenIdProvider) -> None:
    with site.archive.unit_of_work() as (session, _journal):
        linking.precreate(session, "pat", AccountOrigin.OIDC, "partner")
    provider.accounts["pat"] = Account("sub-pat", "pat")
    client = app.test_client()
    assert through_provider(client, "pat", provider="partner").status_code == 302 and whoami(client) == "pat"
    # Pat's user name changes at the provider; the subject does not.
    provider.accounts["pat-renamed"] = Account("sub-pat", "pat-renamed")
    del provider.accounts["pat"]
    renamed = app.test_client()
    assert through_provider(renamed, "pat-renamed", provider="partner").status_code == 302
    assert whoami(renamed) == "pat"
    # Someone else takes the name pat freed, through either provider entry: pat's account stays shut to them.
    provider.accounts["pat"] = Account("sub-usurper", "pat")
    for entry, message in (("partner", "ask a site admin to create one"), ("hospital", "belongs to another account")):
        usurper = app.test_client()
        refused = through_provider(usurper, "pat", provider=entry)
        assert refused.status_code == 403 and message in refused.text
        assert whoami(usurper) is None


def test_one_subject_of_one_issuer_is_one_account_whatever_the_entry(app: Flask, site: Site) -> None:
    # "hospital" and "partner" are two entries for the same issuer: eve is one person at both.
    assert through_provider(app.test_client(), "eve").status_code == 302
    client = app.test_client()
    assert through_provider(client, "eve", provider="partner").status_code == 302
    assert whoami(client) == "eve"


def test_the_same_subject_at_another_issuer_is_someone_else(site: Site, provider: OpenIdProvider) -> None:
    first = linking.ExternalIdentity(AccountOrigin.OIDC, "moving", "sub-42", "maria", issuer=provider.issuer)
    # The entry is pointed at another issuer later: its subjects are another population.
    elsewhere = replace(first, username="mario", issuer="https://login.elsewhere.example/realms/other")
    with site.archive.unit_of_work() as (session, _journal):
        assert linking.sign_in(session, first, AccountPolicy.CREATE, RoleMapping()).username == "maria"
    with site.archive.unit_of_work() as (session, _journal):
        assert linking.sign_in(session, elsewhere, AccountPolicy.CREATE, RoleMapping()).username == "mario"
    with site.archive.unit_of_work() as (session, _journal):
        assert linking.sign_in(session, replace(first, username="maria-renamed"), AccountPolicy.CREATE,
                               RoleMapping()).username == "maria"


@pytest.mark.parametrize("fault", list(Fault))
def test_a_bad_id_token_logs_nobody_in(app: Flask, provider: OpenIdProvider, fault: Fault) -> None:
    provider.fault = fault
    client = app.test_client()
    answer = through_provider(client, "dan")
    assert answer.status_code == 400
    assert "Hospital: the log-in could not be verified" in answer.text
    assert whoami(client) is None


def test_a_callback_with_a_wrong_state_is_refused_and_used_up(app: Flask) -> None:
    client = app.test_client()
    start = client.get("/login/oidc", query_string={"provider": "hospital"})
    answer = requests.post(start.headers["Location"], data={"provider_user": "dan"}, allow_redirects=False, timeout=10)
    callback = urlsplit(answer.headers["Location"])
    forged = re.sub(r"state=[^&]+", "state=forged", callback.query)
    refused = client.get(f"{callback.path}?{forged}")
    assert refused.status_code == 400 and "did not start here" in refused.text
    assert whoami(client) is None
    # The right state after a wrong one: the pending log-in was spent.
    assert client.get(f"{callback.path}?{callback.query}").status_code == 400
    assert whoami(client) is None


def test_a_provider_that_is_down_is_named_and_local_log_in_still_works(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/login")
    assert "Log in with Offline" in page.text and 'name="password"' in page.text
    answer = client.get("/login/oidc", query_string={"provider": "offline"})
    assert answer.status_code == 503
    assert "Offline: the log-in provider cannot be reached just now" in answer.text
    assert client.get("/login/oidc", query_string={"provider": "nowhere"}).status_code == 400
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    local = client.post("/login", data={"username": "viewer", "password": "correct horse battery", "csrf_token": csrf})
    assert local.status_code == 302


def test_a_site_without_the_local_form_offers_only_its_providers(site: Site) -> None:
    archive = Archive(replace(site.archive.settings, local_login=False))
    client = create_app(archive.settings, archive).test_client()
    page = client.get("/login")
    assert 'id="local-login"' not in page.text and "Log in with Hospital" in page.text
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    refused = client.post("/login", data={"username": "viewer", "password": "correct horse battery", "csrf_token": csrf})
    assert refused.status_code == 403 and "log in through their institution only" in refused.text
    assert whoami(client) is None
    # Nor through XNAT's door, where scripts send the password with every request; a token still works.
    assert client.get("/data/projects", auth=("viewer", "correct horse battery")).status_code == 401
    assert client.put("/data/services/auth", data={"username": "viewer", "password": "correct horse battery"}).status_code == 401
    with archive.unit_of_work() as (session, _journal):
        issued = accounts.create_token(session, accounts.get_user(session, "viewer"), "script")
    assert client.get("/data/projects", auth=("viewer", issued.secret)).status_code == 200
    archive.close()


def test_a_disabled_account_stays_out_but_its_tokens_die_with_it(app: Flask, site: Site) -> None:
    client = app.test_client()
    through_provider(client, "ann")
    with site.archive.unit_of_work() as (session, _journal):
        issued = accounts.create_token(session, accounts.get_user(session, "ann"), "script")
    headers = {"Authorization": f"Bearer {issued.secret}"}
    assert client.get("/api/v1/projects", headers=headers).status_code == 200
    with site.archive.unit_of_work() as (session, _journal):
        accounts.set_disabled(session, "ann", True)
    answer = through_provider(app.test_client(), "ann")
    assert answer.status_code == 403 and "this account is disabled" in answer.text
    assert app.test_client().get("/api/v1/projects", headers=headers).status_code == 401


def test_an_institutional_account_has_no_local_password(app: Flask) -> None:
    client = app.test_client()
    through_provider(client, "dan")
    other = app.test_client()
    other.get("/login")
    with other.session_transaction() as session:
        csrf = session["csrf_token"]
    for password in ("", "!institutional:", "x"):
        assert other.post("/login", data={"username": "dan", "password": password, "csrf_token": csrf}).status_code == 401


def test_log_in_and_out_in_the_browser(page: Page, provider: OpenIdProvider, served: tuple[Portal, Site]) -> None:
    page.goto("/p/alpha")
    page.click("text=Log in with Hospital")
    expect(page.locator("h1")).to_have_text("Test provider log-in")
    page.fill("input[name=provider_user]", "eve")
    page.click("button[type=submit]")
    expect(page.locator("nav a[href='/account/tokens']")).to_have_text("eve")
    expect(page).to_have_url(re.compile(r"/p/alpha$"))
    page.click("text=Log out")
    expect(page.locator("h1")).to_have_text("Log in")
    assert provider.end_session_calls[-1]["client_id"] == "northanc"
    assert provider.end_session_calls[-1]["post_logout_redirect_uri"].endswith("/login")
