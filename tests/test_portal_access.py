"""Who may call what: the access decision as a plain function, then every route as every caller.

The matrix below is the specification: each route's minimum right, written out here rather
than read from the code, so that a route added without a rule, or with a weaker one, fails.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from nifti_archive.archive import get_project
from nifti_archive.models import Role, Study
from portal.access import ANONYMOUS, Caller, Outcome, Rule, Scope, decide
from portal.app import create_app
from portal.xnat.ids import Level, accession
from tests.portal_site import PASSWORD, ROLES, Site, build_site, marker_set, site_archive

# (rule, method) -> who may: "public", "user" (any logged-in user), "site admin", or a role on the project.
MATRIX = {
    ("/", "GET"): "public",
    ("/", "POST"): "public",
    ("/login", "GET"): "public",
    ("/login", "POST"): "public",
    ("/logout", "POST"): "public",
    ("/login/oidc", "GET"): "public",
    ("/login/oidc/callback", "GET"): "public",
    ("/login/ldap", "POST"): "public",
    ("/vendor/niivue.js", "GET"): "public",
    ("/api/v1/openapi.json", "GET"): "public",
    ("/oauth/authorize", "GET"): "user",
    ("/oauth/token", "POST"): "public",
    ("/oauth/userinfo", "GET"): "public",
    ("/projects", "GET"): "user",
    ("/account/password", "GET"): "user",
    ("/account/password", "POST"): "user",
    ("/account/tokens", "GET"): "user",
    ("/account/tokens", "POST"): "user",
    ("/account/tokens/<int:token_id>/revoke", "POST"): "user",
    ("/account/switch", "GET"): "user",
    ("/account/switch", "POST"): "user",
    ("/api/v1/projects", "GET"): "user",
    ("/api/v1/job-definitions", "GET"): "user",
    ("/api/v1/ct-windows", "GET"): "user",
    ("/admin/users", "GET"): "site admin",
    ("/admin/users", "POST"): "site admin",
    ("/admin/users/<username>/reset", "POST"): "site admin",
    ("/admin/users/<username>/disabled", "POST"): "site admin",
    ("/admin/projects", "POST"): "site admin",
    ("/p/<project>", "GET"): "viewer",
    ("/p/<project>/viewer", "GET"): "viewer",
    ("/p/<project>/batchtool", "GET"): "viewer",
    ("/p/<project>/gridstats", "GET"): "viewer",
    ("/p/<project>/upload", "GET"): "editor",
    ("/p/<project>/members", "GET"): "admin",
    ("/p/<project>/members", "POST"): "admin",
    ("/api/v1/projects/<project>", "GET"): "viewer",
    ("/api/v1/projects/<project>/subjects", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies", "GET"): "viewer",
    ("/api/v1/projects/<project>/bids.zip", "GET"): "editor",
    ("/api/v1/projects/<project>/studies/<int:study_id>", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/autoload", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/files", "POST"): "editor",
    ("/api/v1/projects/<project>/select", "GET"): "viewer",
    ("/api/v1/projects/<project>/analyses", "GET"): "viewer",
    ("/api/v1/projects/<project>/analyses", "POST"): "editor",
    ("/api/v1/projects/<project>/notebooks", "GET"): "viewer",
    ("/api/v1/projects/<project>/notebooks", "POST"): "viewer",
    ("/api/v1/projects/<project>/notebooks", "DELETE"): "viewer",
    ("/api/v1/projects/<project>/runs/<int:run_id>/notebook", "POST"): "editor",
    ("/p/<project>/notebooks", "GET"): "viewer",
    ("/api/v1/projects/<project>/conversions", "GET"): "viewer",
    ("/api/v1/projects/<project>/conversions/<int:request_id>/release", "POST"): "admin",
    ("/api/v1/projects/<project>/conversions/<int:request_id>/discard", "POST"): "admin",
    ("/p/<project>/conversions", "GET"): "viewer",
    ("/api/v1/projects/<project>/tags", "POST"): "editor",
    ("/api/v1/projects/<project>/import", "POST"): "editor",
    ("/api/v1/files/<int:file_id>", "GET"): "viewer",
    ("/api/v1/files/<int:file_id>/content", "GET"): "viewer",
    ("/api/v1/projects/<project>/batches", "GET"): "viewer",
    ("/api/v1/projects/<project>/batches/<name>", "GET"): "viewer",
    ("/api/v1/projects/<project>/batches/<name>", "PUT"): "editor",
    ("/api/v1/projects/<project>/batches/<name>", "DELETE"): "editor",
    ("/api/v1/projects/<project>/batches/<name>/rename", "POST"): "editor",
    ("/api/v1/projects/<project>/batch-validations", "POST"): "viewer",
    ("/api/v1/projects/<project>/launches", "POST"): "editor",
    ("/api/v1/projects/<project>/runs", "GET"): "viewer",
    ("/api/v1/projects/<project>/runs/<int:run_id>/log", "GET"): "viewer",
    ("/api/v1/projects/<project>/runs/cancel", "POST"): "editor",
    ("/api/v1/projects/<project>/runs/rerun", "POST"): "editor",
    ("/api/v1/projects/<project>/presets", "GET"): "viewer",
    ("/api/v1/projects/<project>/presets/<name>", "PUT"): "editor",
    ("/api/v1/projects/<project>/links", "POST"): "viewer",
    ("/api/v1/projects/<project>/links/<key>", "GET"): "viewer",
    ("/api/v1/pacs", "GET"): "user",
    ("/api/v1/pacs", "POST"): "site admin",
    ("/api/v1/pacs/<name>", "PUT"): "site admin",
    ("/api/v1/pacs/<name>", "DELETE"): "site admin",
    ("/api/v1/pacs/<name>/echo", "POST"): "site admin",
    ("/admin/pacs", "GET"): "site admin",
    ("/p/<project>/pacs", "GET"): "editor",
    ("/p/<project>/pulls", "GET"): "viewer",
    ("/api/v1/projects/<project>/pacs/<peer>/query", "POST"): "editor",
    ("/api/v1/projects/<project>/pacs/<peer>/studies/<study_uid>/series", "GET"): "editor",
    ("/api/v1/projects/<project>/pacs/<peer>/reveal", "POST"): "editor",
    ("/api/v1/projects/<project>/pulls", "GET"): "viewer",
    ("/api/v1/projects/<project>/pulls", "POST"): "editor",
    ("/api/v1/projects/<project>/pulls/<int:cohort_id>", "GET"): "viewer",
    ("/api/v1/projects/<project>/pulls/<int:cohort_id>/report", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/rois", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/rois", "POST"): "editor",
    ("/api/v1/rois/<int:file_id>", "GET"): "viewer",
    ("/api/v1/rois/<int:file_id>", "DELETE"): "editor",
    ("/api/v1/rois/<int:file_id>/operations", "POST"): "editor",
    ("/api/v1/rois/<int:file_id>/seg", "POST"): "editor",
    ("/api/v1/rois/<int:file_id>/send", "POST"): "editor",
    ("/api/v1/tracts/<int:file_id>/selection", "POST"): "viewer",
    ("/api/v1/tracts/<int:file_id>/selections", "POST"): "editor",
    ("/api/v1/tracts/<int:file_id>/density", "POST"): "editor",
    ("/api/v1/projects/<project>/studies/<int:study_id>/navigation/apply", "POST"): "editor",
    ("/api/v1/projects/<project>/studies/<int:study_id>/navigation/preview", "POST"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/roi-statistics", "POST"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/rois/agreement", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/rois/consensus", "POST"): "editor",
    ("/api/v1/projects/<project>/studies/<int:study_id>/markers", "GET"): "viewer",
    ("/api/v1/projects/<project>/studies/<int:study_id>/markers", "POST"): "editor",
    ("/api/v1/markers/<int:set_id>", "PUT"): "editor",
    ("/api/v1/markers/<int:set_id>", "DELETE"): "editor",
    ("/dicom-web/studies", "GET"): "user",
    ("/dicom-web/series", "GET"): "user",
    ("/dicom-web/instances", "GET"): "user",
    ("/dicom-web/studies", "POST"): "user",
    ("/dicom-web/studies/<study>", "GET"): "viewer",
    ("/dicom-web/studies/<study>", "POST"): "editor",
    ("/dicom-web/studies/<study>/series", "GET"): "viewer",
    ("/dicom-web/studies/<study>/instances", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances", "GET"): "viewer",
    ("/dicom-web/studies/<study>/metadata", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/metadata", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances/<instance>/metadata", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances/<instance>", "GET"): "viewer",
    ("/dicom-web/studies/<study>/rendered", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/rendered", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances/<instance>/rendered", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances/<instance>/frames/<frames>", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances/<instance>/frames/<frames>/rendered", "GET"): "viewer",
    ("/dicom-web/studies/<study>/series/<series>/instances/<instance>/bulk/<path:bulk>", "GET"): "viewer",
    ("/ohif/", "GET"): "user",
    ("/ohif/app-config.js", "GET"): "user",
    ("/ohif/<path:name>", "GET"): "user",
    ("/p/<project>/ohif", "GET"): "viewer",
    ("/api/v1/projects/<project>/assistant", "GET"): "editor",
    ("/api/v1/projects/<project>/files/<int:file_id>/assistant/<tool>", "POST"): "editor",
    ("/api/v1/projects/<project>/files/<int:file_id>/assistant/model", "POST"): "editor",
    ("/data/JSESSION", "GET"): "user",
    ("/data/JSESSION", "DELETE"): "public",
    ("/data/auth", "GET"): "user",
    ("/data/services/auth", "PUT"): "public",
    ("/data/services/tokens/issue", "GET"): "user",
    ("/data/version", "GET"): "public",
    ("/data/search/elements", "GET"): "user",
    ("/xapi/siteConfig/buildInfo", "GET"): "public",
    ("/xapi/access/projects", "GET"): "user",
    ("/xapi/schemas", "GET"): "public",
    ("/xapi/schemas/<name>", "GET"): "public",
    ("/data/projects", "GET"): "user",
    ("/data/experiments", "GET"): "user",
    ("/data/projects/<project>", "GET"): "viewer",
    ("/data/projects/<project>/subjects", "GET"): "viewer",
    ("/data/projects/<project>/experiments", "GET"): "viewer",
    ("/data/projects/<project>/subjects/<subject>", "GET"): "viewer",
    ("/data/projects/<project>/subjects/<subject>", "PUT"): "editor",
    ("/data/projects/<project>/subjects/<subject>/experiments", "GET"): "viewer",
    ("/data/subjects/<subject>", "GET"): "viewer",
    ("/p/<project>/readings", "GET"): "reader",
    ("/p/<project>/readings/forms/<name>", "GET"): "admin",
    ("/p/<project>/readings/new", "GET"): "admin",
    ("/p/<project>/readings/<int:reading_id>/configure", "GET"): "admin",
    ("/p/<project>/readings/<int:reading_id>/read", "GET"): "reader",
    ("/p/<project>/readings/<int:reading_id>/results", "GET"): "reader",
    ("/api/v1/projects/<project>/reading-forms", "GET"): "reader",
    ("/api/v1/projects/<project>/reading-forms/<name>", "GET"): "reader",
    ("/api/v1/projects/<project>/reading-forms/<name>", "PUT"): "admin",
    ("/api/v1/projects/<project>/readings", "GET"): "reader",
    ("/api/v1/projects/<project>/readings", "POST"): "admin",
    ("/api/v1/projects/<project>/readings/<int:reading_id>", "GET"): "admin",
    ("/api/v1/projects/<project>/readings/<int:reading_id>", "PUT"): "admin",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/start", "POST"): "admin",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/progress", "GET"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/slots/<phase>/<int:index>", "GET"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/slots/<phase>/<int:index>", "PUT"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/slots/<phase>/<int:index>/files/<int:layer>", "GET"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/restart", "POST"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/results", "GET"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/results.csv", "GET"): "reader",
    ("/api/v1/projects/<project>/readings/<int:reading_id>/agreement", "GET"): "admin",
}
# XNAT addresses an experiment three ways; each experiment route answers on all three, with one rule.
XNAT_EXPERIMENT_PATHS = (
    "/data/experiments/<experiment>",
    "/data/projects/<project>/experiments/<experiment>",
    "/data/projects/<project>/subjects/<subject>/experiments/<experiment>",
)
XNAT_EXPERIMENT_ROUTES = {
    ("", "GET"): "viewer",
    ("", "PUT"): "editor",
    ("/resources", "GET"): "viewer",
    ("/scans", "GET"): "viewer",
    ("/scans/<scan>", "GET"): "viewer",
    ("/scans/<scan>/files", "GET"): "viewer",
    ("/scans/<scan>/resources", "GET"): "viewer",
    ("/scans/<scan>/resources/<resource>", "GET"): "viewer",
    ("/scans/<scan>/resources/<resource>", "PUT"): "editor",
    ("/scans/<scan>/resources/<resource>/files", "GET"): "viewer",
    ("/scans/<scan>/resources/<resource>/files/<path:name>", "GET"): "viewer",
    ("/scans/<scan>/resources/<resource>/files/<path:name>", "PUT"): "editor",
}
MATRIX.update({(path + suffix, method): who for path in XNAT_EXPERIMENT_PATHS
               for (suffix, method), who in XNAT_EXPERIMENT_ROUTES.items()})
CALLERS = ("anonymous", "norole", *ROLES, "siteadmin")
RANK = {role: index for index, role in enumerate(ROLES)}
P01_STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
# Query strings that make an allowed GET succeed (e.g. the selection needs a pattern).
QUERIES = {
    "/api/v1/projects/<project>/select": "?pattern=*",
    "/api/v1/projects/<project>/studies/<int:study_id>/autoload": "?preset=two+views",
}


def expected(who_may: str, caller: str) -> str:
    """allow, login (not authenticated), forbidden, or hidden (404)."""
    if who_may == "public":
        return "allow"
    if caller == "anonymous":
        return "login"
    if who_may == "user" or caller == "siteadmin":
        return "allow"
    if who_may == "site admin":
        return "forbidden"
    if caller == "norole":
        return "hidden"
    return "allow" if RANK[caller] >= RANK[who_may] else "forbidden"


def test_decide_public_user_and_site_admin_scopes() -> None:
    assert decide(Rule(Scope.PUBLIC), ANONYMOUS) is Outcome.ALLOW
    assert decide(Rule(Scope.USER), ANONYMOUS) is Outcome.UNAUTHENTICATED
    assert decide(Rule(Scope.USER), Caller(True)) is Outcome.ALLOW
    assert decide(Rule(Scope.SITE_ADMIN), Caller(True)) is Outcome.FORBIDDEN
    assert decide(Rule(Scope.SITE_ADMIN), Caller(True, site_admin=True)) is Outcome.ALLOW


@pytest.mark.parametrize("held", [None, *Role])
@pytest.mark.parametrize("needed", list(Role))
def test_decide_project_roles_are_ordered(held: Role | None, needed: Role) -> None:
    outcome = decide(Rule(Scope.PROJECT, needed), Caller(True, project_role=held))
    if held is None:
        assert outcome is Outcome.HIDDEN
    else:
        assert outcome is (Outcome.ALLOW if list(Role).index(held) >= list(Role).index(needed) else Outcome.FORBIDDEN)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Flask, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("portal-access"), sqlite_template)
    site = build_site(archive)
    with archive.unit_of_work() as (session, _journal):
        # DICOMweb names a study by its UID: P01's is past the access check (Orthanc is not running).
        session.get_one(Study, site.studies["P01"]).study_instance_uid = P01_STUDY_UID
        # The saved batch the walk names is the autoexec one, so an allowed DELETE is refused (409)
        # and the batch stays for the next caller.
        get_project(session, "alpha").autoexec_batch = "stats"
    yield create_app(archive.settings, archive), site
    archive.close()


def page_token(client: FlaskClient) -> str:
    """The CSRF token a visitor's pages carry before logging in."""
    client.get("/login")
    with client.session_transaction() as session:
        return str(session["csrf_token"])


def log_in(client: FlaskClient, username: str) -> str:
    """Logs the client in through the login form; returns the CSRF token its pages carry."""
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": page_token(client)})
    assert answer.status_code == 302, answer.text
    with client.session_transaction() as session:
        return str(session["csrf_token"])


def _url(rule: str, site: Site, caller: str) -> str:
    values = {
        "project": "alpha", "study_id": site.studies["P01"], "file_id": site.files["P01"], "run_id": site.run,
        "name": "xnat" if "/xapi/schemas/" in rule else "ax_asc_35sl_6.nii" if "/files/" in rule else
        "two views" if "presets" in rule else "site-form" if "reading-forms" in rule else
        "hospital" if "/pacs/" in rule else "stats", "key": site.link,
        "username": "target", "peer": "hospital", "study_uid": "1.2.3", "cohort_id": site.pull,
        "token_id": site.tokens.get(caller, 0), "request_id": 1,
        "study": P01_STUDY_UID, "series": "1.2.3.4", "instance": "1.2.3.5", "frames": "1", "bulk": "7fe00010",
        "tool": "points", "experiment": accession(Level.EXPERIMENT, site.studies["P01"]),
        "subject": accession(Level.SUBJECT, _subject_of(site, "P01")), "scan": "001_ax", "resource": "NIFTI",
        "reading_id": site.reading, "phase": "serious", "index": 0, "layer": 0,
    }
    if "<int:set_id>" in rule:
        values["set_id"] = marker_set(site, caller)
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), rule) + QUERIES.get(rule, "")


def _subject_of(site: Site, subject: str) -> int:
    with site.archive.sessions() as session:
        return session.get_one(Study, site.studies[subject]).subject_id


def _credentials(rule: str, caller: str, csrf: str) -> dict[str, str]:
    """The XNAT paths take no portal session: their callers send HTTP basic credentials."""
    if not rule.startswith(("/data", "/xapi")):
        return {"X-CSRF-Token": csrf}
    if caller == "anonymous":
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{caller}:{PASSWORD}".encode()).decode()}


def _body(rule: str) -> dict[str, Any]:
    """What an allowed call sends: harmless, and never a 404 of its own making."""
    if rule == "/p/<project>/members":
        return {"data": {"username": "target", "role": "viewer"}}
    if rule.startswith("/api/"):
        return {"json": {}}
    return {"data": {}}


def _outcome(rule: str, status: int, location: str) -> str:
    if status == 401 or (status == 302 and "/login" in location and rule not in ("/logout", "/")):
        return "login"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "hidden"
    # 502/503: past the access check, the PACS or Orthanc (not running in this test) is unreachable.
    assert status < 500 or status in (502, 503), f"{rule} answered {status}"
    return "allow"


def test_every_route_declares_the_rule_the_matrix_gives(portal: tuple[Flask, Site]) -> None:
    app, _site = portal
    routes = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules() if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == set(MATRIX), "a route was added or removed: put it in the matrix with who may call it"
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            declared = app.view_functions[rule.endpoint].access_rule
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                who = MATRIX[(rule.rule, method)]
                assert declared.describe().split(" on ")[0] == who, f"{rule.rule} {method}"


@pytest.mark.parametrize("caller", CALLERS)
def test_rights_matrix(portal: tuple[Flask, Site], caller: str) -> None:
    app, site = portal
    client = app.test_client()
    csrf = log_in(client, caller) if caller != "anonymous" else page_token(client)
    failures = []
    for (rule, method), who_may in sorted(MATRIX.items()):
        if (rule in ("/login", "/logout", "/account/password") and method == "POST") or rule == "/data/services/auth":
            continue  # these start, end or change the session the walk runs on; see the account and XNAT tests
        response = client.open(_url(rule, site, caller), method=method, headers=_credentials(rule, caller, csrf), **_body(rule))
        got = _outcome(rule, response.status_code, response.headers.get("Location", ""))
        want = expected(who_may, caller)
        if got != want:
            failures.append(f"{method} {rule}: {caller} got {got} ({response.status_code}), expected {want}")
    assert not failures, "\n".join(failures)


def test_a_file_in_another_project_is_not_found_and_names_nothing(portal: tuple[Flask, Site]) -> None:
    app, site = portal
    client = app.test_client()
    log_in(client, "editor")
    for url in (f"/api/v1/files/{site.other_file}", f"/api/v1/files/{site.other_file}/content",
                f"/api/v1/projects/alpha/studies/{site.other_study}", "/api/v1/projects/beta/studies"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert "beta" not in answer.text and "Q01" not in answer.text


def test_unsafe_calls_from_a_session_need_the_csrf_token(portal: tuple[Flask, Site]) -> None:
    app, site = portal
    client = app.test_client()
    log_in(client, "editor")
    answer = client.post("/api/v1/projects/alpha/tags", json={"level": "study", "ids": [site.studies["P02"]], "add": ["x"]})
    assert answer.status_code == 403
    assert "CSRF" in answer.json["error"]
