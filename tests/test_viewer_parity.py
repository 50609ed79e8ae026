"""Parity of the archive's NIfTI in NiiVue with the DICOM that OHIF reads, at patient coordinates.

A real Northanc (Orthanc, plugin, dcm2niix) and the portal under gunicorn; two Siemens mosaics of
one study arrive with storescu: a coronal-oblique series (slices tilted 8.8 degrees from coronal)
and a sagittal one. The DICOM side takes only what OHIF takes, through the portal's DICOMweb with a
reader's token: each series' metadata (its private CSA header through its BulkDataURI) and the
first time point's pixels (WADO-RS frames, raw). OHIF shows a mosaic as one tiled image, so voxel
(slice s, row r, column c) is pixel (r, c) of tile s of that frame, tiles row-major, ceil(sqrt(N))
to a row; its patient position (LPS mm) is what the archive's SEG code gives for it
(``read_source_series(...).geometry``).

Four points per series, near four different corners of the volume (off centre in all three axes),
each where the DICOM pixel differs from its six neighbours and from the pixels a flip of any axis
or a swap of rows and columns would put there, are saved as a marker set of the study in RAS mm
(RAS = LPS with x and y negated), as the Marker tool stores points. In Chromium a reader opens the
study's NiiVue viewer on the archive's NIfTI of the series (first volume of the 4D series) and puts
the crosshair on each point: with NiiVue's own call on the volume's sform (``mm2frac(mm, 0, true)``),
and with the Marker tool's "go to this point" button. NiiVue's location report (what the viewer's
status line shows) must give the DICOM pixel's value, the point's RAS within half a voxel, and the
NIfTI voxel the point is the centre of (NiiVue's voxel index is in its RAS-reoriented grid). With
the crosshair on a point's voxel, the viewer's crosshairMM (what a new marker point or a shared
link stores) must be the point's RAS too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from playwright.sync_api import Page, expect
from pydicom import Dataset
from sqlalchemy import select

from nifti_archive import accounts
from nifti_archive.catalog.projects import create_project
from nifti_archive.layout import Location
from nifti_archive.models import File, FileKind, Role, RoutingRule, Study
from portal.multipart import boundary_of, split
from segmentation import markers
from segmentation.dicom_seg import read_source_series
from testbed.northanc import Northanc, northanc_settings
from testbed.portal import Portal, start_portal
from testbed.portal import log_in as log_in_as
from tests.browser_pages import ARTIFACTS
from tests.reference import DATASETS

ORIENTATION = DATASETS["dcm_qa"] / "In" / "Orientation"
SERIES = {"oblique": ORIENTATION / "cor" / "corasc35", "sagittal": ORIENTATION / "sag" / "sagasc35"}
PROJECT, CALLED_AET = "parity", "PARITY"
PASSWORD = "correct horse battery"
LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])
# Siemens' NumberOfImagesInMosaic.
MOSAIC_SLICES = (0x0019, 0x100A)
# Where the four points are sought: (slice, row, column) as fractions of the volume's extent.
CORNERS = ((0.3, 0.3, 0.7), (0.7, 0.3, 0.3), (0.3, 0.7, 0.3), (0.7, 0.7, 0.7))
# How far from each corner a distinctive voxel is sought (voxels along each axis).
SEARCH_RADIUS = 6
RAW_FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass(frozen=True)
class ParityPoint:
    name: str
    # Slice, row and column in the DICOM volume (tile, row and column of the first mosaic).
    index: tuple[int, int, int]
    lps: tuple[float, float, float]
    dicom_value: int

    @property
    def ras(self) -> list[float]:
        return [float(v) for v in np.asarray(self.lps) * LPS_FROM_RAS]


@dataclass
class ParitySeries:
    label: str
    series_uid: str
    file_id: int
    nifti: Path
    marker_set: int
    points: list[ParityPoint]


@dataclass
class ParitySite:
    northanc: Northanc
    study_id: int
    series: dict[str, ParitySeries]


# ---- the DICOM side: only what OHIF gets, through the portal's DICOMweb ----------------------------------


@dataclass(frozen=True)
class DicomWeb:
    url: str
    token: str

    def get(self, path_or_url: str, accept: str) -> tuple[str, bytes]:
        url = path_or_url if path_or_url.startswith("http") else self.url + path_or_url
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}", "Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.headers.get("Content-Type", ""), answer.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{url}: {exc.code} {exc.read()[:300]!r}") from exc

    def single_part(self, path_or_url: str, accept: str) -> tuple[dict[str, str], bytes]:
        content_type, body = self.get(path_or_url, accept)
        _media, _type, boundary = boundary_of(content_type)
        parts = list(split([body], boundary))
        assert len(parts) == 1, f"{path_or_url}: {len(parts)} parts"
        return parts[0].headers, parts[0].body

    def series_metadata(self, study: str, series: str) -> list[Dataset]:
        """The series' instances as OHIF reads them: DICOM JSON, binary values by their BulkDataURIs."""
        _type, body = self.get(f"/dicom-web/studies/{study}/series/{series}/metadata", "application/dicom+json")

        def bulk(tag: str, _vr: str, uri: str) -> bytes:
            # Pixels come as frames, as OHIF fetches them; the rest (the CSA headers) here.
            return b"" if tag.upper() == "7FE00010" else self.single_part(uri, "multipart/related; type=\"application/octet-stream\"")[1]

        return [Dataset.from_json(item, bulk_data_uri_handler=bulk) for item in json.loads(body)]

    def first_frame(self, ds: Dataset) -> NDArray[Any]:
        """Frame 1 of an instance (a whole mosaic), raw, as Rows x Columns stored values."""
        path = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
        headers, body = self.single_part(path, RAW_FRAME)
        syntax = headers.get("content-type", "")
        assert syntax.endswith("transfer-syntax=1.2.840.10008.1.2.1"), f"frame 1 is not explicit VR little endian: {syntax}"
        assert int(ds.BitsAllocated) == 16 and len(body) == int(ds.Rows) * int(ds.Columns) * 2, (ds.BitsAllocated, len(body))
        dtype = "<i2" if int(ds.PixelRepresentation) else "<u2"
        return np.frombuffer(body, dtype=dtype).reshape(int(ds.Rows), int(ds.Columns))


def mosaic_volume(frame: NDArray[Any], slices: int, rows: int, columns: int) -> NDArray[Any]:
    """The tiles of a mosaic as (slice, row, column): row-major, ceil(sqrt(N)) to a row."""
    per_row = math.ceil(math.sqrt(slices))
    return np.stack([frame[(s // per_row) * rows : (s // per_row + 1) * rows, (s % per_row) * columns : (s % per_row + 1) * columns]
                     for s in range(slices)])


def distinctive(volume: NDArray[Any], s: int, r: int, c: int) -> bool:
    """Lit, and unlike its six neighbours and the voxels a flip of an axis or a row/column swap would show."""
    shape = volume.shape
    if not all(0 < i < n - 1 for i, n in zip((s, r, c), shape, strict=True)):
        return False
    value = volume[s, r, c]
    if value < 0.15 * volume.max():
        return False
    others = [volume[shape[0] - 1 - s, r, c], volume[s, shape[1] - 1 - r, c], volume[s, r, shape[2] - 1 - c]]
    if shape[1] == shape[2]:
        others.append(volume[s, c, r])
    for axis in range(3):
        for step in (-1, 1):
            index = [s, r, c]
            index[axis] += step
            others.append(volume[tuple(index)])
    return all(value != other for other in others)


def choose_points(volume: NDArray[Any], affine: NDArray[Any]) -> list[ParityPoint]:
    """A distinctive voxel near each of CORNERS (the nearest one), placed in LPS mm by ``affine``."""
    span = range(-SEARCH_RADIUS, SEARCH_RADIUS + 1)
    offsets = sorted(((a, b, c) for a in span for b in span for c in span), key=lambda o: sum(v * v for v in o))
    points = []
    for number, corner in enumerate(CORNERS, 1):
        centre = [round(f * (n - 1)) for f, n in zip(corner, volume.shape, strict=True)]
        candidates = (tuple(c + o for c, o in zip(centre, offset, strict=True)) for offset in offsets)
        found = next((index for index in candidates if distinctive(volume, *index)), None)
        assert found is not None, f"no distinctive voxel near {centre}"
        lps = affine @ [*found, 1]
        points.append(ParityPoint(f"p{number}", (int(found[0]), int(found[1]), int(found[2])),
                                  (float(lps[0]), float(lps[1]), float(lps[2])), int(volume[found])))
    return points


# ---- the site ---------------------------------------------------------------------------------------------


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("MR"))


def archived_nifti(northanc: Northanc, series_uid: str) -> tuple[int, int, Path]:
    """The study id, file id and path of the NIfTI the archive converted from a series."""
    with northanc.archive.sessions() as session:
        record = session.scalar(select(File).where(File.source_series_uid == series_uid, File.kind == FileKind.NIFTI))
        assert record is not None, f"series {series_uid} was not converted"
        study = session.get_one(Study, record.study_id)
        location = Location(study.subject.project.name, study.subject.patient_id, study.study_id, record.path)
        return record.study_id, record.id, northanc.archive.layout.file_path(location)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Portal, ParitySite]]:
    base = tmp_path_factory.mktemp("parity")
    settings = dataclasses.replace(northanc_settings(base / "var"), secure_cookies=False)
    northanc = Northanc.start(settings)
    portal = None
    try:
        with northanc.archive.unit_of_work() as (session, journal):
            project = create_project(session, journal, northanc.archive.layout, PROJECT)
            session.add(RoutingRule(project_id=project.id, called_aet=CALLED_AET))
            user, _one_time = accounts.create_user(session, "reader")
            accounts.set_password(user, PASSWORD)
            accounts.grant_role(session, user, project, Role.READER)
            token = accounts.create_token(session, user, "parity").secret
        northanc.storescu([p for folder in SERIES.values() for p in dicom_files(folder)], called_aet=CALLED_AET)
        northanc.wait_for_conversions(len(SERIES))
        portal = start_portal(settings)
        web = DicomWeb(portal.url, token)
        found: dict[str, ParitySeries] = {}
        study_ids = set()
        for label, folder in SERIES.items():
            header = pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True)
            study_uid, series_uid = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
            source = read_source_series(web.series_metadata(study_uid, series_uid))
            first = source.datasets[0]
            slices, rows, columns = source.geometry.spatial_shape
            assert int(first[MOSAIC_SLICES].value) == slices
            volume = mosaic_volume(web.first_frame(first), slices, rows, columns)
            points = choose_points(volume, np.asarray(source.geometry.affine, dtype=np.float64))
            study_id, file_id, nifti = archived_nifti(northanc, series_uid)
            study_ids.add(study_id)
            with northanc.archive.unit_of_work() as (session, _journal):
                marker_set = markers.create(session, session.get_one(Study, study_id), f"parity {label}",
                                            [markers.Point(p.ras[0], p.ras[1], p.ras[2], p.name) for p in points], "test")
                set_id = marker_set.id
            found[label] = ParitySeries(label, series_uid, file_id, nifti, set_id, points)
        assert len(study_ids) == 1, "the two series are one study"
    except BaseException:
        if portal:
            portal.stop()
        northanc.stop()
        raise
    yield portal, ParitySite(northanc, study_ids.pop(), found)
    portal.stop()
    northanc.stop()


# ---- the browser side -------------------------------------------------------------------------------------

# NiiVue's location report for the crosshair where it is (``how`` "marker": the Marker tool has put it
# there) or after putting it at scanner RAS mm (``how`` "scanner": NiiVue's mm2frac on the volume's
# sform). The report also goes to the viewer's status line (its onLocationChange). ``stored``: the
# crosshair's mm as the viewer takes it for a new marker point or a shared link (crosshairMM).
LOCATION = """([how, ras]) => {
    const viewport = window.northancViewer.viewports[0];
    const nv = viewport.nv;
    if (how === "scanner") {
        nv.scene.crosshairPos = nv.mm2frac(ras, 0, true);
        nv.drawScene();
    }
    let seen = null;
    const keep = (event) => { seen = event.detail; };
    nv.addEventListener("locationChange", keep);
    nv.createOnLocationChange();
    nv.removeEventListener("locationChange", keep);
    const [value] = seen.values;
    return {
        mm: Array.from(seen.mm).slice(0, 3), vox: Array.from(seen.vox), value: value.value, valueVox: Array.from(value.vox),
        frame: nv.volumes[0].frame4D, frames: nv.volumes[0].nFrame4D, string: seen.string, stored: viewport.crosshairMM(),
    };
}"""


def load_nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image), path
    return image


def expected_voxels(nifti: Path, point: ParityPoint) -> tuple[tuple[int, ...], list[int], float, NDArray[Any]]:
    """The NIfTI voxel the point is the centre of (in the NIfTI's axes, and in NiiVue's RAS-reoriented
    order), the value NiiVue should report there (the DICOM's, scaled as the header says), and the affine."""
    image = load_nifti(nifti)
    affine = np.asarray(image.affine, dtype=np.float64)
    continuous = (np.linalg.inv(affine) @ [*point.ras, 1])[:3]
    assert np.allclose(continuous, np.round(continuous), atol=0.01), f"{point.name} is not a voxel centre of the NIfTI: {continuous}"
    native = tuple(int(v) for v in np.round(continuous))
    ras_order = [0, 0, 0]
    for axis, (target, flip) in enumerate(nib.orientations.io_orientation(affine)):
        ras_order[int(target)] = image.shape[axis] - 1 - native[axis] if flip < 0 else native[axis]
    slope, inter = image.header.get_slope_inter()
    slope, inter = (1.0, 0.0) if slope is None else (slope, inter or 0.0)
    return native, ras_order, point.dicom_value * slope + inter, affine


def in_voxels(affine: NDArray[Any], mm: Any, point: ParityPoint) -> NDArray[Any]:
    """How far ``mm`` (RAS) is from the point, in voxels of the NIfTI along its axes."""
    return np.asarray(np.linalg.inv(affine[:3, :3]) @ (np.asarray(mm, dtype=np.float64) - point.ras))


def differences(label: str, how: str, point: ParityPoint, seen: dict[str, Any], nifti: Path) -> list[str]:
    """What differs between NiiVue's report and the DICOM at the point (empty when nothing does)."""
    native, ras_order, value, affine = expected_voxels(nifti, point)
    problems = []
    if seen["value"] != value:
        problems.append(f"NiiVue's value {seen['value']} != the DICOM pixel's {value}")
    off = in_voxels(affine, seen["mm"], point)
    if np.abs(off).max() >= 0.5:
        problems.append(f"NiiVue reports mm {np.round(seen['mm'], 2).tolist()}, {np.round(off, 2).tolist()} voxels from the point")
    if seen["vox"] != ras_order or seen["valueVox"] != ras_order:
        problems.append(f"NiiVue's voxel {seen['vox']} (value read at {seen['valueVox']}) != the NIfTI's voxel {list(native)},"
                        f" {ras_order} in RAS order")
    return [f"{label} {point.name} by {how} {where(point)}: {p}" for p in problems]


def where(point: ParityPoint) -> str:
    return f"(DICOM slice/row/column {point.index}, LPS {np.round(point.lps, 2).tolist()}, RAS {np.round(point.ras, 2).tolist()})"


def open_viewer(page: Page, site: ParitySite) -> None:
    log_in_as(page, "reader", PASSWORD)
    page.goto(f"/p/{PROJECT}/viewer?study={site.study_id}")
    expect(page.locator("#viewer")).to_have_attribute("data-ready", "1")
    page.locator("#marker-tool > summary").click()


def open_series(page: Page, series: ParitySeries) -> None:
    """The series' NIfTI in the first viewport (a double click in the study's file list) and its marker set."""
    page.locator(f"li.file[data-file-id='{series.file_id}']").dblclick()
    page.wait_for_function(
        """(id) => { const v = window.northancViewer.viewports[0];
            return v.layers.length === 1 && v.layers[0].file_id === id && v.nv.volumes.length === 1; }""",
        arg=series.file_id, polling=100,
    )
    page.select_option("#marker-set", str(series.marker_set))
    expect(page.locator("#marker-points .marker-point")).to_have_count(len(series.points))


def location(page: Page, label: str, how: str, point: ParityPoint) -> dict[str, Any]:
    seen: dict[str, Any] = page.evaluate(LOCATION, [how, point.ras])
    assert seen["frame"] == 0 and seen["frames"] == 2, f"{label}: NiiVue shows volume {seen['frame']} of {seen['frames']}"
    expect(page.locator("#status")).to_have_text(seen["string"])
    return seen


def test_niivue_shows_the_dicom_pixel_at_each_patient_coordinate(page: Page, served: tuple[Portal, ParitySite]) -> None:
    """The crosshair put at each point's scanner RAS with NiiVue's own call: the NIfTI as NiiVue
    shows it and the DICOM as OHIF gets it agree there, in value, position and voxel."""
    _portal, site = served
    open_viewer(page, site)
    problems = []
    for label, series in site.series.items():
        open_series(page, series)
        for point in series.points:
            problems += differences(label, "NiiVue's mm2frac(mm, 0, true)", point, location(page, label, "scanner", point), series.nifti)
        page.screenshot(path=ARTIFACTS / f"viewer-parity-{label}.png")
    assert not problems, "\n".join(problems)


def test_the_marker_tool_puts_markers_at_the_patient_coordinate(page: Page, served: tuple[Portal, ParitySite]) -> None:
    """A marker saved at a patient coordinate (RAS mm) and jumped to with the Marker tool's "go to
    this point": NiiVue shows the DICOM pixel of that coordinate there. With the crosshair on that
    pixel, the viewer takes the same coordinate for a new marker point (or a shared link)."""
    _portal, site = served
    open_viewer(page, site)
    problems = []
    for label, series in site.series.items():
        open_series(page, series)
        affine = np.asarray(load_nifti(series.nifti).affine, dtype=np.float64)
        for number, point in enumerate(series.points):
            page.locator(f"#marker-points .marker-point[data-index='{number}'] .marker-go").click()
            problems += differences(label, "the Marker tool's go to", point, location(page, label, "marker", point), series.nifti)
            stored = location(page, label, "scanner", point)["stored"]
            off = in_voxels(affine, stored, point)
            if np.abs(off).max() >= 0.5:
                problems.append(f"{label} {point.name} {where(point)}: with the crosshair on its voxel the viewer's crosshairMM"
                                f" (what a new marker point or a shared link stores) is {np.round(stored, 2).tolist()},"
                                f" {np.round(off, 2).tolist()} voxels from it")
    assert not problems, "\n".join(problems)
