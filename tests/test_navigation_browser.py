"""The viewer's navigation tool in Debian's Chromium: an editor turns and moves an overlay by the
tool's fields and by the mouse, NiiVue draws it with the changed affine, and Apply writes a new
file into the study whose affine (read back with nibabel) is the one built here with scipy.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from playwright.sync_api import Page, expect
from scipy.spatial.transform import Rotation

from nifti_archive.catalog.viewer_documents import CT_WINDOWS
from segmentation.grid import Grid
from segmentation.navigation import world_grid
from testbed.portal import Portal, start_portal
from tests.browser_pages import ARTIFACTS
from tests.portal_site import AXIAL, SAGITTAL, Site, build_site, site_archive
from tests.test_navigation import shift
from tests.test_roi_browser import _open_viewer

AXIAL_VIEW = "0"
SAGITTAL_AFFINE = np.asarray(nib.load(SAGITTAL).affine, dtype=np.float64)
WRITTEN = "navigation/002_sag/sag_asc_36sl_19.rigid.nii.gz"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("navigation-browser"), sqlite_template)
    site = build_site(archive)
    portal = start_portal(archive.settings)
    yield portal, site
    portal.stop()
    archive.close()


def _fields(page: Page, prefix: str) -> NDArray[np.float64]:
    return np.array([float(page.input_value(f"#nav-{prefix}{axis}")) for axis in "xyz"])


def _expected(page: Page) -> NDArray[np.float64]:
    """The transform the tool's fields show, built independently: translate, then turn about the centre."""
    turn = np.eye(4)
    turn[:3, :3] = Rotation.from_euler("xyz", _fields(page, "r"), degrees=True).as_matrix()
    centre = _fields(page, "c")
    transform: NDArray[np.float64] = shift(_fields(page, "t")) @ shift(centre) @ turn @ shift(-centre)
    return transform


def _shown_affine(page: Page) -> NDArray[np.float64]:
    return np.array(page.evaluate("() => window.northancViewer.viewports[0].nv.volumes[1].getAffine()"))


def _world_mm(page: Page, points: list[tuple[int, int]]) -> NDArray[np.float64]:
    """Where NiiVue puts these page positions in scanner space (mm) in the first viewport."""
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


def _canvas_centre(page: Page) -> tuple[int, int]:
    box = page.locator(".viewport canvas").first.bounding_box()
    assert box is not None
    return round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2)


def test_a_rotation_and_a_mouse_drag_are_applied_as_a_new_file(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "editor", site.studies["P01"])
    page.locator(f"li[data-file-id='{site.files['P01/sag']}']").dblclick(modifiers=["Shift"])
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.length === 2")
    page.select_option("#slice-type", AXIAL_VIEW)
    page.click("#navigation-tool summary")
    page.check(f"#nav-layers input[data-file-id='{site.files['P01/sag']}']")

    # Typed: a turn of 20 degrees about z and -10 about x through the crosshair, and a shift.
    page.click("#nav-centre-here")
    page.fill("#nav-rz", "20")
    page.fill("#nav-rx", "-10")
    page.fill("#nav-tx", "5")
    page.fill("#nav-tz", "-3")
    np.testing.assert_allclose(_shown_affine(page), _expected(page) @ SAGITTAL_AFFINE, rtol=1e-5, atol=1e-4)

    # Dragged: the overlay follows the mouse in the slice's plane (scanner mm, as NiiVue maps the page).
    page.click("#nav-mouse")
    expect(page.locator("#nav-mouse")).to_have_text("Mouse moves images: on")
    x, y = _canvas_centre(page)
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(x + 8 * step, y + 5 * step)
    page.mouse.up()
    start, end = _world_mm(page, [(x, y), (x + 40, y + 25)])
    np.testing.assert_allclose(_fields(page, "t"), np.array([5.0, 0.0, -3.0]) + end - start, atol=0.01)
    np.testing.assert_allclose(_shown_affine(page), _expected(page) @ SAGITTAL_AFFINE, rtol=1e-5, atol=1e-4)
    page.screenshot(path=ARTIFACTS / "navigation-moved.png")

    page.click("#nav-apply")
    expect(page.locator("#nav-message")).to_have_text(f"wrote {WRITTEN}")
    written = page.locator("#files li", has_text=WRITTEN)
    expect(written).to_have_count(1)
    file_id = written.get_attribute("data-file-id")
    answer = page.request.get(f"/api/v1/files/{file_id}/content")
    assert answer.ok, answer.text()
    stored = nib.Nifti1Image.from_bytes(gzip.decompress(answer.body()))
    np.testing.assert_allclose(stored.affine, _expected(page) @ SAGITTAL_AFFINE, rtol=1e-6, atol=1e-6)


def test_applying_without_a_moving_image_is_refused(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "editor", site.studies["P02"])
    page.click("#navigation-tool summary")
    page.click("#nav-apply")
    expect(page.locator("#nav-message")).to_have_text("choose at least one moving image (tick it above)")
    expect(page.locator("#files li", has_text="navigation/")).to_have_count(0)


def test_a_viewer_cannot_apply(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "viewer", site.studies["P02"])
    page.click("#navigation-tool summary")
    expect(page.locator("#nav-apply")).to_be_disabled()


def test_a_displacement_marker_previews_and_applies_as_an_image_and_its_field(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "editor", site.studies["P03"])
    page.click("#navigation-tool summary")
    page.check(f"#nav-layers input[data-file-id='{site.files['P03']}']")
    page.select_option("#nav-mode", "displacements")
    page.fill("#nav-dx", "4")
    page.fill("#nav-sigma", "5")
    page.click("#nav-add-marker")
    page.click("#nav-add-marker")
    expect(page.locator("#nav-markers li")).to_have_count(2)
    # Sized after adding, and one of the two taken away again.
    page.fill("#nav-markers li:nth-child(1) .nav-marker-sigma", "8")
    page.click("#nav-markers li:nth-child(2) button")
    expect(page.locator("#nav-markers li")).to_have_count(1)
    expect(page.locator("#nav-markers li .nav-marker-sigma")).to_have_value("8")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.meshes.some((m) => m.nodes?.length === 2)")
    page.click("#nav-preview")
    expect(page.locator("#nav-message")).to_have_text("the warped images are shown as overlays (warm colours)")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.some((v) => v.name.startsWith('preview: '))")
    page.screenshot(path=ARTIFACTS / "navigation-warp-preview.png")
    page.click("#nav-apply")
    image, field = "navigation/001_ax/ax_asc_35sl_6.displacements.nii.gz", "navigation/001_ax/ax_asc_35sl_6.displacements.field.nii.gz"
    expect(page.locator("#nav-message")).to_have_text(f"wrote {image}, {field}")
    expect(page.locator("#files li", has_text="navigation/")).to_have_count(2)
    crosshair = np.array(page.evaluate("() => window.northancViewer.viewports[0].crosshairMM()"))
    file_id = page.locator("#files li", has_text=field).get_attribute("data-file-id")
    stored = nib.Nifti1Image.from_bytes(gzip.decompress(page.request.get(f"/api/v1/files/{file_id}/content").body()))
    vectors = np.asarray(stored.dataobj)[:, :, :, 0, :]
    # The strongest pull-back lies where the marker's centre goes, and points back by the marker's 4 mm.
    voxel = np.unravel_index(np.argmax(np.linalg.norm(vectors, axis=3)), vectors.shape[:3])
    np.testing.assert_allclose(np.linalg.norm(vectors[voxel]), 4.0, atol=0.2)
    target = (stored.affine @ [*voxel, 1])[:3]
    assert np.linalg.norm(target - (crosshair + [4.0, 0.0, 0.0])) < 3.0


def _world_box(paths: list[Path], voxel: float) -> tuple[list[int], NDArray[np.float64]]:
    """The axis-aligned box (RAS+, ``voxel`` mm) over the outer faces of every image's corner voxels,
    centred on their extent: from the files' own shapes and affines, as nibabel reads them."""
    corners = []
    for path in paths:
        image = nib.load(path)
        high = np.array(image.shape[:3]) - 0.5
        for index in np.array(np.meshgrid(*[[-0.5, h] for h in high], indexing="ij")).reshape(3, -1).T:
            corners.append((image.affine @ [*index, 1.0])[:3])
    low, top = np.min(corners, axis=0), np.max(corners, axis=0)
    dims = [max(1, int(np.ceil((t - lo) / voxel - 1e-9))) for lo, t in zip(low, top, strict=True)]
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = (low + top) / 2 - (np.array(dims) - 1) * voxel / 2
    return dims, affine


def _base(page: Page) -> tuple[list[int], NDArray[np.float64], list[tuple[str, float]]]:
    """The first viewport's base volume (the grid NiiVue draws on): dims, affine, and every volume's name and opacity."""
    found = page.evaluate(
        """() => {
            const volumes = window.northancViewer.viewports[0].nv.volumes;
            return {
                dims: Array.from(volumes[0].hdr.dims.slice(1, 4)), affine: volumes[0].getAffine(),
                volumes: volumes.map((v) => [v.name, v.opacity]),
            };
        }"""
    )
    return found["dims"], np.array(found["affine"]), [tuple(v) for v in found["volumes"]]


def test_the_display_grid_is_the_world_box_or_a_chosen_images_matrix(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_viewer(page, "viewer", site.studies["P02"])
    page.locator(f"li[data-file-id='{site.files['P02/sag']}']").dblclick(modifiers=["Shift"])
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.length === 2")
    page.click("#navigation-tool summary")
    images = [(AXIAL.name, 1.0), (SAGITTAL.name, 0.5)]
    assert _base(page)[2] == images

    expect(page.locator("#nav-display-grid option[value='world']")).to_have_text("world box at 2 mm")
    page.select_option("#nav-display-grid", "world")
    dims, affine = _world_box([AXIAL, SAGITTAL], 2.0)
    expect(page.locator("#nav-display-grid-shown")).to_have_text(f"drawn on {' x '.join(map(str, dims))} voxels")
    shown_dims, shown_affine, volumes = _base(page)
    assert shown_dims == dims
    np.testing.assert_allclose(shown_affine, affine, atol=1e-3)
    # The grid is an invisible base: the images stay, in their order, colours and opacities.
    assert volumes == [("northanc-display-grid.nii", 0.0), *images]
    # The same box as the server's world grid for a warp written on "world box".
    files = [nib.load(path) for path in (AXIAL, SAGITTAL)]
    grid = world_grid([Grid(image.shape[:3], np.asarray(image.affine, dtype=np.float64)) for image in files], 2)
    assert list(grid.shape) == dims
    np.testing.assert_allclose(grid.affine, affine, atol=1e-9)
    page.screenshot(path=ARTIFACTS / "navigation-world-grid.png")
    # A CT window (key 1) windows the first image, not the invisible grid under it.
    name, width, level = CT_WINDOWS[1]
    page.locator("#viewports canvas").first.click()
    page.keyboard.press("1")
    windows = page.evaluate("() => window.northancViewer.viewports[0].nv.volumes.map((v) => [v.cal_min, v.cal_max])")
    assert windows[1] == [level - width / 2, level + width / 2], (name, windows)
    assert windows[0] == [0, 1]

    # Another voxel size: the box is built again.
    page.fill("#nav-display-voxel", "3")
    page.dispatch_event("#nav-display-voxel", "change")
    dims, affine = _world_box([AXIAL, SAGITTAL], 3.0)
    expect(page.locator("#nav-display-grid-shown")).to_have_text(f"drawn on {' x '.join(map(str, dims))} voxels")
    shown_dims, shown_affine, volumes = _base(page)
    assert shown_dims == dims and len(volumes) == 3
    np.testing.assert_allclose(shown_affine, affine, atol=1e-3)

    page.select_option("#nav-display-grid", f"image:{site.files['P02/sag']}")
    sagittal = nib.load(SAGITTAL)
    expect(page.locator("#nav-display-grid-shown")).to_have_text(f"drawn on {' x '.join(map(str, sagittal.shape[:3]))} voxels")
    shown_dims, shown_affine, volumes = _base(page)
    assert shown_dims == list(sagittal.shape[:3])
    np.testing.assert_allclose(shown_affine, SAGITTAL_AFFINE, atol=1e-3)
    assert volumes == [("northanc-display-grid.nii", 0.0), *images]

    page.select_option("#nav-display-grid", "first")
    expect(page.locator("#nav-display-grid-shown")).to_have_text("")
    shown_dims, shown_affine, volumes = _base(page)
    assert volumes == images
    np.testing.assert_allclose(shown_affine, nib.load(AXIAL).affine, atol=1e-3)
