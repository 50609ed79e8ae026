"""The batchtool in Debian's Chromium: an editor composes a batch from the job menu (a predefined
stats job and a bash job whose rows follow its script), validates it on the site's studies (the
study without the T1 fails and says which pattern found nothing; the others show the file they
would get), saves, renames and reopens it, goes through its JSON, and launches it on the studies
selected in the table, whose runs gridstats shows done. A viewer sees the composer read-only.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from nifti_archive.archive import get_project
from nifti_archive.catalog.registration import add_files
from nifti_archive.permissions import secure_archive_root
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS
from tests.portal_site import AXIAL, PASSWORD, Site, build_site, site_archive

# A T1 in P01 and P02 only: the batch finds nothing to work on in P03.
T1_SUBJECTS = ("P01", "P02")
T1_PATTERN = "003_t1/*.nii"
T1_FILE = "003_t1/t1.nii"
BATCH = "t1 copies"
RENAMED = "t1 copies v2"
# How long the local executor may take to run the launched batch on two studies.
RUN_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("batchtool-browser"), sqlite_template)
    site = build_site(archive)
    with archive.unit_of_work() as (session, _journal):
        alpha = get_project(session, "alpha")
        paths = []
        for subject in T1_SUBJECTS:
            path = archive.layout.study_dir("alpha", subject, "S1") / T1_FILE
            path.parent.mkdir()
            shutil.copyfile(AXIAL, path)
            paths.append(path)
        add_files(session, archive.layout, alpha, paths)
        alpha.autoexec_batch = "stats"
    # The jobs group reads the new files as it reads the rest of the tree.
    secure_archive_root(archive.settings)
    portal = start_portal(archive.settings)
    yield portal, site
    portal.stop()
    archive.close()


def card(page: Page, index: int) -> Locator:
    return page.locator("#jobs > li.job-card").nth(index)


def value(job: Locator, arg: str) -> Locator:
    return job.locator(f"tr.arg-row[data-arg={arg}] .arg-value")


def expect_rows(job: Locator, names: list[str], types: list[str]) -> None:
    expect(job.locator("tr.arg-row .arg-name")).to_have_text(names)
    expect(job.locator("tr.arg-row .arg-type")).to_have_text(types)


def saved(page: Page, name: str) -> Locator:
    return page.locator(f"#saved li[data-name='{name}']")


def compose(page: Page) -> None:
    """A stats job on the T1 and a bash job copying it, composed from the menu."""
    page.click("#job-menu button[data-job=stats]")
    stats = card(page, 0)
    expect_rows(stats, ["f1", "f2", "o1"], ["FILE", "FILE", "OUT"])
    expect(value(stats, "o1")).to_have_value("stats/stats.json")
    value(stats, "f1").fill(T1_PATTERN)
    value(stats, "o1").fill("stats/t1.json TAG(t1stats)")

    page.click("#job-menu button[data-job=bash]")
    bash = card(page, 1)
    script = bash.locator("textarea.job-script")
    script.fill('mkdir -p "$(dirname "$o1")" && cp "$f1" "$o1"')
    expect_rows(bash, ["f1", "o1"], ["FILE", "OUT"])
    value(bash, "f1").fill(T1_PATTERN)
    value(bash, "o1").fill("draft.nii")
    script.fill('cat "$f1" > /dev/null')
    expect_rows(bash, ["f1"], ["FILE"])
    script.fill('mkdir -p "$(dirname "${o1}")" && cp "$f1" "${o1}"')
    expect_rows(bash, ["f1", "o1"], ["FILE", "OUT"])
    # f1 stayed in the script all along and kept its pattern; o1 came back empty.
    expect(value(bash, "f1")).to_have_value(T1_PATTERN)
    expect(value(bash, "o1")).to_have_value("")
    value(bash, "o1").fill("copies/t1.nii")

    page.click("#job-menu button[data-job=reorient]")
    expect(page.locator("#jobs > li.job-card")).to_have_count(3)
    card(page, 2).locator("button.job-up").click()
    expect(page.locator("#jobs .job-name")).to_have_text(["stats", "reorient", "bash"])
    card(page, 1).locator("button.job-remove").click()
    expect(page.locator("#jobs .job-name")).to_have_text(["stats", "bash"])
    card(page, 1).locator("button.job-up").click()
    expect(page.locator("#jobs .job-name")).to_have_text(["bash", "stats"])
    card(page, 0).locator("button.job-down").click()
    expect(page.locator("#jobs .job-name")).to_have_text(["stats", "bash"])
    expect(value(card(page, 1), "o1")).to_have_value("copies/t1.nii")
    page.screenshot(path=ARTIFACTS / "batchtool-composer.png", full_page=True)


def validate_on_every_study(page: Page) -> None:
    page.check("input[name=target][value=filter]")
    page.fill("#launch-filter", "")
    # A problem of the spec is shown on the row it names, and no study is tried.
    value(card(page, 0), "o1").fill("../outside.json")
    page.click("#validate")
    problem_row = card(page, 0).locator("tr.arg-row.problem[data-arg=o1]")
    expect(problem_row).to_be_visible()
    expect(problem_row.locator(".arg-message")).not_to_be_empty()
    expect(page.locator("#problems li[data-field='jobs[0].args.o1.value']")).to_have_count(1)
    expect(page.locator("#validation-results tbody tr")).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "batchtool-problem.png", full_page=True)

    value(card(page, 0), "o1").fill("stats/t1.json TAG(t1stats)")
    page.click("#validate")
    expect(page.locator("#validation-summary")).to_have_text("3 study(ies): 2 ok, 1 failing")
    expect(page.locator("#problems li")).to_have_count(0)
    expect(card(page, 0).locator("tr.arg-row.problem")).to_have_count(0)
    expect(page.locator("#validation-summary")).to_have_text("3 study(ies): 2 ok, 1 failing")
    failing = page.locator("#validation-results tbody tr.target-failing")
    expect(failing).to_have_count(1)
    expect(failing).to_have_attribute("data-subject", "P03")
    expect(failing.locator(".target-status")).to_have_text("failing")
    expect(failing.locator("td.resolution.error").first).to_contain_text(T1_PATTERN)
    expect(page.locator("#validation-results tbody tr.target-ok td:first-child")).to_have_text(list(T1_SUBJECTS))
    for subject in T1_SUBJECTS:
        cells = page.locator(f"#validation-results tbody tr[data-subject={subject}] td.resolution")
        expect(cells.filter(has_text=T1_FILE)).to_have_count(2)
        expect(cells.filter(has_text="copies/t1.nii")).to_have_count(1)
    page.screenshot(path=ARTIFACTS / "batchtool-validation.png", full_page=True)


def save_rename_and_reopen(page: Page) -> None:
    page.fill("#batch-name", BATCH)
    page.click("#save")
    expect(saved(page, BATCH)).to_be_visible()
    expect(saved(page, "stats").locator(".badge")).to_have_text("autoexec")
    expect(saved(page, BATCH).locator(".badge")).to_have_count(0)
    saved(page, BATCH).locator("button.saved-rename").click()
    saved(page, BATCH).locator("input.rename-to").fill(RENAMED)
    saved(page, BATCH).locator("button.rename-ok").click()
    expect(saved(page, RENAMED)).to_be_visible()
    expect(saved(page, BATCH)).to_have_count(0)
    expect(page.locator("#batch-name")).to_have_value(RENAMED)

    # The autoexec batch may not go; the refusal says so and the batch stays.
    page.once("dialog", lambda dialog: dialog.accept())
    saved(page, "stats").locator("button.saved-delete").click()
    expect(page.locator("#batch-error")).to_contain_text("delete:")
    expect(saved(page, "stats")).to_be_visible()

    saved(page, "stats").locator("button.saved-open").click()
    expect(page.locator("#jobs .job-name")).to_have_text(["stats"])
    expect(value(card(page, 0), "f1")).to_have_value("001_ax/*.nii")
    saved(page, RENAMED).locator("button.saved-open").click()
    expect(page.locator("#jobs .job-name")).to_have_text(["stats", "bash"])
    expect(value(card(page, 1), "o1")).to_have_value("copies/t1.nii")
    expect(card(page, 1).locator("textarea.job-script")).to_have_value('mkdir -p "$(dirname "${o1}")" && cp "$f1" "${o1}"')


def through_json(page: Page) -> None:
    page.click("#json-toggle")
    exported = json.loads(page.input_value("#batch"))
    assert exported == {"name": RENAMED, "level": "study", "jobs": [
        {"job": "stats", "args": {"f1": {"type": "FILE", "value": T1_PATTERN},
                                  "o1": {"type": "OUT", "value": "stats/t1.json TAG(t1stats)"}}},
        {"job": "bash", "script": 'mkdir -p "$(dirname "${o1}")" && cp "$f1" "${o1}"',
         "args": {"f1": {"type": "FILE", "value": T1_PATTERN}, "o1": {"type": "OUT", "value": "copies/t1.nii"}}},
    ]}
    with page.expect_download() as download:
        page.click("#json-download")
    assert download.value.suggested_filename == f"{RENAMED}.json"
    assert json.loads(Path(download.value.path()).read_text(encoding="utf-8")) == exported
    page.fill("#batch", "{ not json")
    page.click("#json-apply")
    expect(page.locator("#json-error")).to_contain_text("not valid JSON")
    page.fill("#batch", json.dumps({**exported, "jobs": [{"job": "nonesuch", "args": {}}]}))
    page.click("#json-apply")
    expect(page.locator("#json-error")).to_contain_text('jobs[0].job: unknown job "nonesuch"')
    # Subject level: the located arguments choose their study, the first one unless told.
    page.fill("#batch", json.dumps({**exported, "level": "subject"}))
    page.click("#json-apply")
    expect(page.locator("#json-dialog")).to_be_hidden()
    expect(page.locator("#batch-level")).to_have_value("subject")
    expect(card(page, 0).locator("tr[data-arg=f1] select.arg-study-kind")).to_have_value("first")
    page.click("#validate")
    expect(page.locator("#validation-summary")).to_have_text("3 subject(s): 2 ok, 1 failing")
    expect(page.locator("#validation-results tbody tr.target-failing td:first-child")).to_have_text("P03")
    page.select_option("#batch-level", "study")
    expect(card(page, 0).locator("tr[data-arg=f1] select.arg-study-kind")).to_have_value("")
    # At either level an argument may name one of the project's analyses instead.
    card(page, 0).locator("tr[data-arg=o1] select.arg-study-kind").select_option("analysis")
    card(page, 0).locator("tr[data-arg=o1] input.arg-study-pattern").fill("nowhere")
    page.click("#validate")
    expect(page.locator("#validation-results")).to_contain_text("the project has no analysis 'nowhere'")
    card(page, 0).locator("tr[data-arg=o1] select.arg-study-kind").select_option("")


def launch_and_watch(page: Page) -> None:
    page.check("input[name=target][value=selected]")
    page.select_option("#executor", "local")
    page.click("#launch")
    expect(page.locator("#launch-result")).to_contain_text(f"{len(T1_SUBJECTS)} run(s) on local")
    page.click("#launch-result a.gridstats-link")
    expect(page).to_have_url("/p/alpha/gridstats")
    page.fill("#run-search", RENAMED)
    page.click("#runs th[data-sort=subject]")
    runs = page.locator("#runs tbody tr")
    expect(runs.locator("td:nth-child(4)")).to_have_text(sorted(T1_SUBJECTS, reverse=True))
    expect(runs.locator(".job-done")).to_have_count(len(T1_SUBJECTS), timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=ARTIFACTS / "batchtool-gridstats.png")


def test_an_editor_composes_validates_saves_and_launches_a_batch(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in_as(page, "editor", PASSWORD)
    page.goto("/p/alpha")
    for subject in T1_SUBJECTS:
        page.locator(f"#studies tr[data-id='{site.studies[subject]}'] input.pick").check()
    page.goto("/p/alpha/batchtool")
    expect(page.locator("#selected-count")).to_have_text(str(len(T1_SUBJECTS)))
    compose(page)
    validate_on_every_study(page)
    save_rename_and_reopen(page)
    through_json(page)
    launch_and_watch(page)
    assert errors == []


def test_a_viewer_sees_the_composer_read_only(page: Page, served: tuple[Portal, Site]) -> None:
    log_in_as(page, "viewer", PASSWORD)
    page.goto("/p/alpha/batchtool")
    saved(page, "stats").locator("button.saved-open").click()
    expect(value(card(page, 0), "f1")).to_be_disabled()
    for absent in ("#save", "#launch", "#job-menu", "#json-apply", "button.saved-rename", "button.saved-delete", "button.job-remove"):
        expect(page.locator(absent)).to_have_count(0)
    # Validating changes nothing, so a viewer may.
    page.check("input[name=target][value=filter]")
    page.click("#validate")
    expect(page.locator("#validation-summary")).to_have_text("3 study(ies): 3 ok, 0 failing")
