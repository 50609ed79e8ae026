"""The viewer's preview (the central slices drawn from the decoded volume while NiiVue loads it) in
Debian's Chromium: oriented as NiiVue shows the volume.

Two synthetic volumes of one study hold three bright blocks at known scanner (RAS) positions,
each cut by one of the three central planes only: right and anterior of the centre on the axial
plane, right and superior on the coronal one, anterior and superior on the sagittal one. One is
stored LAS and gzipped, the other with its voxel axes permuted and flipped (PIL). On the preview's
canvas and on NiiVue's, read back pixel by pixel, each block must be lit where its position says
(the patient's right on the screen's right, anterior or superior up, anterior on the right of the
sagittal plane), the mirrored place dark, and at the same place of its tile in both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray
from playwright.sync_api import Page, expect

from nifti_archive.catalog.registration import add_files, ensure_study
from nifti_archive.models import Project
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS
from tests.portal_site import PASSWORD, build_site, site_archive

SHAPE = (60, 64, 48)
# The blocks, in mm from the volume's centre (RAS), and the plane that cuts each (NiiVue's axCorSag).
BLOCKS = {"axial": ((24.0, 16.0, 0.0), 0), "coronal": ((24.0, 0.0, 16.0), 1), "sagittal": ((0.0, 16.0, 16.0), 2)}
# Per plane: the world axis across the tile (left to right) and the one up it.
AXES = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
HALF_BLOCK_MM = 4.5
# Voxel axes as columns of the affine (2 mm voxels): LAS, and P-I-L (permuted and flipped).
ORIENTATIONS = {
    "001_las/las.nii.gz": np.diag([-2.0, 2.0, 2.0]),
    "002_pil/pil.nii": np.array([[0.0, 0.0, -2.0], [-2.0, 0.0, 0.0], [0.0, -2.0, 0.0]]),
}


@dataclass(frozen=True)
class Volume:
    path: str
    file_id: int
    affine: NDArray[Any]
    shape: tuple[int, ...]


def blocks_volume(rotation: NDArray[Any], shape: tuple[int, ...]) -> nib.Nifti1Image:
    """A dim ramp (0-200) with the three blocks at 1000, the window 0-1000 in the header."""
    affine = np.eye(4)
    affine[:3, :3] = rotation
    affine[:3, 3] = [10.0, -20.0, 30.0]
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = (affine[:3, :3] @ index).T + affine[:3, 3]
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    data = (index[0] / shape[0] * 200).astype(np.int16)
    for offset, _plane in BLOCKS.values():
        inside = np.all(np.abs(world - (centre + offset)) <= HALF_BLOCK_MM, axis=1)
        data[inside] = 1000
    image = nib.Nifti1Image(data.reshape(shape), affine)
    image.header["cal_min"], image.header["cal_max"] = 0, 1000
    return image


# The portal, the study's id and its two volumes.
Served = tuple[Portal, tuple[int, list[Volume]]]


def world_box(volume: Volume) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Low corner, size and centre of the world box the voxels fill."""
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in volume.shape])))
    world = nib.affines.apply_affine(volume.affine, corners)
    centre = nib.affines.apply_affine(volume.affine, (np.array(volume.shape) - 1) / 2)
    return world.min(axis=0), world.max(axis=0) - world.min(axis=0), centre


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Served]:
    archive = site_archive(tmp_path_factory.mktemp("viewer-preview"), sqlite_template)
    build_site(archive)
    volumes = []
    with archive.unit_of_work() as (session, _journal):
        project = session.query(Project).filter_by(name="alpha").one()
        study = ensure_study(session, project, "P09", "S1")
        for path, rotation in ORIENTATIONS.items():
            target = archive.layout.study_dir("alpha", "P09", "S1") / path
            target.parent.mkdir(parents=True)
            image = blocks_volume(rotation, SHAPE)
            nib.save(image, target)
            [record] = add_files(session, archive.layout, project, [target])
            session.flush()
            volumes.append(Volume(path, record.id, np.asarray(image.affine), SHAPE))
        study_id = study.id
    portal = start_portal(archive.settings)
    yield portal, (study_id, volumes)
    portal.stop()
    archive.close()


# Per block: the preview's tile, its pixels at the block and at the mirrored place (RGBA), and
# NiiVue's: where it draws the block's point (canvas pixels, and as a fraction of its tile), its
# pixel there and at the mirrored place (the point's position across and up the plane reflected
# through the crosshair).
READ = """(blocks) => {
    const viewport = window.northancViewer.viewports[0];
    const { nv, preview } = viewport;
    const context = preview.canvas.getContext("2d");
    const previewPixel = (x, y) => Array.from(context.getImageData(Math.round(x), Math.round(y), 1, 1).data);
    nv.drawScene();
    const gl = nv.gl, height = gl.drawingBufferHeight;
    const pixels = new Uint8Array(4 * gl.drawingBufferWidth * height);
    gl.readPixels(0, 0, gl.drawingBufferWidth, height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
    const niivuePixel = ([x, y]) => {
        const at = 4 * ((height - 1 - Math.round(y)) * gl.drawingBufferWidth + Math.round(x));
        return Array.from(pixels.slice(at, at + 4));
    };
    const crosshair = Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3);
    const cutAxis = [2, 1, 0];
    return blocks.map(({ plane, axCorSag, point, mirrored, fraction, mirroredFraction }) => {
        const tile = preview.tiles.find((t) => t.plane === plane);
        const at = (f) => [tile.left + f[0] * tile.width, tile.top + (1 - f[1]) * tile.height];
        const onPlane = (mm) => mm.map((v, axis) => (axis === cutAxis[axCorSag] ? crosshair[axis] : v));
        const shown = nv.frac2canvasPosWithTile(nv.mm2frac(onPlane(point)), axCorSag);
        const other = nv.frac2canvasPosWithTile(nv.mm2frac(onPlane(mirrored)), axCorSag);
        if (!shown || !other) return { plane, tile, missing: true };
        const [left, top, width, tall] = nv.screenSlices[shown.tileIndex].leftTopWidthHeight;
        return {
            plane, tile, preview: previewPixel(...at(fraction)), previewMirrored: previewPixel(...at(mirroredFraction)),
            niivue: niivuePixel(shown.pos), niivueMirrored: niivuePixel(other.pos),
            niivueFraction: [(shown.pos[0] - left) / width, 1 - (shown.pos[1] - top) / tall],
        };
    });
}"""


def lit(rgba: list[int]) -> bool:
    return min(rgba[:3]) > 200


def dark(rgba: list[int]) -> bool:
    return max(rgba[:3]) < 100


def test_the_preview_shows_each_block_on_the_side_niivue_shows_it(page: Page, served: Served) -> None:
    _portal, (study_id, volumes) = served
    log_in_as(page, "viewer", PASSWORD)
    page.goto(f"/p/alpha/viewer?study={study_id}")
    expect(page.locator("#viewer")).to_have_attribute("data-ready", "1")
    problems = []
    for volume in volumes:
        if volume.path != volumes[0].path:
            page.locator(f"li.file[data-file-id='{volume.file_id}']").dblclick()
        page.wait_for_function(
            "(id) => { const v = window.northancViewer.viewports[0];"
            " return v.layers[0]?.file_id === id && v.preview.drawn === id && v.preview.key === null; }",
            arg=volume.file_id, polling=100,
        )
        low, size, centre = world_box(volume)
        blocks = []
        for plane, (offset, ax_cor_sag) in BLOCKS.items():
            point = centre + offset
            across, up = AXES[plane]
            mirrored = point.copy()
            mirrored[[across, up]] = 2 * centre[[across, up]] - point[[across, up]]
            fraction = [(point[axis] - low[axis]) / size[axis] for axis in (across, up)]
            blocks.append({
                "plane": plane, "axCorSag": ax_cor_sag, "point": point.tolist(), "mirrored": mirrored.tolist(), "fraction": fraction,
                "mirroredFraction": [(mirrored[axis] - low[axis]) / size[axis] for axis in (across, up)],
            })
            if not (fraction[0] > 0.5 and fraction[1] > 0.5):
                problems.append(f"{volume.path} {plane}: the block should be right of (or anterior to) and above the centre")
        for block, seen in zip(blocks, page.evaluate(READ, blocks), strict=True):
            where = f"{volume.path} {block['plane']}"
            if seen.get("missing"):
                problems.append(f"{where}: NiiVue shows no tile of that plane through the block")
                continue
            if not lit(seen["preview"]) or not dark(seen["previewMirrored"]):
                problems.append(f"{where}: the preview shows {seen['preview']} at the block, {seen['previewMirrored']} mirrored")
            if not lit(seen["niivue"]) or not dark(seen["niivueMirrored"]):
                problems.append(f"{where}: NiiVue shows {seen['niivue']} at the block, {seen['niivueMirrored']} mirrored")
            if np.abs(np.subtract(seen["niivueFraction"], block["fraction"])).max() > 0.1:
                problems.append(f"{where}: the block is at {np.round(block['fraction'], 2).tolist()} of the preview's tile,"
                                f" {np.round(seen['niivueFraction'], 2).tolist()} of NiiVue's")
        page.screenshot(path=ARTIFACTS / f"viewer-preview-{Path(volume.path).parent.name}.png")
    assert not problems, "\n".join(problems)
