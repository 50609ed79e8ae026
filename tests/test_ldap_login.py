"""Log-in against an LDAP directory: Debian's slapd started by testbed, over LDAPS and StartTLS."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.archive import Archive
from nifti_archive.errors import ConfigError
from nifti_archive.identity import ldap
from nifti_archive.identity.config import IdentityProviders, LdapDirectory, LdapSecurity, parse_providers
from nifti_archive.models import AccountOrigin, Role
from portal.app import create_app
from testbed.ldap_directory import GROUPS, PEOPLE, Directory, Person, start_directory
from testbed.ports import free_port
from tests.conftest import Nora
from tests.portal_site import Site, SiteTemplate, copy_site

PEOPLE_IN_DIRECTORY = (
    Person("ann", "ann's directory password", ("radiology",)),
    Person("lead", "lead's directory password", ("radiology", "imaging-leads")),
    Person("dora", "dora's directory password"),
    Person("guess", "guess's directory password"),
    Person("gone", "gone's directory password"),
)
PASSWORDS = {person.uid: person.password for person in PEOPLE_IN_DIRECTORY}
USER_DN = f"uid={{username}},{PEOPLE}"


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    server = start_directory(tmp_path_factory.mktemp("ldap") / "slapd", PEOPLE_IN_DIRECTORY)
    yield server
    server.stop()


def _providers(directory: Directory) -> IdentityProviders:
    common = {"ca_file": str(directory.ca_file), "user_dn": USER_DN, "group_base": GROUPS}
    return parse_providers(ldap={
        "campus": {**common, "label": "Campus", "url": directory.ldaps_url,
                   "roles": {"radiology": "alpha:reader", "imaging-leads": ["alpha:admin", "site-admin"]}},
        "starttls": {**common, "label": "Campus StartTLS", "url": directory.ldap_url, "starttls": True},
        "offline": {"label": "Offline", "url": f"ldaps://127.0.0.1:{free_port()}", "user_dn": USER_DN},
    })


@pytest.fixture(scope="module")
def providers(directory: Directory) -> IdentityProviders:
    return _providers(directory)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate, providers: IdentityProviders) -> Iterator[Site]:
    site = copy_site(portal_site, tmp_path_factory.mktemp("ldap-site") / "var", identity=providers)
    yield site
    site.archive.close()


@pytest.fixture(scope="module")
def app(site: Site) -> Flask:
    return create_app(site.archive.settings, site.archive)


def campus(providers: IdentityProviders, name: str = "campus") -> LdapDirectory:
    found = providers.ldap_named(name)
    assert found is not None
    return found


def ldap_log_in(client: FlaskClient, username: str, password: str, directory: str = "campus") -> TestResponse:
    client.get("/login")
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    return client.post("/login/ldap", data={"directory": directory, "username": username, "password": password,
                                            "csrf_token": csrf, "next": "/projects"})


# Pure logic.

def test_user_names_are_escaped_in_dns_and_filters() -> None:
    settings = parse_providers(ldap={"d": {"url": "ldaps://ldap.example.org", "user_dn": USER_DN}})
    assert ldap.user_dn(settings.ldap[0], "a,b=c+d") == f"uid=a\\,b\\=c\\+d,{PEOPLE}"
    escaped = "uid=x\\2a\\29\\28cn=\\2a\\29,o=y"
    assert ldap.group_filter("uid=x*)(cn=*),o=y") == f"(|(member={escaped})(uniqueMember={escaped}))"


@pytest.mark.parametrize(("table", "message"), [
    ({"url": "ldap://ldap.example.org", "user_dn": USER_DN}, "needs starttls = true"),
    ({"url": "ldaps://ldap.example.org", "user_dn": USER_DN, "starttls": True}, "ldaps:// is TLS already"),
    ({"url": "https://ldap.example.org", "user_dn": USER_DN}, "must be a ldaps:// or ldap:// URL"),
    ({"url": "ldaps://ldap.example.org", "user_dn": "ou=people,dc=x"}, "must hold one '{username}'"),
    ({"url": "ldaps://ldap.example.org", "user_dn": USER_DN, "ca_file": "/nonexistent/ca.pem"}, "ca_file: no such file"),
    ({"url": "ldaps://ldap.example.org", "user_dn": USER_DN, "roles": {"g": "alpha:reader"}}, "needs group_base"),
    ({"url": "ldaps://ldap.example.org", "user_dn": USER_DN, "timeout_seconds": 0}, "at least 1"),
])
def test_a_wrong_directory_setting_is_named_precisely(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_providers(ldap={"d": table})
    assert message in str(caught.value)
    assert "[northanc.ldap.d]" in str(caught.value)


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the command-line test below reads accounts, not the database's dialect."""
    shutil.copyfile(sqlite_template, tmp_path / "archive.sqlite")
    return f"sqlite:///{tmp_path / 'archive.sqlite'}"


def test_nora_admin_user_says_where_accounts_come_from(nora_in_process: Nora, archive: Archive) -> None:
    config = f'[northanc.ldap.campus]\nurl = "ldaps://ldap.example.org"\nuser_dn = "{USER_DN}"\n'
    (archive.settings.var_dir / "northanc.toml").write_text(config)
    assert nora_in_process("--admin", "user", "add", "local-one").returncode == 0
    made = nora_in_process("--admin", "user", "add", "carol", "--provider", "campus")
    assert made.stdout == "created user carol for ldap:campus; it is linked at the first log-in there\n"
    assert "no provider 'elsewhere' in the settings; known: campus" in nora_in_process(
        "--admin", "user", "add", "dave", "--provider", "elsewhere").stderr
    listed = nora_in_process("--admin", "user", "list").stdout.splitlines()
    assert "carol\tldap:campus\t" in listed and "local-one\tlocal\t" in listed
    shown = nora_in_process("--admin", "user", "show", "carol").stdout
    assert "origin:\tldap:campus\n" in shown and "external id:\t(not linked yet)\n" in shown
    refused = nora_in_process("--admin", "user", "passwd", "carol")
    assert "'carol' logs in through campus (ldap); it has no password here" in refused.stderr


# Against slapd.

@pytest.mark.parametrize("name", ["campus", "starttls"])
def test_bind_over_ldaps_and_starttls(providers: IdentityProviders, name: str) -> None:
    directory = campus(providers, name)
    assert directory.security is (LdapSecurity.LDAPS if name == "campus" else LdapSecurity.STARTTLS)
    identity = ldap.authenticate(directory, "lead", PASSWORDS["lead"])
    assert identity is not None
    assert (identity.origin, identity.external_id, identity.username) == (AccountOrigin.LDAP, f"uid=lead,{PEOPLE}", "lead")
    assert {"radiology", "imaging-leads"} <= identity.role_values
    # The directory's spelling of the name, not the one typed.
    typed = ldap.authenticate(directory, "LEAD", PASSWORDS["lead"])
    assert typed is not None and typed.username == "lead"


@pytest.mark.parametrize(("username", "password"), [
    ("ann", "wrong"), ("nobody", "wrong"), ("ann", ""),
    ("*", PASSWORDS["ann"]), ("ann)(uid=*", PASSWORDS["ann"]), ("ann,ou=people", PASSWORDS["ann"]),
])
def test_wrong_unknown_empty_and_injected_names_bind_nobody(providers: IdentityProviders, username: str, password: str) -> None:
    assert ldap.authenticate(campus(providers), username, password) is None


def test_a_certificate_from_another_ca_is_refused(providers: IdentityProviders) -> None:
    # The system's CAs, which never signed the test directory's certificate.
    for name in ("campus", "starttls"):
        with pytest.raises(ldap.DirectoryUnavailable):
            ldap.authenticate(replace(campus(providers, name), ca_file=None), "ann", PASSWORDS["ann"])


def test_log_in_creates_the_account_with_group_roles(app: Flask, site: Site) -> None:
    client = app.test_client()
    answer = ldap_log_in(client, "lead", PASSWORDS["lead"])
    assert answer.status_code == 302 and answer.headers["Location"] == "/projects"
    assert client.get("/p/alpha/members").status_code == 200
    with site.archive.sessions() as session:
        user = accounts.get_user(session, "lead")
        assert (user.origin, user.provider, user.external_id) == (AccountOrigin.LDAP, "campus", f"uid=lead,{PEOPLE}")
        assert user.is_site_admin
        assert [(project, role) for name, project, role in accounts.list_roles(session) if name == "lead"] == [("alpha", Role.ADMIN)]
    users_page = client.get("/admin/users").text
    row = re.search(r"<tr><td>lead</td>.*?</tr>", users_page, re.S)
    assert row is not None and '<td class="origin">ldap:campus</td>' in row.group(0)
    assert "Reset password" not in row.group(0), "a directory's account has no password here to reset"


def test_wrong_password_and_unknown_user_answer_alike_and_are_throttled(app: Flask) -> None:
    client = app.test_client()
    wrong = ldap_log_in(client, "guess", "not it")
    unknown = ldap_log_in(client, "nobody-here", "not it")
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong user name or password" in wrong.text and "wrong user name or password" in unknown.text
    answers = [ldap_log_in(client, "guess", f"try {n}").status_code for n in range(6)]
    assert answers[-1] == 429
    throttled = ldap_log_in(client, "guess", PASSWORDS["guess"])
    assert throttled.status_code == 429 and "too many wrong passwords" in throttled.text
    assert int(throttled.headers["Retry-After"]) > 0


def test_a_directory_that_is_down_is_named_and_local_log_in_still_works(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/login")
    assert "Campus StartTLS" in page.text and 'id="local-login"' in page.text
    answer = ldap_log_in(client, "ann", PASSWORDS["ann"], directory="offline")
    assert answer.status_code == 503 and "the directory Offline cannot be reached just now" in answer.text
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    assert client.post("/login", data={"username": "viewer", "password": "correct horse battery",
                                       "csrf_token": csrf}).status_code == 302


def test_a_disabled_account_is_refused_whatever_the_directory_says(app: Flask, site: Site) -> None:
    assert ldap_log_in(app.test_client(), "gone", PASSWORDS["gone"]).status_code == 302
    with site.archive.unit_of_work() as (session, _journal):
        accounts.set_disabled(session, "gone", True)
    answer = ldap_log_in(app.test_client(), "gone", PASSWORDS["gone"])
    assert answer.status_code == 403 and "this account is disabled" in answer.text


def test_api_tokens_work_for_directory_accounts(app: Flask, site: Site) -> None:
    client = app.test_client()
    assert ldap_log_in(client, "dora", PASSWORDS["dora"], directory="starttls").status_code == 302
    with site.archive.unit_of_work() as (session, _journal):
        issued = accounts.create_token(session, accounts.get_user(session, "dora"), "script")
    answer = app.test_client().get("/api/v1/projects", headers={"Authorization": f"Bearer {issued.secret}"})
    assert answer.status_code == 200
