"""The Notebook page and Gridstats' "Debug in a notebook" in Chromium, on a real hub: a member
starts JupyterLab for the project from the form, opens it and stops it; an errored run opens
in a notebook in a new tab, through the hub's log-in at the portal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from nifti_archive.models import JobState
from testbed.portal import Portal, log_in
from tests.notebook_client import Stack, ended_run, notebook_stack
from tests.portal_site import PASSWORD, Site, SiteTemplate, copy_site

START_MS = 120_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[Stack]:
    site = copy_site(portal_site, tmp_path_factory.mktemp("notebooks-browser") / "var")
    try:
        with notebook_stack(site) as running:
            yield running
    finally:
        site.archive.close()


@pytest.fixture(scope="module")
def served(stack: Stack) -> tuple[Portal, Site]:
    return stack.portal, stack.site


def test_a_member_starts_opens_and_stops_a_notebook(page: Page, stack: Stack) -> None:
    log_in(page, "viewer", PASSWORD)
    page.goto("/p/alpha/notebooks")
    page.fill("input[name=time_minutes]", "30")
    page.click("#notebook-form button[type=submit]")
    row = page.locator("#notebooks tbody tr")
    expect(row.locator("td").nth(2)).to_have_text("running", timeout=START_MS)
    expect(row.locator("a", has_text="Open")).to_have_attribute("href", stack.hub.url + "user/viewer/alpha/lab")
    page.goto("/p/alpha/gridstats")
    expect(page.locator("#notebooks tbody tr td").nth(2)).to_have_text("running")
    page.click("#notebooks button.stop-notebook")
    expect(page.locator("#notebooks tbody tr")).to_have_count(0, timeout=START_MS)


def test_an_errored_run_opens_in_a_notebook_from_gridstats(page: Page, stack: Stack) -> None:
    run_id = ended_run(stack.site, JobState.ERROR)
    log_in(page, "editor", PASSWORD)
    page.goto("/p/alpha/gridstats")
    with page.expect_popup(timeout=START_MS) as opened:
        page.locator(f"#runs tr[data-run='{run_id}'] button.debug-run").click()
    lab = opened.value
    # The hub sends the new tab to the portal, where the editor is logged in already, and back.
    lab.wait_for_url(f"**/user/editor/alpha/lab/tree/debug-run-{run_id}.ipynb", timeout=START_MS)
    assert "/oauth/authorize" not in lab.url
    page.click("#notebooks button.stop-notebook")
    expect(page.locator("#notebooks tbody tr")).to_have_count(0, timeout=START_MS)
