"""OHIF served by the portal, in Debian's Chromium, on a real Northanc (Orthanc, plugin, DICOMweb).

A reader opens a study from the studies table's OHIF link and OHIF draws its first image; the
XNAT-style URL asks for a log-in first; the SEG the archive stored for an ROI shows in OHIF as an
overlay on the slices it references and on no other; an editor's segmentation saved from OHIF's
segmentation mode (STOW through the portal, with the page's CSRF token) becomes an ROI in the
archive, voxel for voxel. DICOM arrives with storescu: a Siemens sagittal and a coronal-oblique
mosaic (one study) and the first time point of a GE EPI series (another study; 15 single-frame
slices). No page of OHIF's may break its Content-Security-Policy.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from pydicom import Dataset
from sqlalchemy import select

from nifti_archive import accounts
from nifti_archive.models import File, FileKind, Project, Roi, RoiOrigin, Role, Study, Subject
from segmentation import roi_actions, rois, seg_export
from testbed.northanc import Northanc, northanc_settings
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS
from tests.polling import wait_until
from tests.reference import DATASETS

SAGITTAL = DATASETS["dcm_qa"] / "In" / "Orientation" / "sag" / "sagasc35"
OBLIQUE = DATASETS["dcm_qa"] / "In" / "Orientation" / "cor" / "corasc36"
GE = DATASETS["dcm_qa_nih"] / "In" / "20180918GE" / "mr_0004"
PASSWORD = "correct horse battery"
# OHIF's bundle is 17 MB of JavaScript, parsed on two cores with software WebGL.
OHIF_TIMEOUT_MS = 90_000
# The archive's ROI: a square on two of the GE series' 15 slices, in red; the other slices stay empty.
ROI_SLICES = (5, 6)
ROI_COLOUR = "#ff0000"
# Before OHIF's own scripts: no first-visit tour over the viewport.
NO_TOUR = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"


@dataclass
class OhifSite:
    northanc: Northanc
    project: str
    mosaic_study: int
    ge_study: int
    ge_study_uid: str
    # The SOPInstanceUIDs of the GE images the archive's SEG has frames for, and of the others.
    seg_referenced: set[str] = field(default_factory=set)
    seg_unreferenced: set[str] = field(default_factory=set)


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".txt", ".nii", ".json"))


def ge_first_time_point() -> dict[str, Dataset]:
    """The GE series' first time point (its first 15 instances), headers by SOPInstanceUID."""
    headers = (pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_files(GE))
    return {str(ds.SOPInstanceUID): ds for ds in headers if int(ds.InstanceNumber) <= int(ds.ImagesInAcquisition)}


def ge_3d_series(folder: Path) -> list[Path]:
    """The GE series' first time point as a single-frame 3D series of its own: copies saying one
    time point, else Orthanc expects ten and the archive holds the series back as incomplete.
    (OHIF 3.13 misplaces a SEG drawn on the whole 4D stack: its frames reference the painted
    image but carry the position of another slice.)"""
    folder.mkdir()
    copies = []
    for uid, header in ge_first_time_point().items():
        dataset = pydicom.dcmread(header.filename)
        dataset.NumberOfTemporalPositions = 1
        dataset.save_as(folder / f"{uid}.dcm")
        copies.append(folder / f"{uid}.dcm")
    return copies


def _nifti_of(northanc: Northanc, series_uid: str) -> tuple[File, Project, Path]:
    with northanc.archive.sessions() as session:
        record = session.scalar(select(File).where(File.source_series_uid == series_uid, File.kind == FileKind.NIFTI))
        assert record is not None, f"series {series_uid} was not converted"
        study = session.get_one(Study, record.study_id)
        subject = session.get_one(Subject, study.subject_id)
        project = subject.project
        path = northanc.archive.layout.study_dir(project.name, subject.patient_id, study.study_id) / record.path
        session.expunge_all()
        return record, project, path


def _referenced_images(seg: Dataset) -> set[str]:
    return {
        str(source.ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for source in derivation.SourceImageSequence
    }


def _store_roi_seg(northanc: Northanc, series_uid: str, tmp: Path) -> tuple[set[str], set[str]]:
    """The archive's ROI path (upload_mask, which stores the SEG in Orthanc) on the series' NIfTI;
    the SOPInstanceUIDs the SEG's frames reference, and those of the series' other images."""
    reference, project, path = _nifti_of(northanc, series_uid)
    image = nib.load(path)
    mask = np.zeros(image.shape[:3], dtype=np.uint8)
    for k in ROI_SLICES:
        mask[20:44, 20:44, k] = 1
    upload = tmp / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, image.affine), upload)
    saved = roi_actions.upload_mask(
        northanc.archive, project, reference.study_id, reference.id, upload, "lesion", ROI_COLOUR, "archive",
        seg_export.publisher(northanc.archive, northanc.rest),
    )
    assert saved.seg_message == "" and saved.roi.seg_instance_uid
    referenced = _referenced_images(_orthanc_seg(northanc, saved.roi.seg_instance_uid))
    images = set(ge_first_time_point())
    assert len(referenced) == len(ROI_SLICES) and referenced < images
    return referenced, images - referenced


def _orthanc_seg(northanc: Northanc, sop_instance_uid: str) -> Dataset:
    return pydicom.dcmread(io.BytesIO(northanc.rest.dicom(seg_export.orthanc_instance(northanc.rest, sop_instance_uid))))


def _user(northanc: Northanc, project_id: int, name: str, role: Role) -> None:
    with northanc.archive.unit_of_work() as (session, _journal):
        user, _one_time = accounts.create_user(session, name)
        accounts.set_password(user, PASSWORD)
        accounts.grant_role(session, user, session.get_one(Project, project_id), role)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Portal, OhifSite]]:
    tmp = tmp_path_factory.mktemp("ohif")
    northanc = Northanc.start(northanc_settings(tmp / "var"))
    try:
        northanc.storescu([*dicom_files(SAGITTAL), *dicom_files(OBLIQUE), *ge_3d_series(tmp / "ge")])
        northanc.wait_for_conversions(3)
        first = {folder: pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True) for folder in (SAGITTAL, GE)}
        ge_series = str(first[GE].SeriesInstanceUID)
        ge_nifti, project, _path = _nifti_of(northanc, ge_series)
        site = OhifSite(
            northanc, project.name, _nifti_of(northanc, str(first[SAGITTAL].SeriesInstanceUID))[0].study_id, ge_nifti.study_id,
            str(first[GE].StudyInstanceUID),
        )
        site.seg_referenced, site.seg_unreferenced = _store_roi_seg(northanc, ge_series, tmp)
        _user(northanc, project.id, "reader", Role.READER)
        _user(northanc, project.id, "editor", Role.EDITOR)
        portal = start_portal(northanc.settings)
    except BaseException:
        northanc.stop()
        raise
    yield portal, site
    portal.stop()
    northanc.stop()


@dataclass
class Ohif:
    page: Page
    # The Content-Security-Policy violations Chromium reported on the console.
    violations: list[str]


@pytest.fixture
def ohif(page: Page) -> Ohif:
    page.context.add_init_script(NO_TOUR)
    page.set_default_timeout(OHIF_TIMEOUT_MS)
    violations: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    page.on("console", note)
    return Ohif(page, violations)


# Pixels of the first OHIF viewport showing an image, read from the canvas cornerstone draws
# to: how many are lit (brighter than the background) and how many coloured (a grey image has
# none; the overlay's red has many).
VIEWPORT_PIXELS = """() => {
    const elements = window.cornerstone?.getEnabledElements?.() ?? [];
    const shown = elements.map((e) => e.viewport).find((v) => v.getCurrentImageId?.());
    if (!shown) return null;
    const canvas = shown.getCanvas();
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    const context = copy.getContext("2d");
    context.drawImage(canvas, 0, 0);
    const { data } = context.getImageData(0, 0, copy.width, copy.height);
    let lit = 0, coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
        const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
        if (r + g + b > 30) lit++;
        if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured++;
    }
    return { lit, coloured, imageId: shown.getCurrentImageId() };
}"""
# Shows the stack's image of a SOPInstanceUID (WADO-RS image ids name it) and draws it.
SHOW_IMAGE = """async (sop) => {
    const shown = window.cornerstone.getEnabledElements().map((e) => e.viewport).find((v) => v.getCurrentImageId?.());
    const index = shown.getImageIds().findIndex((id) => id.includes(`/instances/${sop}/`));
    if (index < 0) return false;
    await shown.setImageIdIndex(index);
    shown.render();
    return true;
}"""


def viewport_pixels(page: Page) -> dict[str, Any]:
    found = page.evaluate(VIEWPORT_PIXELS)
    assert found is not None, "no OHIF viewport shows an image"
    return dict(found)


def wait_for_image(page: Page, sop: str | None = None) -> dict[str, Any]:
    """Waits until a viewport shows an image (that of ``sop`` if given) with lit pixels."""
    # A function, not an expression: Playwright evaluates an expression with eval, which OHIF's policy refuses.
    page.wait_for_function(
        f"""(sop) => {{ const p = ({VIEWPORT_PIXELS})();
            return p && p.lit > 2000 && (!sop || p.imageId.includes(`/instances/${{sop}}/`)); }}""",
        arg=sop, polling=250,
    )
    return viewport_pixels(page)


def show_image(page: Page, sop: str) -> dict[str, Any]:
    assert page.evaluate(SHOW_IMAGE, sop), f"image {sop} is not in the viewport's stack"
    return wait_for_image(page, sop)


def test_a_reader_opens_a_study_from_the_table_in_ohif(ohif: Ohif, served: tuple[Portal, OhifSite]) -> None:
    page = ohif.page
    _portal, site = served
    log_in_as(page, "reader", PASSWORD)
    opening = f"/p/{site.project}/ohif?study={site.mosaic_study}"
    page.goto(f"/p/{site.project}/viewer?study={site.mosaic_study}")
    expect(page.locator("#open-ohif")).to_have_attribute("href", opening)
    page.goto(f"/p/{site.project}")
    link = page.locator(f"#studies tr[data-id='{site.mosaic_study}'] a.open-ohif")
    expect(link).to_have_attribute("href", opening)
    link.click()
    page.wait_for_url("**/ohif/viewer?StudyInstanceUIDs=*")
    assert wait_for_image(page)["lit"] > 2000
    # The study's two mosaics are listed; the table's study is the one shown.
    expect(page.locator("[data-cy='study-browser-thumbnail']")).to_have_count(2)
    page.screenshot(path=ARTIFACTS / "ohif-first-image.png")
    assert not ohif.violations


def test_the_archive_seg_shows_on_the_slices_it_references_only(ohif: Ohif, served: tuple[Portal, OhifSite]) -> None:
    page = ohif.page
    _portal, site = served
    # XNAT's URL, before logging in: the log-in page, then OHIF on that study.
    page.goto(f"/ohif/viewer?StudyInstanceUIDs={site.ge_study_uid}")
    expect(page.locator("h1")).to_have_text("Log in")
    page.fill("input[name=username]", "reader")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/ohif/viewer?StudyInstanceUIDs={site.ge_study_uid}")
    assert wait_for_image(page)["coloured"] == 0
    page.locator("[data-cy='study-browser-thumbnail-no-image']").filter(has_text="SEG").dblclick()
    page.get_by_role("button", name="Yes").click()
    page.locator("[data-cy='panelSegmentation-btn']").click()
    expect(page.get_by_text("lesion", exact=True)).to_be_visible()
    for sop in site.seg_referenced:
        assert show_image(page, sop)["coloured"] > 1000, f"no overlay on image {sop}, which the SEG references"
    page.screenshot(path=ARTIFACTS / "ohif-seg-overlay.png")
    for sop in site.seg_unreferenced:
        assert show_image(page, sop)["coloured"] == 0, f"an overlay on image {sop}, which the SEG does not reference"
    assert not ohif.violations


def _seg_voxels(seg: Dataset, affine: np.ndarray, sources: Mapping[str, Dataset]) -> set[tuple[int, int, int]]:
    """The NIfTI voxels (of the grid ``affine`` gives) the SEG's frames label: each frame's pixels
    placed in patient space by the geometry of the image the frame references, read here from
    the source DICOM itself rather than through the archive's SEG code."""
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    to_voxel = np.linalg.inv(affine)
    found: set[tuple[int, int, int]] = set()
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        uid = str(groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = sources[uid]
        rows, columns = np.nonzero(frame)
        along_row, along_column = np.array(source.ImageOrientationPatient[:3]), np.array(source.ImageOrientationPatient[3:])
        row_spacing, column_spacing = (float(v) for v in source.PixelSpacing)
        lps = (np.array(source.ImagePositionPatient, dtype=float) + columns[:, None] * column_spacing * along_row
               + rows[:, None] * row_spacing * along_column)
        ras = lps * np.array([-1.0, -1.0, 1.0])
        voxels = nib.affines.apply_affine(to_voxel, ras)
        assert np.allclose(voxels, np.round(voxels), atol=0.01), "a SEG pixel falls between the NIfTI's voxels"
        found |= {tuple(int(v) for v in voxel) for voxel in np.round(voxels)}  # type: ignore[misc]  # three ints
    return found


def test_an_editors_segmentation_saved_in_ohif_becomes_an_roi_voxel_for_voxel(ohif: Ohif, served: tuple[Portal, OhifSite]) -> None:
    page = ohif.page
    _portal, site = served
    log_in_as(page, "editor", PASSWORD)
    page.goto(f"/ohif/segmentation?StudyInstanceUIDs={site.ge_study_uid}")
    wait_for_image(page)
    page.locator("[data-cy='addSegmentation']").click()
    page.locator("[data-cy='Brush-btn']").click()
    box = page.locator("[data-cy='viewport-pane'] canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + step * 6, y + (step % 2) * 4)
    page.mouse.up()
    painted = viewport_pixels(page)
    assert painted["coloured"] > 1000, "the brush painted nothing"
    page.locator("[data-cy='segmentation-collapsed-more-btn-Labelmap']").click()
    page.get_by_text("Export", exact=True).click()
    page.get_by_text("DICOM SEG", exact=True).click()
    page.get_by_placeholder("Report name").fill("drawn in OHIF")
    with page.expect_response(lambda r: r.request.method == "POST" and "/dicom-web/studies" in r.url) as stow:
        page.get_by_role("button", name="Save").click()
    assert stow.value.status == 200, stow.value.text()
    assert stow.value.request.headers.get("x-csrf-token"), "STOW went without the page's CSRF token"
    assert not ohif.violations

    def imported() -> Roi | None:
        with site.northanc.archive.sessions() as session:
            found = [r for r in rois.live_rois(session, site.ge_study) if r.origin is RoiOrigin.DICOM_SEG]
            session.expunge_all()
        return found[0] if found else None

    roi = wait_until(imported, 120, "the archive to make an ROI of OHIF's SEG")
    assert roi.seg_instance_uid
    seg = _orthanc_seg(site.northanc, roi.seg_instance_uid)
    painted_sop = str(painted["imageId"]).split("/instances/")[1].split("/")[0]
    assert _referenced_images(seg) == {painted_sop}
    with site.northanc.archive.sessions() as session:
        mask, affine = rois.load_mask(site.northanc.archive, session, session.get_one(Roi, roi.file_id))
    labelled = _seg_voxels(seg, affine, ge_first_time_point())
    assert len(labelled) > 50
    assert {tuple(int(v) for v in voxel) for voxel in np.argwhere(mask)} == labelled
