"""The viewer opens the archive's other formats in Debian's Chromium with the geometry nibabel (or
the file's own definition) gives: NRRD (attached and detached) and MGZ volumes, GIFTI, STL, OBJ
and FreeSurfer surfaces, TCK and TRK tractograms over a volume; presets and shared links name
them; a corrupt mesh or tract is refused with a message and the viewer goes on; a tractogram
whose space disagrees with the volume is drawn where its file says, with a warning.

The nibabel reference files are in tests/data/formats (see its README); the NRRD, STL, OBJ and
FreeSurfer files are written here, from the geometry the tests check."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from nifti_archive.archive import get_project
from nifti_archive.catalog.registration import add_files, ensure_study
from nifti_archive.models import ViewerPreset
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS
from tests.portal_site import PASSWORD, build_site, site_archive
from tests.reference import DATA

FORMATS = DATA / "formats"
SUBJECT = "P09"
# The NRRD's grid: voxel (i, j, k) holds i + 3j + 12k; its axes are not the world's.
NRRD_SIZES = (3, 4, 5)
NRRD_DIRECTIONS = ((0.0, 1.5, 0.0), (-2.0, 0.0, 0.0), (0.0, 0.5, 2.5))
NRRD_ORIGIN = (10.0, -20.0, 30.0)
# The meshes: a tetrahedron, in millimetres.
VERTICES = np.array([[10.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 14.0], [-3.0, -4.0, -5.0]], dtype=np.float32)
FACES = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], dtype=np.int32)
# FreeSurfer's surfaces are in the coordinates of its conformed volume; its centre (cras) takes them to the scanner's.
VOLUME_INFO = {
    "head": np.array([2, 0, 20]), "valid": "1  # volume info valid", "filename": "orig.mgz",
    "volume": np.array([256, 256, 256]), "voxelsize": np.array([1.0, 1.0, 1.0]), "xras": np.array([-1.0, 0.0, 0.0]),
    "yras": np.array([0.0, 0.0, -1.0]), "zras": np.array([0.0, 1.0, 0.0]), "cras": np.array([5.5, -7.25, 12.0]),
}


def _nrrd_header(data_file: str | None) -> bytes:
    directions = " ".join(f"({','.join(map(str, d))})" for d in NRRD_DIRECTIONS)
    lines = [
        "NRRD0004", "type: int16", "dimension: 3", "space: left-posterior-superior",
        f"sizes: {' '.join(map(str, NRRD_SIZES))}", f"space directions: {directions}", "kinds: domain domain domain",
        "endian: little", "encoding: raw", f"space origin: ({','.join(map(str, NRRD_ORIGIN))})",
    ]
    return ("\n".join(lines) + (f"\ndata file: {data_file}\n" if data_file else "\n\n")).encode()


def _nrrd_voxels() -> bytes:
    # NRRD's first axis varies fastest: value i + 3j + 12k at (i, j, k).
    return np.arange(np.prod(NRRD_SIZES), dtype="<i2").tobytes()


def nrrd_affine() -> np.ndarray:
    """Voxel to RAS: NRRD's directions are the columns of voxel to LPS."""
    lps = np.eye(4)
    lps[:3, :3] = np.array(NRRD_DIRECTIONS).T
    lps[:3, 3] = NRRD_ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _stl(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    body = b"".join(struct.pack("<12fH", 0, 0, 0, *vertices[face].ravel(), 0) for face in faces)
    return b"binary STL written by the viewer's tests".ljust(80, b" ") + struct.pack("<I", len(faces)) + body


def _obj(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return ("\n".join(lines) + "\n").encode()


def _write_inputs(folder: Path) -> dict[str, Path]:
    """The study's files by their path in it."""
    folder.mkdir(parents=True)
    written: dict[str, Path] = {}

    def put(path: str, content: bytes) -> None:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written[path] = target

    for source in sorted(FORMATS.iterdir()):
        if source.name != "README.md":
            put(f"formats/{source.name}", source.read_bytes())
    put("formats/grid.nrrd", _nrrd_header(None) + _nrrd_voxels())
    put("formats/grid.nhdr", _nrrd_header("grid.raw"))
    put("formats/grid.raw", _nrrd_voxels())
    put("formats/tetra.stl", _stl(VERTICES, FACES))
    put("formats/tetra.obj", _obj(VERTICES, FACES))
    # As FreeSurfer writes them, with the volume's geometry (its centre moves the surface), and without.
    nib.freesurfer.write_geometry(folder / "formats" / "lh.pial", VERTICES, FACES, volume_info=VOLUME_INFO)
    nib.freesurfer.write_geometry(folder / "formats" / "rh.white", VERTICES, FACES)
    written.update({f"formats/{name}": folder / "formats" / name for name in ("lh.pial", "rh.white")})
    # Corrupt files: cut short, or not what their name says.
    put("bad/lh.white", written["formats/lh.pial"].read_bytes()[:60])
    put("bad/broken.gii", (FORMATS / "ascii.gii").read_bytes()[:900])
    # The header and one streamline of three points, and half of the next.
    put("bad/short.trk", (FORMATS / "standard.trk").read_bytes()[:1060])
    put("bad/notes.tck", b"these are notes, not a tractogram\n" * 4)
    return written


@dataclass(frozen=True)
class Study:
    """The study of the formats: its id, its files' ids by path, and where they lie."""

    id: int
    files: dict[str, int]
    folder: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[Portal, Study]]:
    archive = site_archive(tmp_path_factory.mktemp("viewer-formats"), sqlite_template)
    build_site(archive)
    study_dir = archive.layout.study_dir("alpha", SUBJECT, "S1")
    written = _write_inputs(study_dir)
    with archive.unit_of_work() as (session, _journal):
        alpha = get_project(session, "alpha")
        study = ensure_study(session, alpha, SUBJECT, "S1")
        files = add_files(session, archive.layout, alpha, list(written.values()))
        formats = Study(study.id, {f.path: f.id for f in files}, study_dir)
        session.add(ViewerPreset(project_id=alpha.id, name="surfaces", spec=json.dumps({
            "layout": "1x2", "viewports": [
                {"file": "formats/test.mgz", "overlays": [{"file": "formats/lh.pial"}]},
                {"file": "formats/standard.nii.gz", "overlays": [{"file": "formats/standard.trk", "opacity": 0.8}]},
            ],
        })))
    portal = start_portal(archive.settings)
    yield portal, formats
    portal.stop()
    archive.close()


def _open_study(page: Page, study: Study) -> None:
    log_in_as(page, "editor", PASSWORD)
    page.goto(f"/p/alpha/viewer?study={study.id}")
    page.wait_for_selector("#viewer[data-ready='1']")
    # Without a preset the study's first NIfTI opens.
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes[0]?.name === 'standard.nii.gz'")


def _open(page: Page, study: Study, path: str) -> None:
    page.dblclick(f"li[data-file-id='{study.files[path]}']")


def _wait_mesh(page: Page, name: str, viewport: int = 0) -> dict[str, Any]:
    """The mesh NiiVue made of a file, once drawn: its points, triangles and streamline starts."""
    page.wait_for_function(
        "([index, name]) => window.northancViewer.viewports[index].meshes.some((l) => l.name === name)", arg=[viewport, name])
    mesh: dict[str, Any] = page.evaluate(
        """([index, name]) => {
          const { mesh } = window.northancViewer.viewports[index].meshes.find((l) => l.name === name);
          return { pts: Array.from(mesh.pts), tris: Array.from(mesh.tris ?? []), offsets: Array.from(mesh.offsetPt0 ?? []) };
        }""", [viewport, name])
    return mesh


def _values_at(page: Page, name: str, points: list[list[float]]) -> list[float]:
    """The value NiiVue shows at each world point (millimetres) of a volume it opened."""
    page.wait_for_function(
        "(name) => window.northancViewer.viewports[0].nv.volumes.some((v) => v.name === name)", arg=name)
    values: list[float] = page.evaluate(
        """([name, points]) => {
          const volume = window.northancViewer.viewports[0].nv.volumes.find((v) => v.name === name);
          return points.map((mm) => volume.getValue(...volume.mm2vox(mm)));
        }""", [name, points])
    return values


def _messages(page: Page) -> Any:
    return page.locator("#layer-messages li")


def _world(affine: np.ndarray, voxels: list[tuple[int, int, int]]) -> list[list[float]]:
    return [(affine @ [*voxel, 1.0])[:3].tolist() for voxel in voxels]


INTERIOR = [(1, 2, 3), (0, 0, 0), (2, 3, 4), (1, 1, 1)]


def test_mgz_and_nrrd_volumes_show_each_voxel_where_its_affine_puts_it(page: Page, served: tuple[Portal, Study]) -> None:
    _portal, study = served
    _open_study(page, study)
    mgz = nib.load(FORMATS / "test.mgz")
    _open(page, study, "formats/test.mgz")
    assert _values_at(page, "test.mgz", _world(mgz.affine, INTERIOR)) == [mgz.dataobj[(*v, 0)] for v in INTERIOR]
    for name in ("grid.nrrd", "grid.nhdr"):
        _open(page, study, f"formats/{name}")
        expected = [i + 3 * j + 12 * k for i, j, k in INTERIOR]
        assert _values_at(page, name, _world(nrrd_affine(), INTERIOR)) == expected
    page.screenshot(path=ARTIFACTS / "viewer-formats-nrrd.png")
    expect(_messages(page)).to_have_count(0)


def test_surfaces_are_drawn_with_nibabels_vertices(page: Page, served: tuple[Portal, Study]) -> None:
    _portal, study = served
    _open_study(page, study)
    gifti = nib.load(FORMATS / "ascii.gii")
    points, triangles = gifti.agg_data(("pointset", "triangle"))
    # Dragged from the file list onto the viewport: the list's drag start, the viewport's drop.
    transfer = page.evaluate_handle("() => new DataTransfer()")
    page.dispatch_event(f"li[data-file-id='{study.files['formats/ascii.gii']}']", "dragstart", {"dataTransfer": transfer})
    page.dispatch_event(".viewport >> nth=0", "drop", {"dataTransfer": transfer})
    mesh = _wait_mesh(page, "ascii.gii")
    np.testing.assert_allclose(np.reshape(mesh["pts"], (-1, 3)), points, rtol=0, atol=1e-5)
    assert np.reshape(mesh["tris"], (-1, 3)).tolist() == triangles.tolist()
    for name in ("lh.pial", "rh.white"):
        _open(page, study, f"formats/{name}")
        surface = _wait_mesh(page, name)
        vertices, faces, info = nib.freesurfer.read_geometry(study.folder / "formats" / name, read_metadata=True)
        world = vertices + info.get("cras", np.zeros(3))
        np.testing.assert_allclose(np.reshape(surface["pts"], (-1, 3)), world, rtol=0, atol=1e-5)
        assert np.reshape(surface["tris"], (-1, 3)).tolist() == faces.tolist()
    _open(page, study, "formats/tetra.obj")
    obj = _wait_mesh(page, "tetra.obj")
    np.testing.assert_allclose(np.reshape(obj["pts"], (-1, 3)), VERTICES, rtol=0, atol=1e-5)
    assert np.reshape(obj["tris"], (-1, 3)).tolist() == FACES.tolist()
    # STL stores each triangle's corners: NiiVue keeps them as they come.
    _open(page, study, "formats/tetra.stl")
    stl = _wait_mesh(page, "tetra.stl")
    np.testing.assert_allclose(np.reshape(stl["pts"], (-1, 3)), VERTICES[FACES.ravel()], rtol=0, atol=1e-5)
    # Surfaces go over the volume, which stays.
    assert page.evaluate("() => window.northancViewer.viewports[0].layers.map((l) => l.name)") == ["standard.nii.gz"]
    page.screenshot(path=ARTIFACTS / "viewer-formats-surfaces.png")
    expect(_messages(page)).to_have_count(0)


def _streamlines(path: Path) -> tuple[np.ndarray, list[int]]:
    """A tractogram's points in world millimetres (RAS) and where each streamline starts, by nibabel."""
    streamlines = nib.streamlines.load(path).streamlines
    starts = np.cumsum([0, *[len(s) for s in streamlines]]).tolist()
    return np.concatenate(list(streamlines)), starts


@pytest.mark.parametrize("name", ["standard.trk", "standard.tck", "simple_big_endian.tck"])
def test_tracts_are_drawn_with_nibabels_points(page: Page, served: tuple[Portal, Study], name: str) -> None:
    _portal, study = served
    _open_study(page, study)
    _open(page, study, f"formats/{name}")
    tract = _wait_mesh(page, name)
    points, starts = _streamlines(FORMATS / name)
    np.testing.assert_allclose(np.reshape(tract["pts"], (-1, 3)), points, rtol=0, atol=1e-5)
    assert tract["offsets"] == starts
    # The standard tracts lie in standard.nii.gz's box: nothing to warn about. The simple one's do not.
    expect(_messages(page)).to_have_count(0 if name.startswith("standard") else 1)
    page.screenshot(path=ARTIFACTS / f"viewer-formats-{name}.png")


def test_a_tractogram_in_another_space_is_drawn_where_its_file_says_with_a_warning(
    page: Page, served: tuple[Portal, Study]
) -> None:
    _portal, study = served
    _open_study(page, study)
    _open(page, study, "formats/test.mgz")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes[0]?.name === 'test.mgz'")
    _open(page, study, "formats/standard.trk")
    tract = _wait_mesh(page, "standard.trk")
    points, _starts = _streamlines(FORMATS / "standard.trk")
    np.testing.assert_allclose(np.reshape(tract["pts"], (-1, 3)), points, rtol=0, atol=1e-5)
    warnings = page.locator("#layer-messages li.warning")
    expect(warnings.first).to_contain_text("standard.trk: its header's grid covers")
    expect(warnings.first).to_contain_text("the header space differs from the volume's")
    expect(warnings.nth(1)).to_contain_text(re.compile(r"standard\.trk: \d+ of 360 points lie outside the volume test\.mgz"))
    _open(page, study, "formats/standard.tck")
    _wait_mesh(page, "standard.tck")
    expect(page.locator("#layer-messages li.warning", has_text="standard.tck")).to_contain_text(
        re.compile(r"standard\.tck: \d+ of 360 points lie outside the volume test\.mgz.*It is shown where its file says"))
    page.screenshot(path=ARTIFACTS / "viewer-formats-tract-space.png")


@pytest.mark.parametrize(("path", "reason"), [
    ("bad/lh.white", "more than the file holds"),
    ("bad/broken.gii", "does not end with </GIFTI>: truncated or corrupt"),
    ("bad/short.trk", "does not fit in the file"),
    ("bad/notes.tck", "not a TCK file"),
])
def test_a_corrupt_mesh_or_tract_is_refused_with_a_message_and_the_viewer_goes_on(
    page: Page, served: tuple[Portal, Study], path: str, reason: str
) -> None:
    _portal, study = served
    _open_study(page, study)
    _open(page, study, path)
    name = path.split("/")[-1]
    message = page.locator("#layer-messages li.error")
    expect(message).to_contain_text(f"{name} could not be opened")
    expect(message).to_contain_text(reason)
    expect(page.locator("#status")).to_contain_text(f"{name} could not be opened")
    assert page.evaluate("() => window.northancViewer.viewports[0].meshes.length") == 0
    _open(page, study, "formats/grid.nrrd")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes[0]?.name === 'grid.nrrd'")
    _open(page, study, "formats/standard.nii.gz")
    page.wait_for_function("() => window.northancViewer.viewports[0].nv.volumes[0]?.name === 'standard.nii.gz'")
    _open(page, study, "formats/standard.tck")
    _wait_mesh(page, "standard.tck")


def test_a_preset_opens_surfaces_and_tracts_and_a_shared_link_reopens_them(
    page: Page, browser: Browser, served: tuple[Portal, Study]
) -> None:
    portal, study = served
    _open_study(page, study)
    page.select_option("#preset", "surfaces")
    _wait_mesh(page, "lh.pial", 0)
    _wait_mesh(page, "standard.trk", 1)
    shown = page.evaluate(
        "() => window.northancViewer.viewports.map((v) => [v.layers.map((l) => l.name), v.meshes.map((l) => [l.name, l.opacity])])")
    assert shown == [[["test.mgz"], [["lh.pial", 1]]], [["standard.nii.gz"], [["standard.trk", 0.8]]]]
    page.click("#share")
    expect(page.locator("#share-url")).to_have_value(re.compile(r"/p/alpha/viewer\?link=[\w-]+$"))
    link = page.locator("#share-url").input_value()
    other = browser.new_context(base_url=portal.url)
    reader = other.new_page()
    log_in_as(reader, "reader", PASSWORD)
    reader.goto(link)
    reader.wait_for_selector("#viewer[data-ready='1']")
    reopened = reader.evaluate(
        "() => window.northancViewer.viewports.filter((v) => !v.node.hidden)"
        ".map((v) => [v.layers.map((l) => l.file_id), v.meshes.map((l) => [l.file_id, l.opacity])])")
    assert reopened == [
        [[study.files["formats/test.mgz"]], [[study.files["formats/lh.pial"], 1]]],
        [[study.files["formats/standard.nii.gz"]], [[study.files["formats/standard.trk"], 0.8]]],
    ]
    reader.screenshot(path=ARTIFACTS / "viewer-formats-shared-link.png")
    other.close()


def test_a_tract_opens_in_a_viewport_without_a_volume(page: Page, served: tuple[Portal, Study]) -> None:
    _portal, study = served
    _open_study(page, study)
    page.select_option("#layout", "1x2")
    page.locator(".viewport").nth(1).click()
    _open(page, study, "formats/standard.trk")
    tract = _wait_mesh(page, "standard.trk", 1)
    points, _starts = _streamlines(FORMATS / "standard.trk")
    np.testing.assert_allclose(np.reshape(tract["pts"], (-1, 3)), points, rtol=0, atol=1e-5)
    # Nothing to compare its space with: no warning, and the viewport is shared like any other.
    expect(_messages(page)).to_have_count(0)
    page.click("#share")
    expect(page.locator("#share-url")).to_have_value(re.compile(r"/p/alpha/viewer\?link=[\w-]+$"))
    page.screenshot(path=ARTIFACTS / "viewer-formats-tract-alone.png")
