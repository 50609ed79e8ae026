"""The viewer's ROI and marker tools in Debian's Chromium: strokes drawn with the mouse are saved
where they were drawn (world coordinates, read back with nibabel), the threshold pen paints only
voxels above its threshold, a viewer sees ROIs and their statistics but cannot draw or save, and
marker points are saved at the clicked positions. Screenshots go to test-artifacts/."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS, TIMEOUT_MS
from tests.portal_site import AXIAL, PASSWORD, SAGITTAL, Site, build_site, site_archive

AXIAL_VIEW = "0"
THRESHOLD = 700.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("roi-browser"), sqlite_template)
    site = build_site(archive)
    portal = start_portal(archive.settings)
    yield portal, site
    portal.stop()
    archive.close()




def _open_viewer(page: Page, username: str, study: int) -> None:
    log_in_as(page, username, PASSWORD)
    page.goto(f"/p/alpha/viewer?study={study}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.length === 1")


def _open_in_axial_view(page: Page, file_id: int, name: str) -> None:
    page.dblclick(f"li[data-file-id='{file_id}']")
    page.wait_for_function(
        "(name) => { const nv = window.northancViewer.viewports[0].nv; return nv.volumes.length === 1 && nv.volumes[0].name === name; }",
        arg=name,
    )
    page.select_option("#slice-type", AXIAL_VIEW)


def _new_roi(page: Page, label: str) -> None:
    page.fill("#roi-label", label)
    page.click("#roi-new")
    expect(page.locator("#roi-current-label")).to_have_text(f"{label} (new)")
    expect(page.locator("#roi-draw")).to_have_text("Drawing: on")


def _canvas_centre(page: Page) -> tuple[int, int]:
    """Whole pixels: mouse events carry whole client coordinates, the expected positions must too."""
    box = page.locator(".viewport canvas").first.bounding_box()
    assert box is not None
    return round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2)


def _stroke(page: Page, points: list[tuple[int, int]], button: Literal["left", "right"] = "left") -> None:
    page.mouse.move(*points[0])
    page.mouse.down(button=button)
    for point in points[1:]:
        page.mouse.move(*point)
    page.mouse.up(button=button)


def _voxels_drawn(page: Page) -> int:
    return int(page.evaluate("() => window.northancRoiTool.current.drawing.voxelCount()"))


def _world_mm(page: Page, points: list[tuple[int, int]]) -> np.ndarray:
    """Where NiiVue puts these page positions in scanner space (mm, the NIfTI affine) in the first viewport."""
    return np.array(page.evaluate(
        """(points) => {
            const nv = window.northancViewer.viewports[0].nv;
            const box = nv.canvas.getBoundingClientRect();
            const dpr = nv.uiData.dpr;
            const frac = ([x, y]) => nv.canvasPos2frac([(x - box.left) * dpr, (y - box.top) * dpr]);
            return points.map((point) => Array.from(nv.frac2mm(frac(point), 0, true)).slice(0, 3));
        }""",
        points,
    ))


def _save(page: Page, label: str) -> dict[str, object]:
    page.click("#roi-save")
    expect(page.locator("#roi-message")).to_contain_text(f"saved {label} as version 1")
    expect(page.locator("#roi-current-label")).to_have_text(f"{label} (v1)")
    roi: dict[str, object] = page.evaluate("() => window.northancRoiTool.current.roi")
    expect(page.locator(f"#roi-list li[data-roi-id='{roi['id']}'] .roi-name")).to_have_text(label)
    return roi


def _nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


def _mask(page: Page, roi_id: object) -> nib.Nifti1Image:
    answer = page.request.get(f"/api/v1/files/{roi_id}/content")
    assert answer.ok, answer.text()
    return nib.Nifti1Image.from_bytes(gzip.decompress(answer.body()))


def test_free_pen_strokes_are_saved_where_they_were_drawn(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "editor", site.studies["P01"])
    # The sagittal acquisition in the axial view: NiiVue's drawing order (RAS) is not the file's, so a
    # wrong permutation or flip moves the saved voxels away from the strokes.
    _open_in_axial_view(page, site.files["P01/sag"], SAGITTAL.name)
    x, y = _canvas_centre(page)
    # Off the middle slice, so that a flipped slice axis shows too: the wheel over the image.
    page.mouse.move(x, y)
    for _ in range(12):
        page.mouse.wheel(0, 100)
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.scene.crosshairPos[2] > 0.6")
    _new_roi(page, "stroke")
    page.locator("#roi-radius").fill("1")
    # The right button erases: a stroke rubbed out with a wider pen leaves nothing behind.
    scrap = [(x + 150, y - 40 + 10 * k) for k in range(5)]
    _stroke(page, scrap)
    assert _voxels_drawn(page) > 0
    page.locator("#roi-radius").fill("3")
    _stroke(page, scrap, button="right")
    assert _voxels_drawn(page) == 0
    page.locator("#roi-radius").fill("1")
    strokes = [
        [(x - 220 + 12 * k, y - 150 + 4 * k) for k in range(15)],
        [(x + 60, y + 40 + 12 * k) for k in range(12)],
    ]
    for stroke in strokes:
        _stroke(page, stroke)
    # NORA's keys: ctrl+z takes the last stroke back, shift+ctrl+z redoes it.
    both = _voxels_drawn(page)
    page.keyboard.press("Control+z")
    assert 0 < _voxels_drawn(page) < both
    page.keyboard.press("Control+Shift+Z")
    assert _voxels_drawn(page) == both
    drawn = [point for stroke in strokes for point in stroke]
    expected = _world_mm(page, drawn)
    page.screenshot(path=ARTIFACTS / "roi-free-pen.png")
    roi = _save(page, "stroke")

    mask = _mask(page, roi["id"])
    reference = _nifti(SAGITTAL)
    assert mask.shape == reference.shape[:3]
    assert np.allclose(mask.affine, reference.affine, atol=1e-4)
    voxels = np.argwhere(np.asanyarray(mask.dataobj) > 0)
    assert len(voxels) > 20
    saved_mm = nib.affines.apply_affine(mask.affine, voxels)
    step = float(np.linalg.norm(reference.affine[:3, :3], axis=0).max())
    # Every point of the strokes is painted (its voxel, or one beside it) ...
    to_mask = np.array([np.min(np.linalg.norm(saved_mm - point, axis=1)) for point in expected])
    assert to_mask.max() < 1.5 * step, f"stroke points {np.round(expected[to_mask >= 1.5 * step], 1)} have no saved voxel nearby"
    # ... and every saved voxel lies within the pen's radius (1 voxel, rounded out) of a stroke.
    to_stroke = np.array([np.min(np.linalg.norm(expected - point, axis=1)) for point in saved_mm])
    assert to_stroke.max() < 2.5 * step, f"saved voxels at {np.round(saved_mm[to_stroke >= 2.5 * step], 1)} are off the strokes"


def test_threshold_pen_paints_only_voxels_above_its_threshold(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "editor", site.studies["P02"])
    page.select_option("#slice-type", AXIAL_VIEW)
    _new_roi(page, "bright")
    page.select_option("#roi-pen", "threshold")
    page.select_option("#roi-above", "above")
    page.select_option("#roi-threshold-source", "number")
    page.fill("#roi-threshold-value", str(THRESHOLD))
    page.locator("#roi-radius").fill("6")
    x, y = _canvas_centre(page)
    _stroke(page, [(x - 120 + 12 * k, y + 90 - 3 * k) for k in range(20)])
    page.screenshot(path=ARTIFACTS / "roi-threshold-pen.png")
    roi = _save(page, "bright")

    mask = np.asanyarray(_mask(page, roi["id"]).dataobj) > 0
    # The 4D reference: the pen read the volume on display, the first.
    reference = np.asanyarray(_nifti(AXIAL).dataobj)[..., 0]
    assert mask.shape == reference.shape
    assert mask.sum() > 20
    assert reference[mask].min() > THRESHOLD
    # The pen left out darker voxels where it went: within the painted rows and columns of the slice.
    i, j, k = np.nonzero(mask)
    assert len(set(k)) == 1
    swept = reference[i.min():i.max() + 1, j.min():j.max() + 1, k[0]]
    assert (swept <= THRESHOLD).any()


def _upload(page: Page, study: int, reference_id: int, label: str) -> int:
    """An editor's ROI through the API: a block of voxels on the sagittal reference's grid."""
    reference = _nifti(SAGITTAL)
    data = np.zeros(reference.shape[:3], dtype=np.uint8)
    data[20:30, 30:36, 15:20] = 1
    buffer = io.BytesIO()
    nib.Nifti1Image(data, reference.affine).to_file_map({"image": nib.FileHolder(fileobj=buffer)})
    token = page.locator("meta[name='csrf-token']").get_attribute("content") or ""
    answer = page.request.post(
        f"/api/v1/projects/alpha/studies/{study}/rois", headers={"X-CSRF-Token": token},
        multipart={"mask": {"name": "mask.nii", "mimeType": "application/octet-stream", "buffer": buffer.getvalue()},
                   "reference_file_id": str(reference_id), "label": label, "colour": "#3cb44b"},
    )
    assert answer.status == 201, answer.text()
    return int(answer.json()["roi"]["id"])


def test_a_viewer_sees_rois_and_statistics_but_cannot_draw_or_save(
    page: Page, browser: Browser, served: tuple[Portal, Site]
) -> None:
    portal, site = served
    _open_viewer(page, "editor", site.studies["P03"])
    roi_id = _upload(page, site.studies["P03"], site.files["P03/sag"], "nodule")

    context = browser.new_context(base_url=portal.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    viewer = context.new_page()
    _open_viewer(viewer, "viewer", site.studies["P03"])
    entry = viewer.locator(f"#roi-list li[data-roi-id='{roi_id}']")
    expect(entry.locator(".roi-name")).to_have_text("nodule")
    expect(entry.locator(".roi-meta")).to_have_text("editor v1")
    for control in ("#roi-new", "#roi-save", "#roi-clear", "#roi-consensus", "#roi-op-apply", "#marker-new"):
        expect(viewer.locator(control)).to_be_disabled()
    expect(entry.locator(".roi-edit")).to_be_disabled()
    expect(entry.locator(".roi-delete")).to_be_disabled()
    # Shown over the axial image (another grid), and measured there and on its own reference.
    entry.locator(".roi-show").click()
    viewer.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.some((v) => v.name.startsWith('roi-'))")
    # Asked for at once: the image added while the base is still being replaced lands over the new base.
    viewer.dblclick(f"li[data-file-id='{site.files['P03/sag']}']")
    viewer.dblclick(f"li[data-file-id='{site.files['P03']}']", modifiers=["Shift"])
    viewer.wait_for_function(
        "(ids) => JSON.stringify(window.northancViewer.viewports[0].layers.map((l) => l.file_id)) === JSON.stringify(ids)",
        arg=[site.files["P03/sag"], site.files["P03"]],
    )
    viewer.click("#roi-tool details:nth-of-type(1) summary")
    viewer.click("#roi-stats")
    rows = viewer.locator("#roi-stats-table tbody tr")
    expect(rows).to_have_count(2)
    expect(viewer.locator(f"#roi-stats-table tr[data-image-id='{site.files['P03/sag']}'] td:nth-child(4)")).to_have_text("300")
    expect(viewer.locator("#roi-stats-csv")).to_be_visible()
    viewer.screenshot(path=ARTIFACTS / "roi-viewer-statistics.png")
    context.close()


def test_marker_points_are_saved_at_the_clicked_positions(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "editor", site.studies["P03"])
    page.select_option("#slice-type", AXIAL_VIEW)
    page.click("#marker-tool summary")
    page.fill("#marker-new-name", "landmarks")
    page.click("#marker-new")
    expect(page.locator("#marker-add")).to_have_text("Adding points: on")
    x, y = _canvas_centre(page)
    clicks = [(x - 90, y - 60), (x + 70, y + 50)]
    for point in clicks:
        page.mouse.click(*point)
    expect(page.locator("#marker-points li")).to_have_count(2)
    page.fill("#marker-points li:nth-child(1) .marker-point-name", "AC")
    page.click("#marker-save")
    expect(page.locator("#marker-message")).to_contain_text("saved landmarks (2 points)")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.meshes.some((m) => m.nodes?.length === 2)")
    page.screenshot(path=ARTIFACTS / "roi-markers.png")

    answer = page.request.get(f"/api/v1/projects/alpha/studies/{site.studies['P03']}/markers")
    [saved] = answer.json()["marker_sets"]
    assert saved["name"] == "landmarks"
    assert [p["name"] for p in saved["points"]] == ["AC", "2"]
    points = np.array([[p["x"], p["y"], p["z"]] for p in saved["points"]])
    assert np.allclose(points, _world_mm(page, clicks), atol=0.05)
