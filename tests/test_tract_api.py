"""The tract REST API (the fibre tool's server side) end to end, as its users see it: status,
message, and the files it writes, read back with nibabel and compared with what the selection must
keep (an independent computation, tests/test_tract_selection.py's).

One portal on a copy of the site archive for the module; study P01 gets a synthetic TCK, a TRK, a
corrupt TCK and a mask, registered as any file of the archive is.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from nifti_archive.catalog.registration import add_files
from nifti_archive.models import File, Project
from portal.app import create_app
from testbed.tractograms import curves, write_tck, write_trk
from tests.portal_site import AXIAL, Site, SiteTemplate, copy_site
from tests.test_portal_api import bearer, token_for
from tests.test_tract_selection import expected_sphere

USERS = ("viewer", "reader", "editor", "admin", "norole")
FORBIDDEN = "this needs editor on the project"
HIDDEN = "no such project, or you have no role on it"
CENTRE = [2.0, -4.0, 3.0]
RADIUS = 6.0
SPHERE = {"mode": "sphere", "action": "keep", "points": [CENTRE], "radius": RADIUS}


@dataclass
class TractApi:
    client: FlaskClient
    site: Site
    auth: dict[str, dict[str, str]]
    files: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def call(self, user: str, method: str, url: str, **kwargs: Any) -> TestResponse:
        return self.client.open(f"/api/v1{url}", method=method, headers=self.auth[user], **kwargs)

    def study_files(self, user: str = "viewer") -> dict[str, dict[str, Any]]:
        answer = self.call(user, "GET", f"/projects/alpha/studies/{self.site.studies['P01']}")
        assert answer.status_code == 200, answer.json
        return {f["path"]: f for f in answer.json["files"]}

    def content(self, file_id: int) -> bytes:
        answer = self.call("viewer", "GET", f"/files/{file_id}/content")
        assert answer.status_code == 200
        return answer.data


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[TractApi]:
    built = copy_site(portal_site, tmp_path_factory.mktemp("tract-api") / "var",
                      orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    folder = built.archive.layout.study_dir("alpha", "P01", "S1") / "dwi"
    folder.mkdir(parents=True)
    reference = nib.load(AXIAL)
    paths = {
        "tck": write_tck(folder / "tracts.tck", curves(300, seed=21, step_mm=5.0, half_axes=(30.0, 30.0, 20.0))),
        "trk": write_trk(folder / "tracts.trk", curves(200, seed=22, step_mm=3.0, half_axes=(30.0, 30.0, 20.0)),
                         np.diag([2.0, 2.0, 2.0, 1.0]), (80, 80, 60)),
        "corrupt": folder / "broken.tck",
        "mask": folder / "mask.nii.gz",
    }
    paths["corrupt"].write_bytes(b"mrtrix tracks\ncount: 12\ndatatype: Float32LE\nfile: . 9999\nEND\n" + b"\x01\x02\x03")
    mask = np.zeros(reference.shape[:3], dtype=np.uint8)
    mask[20:40, 20:40, 10:25] = 1
    nib.save(nib.Nifti1Image(mask, reference.affine), paths["mask"])
    with built.archive.unit_of_work() as (session, _journal):
        alpha = session.scalars(select(Project).where(Project.name == "alpha")).one()
        added = add_files(session, built.archive.layout, alpha, list(paths.values()))
        files = {name: record.id for name, record in zip(paths, added, strict=True)}
    app = create_app(built.archive.settings, built.archive)
    yield TractApi(app.test_client(), built, {user: bearer(token_for(built.archive, user)) for user in USERS}, files, paths)
    built.archive.close()


def test_a_viewer_selects_by_a_sphere_and_gets_exactly_the_streamlines_through_it(api: TractApi) -> None:
    expected = np.flatnonzero(expected_sphere(api.paths["tck"], tuple(CENTRE), RADIUS)).tolist()  # type: ignore[arg-type]
    assert 5 < len(expected) < 250
    answer = api.call("viewer", "POST", f"/tracts/{api.files['tck']}/selection", json={"steps": [SPHERE]})
    assert answer.status_code == 200, answer.json
    assert answer.json == {"kept": expected, "count": len(expected), "total": 300}
    deleted = api.call("viewer", "POST", f"/tracts/{api.files['tck']}/selection",
                       json={"steps": [{**SPHERE, "action": "delete"}], "indices": list(range(100))})
    assert deleted.json["kept"] == [i for i in range(100) if i not in expected]
    trk = api.call("reader", "POST", f"/tracts/{api.files['trk']}/selection", json={"steps": [SPHERE]})
    assert trk.json["kept"] == np.flatnonzero(expected_sphere(api.paths["trk"], tuple(CENTRE), RADIUS)).tolist()  # type: ignore[arg-type]


def test_an_editor_saves_a_selection_as_a_new_tck_of_the_study(api: TractApi) -> None:
    source = nib.streamlines.load(str(api.paths["tck"])).streamlines
    kept = api.call("viewer", "POST", f"/tracts/{api.files['tck']}/selection", json={"steps": [SPHERE]}).json["kept"]
    before = _sha(api.paths["tck"])
    for user in ("viewer", "reader"):
        refused = api.call(user, "POST", f"/tracts/{api.files['tck']}/selections", json={"indices": kept, "name": "sphere"})
        assert (refused.status_code, refused.json["error"]) == (403, FORBIDDEN)
    saved = api.call("editor", "POST", f"/tracts/{api.files['tck']}/selections",
                     json={"indices": kept, "name": "sphere", "steps": [SPHERE]})
    assert saved.status_code == 201, saved.json
    assert saved.json["streamlines"] == len(kept)
    listed = api.study_files()
    assert listed["dwi/tracts_sphere.tck"]["id"] == saved.json["file"]["id"]
    written = api.site.archive.layout.study_dir("alpha", "P01", "S1") / "dwi" / "tracts_sphere.tck"
    subset = nib.streamlines.load(str(written)).streamlines
    assert len(subset) == len(kept)
    for mine, theirs in zip(subset, (source[i] for i in kept), strict=True):
        assert np.array_equal(mine, theirs)
    with api.site.archive.unit_of_work() as (session, _journal):
        record = session.get_one(File, saved.json["file"]["id"])
        assert record.derived_from_id == api.files["tck"]
        assert record.provenance_note is not None
        assert "dwi/tracts.tck" in record.provenance_note and "keep sphere (2, -4, 3) radius 6 mm" in record.provenance_note
    # Saved again under the same name: a new file beside it, neither the source nor the first touched.
    again = api.call("admin", "POST", f"/tracts/{api.files['tck']}/selections", json={"steps": [SPHERE], "name": "sphere"})
    assert again.status_code == 201, again.json
    assert again.json["file"]["path"] == "dwi/tracts_sphere_2.tck"
    assert again.json["streamlines"] == len(kept)
    assert _sha(api.paths["tck"]) == before
    assert _sha(written) == listed["dwi/tracts_sphere.tck"]["sha256"]


def test_a_selection_through_an_roi_of_the_study(api: TractApi) -> None:
    mask = nib.load(api.paths["mask"])
    inside = np.asanyarray(mask.dataobj) > 0
    inverse = np.linalg.inv(mask.affine)
    expected = []
    for index, streamline in enumerate(nib.streamlines.load(str(api.paths["tck"])).streamlines):
        # Points every 0.25 mm along each segment: finer than the definition's quarter voxel, so a voxel it visits is found.
        dense = np.concatenate([np.linspace(a, b, 60) for a, b in zip(streamline[:-1], streamline[1:], strict=True)])
        ijk = np.rint(nib.affines.apply_affine(inverse, dense)).astype(int)
        on = np.all((ijk >= 0) & (ijk < inside.shape), axis=1)
        if inside[tuple(ijk[on].T)].any():
            expected.append(index)
    answer = api.call("viewer", "POST", f"/tracts/{api.files['tck']}/selection",
                      json={"steps": [{"mode": "roi", "action": "keep", "roi_file_id": api.files["mask"]}]})
    assert answer.status_code == 200, answer.json
    kept = answer.json["kept"]
    # Finer sampling finds every visit the definition finds, and may find a corner more.
    assert set(kept) <= set(expected) and len(kept) >= len(expected) - 3
    assert 5 < len(kept) < 295


def test_an_editor_saves_a_track_density_map_on_an_image_s_grid(api: TractApi) -> None:
    refused = api.call("viewer", "POST", f"/tracts/{api.files['tck']}/density", json={"reference_file_id": api.site.files["P01"]})
    assert (refused.status_code, refused.json["error"]) == (403, FORBIDDEN)
    saved = api.call("editor", "POST", f"/tracts/{api.files['tck']}/density", json={"reference_file_id": api.site.files["P01"]})
    assert saved.status_code == 201, saved.json
    assert saved.json["file"]["path"] == "dwi/tracts_tdi.nii.gz"
    image = nib.Nifti1Image.from_bytes(gzip.decompress(api.content(saved.json["file"]["id"])))
    reference = nib.load(AXIAL)
    assert image.shape == reference.shape[:3]
    assert np.allclose(image.affine, reference.affine)
    counts = np.asanyarray(image.dataobj)
    assert 0 < counts.max() <= 300
    on_box = api.call("editor", "POST", f"/tracts/{api.files['tck']}/density", json={"voxel_mm": 2.5, "indices": [0, 1, 2]})
    assert on_box.status_code == 201, on_box.json
    assert on_box.json["file"]["path"] == "dwi/tracts_tdi_2.nii.gz"
    boxed = nib.Nifti1Image.from_bytes(gzip.decompress(api.content(on_box.json["file"]["id"])))
    assert np.allclose(boxed.affine[:3, :3], np.eye(3) * 2.5)
    assert np.asanyarray(boxed.dataobj).max() <= 3


@pytest.mark.parametrize(("name", "body", "status", "message"), [
    ("corrupt", {"steps": [SPHERE]}, 400, "dwi/broken.tck is not a readable tractogram"),
    ("mask", {"steps": [SPHERE]}, 400, "dwi/mask.nii.gz is not a tractogram (TCK or TRK)"),
    ("tck", {"steps": [{**SPHERE, "mode": "cube"}]}, 400, "unknown selection mode 'cube': use one of sphere, points, waypoints, roi"),
    ("tck", {"steps": [{**SPHERE, "radius": -1}]}, 400, "radius must be more than 0 and at most 1000 mm"),
    ("tck", {"steps": [{**SPHERE, "points": [[1, 2]]}]}, 400, "each point must be [x, y, z] in mm"),
    ("tck", {"steps": [{"mode": "roi", "action": "keep", "roi_file_id": 0}]}, 404, "no file 0 in project 'alpha'"),
    ("tck", {"steps": [], "indices": [0, 300]}, 400, "indices must lie between 0 and 299: the file has 300 streamlines"),
    ("tck", {"steps": [], "indices": [1, 1]}, 400, "indices name a streamline more than once"),
])
def test_bad_input_gets_a_message(api: TractApi, name: str, body: dict[str, Any], status: int, message: str) -> None:
    answer = api.call("viewer", "POST", f"/tracts/{api.files[name]}/selection", json=body)
    assert answer.status_code == status
    assert answer.json["error"].startswith(message)


def test_a_corrupt_tract_is_refused_when_saving_and_nothing_is_written(api: TractApi) -> None:
    before = set(api.study_files())
    answer = api.call("editor", "POST", f"/tracts/{api.files['corrupt']}/selections", json={"indices": [0]})
    assert answer.status_code == 400
    assert answer.json["error"].startswith("dwi/broken.tck is not a readable tractogram")
    density = api.call("editor", "POST", f"/tracts/{api.files['corrupt']}/density", json={"voxel_mm": 2})
    assert density.status_code == 400
    assert set(api.study_files()) == before


def test_unknown_files_and_strangers_get_404(api: TractApi) -> None:
    for user, file_id in (("viewer", 999_999), ("norole", api.files["tck"]), ("viewer", api.site.other_file)):
        answer = api.call(user, "POST", f"/tracts/{file_id}/selection", json={"steps": [SPHERE]})
        assert (answer.status_code, answer.json["error"]) == (404, HIDDEN)
    no_grid = api.call("editor", "POST", f"/tracts/{api.files['tck']}/density", json={})
    assert no_grid.status_code == 400
    assert no_grid.json["error"] == "name the grid: reference_file_id (an image) or voxel_mm (the tracts' bounding box)"
