"""The navigation tool's REST API end to end: what applying writes into a study (read back with
nibabel and compared with matrices and fields built here), who may apply, and refused input.

One portal on a copy of the site archive for the module; every test applies to its own moving
image or reads only what it wrote itself, so the order does not matter."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from nifti_archive.models import File
from portal.app import create_app
from tests.portal_site import AXIAL, SAGITTAL, Site, SiteTemplate, copy_site
from tests.test_navigation import shift, turn
from tests.test_portal_api import bearer, token_for

USERS = ("viewer", "reader", "editor", "admin", "norole")
FORBIDDEN = "this needs editor on the project"
HIDDEN = "no such project, or you have no role on it"
AXIAL_IMAGE = nib.Nifti1Image.from_filename(AXIAL)
AXIAL_AFFINE = np.asarray(AXIAL_IMAGE.affine, dtype=np.float64)


@dataclass
class NavigationApi:
    client: FlaskClient
    site: Site
    auth: dict[str, dict[str, str]]

    def call(self, user: str, method: str, url: str, **kwargs: Any) -> TestResponse:
        return self.client.open(f"/api/v1{url}", method=method, headers=self.auth[user], **kwargs)

    def study(self, subject: str) -> str:
        return f"/projects/alpha/studies/{self.site.studies[subject]}"

    def apply(self, user: str, subject: str, body: dict[str, Any]) -> TestResponse:
        return self.call(user, "POST", f"{self.study(subject)}/navigation/apply", json=body)

    def files(self, subject: str) -> dict[str, int]:
        answer = self.call("viewer", "GET", self.study(subject))
        assert answer.status_code == 200, answer.text
        return {f["path"]: f["id"] for f in answer.json["files"]}

    def nifti(self, file_id: int) -> nib.Nifti1Image:
        answer = self.call("viewer", "GET", f"/files/{file_id}/content")
        assert answer.status_code == 200, answer.text
        data = answer.data
        return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[NavigationApi]:
    built = copy_site(portal_site, tmp_path_factory.mktemp("navigation-api") / "var",
                      orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    app = create_app(built.archive.settings, built.archive)
    yield NavigationApi(app.test_client(), built, {user: bearer(token_for(built.archive, user)) for user in USERS})
    built.archive.close()


def error_of(answer: TestResponse, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    message: str = answer.json["error"]
    return message


def record(api: NavigationApi, file_id: int) -> File:
    with api.site.archive.sessions() as session:
        return session.get_one(File, file_id)


def test_a_rigid_transform_writes_a_copy_with_the_expected_affine(api: NavigationApi) -> None:
    moving = api.site.files["P01"]
    original = api.call("viewer", "GET", f"/files/{moving}/content").data
    centre, translation, angles = [0.0, 10.0, -20.0], [5.0, -3.0, 12.0], [0.0, 15.0, 30.0]
    answer = api.apply("editor", "P01", {
        "mode": "rigid", "moving": [moving], "fixed": [api.site.files["P01/sag"]],
        "transform": {"translation": translation, "rotation_deg": angles, "centre": centre},
    })
    assert answer.status_code == 201, answer.text
    [written] = answer.json["files"]
    assert written["image"]["path"] == "navigation/001_ax/ax_asc_35sl_6.rigid.nii.gz" and written["field"] is None
    assert api.files("P01")[written["image"]["path"]] == written["image"]["id"]
    expected = shift(translation) @ shift(centre) @ turn(angles) @ shift([-c for c in centre]) @ AXIAL_AFFINE
    moved = api.nifti(written["image"]["id"])
    np.testing.assert_allclose(moved.affine, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(moved.get_fdata(), AXIAL_IMAGE.get_fdata())
    # The original is as it was, and the copy names it as its origin with the transform.
    assert api.call("viewer", "GET", f"/files/{moving}/content").data == original
    stored = record(api, written["image"]["id"])
    assert stored.derived_from_id == moving
    note = json.loads(stored.provenance_note or "{}")
    assert (note["tool"], note["mode"], note["moving"], note["fixed"]) == ("navigation", "rigid", moving, [api.site.files["P01/sag"]])
    assert note["transform"]["rotation_deg"] == angles
    np.testing.assert_allclose(note["matrix"], expected @ np.linalg.inv(AXIAL_AFFINE), atol=1e-9)


def test_applying_again_writes_a_second_file(api: NavigationApi) -> None:
    moving = api.site.files["P02"]
    body = {"mode": "affine", "moving": [moving], "transform": {"scale": [1.1, 1.0, 0.9]}}
    first = api.apply("editor", "P02", body)
    second = api.apply("editor", "P02", body)
    assert first.status_code == second.status_code == 201, second.text
    paths = {first.json["files"][0]["image"]["path"], second.json["files"][0]["image"]["path"]}
    assert paths == {"navigation/001_ax/ax_asc_35sl_6.affine.nii.gz", "navigation/001_ax/ax_asc_35sl_6.affine_2.nii.gz"}
    assert paths <= set(api.files("P02"))


def test_a_displacement_marker_moves_its_voxel_in_the_written_field_and_image(api: NavigationApi) -> None:
    moving = api.site.files["P03"]
    voxel = np.array([30, 33, 17])
    centre = (AXIAL_AFFINE @ [*voxel, 1])[:3]
    # Two voxels along the image's first axis, in world mm.
    step = AXIAL_AFFINE[:3, 0] * 2
    answer = api.apply("editor", "P03", {
        "mode": "displacements", "moving": [moving],
        "stages": [{"markers": [{"centre": centre.tolist(), "displacement": step.tolist(), "sigma": 8.0}]}],
    })
    assert answer.status_code == 201, answer.text
    [written] = answer.json["files"]
    assert written["image"]["path"] == "navigation/001_ax/ax_asc_35sl_6.displacements.nii.gz"
    assert written["field"]["path"] == "navigation/001_ax/ax_asc_35sl_6.displacements.field.nii.gz"
    assert {written["image"]["path"], written["field"]["path"]} <= set(api.files("P03"))
    field = api.nifti(written["field"]["id"])
    assert field.shape == (*AXIAL_IMAGE.shape[:3], 1, 3) and int(field.header["intent_code"]) == 1007
    np.testing.assert_allclose(field.affine, AXIAL_AFFINE, rtol=1e-6, atol=1e-6)
    vectors = np.asarray(field.dataobj)[:, :, :, 0, :]
    target = tuple(voxel + [2, 0, 0])
    np.testing.assert_allclose(vectors[target], -step, atol=1e-4)
    np.testing.assert_allclose(vectors[0, 0, 0], [0, 0, 0], atol=1e-4)
    warped = np.asarray(api.nifti(written["image"]["id"]).dataobj)
    original = np.asarray(AXIAL_IMAGE.dataobj)
    # The reference is a series: every volume is warped alike.
    assert warped.shape == original.shape and warped.dtype == original.dtype
    np.testing.assert_array_equal(warped[target], original[tuple(voxel)])
    stored = record(api, written["field"]["id"])
    assert stored.derived_from_id == moving
    assert json.loads(stored.provenance_note or "{}")["stages"][0]["markers"][0]["sigma"] == 8.0


def test_keypoints_carry_each_target_to_its_source(api: NavigationApi) -> None:
    moving = api.site.files["P03/sag"]
    sagittal = nib.Nifti1Image.from_filename(SAGITTAL)
    affine = np.asarray(sagittal.affine, dtype=np.float64)
    targets = [np.array([10, 20, 20]), np.array([25, 40, 18])]
    sources = [affine @ [*(t + [0, 1, 1]), 1] for t in targets]
    answer = api.apply("editor", "P03", {
        "mode": "keypoints", "moving": [moving],
        "stages": [{"keypoints": {
            "source": [s[:3].tolist() for s in sources], "target": [(affine @ [*t, 1])[:3].tolist() for t in targets],
            "sigma": 10.0,
        }}],
    })
    assert answer.status_code == 201, answer.text
    [written] = answer.json["files"]
    vectors = np.asarray(api.nifti(written["field"]["id"]).dataobj)[:, :, :, 0, :]
    for target, source in zip(targets, sources, strict=True):
        np.testing.assert_allclose(vectors[tuple(target)], source[:3] - (affine @ [*target, 1])[:3], atol=1e-3)


def test_a_warp_can_land_on_another_image_grid_or_on_the_world_grid(api: NavigationApi) -> None:
    moving, fixed = api.site.files["P02"], api.site.files["P02/sag"]
    sagittal = nib.Nifti1Image.from_filename(SAGITTAL)
    stages = [{"markers": [{"centre": [0.0, 0.0, 0.0], "displacement": [2.0, 0.0, 0.0], "sigma": 10.0}]}]
    on_image = api.apply("editor", "P02", {"mode": "displacements", "moving": [moving], "stages": stages, "grid": {"file_id": fixed}})
    assert on_image.status_code == 201, on_image.text
    [written] = on_image.json["files"]
    for file_id in (written["image"]["id"], written["field"]["id"]):
        stored = api.nifti(file_id)
        assert stored.shape[:3] == sagittal.shape[:3]
        np.testing.assert_allclose(stored.affine, sagittal.affine, rtol=1e-6, atol=1e-5)

    on_world = api.apply("editor", "P02", {
        "mode": "displacements", "moving": [moving], "fixed": [fixed], "stages": stages, "grid": {"voxel_mm": 2.5},
    })
    assert on_world.status_code == 201, on_world.text
    stored = api.nifti(on_world.json["files"][0]["image"]["id"])
    np.testing.assert_allclose(stored.affine[:3, :3], np.diag([2.5, 2.5, 2.5]), atol=1e-6)
    # The grid's outer faces enclose the outer faces of both images' corner voxels.
    extents = []
    for image in (AXIAL_IMAGE, sagittal):
        nx, ny, nz = image.shape[:3]
        box = np.array([[i, j, k, 1.0] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
        extents.append((box @ np.asarray(image.affine).T)[:, :3])
    low, high = np.concatenate(extents).min(axis=0), np.concatenate(extents).max(axis=0)
    grid_low = stored.affine[:3, 3] - 1.25
    grid_high = stored.affine[:3, 3] + (np.array(stored.shape[:3]) - 0.5) * 2.5
    assert np.all(grid_low <= low + 1e-4) and np.all(grid_high >= high - 1e-4)
    assert np.all(grid_high - grid_low < high - low + 2.5 + 1e-4)

    rigid = api.apply("editor", "P02", {"mode": "rigid", "moving": [moving], "grid": {"voxel_mm": 2.0}})
    assert "grid: a rigid move keeps the image's voxels" in error_of(rigid, 400)


def test_only_editors_apply(api: NavigationApi) -> None:
    body = {"mode": "rigid", "moving": [api.site.files["P01"]]}
    before = api.files("P01")
    for user in ("viewer", "reader"):
        assert error_of(api.apply(user, "P01", body), 403) == FORBIDDEN
    assert error_of(api.apply("norole", "P01", body), 404) == HIDDEN
    assert api.files("P01") == before


def test_unknown_or_foreign_moving_images_are_not_found(api: NavigationApi) -> None:
    before = api.files("P01")
    assert "no moving image 999999" in error_of(api.apply("editor", "P01", {"moving": [999999]}), 404)
    assert "no moving image" in error_of(api.apply("editor", "P01", {"moving": [api.site.other_file]}), 404)
    missing = api.call("editor", "POST", "/projects/alpha/studies/999999/navigation/apply", json={"moving": [api.site.files["P01"]]})
    assert error_of(missing, 404) == "no study 999999 in project 'alpha'"
    elsewhere = api.apply("editor", "P01", {"moving": [api.site.files["P02"]]})
    assert "is not in study" in error_of(elsewhere, 400)
    assert api.files("P01") == before


@pytest.mark.parametrize(("body", "message"), [
    ({"mode": "rigid"}, "moving: choose at least one moving image"),
    ({"mode": "rigid", "moving": []}, "moving: choose at least one moving image"),
    ({"mode": "twist", "moving": [1]}, "mode: unknown transform mode 'twist'"),
    ({"moving": [1], "transform": {"translation": [1, 2]}}, "transform.translation must be a list of three numbers"),
    ({"moving": [1], "transform": {"rotation_deg": [0, 0, 720]}}, "transform.rotation_deg must be a number from -360 to 360"),
    ({"moving": [1], "transform": {"scale": [2, 2, 2]}}, "transform.scale: a rigid transform does not scale"),
    ({"mode": "displacements", "moving": [1], "stages": [{"markers": [{"centre": [0, 0, 0], "displacement": [1, 0, 0], "sigma": -1}]}]},
     "stages[0].markers[0].sigma must be a number"),
    ({"mode": "keypoints", "moving": [1], "stages": [{"markers": [{"centre": [0, 0, 0], "displacement": [1, 0, 0], "sigma": 2}]}]},
     "stages: the last stage of a keypoints warp must hold keypoints"),
])
def test_malformed_requests_are_refused_naming_the_field(api: NavigationApi, body: dict[str, Any], message: str) -> None:
    before = api.files("P01")
    assert message in error_of(api.apply("editor", "P01", body), 400)
    assert api.files("P01") == before


def test_a_request_that_is_no_json_object_is_refused(api: NavigationApi) -> None:
    answer = api.call("editor", "POST", f"{api.study('P01')}/navigation/apply", data="[1]", content_type="application/json")
    assert error_of(answer, 400) == "send a JSON object"


def test_a_preview_is_the_moved_image_and_stores_nothing(api: NavigationApi) -> None:
    before = api.files("P01")
    body = {"mode": "rigid", "moving": [api.site.files["P01"]], "transform": {"translation": [1.0, 2.0, 3.0]}}
    answer = api.call("viewer", "POST", f"{api.study('P01')}/navigation/preview", json=body)
    assert answer.status_code == 200, answer.text
    preview = nib.Nifti1Image.from_bytes(answer.data)
    np.testing.assert_allclose(preview.affine, shift([1.0, 2.0, 3.0]) @ AXIAL_AFFINE, rtol=1e-6, atol=1e-6)
    assert api.files("P01") == before
