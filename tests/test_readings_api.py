"""Readings through the REST API, as administrators and readers see them.

One portal on a copy of the site archive for the module. Beside the site's three studies (P01-P03,
with real NIfTI), fifty studies R01-R50 without files give orderings enough cases that two random
orders cannot agree by chance (1 in 50!). Each test makes its own form and reading, so the order in
which they run does not matter. Expected orders, tags and kappas are computed here, not read back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.archive import get_project
from nifti_archive.catalog.registration import ensure_study
from nifti_archive.models import ReadingCase, ReadingResult, Role, Study, StudyTag
from portal.app import create_app
from tests.portal_site import SUBJECTS, Site, SiteTemplate, copy_site
from tests.test_portal_api import bearer, token_for

USERS = ("viewer", "reader", "reader2", "reader3", "editor", "admin", "norole")
BULK = [f"R{n:02d}" for n in range(1, 51)]
FORM = {
    "title": "Kidney stones",
    "items": [
        {"kind": "radio", "name": "side", "options": ["none", "right", "left"], "required": True, "useastag": True},
        {"kind": "rating", "name": "confidence", "min": 1, "max": 5},
        {"kind": "text", "name": "comment", "when": {"item": "side", "is": ["right", "left"]}},
        {"kind": "number", "name": "size"},
        {"kind": "roi", "name": "stone"},
    ],
}


@dataclass
class ReadingApi:
    client: FlaskClient
    site: Site
    auth: dict[str, dict[str, str]]

    def call(self, user: str, method: str, url: str, **kwargs: Any) -> TestResponse:
        return self.client.open(f"/api/v1/projects/alpha{url}", method=method, headers=self.auth[user], **kwargs)

    def ok(self, user: str, method: str, url: str, **kwargs: Any) -> Any:
        answer = self.call(user, method, url, **kwargs)
        assert answer.status_code < 300, f"{method} {url}: {answer.status_code} {answer.text}"
        return answer.json

    def reading(self, name: str, **config: Any) -> int:
        """A started reading with ``config`` over the defaults (the form is saved first)."""
        form = name.replace(" ", "-")
        self.ok("admin", "PUT", f"/reading-forms/{form}", json=config.pop("form_document", FORM))
        body = {"name": name, "form": form, "cases": {"patient_id": "R*"}, "readers": ["reader", "reader2"], **config}
        reading_id = self.ok("admin", "POST", "/readings", json=body)["id"]
        self.ok("admin", "POST", f"/readings/{reading_id}/start")
        return int(reading_id)

    def cases(self, user: str, reading_id: int, phase: str = "serious") -> list[int]:
        total = self.ok(user, "GET", f"/readings/{reading_id}/progress")[phase]["total"]
        return [self.ok(user, "GET", f"/readings/{reading_id}/slots/{phase}/{n}")["case"] for n in range(total)]

    def save(self, user: str, reading_id: int, index: int, answers: dict[str, Any], complete: bool = True,
             phase: str = "serious") -> TestResponse:
        return self.call(user, "PUT", f"/readings/{reading_id}/slots/{phase}/{index}",
                         json={"answers": answers, "active_ms": 1200, "complete": complete})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[ReadingApi]:
    built = copy_site(portal_site, tmp_path_factory.mktemp("readings-api") / "var",
                      orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    with built.archive.unit_of_work() as (session, _journal):
        alpha = get_project(session, "alpha")
        for name in ("reader2", "reader3"):
            user, _one_time = accounts.create_user(session, name)
            accounts.grant_role(session, user, alpha, Role.READER)
        for number, subject in enumerate(BULK):
            study = ensure_study(session, alpha, subject, "S1")
            study.study_instance_uid = f"1.2.826.0.1.{number}"
            study.study_date = date(2020, 1, 1 + number % 28)
    app = create_app(built.archive.settings, built.archive)
    yield ReadingApi(app.test_client(), built, {user: bearer(token_for(built.archive, user)) for user in USERS})
    built.archive.close()


# -- forms -------------------------------------------------------------------------------------


def test_a_form_that_does_not_validate_is_refused_naming_the_element_and_field(api: ReadingApi) -> None:
    bad = {"items": [{"kind": "radio", "name": "ok", "options": ["a"]}, {"kind": "radio", "name": "side", "options": []}]}
    answer = api.call("admin", "PUT", "/reading-forms/broken", json=bad)
    assert answer.status_code == 400
    assert "items[1]" in answer.json["error"] and "side" in answer.json["error"] and "options" in answer.json["error"]
    assert api.call("admin", "GET", "/reading-forms/broken").status_code == 404


def test_only_project_admins_save_forms(api: ReadingApi) -> None:
    assert api.call("editor", "PUT", "/reading-forms/by-editor", json=FORM).status_code == 403
    assert api.call("norole", "GET", "/reading-forms").status_code == 404
    assert api.call("viewer", "GET", "/reading-forms").status_code == 403


def test_a_changed_form_is_a_new_version_and_old_results_keep_theirs(api: ReadingApi) -> None:
    reading = api.reading("versioned")
    assert api.save("reader", reading, 0, {"side": "none"}).status_code == 200
    again = api.ok("admin", "PUT", "/reading-forms/versioned", json=FORM)
    assert again == {"name": "versioned", "version": 1, "changed": False}
    changed = {**FORM, "items": [*FORM["items"], {"kind": "checkbox", "name": "calcified"}]}
    assert api.ok("admin", "PUT", "/reading-forms/versioned", json=changed)["version"] == 2
    assert api.save("reader", reading, 1, {"side": "left", "calcified": True}).status_code == 200
    rows = api.ok("admin", "GET", f"/readings/{reading}/results")["rows"]
    assert sorted((row["form_version"], row["answers"].get("calcified")) for row in rows) == [(1, None), (2, True)]
    first = api.ok("reader", "GET", "/reading-forms/versioned?version=1")
    assert [item["name"] for item in first["form"]["items"]] == ["side", "confidence", "comment", "size", "stone"]
    assert [v["version"] for v in first["versions"]] == [1, 2]


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"cases": {"files": '"unclosed'}}, "cases.files"),
    ({"cases": {"modality": "MR"}}, "unknown filter bar 'modality'"),
    ({"order": "alphabetical"}, "order must be one of none, full, idhash"),
    ({"repetitions": 0}, "repetitions must be a whole number from 1 to 20"),
    ({"stages": [{"name": "a"}, {"name": "a"}]}, "stages must have distinct names"),
    ({"readers": ["nobody"]}, "no user 'nobody'"),
    ({"readers": ["viewer"]}, "'viewer' has no reader role"),
    ({"preset": "missing"}, "no viewer preset 'missing'"),
    ({"instructions_url": "javascript:alert(1)"}, "instructions_url must be an http(s) address"),
])
def test_configuration_is_checked_field_by_field(api: ReadingApi, change: dict[str, Any], message: str) -> None:
    api.ok("admin", "PUT", "/reading-forms/checked", json=FORM)
    body = {"name": "checked", "form": "checked", "cases": {"patient_id": "R*"}, "readers": ["reader"], **change}
    answer = api.call("admin", "POST", "/readings", json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json["error"]


def test_a_filter_that_selects_no_case_refuses_the_start_with_the_reason(api: ReadingApi) -> None:
    api.ok("admin", "PUT", "/reading-forms/empty", json=FORM)
    body = {"name": "empty", "form": "empty", "cases": {"files": "*.nii & STAG:nosuchtag"}, "readers": ["reader"]}
    reading = api.ok("admin", "POST", "/readings", json=body)["id"]
    answer = api.call("admin", "POST", f"/readings/{reading}/start")
    assert answer.status_code == 400
    assert "selects no study" in answer.json["error"] and "STAG:nosuchtag" in answer.json["error"]
    assert api.ok("admin", "GET", f"/readings/{reading}")["state"] == "draft"


def test_a_started_reading_keeps_what_decides_its_slots(api: ReadingApi) -> None:
    reading = api.reading("fixed")
    config = api.ok("admin", "GET", f"/readings/{reading}")
    editable = {k: v for k, v in config.items() if k not in ("id", "state", "cases_chosen")}
    assert config["cases_chosen"] == {"training": 0, "serious": len(BULK)}
    answer = api.call("admin", "PUT", f"/readings/{reading}", json={**editable, "repetitions": 3})
    assert answer.status_code == 409 and "repetitions" in answer.json["error"]
    renamed = api.ok("admin", "PUT", f"/readings/{reading}", json={**editable, "instructions": "read carefully"})
    assert renamed["instructions"] == "read carefully"


# -- ordering ----------------------------------------------------------------------------------


def _studies_of(api: ReadingApi, reading: int, cases: list[int]) -> list[str]:
    """The study UIDs behind case ids, as the administrator's results would tell them."""
    with api.site.archive.sessions() as session:
        rows = dict(session.execute(
            select(ReadingCase.id, Study.study_instance_uid).join(Study, Study.id == ReadingCase.study_id)
            .where(ReadingCase.reading_id == reading)
        ).tuples().all())
    return [rows[case] for case in cases]


def test_order_none_reads_the_cases_by_subject(api: ReadingApi) -> None:
    reading = api.reading("in order")
    uids = _studies_of(api, reading, api.cases("reader", reading))
    assert uids == [f"1.2.826.0.1.{n}" for n in range(len(BULK))]


def test_idhash_order_is_the_same_for_every_reader_and_session(api: ReadingApi) -> None:
    reading = api.reading("hashed", order="idhash", allow_restart_serious=True)
    first = api.cases("reader", reading)
    uids = _studies_of(api, reading, first)
    assert uids == sorted(uids, key=lambda uid: hashlib.sha256(uid.encode()).hexdigest())
    assert api.cases("reader2", reading) == first
    api.ok("reader", "POST", f"/readings/{reading}/restart", json={"phase": "serious", "confirm": True})
    assert api.cases("reader", reading) == first


def test_full_random_order_differs_between_readers_and_sessions(api: ReadingApi) -> None:
    reading = api.reading("shuffled", order="full", allow_restart_serious=True)
    first = api.cases("reader", reading)
    assert sorted(first) == sorted(api.cases("reader2", reading))
    assert first != api.cases("reader2", reading)
    assert first == api.cases("reader", reading), "one session keeps its order"
    api.ok("reader", "POST", f"/readings/{reading}/restart", json={"phase": "serious", "confirm": True})
    assert api.cases("reader", reading) != first


def test_repetitions_come_back_spread_apart(api: ReadingApi) -> None:
    reading = api.reading("repeated", order="idhash", repetitions=2)
    progress = api.ok("reader", "GET", f"/readings/{reading}/progress")
    assert progress["serious"]["total"] == 2 * len(BULK)
    slots = [api.ok("reader", "GET", f"/readings/{reading}/slots/serious/{n}") for n in range(2 * len(BULK))]
    seen: dict[int, list[int]] = {}
    for slot in slots:
        seen.setdefault(slot["case"], []).append(slot["index"])
    assert all(len(places) == 2 for places in seen.values())
    assert min(b - a for a, b in seen.values()) >= len(BULK) // 2


def test_a_later_stage_opens_once_the_earlier_is_finished(api: ReadingApi) -> None:
    reading = api.reading("staged", cases={"patient_id": "P0*"},
                          stages=[{"name": "plain", "overlay": None}, {"name": "with AI", "overlay": "002_sag/*.nii"}])
    assert api.ok("reader", "GET", f"/readings/{reading}/slots/serious/2")["stage"]["name"] == "plain"
    locked = api.call("reader", "GET", f"/readings/{reading}/slots/serious/3")
    assert locked.status_code == 400 and "opens once the earlier stage is finished" in locked.json["error"]
    for index in range(3):
        assert api.save("reader", reading, index, {"side": "none"}).status_code == 200
    second = api.ok("reader", "GET", f"/readings/{reading}/slots/serious/3")
    assert second["stage"]["name"] == "with AI"
    assert [layer["overlay"] for layer in second["viewer"]["layers"]] == [False, True]


def test_training_comes_before_the_serious_reading(api: ReadingApi) -> None:
    reading = api.reading("trained", cases={"patient_id": "P0*"}, training_cases={"patient_id": "R0*"})
    progress = api.ok("reader", "GET", f"/readings/{reading}/progress")
    assert progress["phase"] == "training" and progress["training"] == {"done": 0, "total": 9}
    refused = api.call("reader", "GET", f"/readings/{reading}/slots/serious/0")
    assert refused.status_code == 400 and "finish the training" in refused.json["error"]
    for index in range(9):
        assert api.save("reader", reading, index, {"side": "none"}, phase="training").status_code == 200
    progress = api.ok("reader", "GET", f"/readings/{reading}/progress")
    assert progress["phase"] == "serious" and progress["position"] == 0
    assert api.call("reader", "GET", f"/readings/{reading}/slots/serious/0").status_code == 200


# -- blinding ----------------------------------------------------------------------------------


IDENTIFIERS = [
    *(s[0] for s in SUBJECTS), *(s[3] for s in SUBJECTS), *(n for s in SUBJECTS for n in s[4].split("^")),
    *(s[2].isoformat() for s in SUBJECTS), *(s[2].strftime("%Y%m%d") for s in SUBJECTS), "001_ax", "002_sag", "ax_asc", "sag_asc",
]


def test_a_blinded_reader_receives_no_identifier(api: ReadingApi) -> None:
    blind = {"identity": True, "dates": True, "description": True, "other_readers": True, "own_earlier": True}
    reading = api.reading("blinded", cases={"patient_id": "P0*"}, blinding=blind, preset="two views")
    for index in range(3):
        answer = api.call("reader", "GET", f"/readings/{reading}/slots/serious/{index}")
        assert answer.status_code == 200
        leaked = [word for word in IDENTIFIERS if word in answer.text]
        assert leaked == [], f"slot {index} shows {leaked}"
        layers = answer.json["viewer"]["layers"]
        assert [layer["name"] for layer in layers] == ["image 1", "image 2"]
        assert "case" not in answer.json, "a case's id would tell a repetition from a first reading"
        image = api.client.get(layers[0]["url"], headers=api.auth["reader"])
        assert image.status_code == 200 and image.data[344:348] == b"n+1\x00"
        assert "image-1.nii" in image.headers["Content-Disposition"]
        # Werkzeug's ETag hashes the file's path; Last-Modified is the conversion's date.
        assert "ETag" not in image.headers and "Last-Modified" not in image.headers
        assert not any(word in image.headers["Content-Disposition"] for word in IDENTIFIERS)
    text = api.call("reader", "GET", f"/readings/{reading}/progress").text
    assert [word for word in IDENTIFIERS if word in text] == []
    for url in ("/results", "/results.csv"):
        refused = api.call("reader", "GET", f"/readings/{reading}{url}")
        assert refused.status_code == 403 and "blinds your earlier answers" in refused.json["error"], url


def test_without_blinding_the_reader_sees_the_study_and_the_others(api: ReadingApi) -> None:
    reading = api.reading("open", cases={"patient_id": "P01"})
    assert api.save("reader2", reading, 0, {"side": "left"}).status_code == 200
    slot = api.ok("reader", "GET", f"/readings/{reading}/slots/serious/0")
    assert slot["study"] == {"subject": "P01", "study": "S1", "date": "2021-03-04", "description": "MR head"}
    assert slot["others"] == [{"reader": "reader2", "answers": {"side": "left"}}]
    assert slot["viewer"]["layers"][0]["name"] == "001_ax/ax_asc_35sl_6.nii"


# -- reading -----------------------------------------------------------------------------------


def test_readers_not_assigned_find_no_reading(api: ReadingApi) -> None:
    reading = api.reading("assigned only")
    for user in ("reader3", "editor"):
        assert api.call(user, "GET", f"/readings/{reading}/progress").status_code == 404
        assert api.call(user, "GET", f"/readings/{reading}/slots/serious/0").status_code == 404
        assert reading not in [r["id"] for r in api.ok(user, "GET", "/readings")["readings"]]
    assert api.call("norole", "GET", f"/readings/{reading}/progress").status_code == 404
    assert api.call("viewer", "GET", f"/readings/{reading}/progress").status_code == 403
    assert api.call("reader", "GET", f"/readings/{reading}").status_code == 403, "readers do not read the configuration"


def test_answers_are_checked_and_kept_as_they_are_typed(api: ReadingApi) -> None:
    reading = api.reading("typed")
    assert api.save("reader", reading, 0, {"confidence": 4}, complete=False).status_code == 200
    slot = api.ok("reader", "GET", f"/readings/{reading}/slots/serious/0")
    assert slot["answers"] == {"confidence": 4} and not slot["completed"] and slot["active_ms"] == 1200
    missing = api.save("reader", reading, 0, {"confidence": 4})
    assert missing.status_code == 400 and "'side'" in missing.json["error"]
    unknown = api.save("reader", reading, 0, {"side": "none", "weight": 3})
    assert unknown.status_code == 400 and "weight" in unknown.json["error"]
    outside = api.save("reader", reading, len(BULK), {"side": "none"})
    assert outside.status_code == 400 and f"not {len(BULK)}" in outside.json["error"]
    saved = api.save("reader", reading, 0, {"side": "none", "confidence": 4, "comment": "hidden by its condition"})
    assert saved.json == {"saved": True, "completed": True, "next": 1, "done": 1}
    assert api.ok("reader", "GET", f"/readings/{reading}/slots/serious/0")["answers"] == {"side": "none", "confidence": 4}
    assert api.ok("reader", "GET", f"/readings/{reading}/progress")["serious"] == {"done": 1, "total": len(BULK)}


def test_a_save_answers_with_the_phase_s_finished_slots_counting_each_slot_once(api: ReadingApi) -> None:
    reading = api.reading("counted")
    answered = {"side": "none"}
    assert api.save("reader", reading, 0, answered, complete=False).json == {"saved": True, "completed": False, "next": 1, "done": 0}
    assert api.save("reader", reading, 0, answered).json == {"saved": True, "completed": True, "next": 1, "done": 1}
    again = api.save("reader", reading, 0, answered).json
    assert again == {"saved": True, "completed": True, "next": 1, "done": 1}, "saving a finished case again does not count it twice"
    autosaved = api.save("reader", reading, 0, {"side": "left"}, complete=False).json
    assert autosaved == {"saved": True, "completed": True, "next": 1, "done": 1}, "an autosave does not unfinish a case"
    assert api.save("reader", reading, 1, answered).json == {"saved": True, "completed": True, "next": 2, "done": 2}
    assert api.save("reader2", reading, 0, answered).json == {"saved": True, "completed": True, "next": 1, "done": 1}
    last = api.save("reader", reading, len(BULK) - 1, answered, complete=False).json
    assert last == {"saved": True, "completed": False, "next": None, "done": 2}
    assert api.ok("reader", "GET", f"/readings/{reading}/progress")["serious"] == {"done": 2, "total": len(BULK)}


def test_concurrent_saves_of_one_answer_leave_one_row_the_last_one(api: ReadingApi) -> None:
    reading = api.reading("raced")
    answers = [{"side": side, "confidence": n % 5 + 1} for n, side in enumerate(["none", "right", "left"] * 4)]
    statuses: list[int] = []

    def save(answer: dict[str, Any]) -> None:
        statuses.append(api.save("reader", reading, 0, answer).status_code)

    threads = [threading.Thread(target=save, args=(answer,)) for answer in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(answers)
    with api.site.archive.sessions() as session:
        rows = session.scalars(
            select(ReadingResult).join(ReadingCase, ReadingCase.id == ReadingResult.case_id).where(ReadingCase.reading_id == reading)
        ).all()
    assert len(rows) == 1
    assert json.loads(rows[0].answers) in answers
    assert api.ok("reader", "GET", f"/readings/{reading}/slots/serious/0")["answers"] == json.loads(rows[0].answers)


def test_useastag_answers_become_study_tags(api: ReadingApi) -> None:
    reading = api.reading("tagging", cases={"patient_id": "P02"})
    assert api.save("reader", reading, 0, {"side": "right"}).status_code == 200
    assert _tags(api, "P02") >= {"right"}
    assert api.save("reader", reading, 0, {"side": "left"}).status_code == 200
    tags = _tags(api, "P02")
    assert "left" in tags and "right" not in tags
    table = api.ok("admin", "GET", "/studies?f_patient_id=P02")
    assert "left" in json.dumps(table)


def _tags(api: ReadingApi, subject: str) -> set[str]:
    with api.site.archive.sessions() as session:
        return set(session.scalars(select(StudyTag.tag).where(StudyTag.study_id == api.site.studies[subject])))


def test_restart_deletes_only_the_readers_own_results_after_confirmation(api: ReadingApi) -> None:
    reading = api.reading("restartable", cases={"patient_id": "P0*"}, allow_restart_serious=True)
    for user in ("reader", "reader2"):
        assert api.save(user, reading, 0, {"side": "none"}).status_code == 200
    unconfirmed = api.call("reader", "POST", f"/readings/{reading}/restart", json={"phase": "serious"})
    assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.json["error"]
    assert api.ok("reader", "POST", f"/readings/{reading}/restart", json={"phase": "serious", "confirm": True}) == {"deleted": 1}
    readers = [row["reader"] for row in api.ok("admin", "GET", f"/readings/{reading}/results")["rows"]]
    assert readers == ["reader2"]
    fixed = api.reading("not restartable", cases={"patient_id": "P0*"})
    refused = api.call("reader", "POST", f"/readings/{fixed}/restart", json={"phase": "serious", "confirm": True})
    assert refused.status_code == 403


def test_a_joint_reading_shares_one_set_of_answers(api: ReadingApi) -> None:
    reading = api.reading("together", cases={"patient_id": "P0*"}, mode="joint", order="full")
    assert api.cases("reader", reading) == api.cases("reader2", reading)
    assert api.save("reader", reading, 0, {"side": "none"}, complete=False).status_code == 200
    assert api.ok("reader2", "GET", f"/readings/{reading}/slots/serious/0")["answers"] == {"side": "none"}
    assert api.save("reader2", reading, 0, {"side": "right"}).status_code == 200
    rows = api.ok("admin", "GET", f"/readings/{reading}/results")["rows"]
    assert [(row["reader"], row["answers"]["side"]) for row in rows] == [("joint (last: reader2)", "right")]


# -- results -----------------------------------------------------------------------------------


def test_results_table_and_csv_by_case_reader_and_repetition(api: ReadingApi) -> None:
    reading = api.reading("exported", cases={"patient_id": "P0*"}, repetitions=2, blinding={"other_readers": True})
    given: dict[tuple[str, int], str] = {}
    for user, side in (("reader", "left"), ("reader2", "right")):
        for index in range(6):
            assert api.save(user, reading, index, {"side": side, "size": 4.5, "comment": "=2+2"}).status_code == 200
            given[(user, api.ok(user, "GET", f"/readings/{reading}/slots/serious/{index}")["case"])] = side
    table = api.ok("admin", "GET", f"/readings/{reading}/results")
    assert [item["name"] for item in table["items"]] == ["side", "confidence", "comment", "size", "stone"]
    assert len(table["rows"]) == 12 and {row["subject"] for row in table["rows"]} == {"P01", "P02", "P03"}
    exported = api.call("admin", "GET", f"/readings/{reading}/results.csv")
    assert exported.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert list(rows[0]) == ["case", "subject", "study", "reader", "phase", "stage", "repetition", "form_version",
                             "side", "confidence", "comment", "size", "stone", "active_ms", "completed", "saved_at"]
    assert sorted((row["reader"], row["repetition"]) for row in rows) == sorted(
        (user, str(rep)) for user in ("reader", "reader2") for rep in (0, 1) for _case in range(3)
    )
    assert all(row["side"] == given[(row["reader"], int(row["case"]))] and row["size"] == "4.5" for row in rows)
    assert {row["comment"] for row in rows} == {"'=2+2"}, "a text answer never becomes a spreadsheet formula"
    own = api.ok("reader", "GET", f"/readings/{reading}/results")["rows"]
    assert {row["reader"] for row in own} == {"reader"} and "subject" not in own[0]
    assert api.call("reader", "GET", f"/readings/{reading}/agreement").status_code == 403


def test_agreement_reproduces_the_textbook_kappa(api: ReadingApi) -> None:
    # Cohen's kappa, the textbook two-rater example: of 50 cases both say yes on 20, both no on
    # 15, A yes and B no on 5, A no and B yes on 10: p_o = 0.7, p_e = 0.5, kappa = 0.4.
    form = {"items": [{"kind": "radio", "name": "side", "options": ["yes", "no"], "required": True},
                      {"kind": "roi", "name": "stone"}]}
    reading = api.reading("kappa", form_document=form, order="idhash")
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    first = api.ok("reader", "GET", f"/readings/{reading}/slots/serious/0")["case"]
    for index, (a, b) in enumerate(pairs):
        # Two overlapping boxes on the first case only: Dice 2 * 2 / (3 + 3).
        roi_a = {"dims": [4, 4, 4], "runs": [0, 3]} if index == 0 else None
        roi_b = {"dims": [4, 4, 4], "runs": [1, 3]} if index == 0 else None
        assert api.save("reader", reading, index, {"side": a, "stone": roi_a}).status_code == 200
        assert api.save("reader2", reading, index, {"side": b, "stone": roi_b}).status_code == 200
    assert api.ok("reader2", "GET", f"/readings/{reading}/slots/serious/0")["case"] == first
    result = api.ok("admin", "GET", f"/readings/{reading}/agreement")
    [inter] = result["inter"]
    assert inter["item"] == "side" and inter["statistic"] == "Cohen's kappa" and inter["cases"] == 50
    assert inter["value"] == pytest.approx(0.4)
    [overlap] = result["dice"]
    assert overlap["readers"] == ["reader", "reader2"] and overlap["value"] == pytest.approx(2 * 2 / 6) and overlap["cases"] == 1


def test_intra_rater_agreement_across_repetitions(api: ReadingApi) -> None:
    reading = api.reading("intra", cases={"patient_id": "R0*"}, repetitions=2, order="idhash", readers=["reader"])
    answers: dict[int, list[float]] = {}
    for index in range(18):
        case = api.ok("reader", "GET", f"/readings/{reading}/slots/serious/{index}")["case"]
        size = float(case % 7) + (0.5 if index >= 9 else 0.0)
        answers.setdefault(case, []).append(size)
        assert api.save("reader", reading, index, {"side": "none", "size": size}).status_code == 200
    [intra] = [row for row in api.ok("admin", "GET", f"/readings/{reading}/agreement")["intra"] if row["item"] == "size"]
    assert intra["reader"] == "reader" and intra["statistic"] == "ICC(2,1)" and intra["cases"] == 9
    assert _icc21(list(answers.values())) == pytest.approx(intra["value"], abs=1e-4)


def _icc21(table: list[list[float]]) -> float:
    """Shrout and Fleiss' ICC(2,1) from its two-way ANOVA, written out here for the check."""
    n, k = len(table), len(table[0])
    grand = sum(map(sum, table)) / (n * k)
    rows = [sum(row) / k for row in table]
    columns = [sum(row[j] for row in table) / n for j in range(k)]
    ss_rows = k * sum((m - grand) ** 2 for m in rows)
    ss_columns = n * sum((m - grand) ** 2 for m in columns)
    ss_total = sum((x - grand) ** 2 for row in table for x in row)
    ms_rows, ms_columns = ss_rows / (n - 1), ss_columns / (k - 1)
    ms_error = (ss_total - ss_rows - ss_columns) / ((n - 1) * (k - 1))
    return (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_columns - ms_error) / n)


def test_the_readers_list_shows_progress(api: ReadingApi) -> None:
    reading = api.reading("listed", cases={"patient_id": "P0*"})
    assert api.save("reader", reading, 0, {"side": "none"}).status_code == 200
    [mine] = [r for r in api.ok("reader", "GET", "/readings")["readings"] if r["id"] == reading]
    assert mine["progress"] == {"training": None, "serious": {"done": 1, "total": 3}}
    assert mine["assigned"] and not mine["can_configure"]
