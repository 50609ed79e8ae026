"""The segmentation assistant in the viewer's ROI tool, in Debian's Chromium, with the real assistant.

A click with the points tool on a bright ball (painted into dcm2niix's sagittal acquisition, shown in
the axial view, so NiiVue's drawing order is not the file's) shows the assistant's proposal; Accept
merges it, the project's model adds its own, and Save stores an ROI of algorithm origin whose voxels
are the ball's, read back with nibabel. With the assistant down, the tool says so and the pens still draw.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect
from scipy import ndimage

from testbed.assistant import start_assistant
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from testbed.ports import free_port
from tests.browser_pages import ARTIFACTS, TIMEOUT_MS
from tests.portal_site import PASSWORD, Site, build_site, site_archive
from tests.test_assistant_portal import CENTRE, BrightImage, add_bright_image, is_the_ball, register_bright_model

AXIAL_VIEW = "0"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, tuple[Site, BrightImage]]]:
    archive = site_archive(tmp_path_factory.mktemp("assistant-browser"), sqlite_template)
    site = build_site(archive)
    image = add_bright_image(archive, "alpha", site.studies["P01"])
    register_bright_model(archive, tmp_path_factory.mktemp("models"))
    assistant = start_assistant(archive.settings)
    portal = start_portal(assistant.settings)
    yield portal, (site, image)
    portal.stop()
    assistant.stop()
    archive.close()


def _open_bright_image(page: Page, site: Site, image: BrightImage) -> None:
    log_in_as(page, "editor", PASSWORD)
    page.goto(f"/p/alpha/viewer?study={site.studies['P01']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.dblclick(f"li[data-file-id='{image.file_id}']")
    page.wait_for_function(
        "() => { const nv = window.northancViewer.viewports[0].nv; "
        "return nv.volumes.length === 1 && nv.volumes[0].name === 'bright.nii.gz'; }"
    )
    page.select_option("#slice-type", AXIAL_VIEW)
    page.fill("#roi-label", "ball")
    page.click("#roi-new")
    expect(page.locator("#roi-current-label")).to_have_text("ball (new)")


def _ball_on_screen(page: Page, image: BrightImage) -> tuple[int, int]:
    """The page position of the ball's centre, with the axial slice through it on display."""
    mm = nib.affines.apply_affine(nib.Nifti1Image.from_filename(image.path).affine, CENTRE).tolist()
    x, y = page.evaluate(
        """(mm) => {
            const nv = window.northancViewer.viewports[0].nv;
            nv.scene.crosshairPos = nv.mm2frac(mm, 0, true);
            nv.drawScene();
            const [x, y] = nv.frac2canvasPos(nv.mm2frac(mm, 0, true));
            const box = nv.canvas.getBoundingClientRect();
            return [box.left + x / nv.uiData.dpr, box.top + y / nv.uiData.dpr];
        }""",
        mm,
    )
    return round(x), round(y)


def _proposed(page: Page) -> int:
    return int(page.evaluate("() => window.northancRoiTool.current.drawing.bitmap.filter((v) => v === 2).length"))


def test_proposals_of_a_click_and_of_the_model_are_accepted_and_saved_as_an_algorithm_roi(
    page: Page, served: tuple[Portal, tuple[Site, BrightImage]]
) -> None:
    _portal, (site, image) = served
    _open_bright_image(page, site, image)
    expect(page.locator("#roi-assist-status")).to_have_text("choose a tool, then click, paint or drag a box on the image")
    page.select_option("#roi-assist-tool", "points")
    expect(page.locator("#roi-draw")).to_have_text("Drawing: off")
    page.mouse.click(*_ball_on_screen(page, image))

    status = page.locator("#roi-assist-status")
    expect(status).to_contain_text("voxels proposed")
    proposed = int(re.search(r"→ (\d+) voxels proposed", status.inner_text()).group(1))  # type: ignore[union-attr]
    assert status.inner_text().startswith("points: 1 foreground → ")
    assert int(ndimage.binary_erosion(image.ball).sum()) <= proposed <= int(ndimage.binary_dilation(image.ball).sum())
    # The proposal is on screen, in the drawing's preview shade, and not yet part of the ROI.
    assert _proposed(page) == proposed
    assert page.evaluate("() => window.northancRoiTool.current.drawing.voxelCount()") == 0
    page.screenshot(path=ARTIFACTS / "assistant-proposal.png")

    page.click("#roi-assist-accept")
    expect(status).to_have_text(f"accepted {proposed} voxels into ball; save to keep them")
    assert page.evaluate("() => window.northancRoiTool.current.drawing.voxelCount()") == proposed
    assert _proposed(page) == 0
    # The project's published model on the whole image: the ball, which the ROI now holds all of.
    page.select_option("#roi-assist-model", label="bright v1 (ball)")
    page.click("#roi-assist-run")
    expect(status).to_contain_text(f"model bright v1 → {int(image.ball.sum())} voxels proposed")
    page.click("#roi-assist-accept")
    expect(status).to_have_text(f"accepted {int(image.ball.sum())} voxels into ball; save to keep them")
    page.click("#roi-save")
    expect(page.locator("#roi-message")).to_contain_text("saved ball as version 1")
    roi = page.evaluate("() => window.northancRoiTool.current.roi")
    entry = page.locator(f"#roi-list li[data-roi-id='{roi['id']}']")
    expect(entry.locator(".roi-name")).to_have_text("ball")
    expect(entry.locator(".roi-origin")).to_have_attribute("title", "proposed by assistant points+bright v1")

    answer = page.request.get(f"/api/v1/files/{roi['id']}/content")
    assert answer.ok, answer.text()
    saved = np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(answer.body())).dataobj) > 0
    # Voxel for voxel on the file's grid: a wrong permutation or flip would put it elsewhere.
    assert saved[image.ball].all()
    assert is_the_ball(saved, image.ball)


def test_without_the_assistant_the_tool_says_so_and_the_pens_still_draw(
    browser: Browser, served: tuple[Portal, tuple[Site, BrightImage]]
) -> None:
    portal, (site, image) = served
    # A second portal on the same archive whose assistant port nothing listens on.
    alone = start_portal(dataclasses.replace(portal.settings, assistant_port=free_port()))
    context = browser.new_context(base_url=alone.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _open_bright_image(page, site, image)
        expect(page.locator("#roi-assist-status")).to_have_text(
            f"unavailable: the segmentation assistant is not running at http://127.0.0.1:{alone.settings.assistant_port}; "
            "drawing by hand still works"
        )
        expect(page.locator("#roi-assist-tool")).to_be_disabled()
        expect(page.locator("#roi-draw")).to_have_text("Drawing: on")
        x, y = _ball_on_screen(page, image)
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 20, y + 5)
        page.mouse.up()
        assert page.evaluate("() => window.northancRoiTool.current.drawing.voxelCount()") > 0
        page.screenshot(path=ARTIFACTS / "assistant-unavailable.png")
    finally:
        context.close()
        alone.stop()
