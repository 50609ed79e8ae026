"""Readings in Debian's Chromium, end to end: an admin designs a form (a radio used as a study tag, a
rating, a text and a marker point), configures a blinded reading of the site's three studies for two
readers and starts it; each reader reads the three cases (answers autosaved, then "Save and next")
on a page that carries none of the studies' identifiers; the admin's CSV has a row per case and
reader with the answers given, and the last reader's radio answers are the studies' tags in the
studies table. A reading with training cases goes from training to serious, keeps an ROI drawn with
NiiVue's pen and marker points from the crosshair, and lets its reader restart training; its form
moves to another project through the designer's JSON (exported, pasted, applied, saved). Screenshots
go to test-artifacts/."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from nifti_archive import accounts
from nifti_archive.archive import get_project
from nifti_archive.models import Role
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS
from tests.polling import wait_until
from tests.portal_site import AXIAL, PASSWORD, SAGITTAL, SUBJECTS, Site, build_site, site_archive

FORM = "triage"
READING = "triage reading"
READERS = ("reader", "reader2")
# What the studies' pages must not show a blinded reader: ids, names, dates, descriptions, file names.
IDENTIFIERS = [
    *(text for subject, _study, when, description, name in SUBJECTS
      for text in (subject, when.isoformat(), description, *name.split("^"))),
    AXIAL.stem, SAGITTAL.stem,
]
CSRF = re.compile(r'<meta name="csrf-token" content="[^"]*">')


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("readings-browser"), sqlite_template)
    site = build_site(archive)
    with archive.unit_of_work() as (session, _journal):
        # A second reader, made as the site makes its users.
        user, _one_time = accounts.create_user(session, "reader2")
        accounts.set_password(user, PASSWORD)
        accounts.grant_role(session, user, get_project(session, "alpha"), Role.READER)
        # The admin of alpha administers beta too, to move a form between the two.
        accounts.grant_role(session, accounts.get_user(session, "admin"), get_project(session, "beta"), Role.ADMIN)
    portal = start_portal(archive.settings)
    yield portal, site
    portal.stop()
    archive.close()


def _answers(reader: str, index: int) -> dict[str, str]:
    """What ``reader`` answers to the case at ``index`` of their sequence: different per reader and case."""
    return {
        "side": ("left", "right")[(index + READERS.index(reader)) % 2],
        "confidence": str(1 + (index + 2 * READERS.index(reader)) % 5),
        "comment": f"{reader} on case {index + 1}",
    }


def _design_form(page: Page) -> None:
    page.goto(f"/p/alpha/readings/forms/{FORM}")
    expect(page.locator("#message")).to_have_text("a new form: add elements from the palette")
    for kind in ("radio", "rating", "text", "markerpoint"):
        page.click(f"#palette button[data-kind={kind}]")
    for old, new in (("radio1", "side"), ("rating1", "confidence"), ("text1", "comment"), ("markerpoint1", "centre")):
        name = page.locator(f"li[data-name={old}] input.designer-name")
        name.fill(new)
        name.press("Tab")
    side = page.locator("li[data-name=side]")
    side.locator("input[data-key=label]").fill("Side of the finding")
    side.locator("input[data-key=required]").check()
    side.locator("select[data-key=useastag]").select_option("study")
    # A tag is one word: the server refuses the form, and the page says why.
    side.locator("textarea[data-key=options]").fill("left side\nright")
    page.click("#save")
    expect(page.locator("#message")).to_contain_text("useastag needs every option to be a tag")
    side.locator("textarea[data-key=options]").fill("left\nright")
    page.locator("li[data-name=confidence] input[data-key=required]").check()
    # The preview follows the form: the comment shows only once a side is chosen.
    comment = page.locator("li[data-name=comment]")
    comment.locator("select[data-key=when-item]").select_option("side")
    comment.locator("input[data-key=when-is]").fill("left, right")
    expect(page.locator("#preview [data-item=comment]")).to_be_hidden()
    page.locator("#preview [data-item=side] input[value=left]").check()
    expect(page.locator("#preview [data-item=comment]")).to_be_visible()
    expect(page.locator("#preview [data-item=confidence] input[type=radio]")).to_have_count(5)
    page.click("#save")
    expect(page.locator("#message")).to_have_text("saved as version 1")
    page.screenshot(path=ARTIFACTS / "readings-designer.png", full_page=True)


def _configure(page: Page) -> int:
    page.goto("/p/alpha/readings/new")
    expect(page.locator("#form option", has_text=FORM)).to_have_count(1)
    page.fill("#name", READING)
    page.select_option("#form", FORM)
    page.fill("#readers", ", ".join(READERS))
    page.fill("#cases-files", "*.nii*")
    # A filter that selects no study: starting is refused, with the reason.
    page.fill("#cases-study_description", "no such description")
    page.click("#start")
    expect(page.locator("#message")).to_contain_text("the serious cases' filter selects no study")
    expect(page.locator("#message")).to_have_class(re.compile(r"\berror\b"))
    page.fill("#cases-study_description", "")
    page.click("#start")
    expect(page.locator("#message")).to_have_text("started: 3 case(s)")
    expect(page.locator("#state")).to_have_text("open: 3 case(s)")
    page.screenshot(path=ARTIFACTS / "readings-configure.png", full_page=True)
    match = re.search(r"/readings/(\d+)/configure$", page.url)
    assert match, page.url
    return int(match.group(1))


def _blinded(page: Page) -> None:
    html = CSRF.sub("", page.content())
    shown = [text for text in IDENTIFIERS if text in html]
    assert not shown, f"the reading page shows {shown}"


def _read(page: Page, reader: str) -> list[dict[str, str]]:
    """Reads the three cases as ``reader``; their answers in reading order."""
    log_in_as(page, reader, PASSWORD)
    page.goto("/p/alpha/readings")
    row = page.locator("#readings tbody tr", has_text=READING)
    expect(row.locator(".reading-serious")).to_have_text("0 / 3")
    row.locator("a[data-act=read]").click()
    root = page.locator("#reading")
    given: list[dict[str, str]] = []
    for index in range(3):
        expect(root).to_have_attribute("data-slot", f"serious/{index}")
        expect(page.locator("#counter")).to_have_text(f"{index + 1} / 3 (serious)")
        page.wait_for_function("() => window.northancReading.viewports[0]?.nv.volumes.length === 1")
        _blinded(page)
        answers = _answers(reader, index)
        form = page.locator("#form")
        form.locator(f"[data-item=side] input[value={answers['side']}]").check()
        form.locator(f"[data-item=confidence] input[value='{answers['confidence']}']").check()
        form.locator("[data-item=comment] input").fill(answers["comment"])
        if index == 0:
            # Autosaved while typing: the answers are there after a reload, the case not finished.
            expect(page.locator("#status")).to_have_text("saved")
            page.reload()
            expect(root).to_have_attribute("data-slot", "serious/0")
            expect(form.locator("[data-item=comment] input")).to_have_value(answers["comment"])
            expect(form.locator(f"[data-item=side] input[value={answers['side']}]")).to_be_checked()
            page.wait_for_function("() => window.northancReading.viewports[0]?.nv.volumes.length === 1")
            form.locator("[data-item=centre] button[data-action=set]").click()
            expect(form.locator("[data-item=centre] .form-value")).to_contain_text("mm")
            page.screenshot(path=ARTIFACTS / f"readings-read-{reader}.png")
        given.append(answers)
        page.click("#save-next")
    expect(root).to_have_attribute("data-slot", "done")
    expect(page.locator("#final-progress")).to_have_text("All cases are read: serious 3 / 3.")
    page.goto("/p/alpha/readings")
    expect(page.locator("#readings tbody tr", has_text=READING).locator(".reading-serious")).to_have_text("3 / 3")
    page.context.clear_cookies()
    return given


def test_design_configure_read_and_export_a_blinded_reading(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in_as(page, "admin", PASSWORD)
    _design_form(page)
    reading = _configure(page)
    page.context.clear_cookies()
    given = {reader: _read(page, reader) for reader in READERS}
    assert all(len(cases) == 3 for cases in given.values())

    log_in_as(page, "admin", PASSWORD)
    page.goto(f"/p/alpha/readings/{reading}/results")
    expect(page.locator("#results tbody tr")).to_have_count(6)
    expect(page.locator("#agreement h3").first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "readings-results.png", full_page=True)
    with page.expect_download() as download:
        page.click("#csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert len(rows) == 6
    # The blinded page names no case, so each reader's rows are matched by the answers given.
    for reader, answers in given.items():
        exported = [{key: row[key] for key in answers[0]} for row in rows if row["reader"] == reader]
        assert sorted(exported, key=repr) == sorted(answers, key=repr), reader
    assert len({(row["reader"], row["case"]) for row in rows}) == 6, "each reader read each case once"
    for row in rows:
        assert row["completed"].lower() in ("true", "1", "yes"), row
        assert int(row["active_ms"]) > 0, row
    for reader in READERS:
        marked = [row for row in rows if row["reader"] == reader and row["centre"]]
        assert len(marked) == 1, f"{reader} set the marker point on their first case only"
        assert len(json.loads(marked[0]["centre"])) == 3, marked

    # The side answers are study tags; the last reader's save wins.
    page.goto("/p/alpha")
    for row in (r for r in rows if r["reader"] == READERS[-1]):
        study = site.studies[row["subject"]]
        expect(page.locator(f"#studies tr[data-id='{study}'] .study-tag")).to_contain_text([row["side"]])
        expect(page.locator(f"#studies tr[data-id='{study}'] .study-tag", has_text=re.compile(
            "^(left|right)$"))).to_have_count(1)


DRAWN_FORM = {"title": "lesions", "items": [
    {"kind": "radio", "name": "quality", "options": ["good", "poor"], "required": True},
    {"kind": "roi", "name": "lesion"},
    {"kind": "markerset", "name": "spots"},
]}


def _as_admin(page: Page, method: str, path: str, body: object) -> dict[str, object]:
    """An API call with the admin's session and the CSRF token of the page they have open."""
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.fetch(f"/api/v1/projects/alpha{path}", method=method, data=body, headers={"X-CSRF-Token": token or ""})
    assert answer.ok, answer.text()
    result: dict[str, object] = answer.json()
    return result


def _move_form(page: Page, name: str, source: str, target: str) -> None:
    """Copies a form's JSON out of one project's designer and pastes, applies and saves it in another's."""
    page.goto(f"/p/{source}/readings/forms/{name}")
    expect(page.locator("#message")).to_have_text("version 1")
    page.click("details.designer-json summary")
    exported = json.loads(page.locator("#form-json").input_value())
    assert [item["name"] for item in exported["items"]] == ["quality", "lesion", "spots"]
    page.goto(f"/p/{target}/readings/forms/{name}")
    expect(page.locator("#message")).to_have_text("a new form: add elements from the palette")
    page.click("details.designer-json summary")
    page.fill("#form-json", json.dumps(exported))
    page.click("#json-apply")
    expect(page.locator("#message")).to_have_text("JSON applied (not saved yet)")
    expect(page.locator("#items > li")).to_have_count(3)
    page.click("#save")
    expect(page.locator("#message")).to_have_text("saved as version 1")
    forms = [page.request.get(f"/api/v1/projects/{project}/reading-forms/{name}") for project in (source, target)]
    assert all(answer.ok for answer in forms), [answer.text() for answer in forms]
    assert forms[0].json()["form"] == forms[1].json()["form"]


def _set_hidden(page: Page, hidden: bool) -> None:
    """The tab out of sight or back, as the browser would tell the page (headless Chromium never hides it)."""
    page.evaluate("""(hidden) => {
        Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


def _active_time_stops_while_hidden(page: Page, slot_url: str) -> None:
    """A hidden tab saves its answers and time at once and counts no time until it is shown again."""
    _set_hidden(page, True)
    stopped = page.evaluate("() => [window.northancReading.activeMs(), performance.now()]")
    wait_until(lambda: page.request.get(slot_url).json()["active_ms"] == stopped[0], 30, "the hidden tab's time to be saved")
    assert page.request.get(slot_url).json()["answers"] == {"quality": "good"}
    page.wait_for_function("(since) => performance.now() - since > 500", arg=stopped[1])
    assert page.evaluate("() => window.northancReading.activeMs()") == stopped[0], "no time counted while hidden"
    _set_hidden(page, False)
    page.wait_for_function("(stopped) => window.northancReading.activeMs() > stopped", arg=stopped[0])


def test_training_then_serious_with_an_roi_and_markers_and_a_restart(page: Page) -> None:
    log_in_as(page, "admin", PASSWORD)
    _as_admin(page, "PUT", "/reading-forms/lesions", DRAWN_FORM)
    _move_form(page, "lesions", "alpha", "beta")
    created = _as_admin(page, "POST", "/readings", {
        "name": "lesion reading", "form": "lesions", "readers": ["reader2"], "allow_restart_training": True,
        "cases": {"study_description": "MR*"}, "training_cases": {"study_description": "CT*"},
    })
    _as_admin(page, "POST", f"/readings/{created['id']}/start", {})
    page.context.clear_cookies()

    log_in_as(page, "reader2", PASSWORD)
    page.goto("/p/alpha/readings")
    row = page.locator("#readings tbody tr", has_text="lesion reading")
    expect(row.locator(".reading-training")).to_have_text("0 / 1")
    expect(row.locator(".reading-serious")).to_have_text("0 / 2")
    row.locator("a[data-act=read]").click()
    expect(page.locator("#counter")).to_have_text("1 / 1 (training)")
    page.wait_for_function("() => window.northancReading.viewports[0]?.nv.volumes.length === 1")
    form = page.locator("#form")
    form.locator("[data-item=quality] input[value=good]").check()
    expect(page.locator("#status")).to_have_text("saved")
    _active_time_stops_while_hidden(page, f"/api/v1/projects/alpha/readings/{created['id']}/slots/training/0")
    spots = form.locator("[data-item=spots]")
    spots.locator("button[data-action=add]").click()
    spots.locator("button[data-action=add]").click()
    expect(spots.locator(".form-value")).to_have_text("2 points")
    spots.locator(".form-points li").first.locator("button[title='remove this point']").click()
    expect(spots.locator(".form-value")).to_have_text("1 point")
    # NiiVue's pen on the first viewport: a stroke across its first tile, kept as the answer.
    lesion = form.locator("[data-item=lesion]")
    lesion.locator("button[data-action=draw]").click()
    expect(lesion.locator("button[data-action=draw]")).to_have_text("drawing: on")
    box = page.locator(".viewport canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 4, box["y"] + box["height"] / 4
    page.mouse.move(x - 30, y)
    page.mouse.down()
    for k in range(1, 13):
        page.mouse.move(x - 30 + 5 * k, y + 2 * k)
    page.mouse.up()
    lesion.locator("button[data-action=keep]").click()
    expect(lesion.locator(".form-value")).to_have_text(re.compile(r"^[1-9]\d* voxels$"))
    page.screenshot(path=ARTIFACTS / "readings-roi.png")
    page.click("#save-next")
    expect(page.locator("#notice")).to_have_text("Training is finished: the serious reading starts now.")
    expect(page.locator("#counter")).to_have_text("1 / 2 (serious)")

    answer = page.request.get(f"/api/v1/projects/alpha/readings/{created['id']}/results")
    assert answer.ok, answer.text()
    (training,) = [r for r in answer.json()["rows"] if r["phase"] == "training"]
    assert training["completed"] is True
    roi = training["answers"]["lesion"]
    assert len(roi["dims"]) == 3 and len(roi["runs"]) >= 2 and all(n > 0 for n in roi["runs"][1::2]), roi
    assert len(training["answers"]["spots"]) == 1

    page.goto("/p/alpha/readings")
    row = page.locator("#readings tbody tr", has_text="lesion reading")
    expect(row.locator(".reading-training")).to_have_text("1 / 1")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button[data-act=restart-training]").click()
    expect(page.locator("#message")).to_have_text("lesion reading: 1 training answer deleted")
    expect(row.locator(".reading-training")).to_have_text("0 / 1")
