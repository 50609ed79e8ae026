"""The viewer's fibre tool in Debian's Chromium: a tractogram opened over a volume, its streamlines
selected by a sphere at the crosshair are exactly those nibabel's streamlines say pass through it
(tests/test_tract_selection.py's independent computation), deleting inverts the choice, and the
selection saved is a new TCK listed in the study with as many streamlines as the tool showed. A
viewer selects but cannot save."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from nifti_archive.catalog.registration import add_files
from nifti_archive.models import Project
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from testbed.tractograms import curves, write_tck
from tests.browser_pages import ARTIFACTS
from tests.portal_site import AXIAL, PASSWORD, Site, build_site, site_archive
from tests.test_tract_selection import expected_sphere

COUNT = 3000
RADIUS_MM = 9.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Site]]:
    archive = site_archive(tmp_path_factory.mktemp("fibre-browser"), sqlite_template)
    site = build_site(archive)
    # Around the middle of the axial volume, in its world millimetres.
    reference = nib.load(AXIAL)
    middle = nib.affines.apply_affine(reference.affine, (np.array(reference.shape[:3]) - 1) / 2)
    streamlines = [(s + middle).astype(np.float32) for s in curves(COUNT, seed=31, step_mm=4.0, half_axes=(50.0, 50.0, 40.0))]
    target = archive.layout.study_dir("alpha", "P01", "S1") / "dwi" / "tracts.tck"
    target.parent.mkdir(parents=True)
    write_tck(target, streamlines)
    with archive.unit_of_work() as (session, _journal):
        alpha = session.scalars(select(Project).where(Project.name == "alpha")).one()
        site.files["P01/tck"] = add_files(session, archive.layout, alpha, [target])[0].id
    portal = start_portal(archive.settings)
    yield portal, site
    portal.stop()
    archive.close()


def _open_tracts(page: Page, username: str, site: Site) -> None:
    log_in_as(page, username, PASSWORD)
    page.goto(f"/p/alpha/viewer?study={site.studies['P01']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.length === 1")
    page.dblclick(f"li[data-file-id='{site.files['P01/tck']}']")
    page.wait_for_function("(count) => window.northancFibreTool.state.tract?.lines.count === count", arg=COUNT)
    page.locator("#fibre-tool summary").click()
    expect(page.locator("#fibre-count")).to_have_text(f"{COUNT:,} of {COUNT:,} streamlines kept")


def _sphere(page: Page, radius: float) -> tuple[float, float, float]:
    """The radius set on the slider; the sphere's centre, the crosshair, as the viewer reads it."""
    page.locator("#fibre-radius").evaluate("(node, value) => { node.value = value; node.dispatchEvent(new Event('input')); }", str(radius))
    expect(page.locator("#fibre-radius-shown")).to_have_text(f"{radius:g} mm")
    x, y, z = page.evaluate("() => window.northancViewer.viewports[0].crosshairMM()")
    return float(x), float(y), float(z)


def _kept(page: Page) -> list[int]:
    return list(page.evaluate("() => window.northancFibreTool.keptIndices(window.northancFibreTool.state.kept)"))


def test_a_sphere_selection_is_saved_as_a_new_tck_of_the_study(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_tracts(page, "editor", site)
    centre = _sphere(page, RADIUS_MM)
    source = site.archive.layout.study_dir("alpha", "P01", "S1") / "dwi" / "tracts.tck"
    expected = np.flatnonzero(expected_sphere(source, centre, RADIUS_MM)).tolist()
    assert 50 < len(expected) < COUNT - 50
    page.select_option("#fibre-action", "delete")
    page.click("#fibre-sphere")
    expect(page.locator("#fibre-count")).to_have_text(f"{COUNT - len(expected):,} of {COUNT:,} streamlines kept")
    assert set(_kept(page)) == set(range(COUNT)) - set(expected)
    page.click("#fibre-undo")
    page.select_option("#fibre-action", "keep")
    page.click("#fibre-sphere")
    expect(page.locator("#fibre-count")).to_have_text(f"{len(expected):,} of {COUNT:,} streamlines kept")
    assert _kept(page) == expected
    expect(page.locator("#fibre-steps li")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "fibre-sphere.png"))
    page.fill("#fibre-name", "sphere")
    page.click("#fibre-save")
    expect(page.locator("#fibre-message")).to_have_text(f"saved dwi/tracts_sphere.tck ({len(expected):,} streamlines)")
    listed = page.locator("#files li[title='dwi/tracts_sphere.tck']")
    expect(listed).to_be_visible()
    answer = page.request.get(f"/api/v1/files/{listed.get_attribute('data-file-id')}/content")
    assert answer.ok
    saved = source.with_name("tracts_sphere.tck")
    assert saved.read_bytes() == answer.body()
    subset = nib.streamlines.load(str(saved)).streamlines
    originals = nib.streamlines.load(str(source)).streamlines
    assert len(subset) == len(expected)
    assert all(np.array_equal(mine, originals[i]) for mine, i in zip(subset, expected, strict=True))


def test_a_density_map_opens_over_the_volume(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_tracts(page, "editor", site)
    page.click("#fibre-tdi")
    expect(page.locator("#fibre-message")).to_contain_text("saved dwi/tracts_tdi")
    expect(page.locator("#fibre-message")).to_contain_text("(64 x 64 x 35 voxels)")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes.length === 2")
    file_id = page.evaluate("() => window.northancViewer.viewports[0].layers[1].file_id")
    image = nib.Nifti1Image.from_bytes(gzip.decompress(page.request.get(f"/api/v1/files/{file_id}/content").body()))
    assert 0 < int(np.asanyarray(image.dataobj).max()) <= COUNT


def test_a_viewer_selects_but_cannot_save(page: Page, served: tuple[Portal, Site]) -> None:
    _portal, site = served
    _open_tracts(page, "viewer", site)
    _sphere(page, 5.0)
    page.click("#fibre-sphere")
    expect(page.locator("#fibre-steps li")).to_have_count(1)
    expect(page.locator("#fibre-save")).to_be_disabled()
    expect(page.locator("#fibre-tdi")).to_be_disabled()
