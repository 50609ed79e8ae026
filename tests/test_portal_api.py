"""The REST API as a script sees it: tokens, the study table, tags, files with Range, uploads,
presets and links, NORA's calls; and bad input answered with a clear 4xx."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nifti_archive import accounts
from nifti_archive.archive import Archive, get_project
from nifti_archive.models import ApiToken, ConversionState, Project, Role, User
from portal.app import create_app
from tests.held_series import hold_series
from tests.polling import wait_until
from tests.portal_site import AXIAL, Site, SiteTemplate, copy_site
from tests.test_portal_access import log_in


@pytest.fixture
def site(tmp_path: Path, portal_site: SiteTemplate) -> Iterator[tuple[Flask, Site]]:
    built = copy_site(portal_site, tmp_path / "var", upload_max_bytes=2 * 1024 * 1024,
                      orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    yield create_app(built.archive.settings, built.archive), built
    built.archive.close()


def token_for(archive: Archive, username: str, days: int | None = None) -> str:
    with archive.unit_of_work() as (session, _journal):
        return accounts.create_token(session, accounts.get_user(session, username), "test", days).secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def editor(site: tuple[Flask, Site]) -> tuple[FlaskClient, dict[str, str], Site]:
    app, built = site
    return app.test_client(), bearer(token_for(built.archive, "editor")), built


def studies(client: FlaskClient, auth: dict[str, str], **query: Any) -> Any:
    answer = client.get("/api/v1/projects/alpha/studies", query_string=query, headers=auth)
    assert answer.status_code == 200, answer.json
    return answer.json


def test_table_filters_by_column_sorts_and_pages(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, _site = editor
    everything = studies(client, auth)
    assert everything["total"] == 3
    assert [r["subject"] for r in everything["rows"]] == ["P01", "P02", "P03"]
    assert [r["subject"] for r in studies(client, auth, sort="-study_date")["rows"]] == ["P03", "P02", "P01"]
    assert [r["subject"] for r in studies(client, auth, f_study_description="MR")["rows"]] == ["P01", "P02"]
    assert [r["subject"] for r in studies(client, auth, f_study_date="2022-01-01..")["rows"]] == ["P02", "P03"]
    assert [r["subject"] for r in studies(client, auth, f_files="STAG:control")["rows"]] == ["P01"]
    second = studies(client, auth, limit=1, offset=1)
    assert (second["total"], [r["subject"] for r in second["rows"]]) == (3, ["P02"])
    row = everything["rows"][0]
    assert row["study_tags"] == ["control"] and row["file_count"] == 2 and row["jobs"] == {"done": 1}
    assert row["patient_name"] == "Jane^Doe"


def test_a_malformed_filter_is_a_400_naming_its_bar_and_position(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, _site = editor
    answer = client.get("/api/v1/projects/alpha/studies", query_string={"f_study_date": "2024-13-45"}, headers=auth)
    assert answer.status_code == 400
    assert answer.json["column"] == "study_date" and "not a date" in answer.json["error"]
    answer = client.get("/api/v1/projects/alpha/studies", query_string={"f_files": "t1 & "}, headers=auth)
    assert answer.status_code == 400 and answer.json["column"] == "files" and answer.json["position"] >= 0
    # A misspelt bar is refused, not ignored (it would answer the whole table as if it matched).
    answer = client.get("/api/v1/projects/alpha/studies", query_string={"f_subject": "P01"}, headers=auth)
    assert answer.status_code == 400 and "no filter bar 'f_subject'" in answer.json["error"]


def test_pseudonymised_names_are_for_project_admins_only(site: tuple[Flask, Site]) -> None:
    app, built = site
    with built.archive.unit_of_work() as (session, _journal):
        session.query(Project).filter_by(name="alpha").one().pseudonymise = True
    client = app.test_client()
    as_editor = bearer(token_for(built.archive, "editor"))
    assert studies(client, as_editor)["rows"][0]["patient_name"] is None
    refused = client.get("/api/v1/projects/alpha/studies", query_string={"f_patient_name": "Jane"}, headers=as_editor)
    assert refused.status_code == 400 and "not shown to your role" in refused.json["error"]
    as_admin = bearer(token_for(built.archive, "admin"))
    assert studies(client, as_admin, f_patient_name="Jane")["rows"][0]["patient_name"] == "Jane^Doe"


def test_tags_are_added_and_removed_only_within_the_project(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    ids = [built.studies["P02"], built.studies["P03"]]
    answer = client.post("/api/v1/projects/alpha/tags", json={"level": "study", "ids": ids, "add": ["followup"]}, headers=auth)
    assert answer.json == {"added": 2, "removed": 0}
    assert [r["subject"] for r in studies(client, auth, f_files="STAG:followup")["rows"]] == ["P02", "P03"]
    client.post("/api/v1/projects/alpha/tags", json={"level": "study", "ids": ids[:1], "remove": ["followup"]}, headers=auth)
    assert [r["subject"] for r in studies(client, auth, f_files="STAG:followup")["rows"]] == ["P03"]
    foreign = client.post("/api/v1/projects/alpha/tags", json={"level": "study", "ids": [built.other_study], "add": ["x"]},
                          headers=auth)
    assert foreign.status_code == 404
    bad = client.post("/api/v1/projects/alpha/tags", json={"level": "study", "ids": ids, "add": ["no spaces"]}, headers=auth)
    assert bad.status_code == 400 and "invalid tag" in bad.json["error"]


def test_file_download_honours_range(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    whole = client.get(f"/api/v1/files/{built.files['P01']}/content", headers=auth)
    assert whole.status_code == 200 and whole.data == AXIAL.read_bytes()
    part = client.get(f"/api/v1/files/{built.files['P01']}/content", headers={**auth, "Range": "bytes=344-351"})
    assert part.status_code == 206
    assert part.data == AXIAL.read_bytes()[344:352]
    assert part.headers["Content-Range"] == f"bytes 344-351/{AXIAL.stat().st_size}"


def test_files_upload_into_a_study_and_refuse_duplicates(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    url = f"/api/v1/projects/alpha/studies/{built.studies['P02']}/files"
    data = {"folder": "masks", "files": [(io.BytesIO(b"mask bytes"), "lesion.nii.gz"), (io.BytesIO(b"notes"), "notes.txt")]}
    answer = client.post(url, data=data, headers=auth, content_type="multipart/form-data")
    assert answer.status_code == 201, answer.json
    assert sorted(f["path"] for f in answer.json["files"]) == ["masks/lesion.nii.gz", "masks/notes.txt"]
    study = client.get(f"/api/v1/projects/alpha/studies/{built.studies['P02']}", headers=auth).json
    kinds = {f["path"]: f["kind"] for f in study["files"]}
    assert kinds["masks/lesion.nii.gz"] == "nifti" and kinds["masks/notes.txt"] == "other", "kinds are told as their names"
    again = client.post(url, data={"folder": "masks", "files": [(io.BytesIO(b"other"), "new.txt"), (io.BytesIO(b"x"), "notes.txt")]},
                        headers=auth, content_type="multipart/form-data")
    assert again.status_code == 409
    folder = built.archive.layout.study_dir("alpha", "P02", "S1") / "masks"
    assert sorted(p.name for p in folder.iterdir()) == ["lesion.nii.gz", "notes.txt"], "a refused upload leaves nothing"
    assert (folder / "notes.txt").read_bytes() == b"notes", "a refused upload overwrites nothing"
    sneaky = client.post(url, data={"folder": "../../escape", "files": [(io.BytesIO(b"x"), "a.txt")]}, headers=auth,
                         content_type="multipart/form-data")
    assert sneaky.status_code == 400


def test_an_upload_over_the_limit_is_413(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, _built = editor
    big = io.BytesIO(b"\0" * (3 * 1024 * 1024))
    answer = client.post("/api/v1/projects/alpha/import", data={"thefile": (big, "big.zip")}, headers=auth,
                         content_type="multipart/form-data")
    assert answer.status_code == 413
    assert "limit of 2 MiB" in answer.json["error"]


def test_an_import_that_is_not_an_archive_is_refused(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    answer = client.post("/api/v1/projects/alpha/import", data={"thefile": (io.BytesIO(b"just text"), "data.zip")},
                         headers=auth, content_type="multipart/form-data")
    assert answer.status_code == 400 and "not a zip or tar archive" in answer.json["error"]
    assert not any((built.archive.settings.var_dir / "uploads").iterdir()), "the spooled upload is removed"


def test_revoked_and_expired_tokens_are_401(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    secret = token_for(built.archive, "viewer")
    assert client.get("/api/v1/projects", headers=bearer(secret)).status_code == 200
    with built.archive.unit_of_work() as (session, _journal):
        token = session.query(ApiToken).filter_by(token_hash=accounts._token_hash(secret)).one()
        accounts.revoke_token(session, token.id)
    assert client.get("/api/v1/projects", headers=bearer(secret)).status_code == 401
    expired = token_for(built.archive, "viewer", days=1)
    with built.archive.unit_of_work() as (session, _journal):
        token = session.query(ApiToken).filter_by(token_hash=accounts._token_hash(expired)).one()
        token.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    answer = client.get("/api/v1/projects", headers=bearer(expired))
    assert answer.status_code == 401 and "revoked or expired" in answer.json["error"]
    assert client.get("/api/v1/projects", headers=bearer("nrt_made-up")).status_code == 401


def test_the_ct_windows_are_served_with_their_keys(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, _built = editor
    windows = client.get("/api/v1/ct-windows", headers=auth).json["ct_windows"]
    assert [w["key"] for w in windows] == [1, 2, 3, 4, 5, 6]
    assert windows[4] == {"key": 5, "name": "lung", "width": 1500, "level": -600}


def test_presets_resolve_per_study_and_links_reopen_the_state(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    plan = client.get(f"/api/v1/projects/alpha/studies/{built.studies['P02']}/autoload", query_string={"preset": "two views"},
                      headers=auth).json
    assert plan["layout"] == "1x2"
    assert [v["base"]["file_id"] for v in plan["viewports"]] == [built.files["P02"], built.files["P02/sag"]]
    assert plan["viewports"][0]["base"]["window"] == [0, 2000]
    bad = client.put("/api/v1/projects/alpha/presets/broken", json={"layout": "3x3", "viewports": [{"file": "*"}]}, headers=auth)
    assert bad.status_code == 400 and bad.json["error"].startswith("layout:")
    state = {"layout": "1x2", "crosshair": [1.5, -20.0, 33.0], "viewports": [
        [{"file_id": built.files["P03"], "window": [0, 500]}, {"file_id": built.files["P03/sag"], "colormap": "red", "opacity": 0.4}],
    ]}
    made = client.post("/api/v1/projects/alpha/links", json=state, headers=auth)
    assert made.status_code == 201 and f"/p/alpha/viewer?link={made.json['key']}" in made.json["url"]
    opened = client.get(f"/api/v1/projects/alpha/links/{made.json['key']}", headers=auth).json
    assert opened["crosshair"] == [1.5, -20.0, 33.0]
    assert opened["viewports"][0][1] == {"file_id": built.files["P03/sag"], "colormap": "red", "opacity": 0.4, "window": None}
    assert opened["files"][str(built.files["P03"])]["subject"] == "P03"
    foreign = client.post("/api/v1/projects/alpha/links", json={"viewports": [[{"file_id": built.other_file}]]}, headers=auth)
    assert foreign.status_code == 404


def test_nora_import_call_checks_user_and_token(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    secret = token_for(built.archive, "viewer")
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive_file:
        archive_file.writestr("a.txt", "x")
    form = {"call": json.dumps({"cmd": "import", "user": "editor", "token": "@CRYPT@" + secret}),
            "thefile": (io.BytesIO(payload.getvalue()), "data.zip")}
    assert client.post("/?project=alpha", data=form, content_type="multipart/form-data").status_code == 401

    def as_viewer() -> dict[str, Any]:
        return {"call": json.dumps({"cmd": "import", "user": "viewer", "token": "@CRYPT@" + secret}),
                "thefile": (io.BytesIO(payload.getvalue()), "data.zip")}

    refused = client.post("/?project=alpha", data=as_viewer(), content_type="multipart/form-data")
    assert refused.status_code == 403 and "this needs editor on the project" in refused.text
    hidden = client.post("/?project=beta", data=as_viewer(), content_type="multipart/form-data")
    assert hidden.status_code == 404 and "no such project, or you have no role on it" in hidden.text


def test_url_call_logs_in_with_a_token_and_opens_the_study(site: tuple[Flask, Site]) -> None:
    app, built = site
    client = app.test_client()
    secret = token_for(built.archive, "viewer")
    call = json.dumps({"pid": "P02", "sid": "S1", "preset": "two views", "user": "viewer", "token": secret})
    answer = client.get("/", query_string={"project": "alpha", "call": call})
    assert answer.status_code == 302 and "/p/alpha/viewer?" in answer.headers["Location"]
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200 and f'data-study="{built.studies["P02"]}"' in page.text
    assert client.get("/", query_string={"project": "alpha", "call": "{not json"}).status_code == 400


def test_openapi_describes_every_api_route(site: tuple[Flask, Site]) -> None:
    app, _built = site
    document = app.test_client().get("/api/v1/openapi.json").json
    api_rules = {r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1")}
    assert len(document["paths"]) == len(api_rules)
    operation = document["paths"]["/api/v1/files/{file_id}/content"]["get"]
    assert operation["x-access"] == "viewer on the project" and "Range" in operation["summary"]


def test_a_one_time_password_must_be_changed_before_anything_else(site: tuple[Flask, Site]) -> None:
    app, built = site
    with built.archive.unit_of_work() as (session, _journal):
        one_time = accounts.reset_password(session, "viewer")
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    client.post("/login", data={"username": "viewer", "password": one_time, "csrf_token": csrf})
    assert client.get("/p/alpha").headers["Location"].endswith("/account/password")
    assert client.get("/api/v1/projects/alpha").status_code == 403
    with client.session_transaction() as session:
        csrf = session["csrf_token"]
    changed = client.post("/account/password", data={"current_password": one_time, "new_password": "a much better one",
                                                      "repeat_password": "a much better one", "csrf_token": csrf})
    assert changed.status_code == 302
    assert client.get("/p/alpha").status_code == 200
    with built.archive.sessions() as session:
        stored = accounts.get_user(session, "viewer").password_hash
    assert stored.startswith("$argon2id$") and "a much better one" not in stored


def test_logging_out_ends_the_session(site: tuple[Flask, Site]) -> None:
    app, _built = site
    client = app.test_client()
    csrf = log_in(client, "viewer")
    assert client.get("/api/v1/projects").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/api/v1/projects").status_code == 401




def test_a_batch_launched_through_the_api_runs_and_its_log_is_readable(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    spec = client.get("/api/v1/projects/alpha/batches/stats", headers=auth).json
    launched = client.post("/api/v1/projects/alpha/launches", headers=auth,
                           json={"batch": spec, "studies": [built.studies["P02"]], "executor": "local"})
    assert launched.status_code == 201, launched.json
    run_id = launched.json["runs"][0]

    def finished() -> dict[str, Any] | None:
        runs = client.get("/api/v1/projects/alpha/runs", query_string={"q": "P02"}, headers=auth).json["runs"]
        mine = next(r for r in runs if r["id"] == run_id)
        return mine if mine["state"] in ("done", "error") else None

    run = wait_until(finished, 120, "the launched run to finish")
    assert run["state"] == "done", client.get(f"/api/v1/projects/alpha/runs/{run_id}/log", headers=auth).json
    assert run["batch"] == "stats" and run["subject"] == "P02"
    study = client.get(f"/api/v1/projects/alpha/studies/{built.studies['P02']}", headers=auth).json
    assert "stats.json" in {f["path"] for f in study["files"]}
    assert client.get(f"/api/v1/projects/alpha/runs/{run_id}/log", headers=auth).json["log"].startswith("--- job 1 (stats)\n")
    unknown = client.post("/api/v1/projects/alpha/launches", headers=auth, json={"saved": "stats", "studies": [built.other_study]})
    assert unknown.status_code == 404
    bad = client.post("/api/v1/projects/alpha/launches", headers=auth, json={"batch": {"name": "x", "jobs": [{"job": "nope"}]},
                                                                             "filter": ""})
    assert bad.status_code == 400 and bad.json["error"].startswith("jobs[0].job:")


def test_the_table_counts_each_studys_held_back_series(editor: tuple[FlaskClient, dict[str, str], Site]) -> None:
    client, auth, built = editor
    hold_series(built.archive, built.studies["P01"], "004_epi", ConversionState.QUARANTINED, "missing: 135 of 2250 instances")
    hold_series(built.archive, built.studies["P02"], "004_epi", ConversionState.QUARANTINED, "dcm2niix: missing images")
    hold_series(built.archive, built.studies["P02"], "005_dwi", ConversionState.FAILED, "dcm2niix exited with 1")
    # Decided or finished series are no longer held back.
    hold_series(built.archive, built.studies["P03"], "004_epi", ConversionState.RELEASED, "released: usable")
    hold_series(built.archive, built.studies["P03"], "005_dwi", ConversionState.DONE, "")
    held = {row["subject"]: row["held"] for row in studies(client, auth)["rows"]}
    assert held == {"P01": {"quarantined": 1}, "P02": {"quarantined": 1, "failed": 1}, "P03": {}}
    reasons = client.get("/api/v1/projects/alpha/conversions", query_string={"study_id": built.studies["P02"]}, headers=auth)
    assert sorted(row["reason"] for row in reasons.json["conversions"]) == ["dcm2niix exited with 1", "dcm2niix: missing images"]


def test_a_tokens_calls_are_recorded_to_the_minute_and_its_roles_read_afresh(site: tuple[Flask, Site]) -> None:
    app, built = site
    client, auth = app.test_client(), bearer(token_for(built.archive, "editor"))

    def last_used() -> datetime | None:
        with built.archive.sessions() as session:
            return session.scalars(select(ApiToken.last_used_at).join(User).where(User.username == "editor", ApiToken.name == "test")).one()

    def roles() -> dict[str, str]:
        return {p["name"]: p["role"] for p in client.get("/api/v1/projects", headers=auth).json["projects"]}

    assert last_used() is None
    assert roles()["alpha"] == "editor"
    first = last_used()
    assert first is not None
    with built.archive.unit_of_work() as (session, _journal):
        user, alpha = accounts.get_user(session, "editor"), get_project(session, "alpha")
        accounts.revoke_role(session, user, alpha)
        accounts.grant_role(session, user, alpha, Role.VIEWER)
    # The next call sees the new role at once, and within the minute records no second use.
    assert roles()["alpha"] == "viewer"
    assert last_used() == first
    with built.archive.unit_of_work() as (session, _journal):
        accounts.revoke_role(session, accounts.get_user(session, "editor"), get_project(session, "alpha"))
    assert "alpha" not in roles()
    assert client.get("/api/v1/projects/alpha/studies", headers=auth).status_code == 404
