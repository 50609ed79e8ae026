"""Validating a batch before launching it, and managing saved batches, through the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from jobs.validation import spec_problems
from nifti_archive.archive import get_project
from nifti_archive.catalog.registration import add_files, ensure_study
from nifti_archive.catalog.tags import TagLevel, add_tags
from portal.app import create_app
from tests.portal_site import AXIAL, Site, build_site, site_archive
from tests.test_portal_access import log_in

AX = "001_ax/*.nii"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Site]:
    """The portal's test site, with a later study of P01 that has only an axial image."""
    archive = site_archive(tmp_path_factory.mktemp("batch-validation"), sqlite_template)
    site = build_site(archive)
    with archive.unit_of_work() as (session, _journal):
        alpha = get_project(session, "alpha")
        later = ensure_study(session, alpha, "P01", "S2")
        later.study_date, later.description = date(2024, 2, 2), "MR head late"
        target = archive.layout.study_dir("alpha", "P01", "S2") / "001_ax" / AXIAL.name
        target.parent.mkdir(parents=True)
        target.write_bytes(AXIAL.read_bytes())
        add_files(session, archive.layout, alpha, [target])
        add_tags(session, TagLevel.STUDY, [later.id], ["followup"])
        site.studies["P01/S2"] = later.id
    yield site
    archive.close()


def client_of(site: Site, username: str) -> tuple[FlaskClient, dict[str, str]]:
    client = create_app(site.archive.settings, site.archive).test_client()
    return client, {"X-CSRF-Token": log_in(client, username)}


@pytest.fixture(scope="module")
def editor(site: Site) -> tuple[FlaskClient, dict[str, str]]:
    return client_of(site, "editor")


def validate(caller: tuple[FlaskClient, dict[str, str]], batch: Any, **selection: Any) -> Any:
    client, headers = caller
    answer = client.post("/api/v1/projects/alpha/batch-validations", json={"batch": batch, **selection}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json


def bash(script: str, **args: dict[str, Any]) -> dict[str, Any]:
    return {"job": "bash", "script": script, "args": args}


def by_target(result: Any) -> dict[str, dict[str, Any]]:
    """subject#study (or subject) -> {argument name: its check}, over all jobs."""
    return {
        f"{t['subject']}#{t['study']}" if t["study"] else t["subject"]: {a["name"]: a for j in t["jobs"] for a in j["args"]}
        for t in result["targets"]
    }


def test_each_study_shows_the_file_each_argument_gets_or_why_not(editor: tuple[FlaskClient, dict[str, str]]) -> None:
    batch = {"jobs": [bash('cp "$f1" "$o1"; cat "$f2"', f1={"type": "FILE", "value": AX},
                           f2={"type": "FILE", "value": "002_sag/*.nii"}, o1={"type": "OUT", "value": "copy/ax.nii"})]}
    result = validate(editor, batch, filter="")
    assert result["level"] == "study" and result["problems"] == []
    assert result["summary"] == {"targets": 4, "ok": 3, "failing": 1} and not result["valid"]
    checks = by_target(result)
    assert checks["P02#S1"]["f1"] == {"name": "f1", "type": "FILE", "study": "S1", "path": "001_ax/ax_asc_35sl_6.nii", "error": None}
    assert checks["P02#S1"]["o1"]["path"] == "copy/ax.nii"
    assert checks["P01#S2"]["f1"]["path"] == "001_ax/ax_asc_35sl_6.nii"
    assert checks["P01#S2"]["f2"]["path"] is None
    assert checks["P01#S2"]["f2"]["error"] == "f2: '002_sag/*.nii' matches no file in study S2"
    [failing] = [t for t in result["targets"] if not t["ok"]]
    assert (failing["subject"], failing["study"]) == ("P01", "S2")


def test_validation_takes_the_selected_studies_as_a_launch_does(site: Site, editor: tuple[FlaskClient, dict[str, str]]) -> None:
    batch = {"jobs": [bash('cat "$f1"', f1={"type": "FILE", "value": AX})]}
    result = validate(editor, batch, studies=[site.studies["P03"], site.studies["P01/S2"]])
    assert sorted(by_target(result)) == ["P01#S2", "P03#S1"] and result["valid"]
    client, headers = editor
    missing = client.post("/api/v1/projects/alpha/batch-validations", headers=headers,
                          json={"batch": batch, "studies": [site.other_study]})
    assert missing.status_code == 404 and str(site.other_study) in missing.json["error"]
    malformed = client.post("/api/v1/projects/alpha/batch-validations", headers=headers, json={"batch": batch, "filter": "STAG:"})
    assert malformed.status_code == 400


def test_subject_level_selectors_choose_each_argument_s_study(editor: tuple[FlaskClient, dict[str, str]]) -> None:
    batch = {"level": "subject", "jobs": [bash(
        'diff "$f1" "$f2" > "$o1"; cat "$f3"',
        f1={"type": "FILE", "value": AX, "study": "first"},
        f2={"type": "FILE", "value": AX, "study": "last"},
        f3={"type": "FILE", "value": AX, "study": "tag:followup"},
        o1={"type": "OUT", "value": "change.txt", "study": "desc:mr head"},
    )]}
    result = validate(editor, batch, filter="")
    assert result["level"] == "subject" and [t["study"] for t in result["targets"]] == [None, None, None]
    checks = by_target(result)
    assert (checks["P01"]["f1"]["study"], checks["P01"]["f2"]["study"], checks["P01"]["f3"]["study"]) == ("S1", "S2", "S2")
    # Both of P01's studies are "MR head…": a study selector must name one.
    assert checks["P01"]["o1"]["error"] == "study selector desc:mr head must name one study, found S1, S2"
    assert checks["P02"]["f2"]["study"] == "S1" and checks["P02"]["o1"]["study"] == "S1"
    assert checks["P03"]["f3"]["error"] == "study selector tag:followup must name one study, found none"
    assert checks["P03"]["o1"]["error"] == "study selector desc:mr head must name one study, found none"
    assert result["summary"] == {"targets": 3, "ok": 0, "failing": 3}


def test_a_pattern_matching_two_files_names_the_study_and_both(site: Site, editor: tuple[FlaskClient, dict[str, str]]) -> None:
    result = validate(editor, {"jobs": [bash('cat "$f1"', f1={"type": "FILE", "value": "*/*.nii"})]}, studies=[site.studies["P02"]])
    [check] = by_target(result)["P02#S1"].values()
    assert check["error"] == (
        "f1: '*/*.nii' matches 2 files in study S1 (001_ax/ax_asc_35sl_6.nii, 002_sag/sag_asc_36sl_19.nii); make the pattern name one"
    )


def test_a_later_job_may_name_what_an_earlier_one_writes(site: Site, editor: tuple[FlaskClient, dict[str, str]]) -> None:
    batch = {"jobs": [
        {"job": "reorient", "args": {"f1": {"type": "FILE", "value": AX}, "o1": {"type": "OUT", "value": "work/ras.nii.gz"}}},
        {"job": "stats", "args": {"f1": {"type": "FILE", "value": "work/*.nii.gz"}, "o1": {"type": "OUT", "value": "stats.json"}}},
    ]}
    result = validate(editor, batch, studies=[site.studies["P03"]])
    assert result["valid"]
    [target] = result["targets"]
    assert target["jobs"][1]["args"][0] == {"name": "f1", "type": "FILE", "study": "S1", "path": "work/ras.nii.gz", "error": None}


def test_every_empty_row_is_named_and_nothing_is_resolved(editor: tuple[FlaskClient, dict[str, str]]) -> None:
    batch = {"jobs": [
        {"job": "stats", "args": {"f1": {"type": "FILE", "value": ""}, "o1": {"type": "OUT", "value": "s.json"}}},
        bash('cp "$f1" "$o1"', f1={"type": "FILE", "value": AX}, o1={"type": "OUT", "value": ""}),
    ]}
    result = validate(editor, batch, filter="")
    assert [p["field"] for p in result["problems"]] == ["jobs[0].args.f1.value", "jobs[1].args.o1.value"]
    assert "empty file pattern" in result["problems"][0]["message"]
    assert result["targets"] == [] and not result["valid"]


def test_a_selection_of_no_study_is_a_problem(editor: tuple[FlaskClient, dict[str, str]]) -> None:
    result = validate(editor, {"jobs": [bash('cat "$f1"', f1={"type": "FILE", "value": AX})]}, filter="dwi*/*")
    assert result["problems"] == [{"field": "studies", "message": "studies: the filter selects no study: nothing would run"}]
    assert not result["valid"]


def test_spec_problems_of_a_document_that_is_no_batch() -> None:
    assert [str(p) for p in spec_problems(None)] == ["batch: must be a JSON object"]
    assert [p.field for p in spec_problems({"jobs": [{"job": "stats", "args": {}}]})] == ["jobs[0].args.f1"]


def test_job_definitions_give_the_menu_with_typed_rows(editor: tuple[FlaskClient, dict[str, str]]) -> None:
    client, _headers = editor
    definitions = client.get("/api/v1/job-definitions").json
    jobs = {job["name"]: job for job in definitions["jobs"]}
    assert {job["category"] for job in jobs.values()} <= set(definitions["categories"])
    assert jobs["bash"]["script"] and jobs["bash"]["category"] == "generic"
    resample = {arg["name"]: arg for arg in jobs["resample"]["args"]}
    assert resample["c1"] == {"name": "c1", "type": "OPTION", "help": "the interpolation", "required": True,
                              "default": "linear", "options": ["linear", "nearest"]}
    assert definitions["arg_types"]["p"] == "PATHOUT"


def test_a_viewer_may_validate_but_not_manage_batches(site: Site) -> None:
    viewer = client_of(site, "viewer")
    assert validate(viewer, {"jobs": [bash('cat "$f1"', f1={"type": "FILE", "value": AX})]}, studies=[site.studies["P02"]])["valid"]
    client, headers = viewer
    assert client.delete("/api/v1/projects/alpha/batches/stats", headers=headers).status_code == 403
    assert client.post("/api/v1/projects/alpha/batches/stats/rename", json={"to": "x"}, headers=headers).status_code == 403
    stranger, stranger_headers = client_of(site, "norole")
    refused = stranger.post("/api/v1/projects/alpha/batch-validations", json={"batch": {}, "filter": ""}, headers=stranger_headers)
    assert refused.status_code in (403, 404)


def test_saved_batches_rename_and_delete_with_the_autoexec_marked(site: Site, editor: tuple[FlaskClient, dict[str, str]]) -> None:
    client, headers = editor
    spec = {"jobs": [bash('cat "$f1"', f1={"type": "FILE", "value": AX})]}
    for name in ("first", "second"):
        assert client.put(f"/api/v1/projects/alpha/batches/{name}", json=spec, headers=headers).status_code == 200
    with site.archive.unit_of_work() as (session, _journal):
        get_project(session, "alpha").autoexec_batch = "first"
    taken = client.post("/api/v1/projects/alpha/batches/first/rename", json={"to": "second"}, headers=headers)
    assert taken.status_code == 409 and "already has a saved batch 'second'" in taken.json["error"]
    renamed = client.post("/api/v1/projects/alpha/batches/first/rename", json={"to": "on arrival"}, headers=headers)
    assert renamed.json == {"renamed": "first", "to": "on arrival"}
    listed = client.get("/api/v1/projects/alpha/batches").json
    assert listed["autoexec"] == "on arrival"
    assert {b["name"]: b["autoexec"] for b in listed["batches"]} == {"on arrival": True, "second": False, "stats": False}
    refused = client.delete("/api/v1/projects/alpha/batches/on%20arrival", headers=headers)
    assert refused.status_code == 409 and "autoexec" in refused.json["error"]
    assert client.delete("/api/v1/projects/alpha/batches/second", headers=headers).json == {"deleted": "second"}
    assert client.get("/api/v1/projects/alpha/batches/second").status_code == 404
    assert client.post("/api/v1/projects/alpha/batches/stats/rename", json={"to": ""}, headers=headers).status_code == 400
