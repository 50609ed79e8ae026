"""The portal in Debian's Chromium: log in, filter, tag, view real NIfTI with NiiVue, step with
the autoloader, share a view. Screenshots go to test-artifacts/."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from nifti_archive.catalog.tags import TagLevel
from nifti_archive.models import ConversionState
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS, TIMEOUT_MS
from tests.held_series import hold_series
from tests.portal_site import PASSWORD, SAGITTAL, Site, build_site, site_archive

QUARANTINE_REASON = "missing: 135 of 2250 instances"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("portal-browser"), sqlite_template)
    site = build_site(archive)
    hold_series(archive, site.studies["P02"], "004_epi", ConversionState.QUARANTINED, QUARANTINE_REASON)
    portal = start_portal(archive.settings)
    yield portal, site
    portal.stop()
    archive.close()




def log_in(page: Page, username: str = "editor") -> None:
    log_in_as(page, username, PASSWORD)


def rows(page: Page) -> list[str]:
    return page.locator("#studies tbody tr td:nth-child(2)").all_inner_texts()


def test_log_in_filter_the_table_and_see_a_bar_error(page: Page) -> None:
    page.goto("/p/alpha")
    expect(page.locator("h1")).to_have_text("Log in")
    log_in(page)
    page.click("text=alpha")
    expect(page.locator("#page-info")).to_have_text("1–3 of 3")
    page.fill("#bar-study_description", "*follow")
    expect(page.locator("#page-info")).to_have_text("1–1 of 1")
    assert rows(page) == ["P02"]
    page.fill("#bar-study_description", "")
    page.fill("#bar-study_date", "2024-13-45")
    expect(page.locator("#bar-study_date-error")).to_contain_text("not a date")
    page.fill("#bar-study_date", "")
    page.click("th[data-sort=study_date]")
    page.click("th[data-sort=study_date]")
    expect(page.locator("#studies tbody tr").first).to_contain_text("P03")
    page.screenshot(path=ARTIFACTS / "portal-table.png")


def test_tag_a_study_from_the_table(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in(page)
    page.goto("/p/alpha")
    page.locator(f"#studies tr[data-id='{site.studies['P03']}'] input.pick").check()
    page.fill("#tag-name", "reviewed")
    page.click("#tag-add")
    expect(page.locator(f"#studies tr[data-id='{site.studies['P03']}'] .study-tag")).to_have_text(["reviewed"])
    page.fill("#bar-files", "STAG:reviewed")
    expect(page.locator("#page-info")).to_have_text("1–1 of 1")
    with site.archive.sessions() as session:
        tagged = session.execute(TagLevel.STUDY.model.__table__.select().where(TagLevel.STUDY.owner == site.studies["P03"]))
        assert [row.tag for row in tagged] == ["reviewed"]


def test_a_study_with_a_quarantined_series_links_to_its_reasons(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in(page, "admin")
    page.goto("/p/alpha")
    expect(page.locator("#page-info")).to_have_text("1–3 of 3")
    badges = page.locator("#studies .held-badge")
    expect(badges).to_have_count(1)
    badge = page.locator(f"#studies tr[data-id='{site.studies['P02']}'] .held-badge")
    expect(badge).to_have_text("1 held")
    badge.click()
    expect(page).to_have_url(re.compile(rf"/p/alpha/conversions\?study_id={site.studies['P02']}$"))
    expect(page.locator("#conversions tbody tr")).to_have_count(1)
    expect(page.locator("#conversions tbody td.reason")).to_have_text(QUARANTINE_REASON)
    expect(page.locator("#conversions tbody button.release")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "portal-held-series.png")


def _wait_loaded(page: Page, viewport: int, name: str) -> None:
    page.wait_for_function(
        "([index, name]) => { const v = window.northancViewer?.viewports[index];"
        " return v && v.nv.volumes.length && v.nv.volumes[0].name === name; }",
        arg=[viewport, name], timeout=TIMEOUT_MS,
    )


def _lit_pixels(page: Page, viewport: int) -> int:
    """Pixels of the viewport's canvas brighter than the background, read right after a draw."""
    return int(page.evaluate(
        """(index) => {
            const nv = window.northancViewer.viewports[index].nv;
            nv.drawScene();
            const gl = nv.gl;
            const pixels = new Uint8Array(gl.drawingBufferWidth * gl.drawingBufferHeight * 4);
            gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
            let lit = 0;
            for (let i = 0; i < pixels.length; i += 4) if (pixels[i] + pixels[i + 1] + pixels[i + 2] > 30) lit++;
            return lit;
        }""",
        viewport,
    ))


def _corners_mm(image: Any) -> np.ndarray:
    shape = np.array(image.shape[:3])
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=float)
    return nib.affines.apply_affine(image.affine, corners)


def test_a_reference_nifti_renders_with_its_scanner_geometry(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in(page)
    page.goto(f"/p/alpha/viewer?study={site.studies['P01']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.dblclick(f"li[data-file-id='{site.files['P01/sag']}']")
    _wait_loaded(page, 0, SAGITTAL.name)
    assert _lit_pixels(page, 0) > 5000, "the canvas shows no image"
    page.screenshot(path=ARTIFACTS / "viewer-sagittal.png")
    # NiiVue's own voxel-to-millimetre mapping, at the centres of the eight corner voxels,
    # against nibabel's reading of dcm2niix's reference affine: a flipped axis (LPS for RAS,
    # reversed slice order) moves the corners.
    shown = np.array(page.evaluate(
        """() => {
            const nv = window.northancViewer.viewports[0].nv;
            const dims = nv.volumes[0].dims.slice(1, 4);
            const corners = [];
            for (const i of [0, dims[0] - 1]) for (const j of [0, dims[1] - 1]) for (const k of [0, dims[2] - 1])
                corners.push(Array.from(nv.frac2mm([(i + 0.5) / dims[0], (j + 0.5) / dims[1], (k + 0.5) / dims[2]])).slice(0, 3));
            return corners;
        }"""
    ))
    expected = _corners_mm(nib.load(SAGITTAL))
    for corner in expected:
        assert np.min(np.linalg.norm(shown - corner, axis=1)) < 0.01, f"no corner of the shown volume at {corner}"


def test_ct_window_keys_set_the_displayed_range(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in(page)
    page.goto(f"/p/alpha/viewer?study={site.studies['P01']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.locator(".viewport").first.click()
    page.keyboard.press("5")
    window = page.evaluate("() => { const v = window.northancViewer.viewports[0].nv.volumes[0]; return [v.cal_min, v.cal_max]; }")
    assert window == [-1350, 150]
    expect(page.locator("#status")).to_contain_text("window -1350 – 150")


def test_autoloader_steps_to_the_next_subject_of_the_filtered_table(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in(page)
    page.goto("/p/alpha")
    page.fill("#bar-study_description", "MR")
    expect(page.locator("#page-info")).to_have_text("1–2 of 2")
    page.locator(f"#studies tr[data-id='{site.studies['P01']}']").dblclick()
    page.wait_for_selector("#viewer[data-ready='1']")
    page.select_option("#preset", "two views")
    _wait_loaded(page, 1, SAGITTAL.name)
    page.keyboard.press("ArrowDown")
    expect(page.locator("#study-title")).to_have_text("P02 / S1")
    page.wait_for_function(
        "(ids) => { const v = window.northancViewer.viewports; return v[0].layers[0]?.file_id === ids[0]"
        " && v[1].layers[0]?.file_id === ids[1] && v[1].nv.volumes.length === 1; }",
        arg=[site.files["P02"], site.files["P02/sag"]],
    )
    assert _lit_pixels(page, 0) > 5000 and _lit_pixels(page, 1) > 5000
    page.keyboard.press("ArrowDown")
    expect(page.locator("#status")).to_contain_text("last study of the table")
    page.screenshot(path=ARTIFACTS / "viewer-autoloader.png")


def test_share_a_view_and_open_the_link(page: Page, browser: Browser, served: tuple[Portal, Site]) -> None:
    portal, site = served
    log_in(page)
    page.goto(f"/p/alpha/viewer?study={site.studies['P03']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.select_option("#layout", "1x2")
    page.locator(".viewport").nth(1).click()
    page.dblclick(f"li[data-file-id='{site.files['P03/sag']}']")
    _wait_loaded(page, 1, SAGITTAL.name)
    page.keyboard.press("1")
    page.click("#share")
    expect(page.locator("#share-url")).to_have_value(re.compile(r"/p/alpha/viewer\?link=[\w-]+$"))
    link = page.locator("#share-url").input_value()
    other = browser.new_context(base_url=portal.url)
    reader = other.new_page()
    log_in(reader, "reader")
    reader.goto(link)
    reader.wait_for_selector("#viewer[data-ready='1']")
    opened = reader.evaluate(
        "() => window.northancViewer.viewports.filter((v) => !v.node.hidden)"
        ".map((v) => v.layers.map((l) => [l.file_id, l.window]))"
    )
    assert opened == [[[site.files["P03"], None]], [[site.files["P03/sag"], [0, 80]]]]
    assert reader.evaluate("() => window.northancViewer.viewports[1].nv.volumes[0].cal_max") == 80
    reader.screenshot(path=ARTIFACTS / "viewer-shared-link.png")
    other.close()


def test_an_editor_saves_a_preset_and_the_viewer_applies_it(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    log_in(page)
    page.goto(f"/p/alpha/viewer?study={site.studies['P01']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.click("#preset-editor summary")
    page.fill("#preset-name", "axial")
    page.fill("#preset-json", '{"layout": "9x9", "viewports": [{"file": "001_ax/*.nii"}]}')
    page.click("#preset-save")
    expect(page.locator("#preset-error")).to_contain_text("layout: unknown layout '9x9'")
    page.fill("#preset-json", '{"layout": "1x1", "viewports": [{"file": "001_ax/*.nii", "window": [0, 1000]}]}')
    page.click("#preset-save")
    expect(page.locator("#status")).to_contain_text("preset axial saved")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes[0]?.cal_max === 1000")
    assert page.locator("#preset").input_value() == "axial"
