"""The ROI and marker REST API end to end, as its users see it: status, message, and what is stored.

One portal on a copy of the site archive (real NIfTI from dcm2niix, no Orthanc provenance, so no
DICOM SEG is ever written) for the whole module; each test works in its own labels, so the order in
which they run does not matter. Users: viewer, reader, editor, editor2 (a second editor), admin (a
project admin) on ``alpha``; norole on nothing; siteadmin everywhere (it puts an ROI in ``beta``).
Expected masks, counts and statistics are computed here with numpy and scipy from the files
themselves, never read back from the code under test.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from scipy import ndimage
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from nifti_archive import accounts
from nifti_archive.catalog.trash import list_trash, restore
from nifti_archive.layout import Location
from nifti_archive.models import File, MarkerSet, Project, Roi, Role, Trash
from portal.app import create_app
from tests.portal_site import AXIAL, SAGITTAL, Site, SiteTemplate, copy_site
from tests.test_portal_access import log_in
from tests.test_portal_api import bearer, token_for

USERS = ("viewer", "reader", "editor", "editor2", "admin", "norole", "siteadmin")
# Face neighbours: the structure the archive's morphology uses.
SIX = ndimage.generate_binary_structure(3, 1)
REFERENCE = nib.Nifti1Image.from_filename(AXIAL)
SHAPE = (64, 64, 35)
AFFINE = np.asarray(REFERENCE.affine, dtype=np.float64)
REFERENCE_PATH = f"001_ax/{AXIAL.name}"
FORBIDDEN = "this needs editor on the project"
HIDDEN = "no such project, or you have no role on it"


@dataclass
class RoiApi:
    client: FlaskClient
    site: Site
    auth: dict[str, dict[str, str]]

    def call(self, user: str, method: str, url: str, **kwargs: Any) -> TestResponse:
        return self.client.open(f"/api/v1{url}", method=method, headers=self.auth[user], **kwargs)

    def study(self, subject: str) -> str:
        return f"/projects/alpha/studies/{self.site.studies[subject]}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[RoiApi]:
    built = copy_site(portal_site, tmp_path_factory.mktemp("roi-api") / "var",
                      orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    with built.archive.unit_of_work() as (session, _journal):
        second, _one_time = accounts.create_user(session, "editor2")
        accounts.grant_role(session, second, alpha(session), Role.EDITOR)
    app = create_app(built.archive.settings, built.archive)
    yield RoiApi(app.test_client(), built, {user: bearer(token_for(built.archive, user)) for user in USERS})
    built.archive.close()


def alpha(session: Session) -> Project:
    return session.scalars(select(Project).where(Project.name == "alpha")).one()


def ball(centre: tuple[int, int, int], radius: float) -> NDArray[np.bool_]:
    i, j, k = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return np.asarray((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius**2)


def lesion() -> NDArray[np.bool_]:
    """A ball off centre and three lone voxels (salt), none touching the volume's edge."""
    mask = ball((30, 33, 17), 6)
    for voxel in ((5, 6, 4), (57, 10, 29), (12, 55, 3)):
        mask[voxel] = True
    return mask


def other_lesion() -> NDArray[np.bool_]:
    """A smaller ball overlapping :func:`lesion`'s, shifted in every axis."""
    return ball((34, 30, 19), 5)


def nifti_bytes(data: NDArray[Any], affine: NDArray[np.float64] = AFFINE, compressed: bool = True) -> bytes:
    raw: bytes = nib.Nifti1Image(np.asarray(data), affine).to_bytes()
    return gzip.compress(raw) if compressed else raw


def read_nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def upload(api: RoiApi, user: str, subject: str, mask: bytes | NDArray[Any], label: str, *, reference: int | str | None = None,
           filename: str = "mask.nii.gz", **form: str) -> TestResponse:
    payload = mask if isinstance(mask, bytes) else nifti_bytes(mask.astype(np.uint8))
    data: dict[str, Any] = {"mask": (io.BytesIO(payload), filename), "label": label, **form}
    reference_id = api.site.files[subject] if reference is None else reference
    if reference_id != "":
        data["reference_file_id"] = str(reference_id)
    return api.call(user, "POST", f"{api.study(subject)}/rois", data=data, content_type="multipart/form-data")


def uploaded(api: RoiApi, user: str, subject: str, mask: NDArray[Any], label: str) -> dict[str, Any]:
    answer = upload(api, user, subject, mask, label)
    assert answer.status_code == 201, answer.json
    roi: dict[str, Any] = answer.json["roi"]
    return roi


def listed(api: RoiApi, subject: str, user: str = "viewer") -> list[dict[str, Any]]:
    answer = api.call(user, "GET", f"{api.study(subject)}/rois")
    assert answer.status_code == 200, answer.json
    rois: list[dict[str, Any]] = answer.json["rois"]
    return rois


def downloaded(api: RoiApi, file_id: int, user: str = "viewer") -> NDArray[Any]:
    answer = api.call(user, "GET", f"/files/{file_id}/content")
    assert answer.status_code == 200, answer.text
    image = read_nifti(answer.data)
    assert np.allclose(image.affine, AFFINE, rtol=0, atol=1e-5), "a stored mask keeps its reference's affine"
    return np.asanyarray(image.dataobj)


def operation(api: RoiApi, roi_id: int, user: str = "editor", **body: Any) -> TestResponse:
    return api.call(user, "POST", f"/rois/{roi_id}/operations", json=body)


def stored_state(api: RoiApi, subject: str) -> tuple[list[str], list[tuple[str, str, int]], list[Path], int]:
    """What a refused call must leave as it was: the study's live files, its ROIs, the files on disk, the ROI rows."""
    study = api.call("editor", "GET", api.study(subject)).json
    on_disk = sorted(p for p in api.site.archive.layout.study_dir("alpha", subject, "S1").rglob("*") if p.is_file())
    with api.site.archive.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Roi)) or 0
    rois = [(r["label"], r["author"], r["version"]) for r in listed(api, subject)]
    return sorted(f["path"] for f in study["files"]), rois, on_disk, rows


def error_of(answer: TestResponse, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    message: str = answer.json["error"]
    return message


def test_an_uploaded_mask_lists_downloads_as_drawn_and_saving_again_makes_version_2(api: RoiApi) -> None:
    first_mask = lesion()
    answer = upload(api, "editor", "P01", first_mask, "lesion", colour="#FF8800")
    assert answer.status_code == 201, answer.json
    first = answer.json["roi"]
    assert (first["label"], first["author"], first["version"], first["origin"]) == ("lesion", "editor", 1, "drawn")
    assert (first["reference_file_id"], first["reference_path"], first["colour"]) == (api.site.files["P01"], REFERENCE_PATH, "#ff8800")
    assert first["path"] == "rois/001_ax/ax_asc_35sl_6/lesion.editor.nii.gz"
    assert first["seg_series_uid"] is None and first["seg_instance_uid"] is None
    seg_message = answer.json["seg_message"]
    assert seg_message == f"no DICOM SEG: {REFERENCE_PATH} was not converted from a DICOM series"

    seen = [r for r in listed(api, "P01") if r["label"] == "lesion"]
    assert [(r["id"], r["author"], r["version"]) for r in seen] == [(first["id"], "editor", 1)]
    assert api.call("viewer", "GET", f"/rois/{first['id']}").json["roi"] == first
    stored = downloaded(api, first["id"])
    assert stored.dtype == np.uint8 and stored.shape == SHAPE
    assert np.array_equal(stored, first_mask), "the mask downloads voxel for voxel as uploaded"
    study = api.call("viewer", "GET", api.study("P01")).json
    sidecar = next(f for f in study["files"] if f["path"] == "rois/001_ax/ax_asc_35sl_6/lesion.editor.json")
    document = api.call("viewer", "GET", f"/files/{sidecar['id']}/content").json
    assert (document["label"], document["author"], document["version"], document["reference"]) == (
        "lesion", "editor", 1, {"file_id": api.site.files["P01"], "path": REFERENCE_PATH})

    # Saved again by a script that names the gzipped file without a suffix: version 2 replaces version 1.
    second_mask = first_mask.copy()
    second_mask[30, 33, 24] = True
    answer = upload(api, "editor", "P01", nifti_bytes(second_mask.astype(np.uint8)), "lesion", filename="mask")
    assert answer.status_code == 201, answer.json
    second = answer.json["roi"]
    assert (second["version"], second["colour"], second["path"]) == (2, "#ff8800", first["path"])
    assert second["id"] != first["id"] and second["created"] == first["created"]
    assert [(r["id"], r["version"]) for r in listed(api, "P01") if r["label"] == "lesion"] == [(second["id"], 2)]
    assert np.array_equal(downloaded(api, second["id"]), second_mask)
    assert error_of(api.call("viewer", "GET", f"/rois/{first['id']}"), 404) == HIDDEN, "version 1 is no longer live"

    # Version 1 is in the project's trash, mask and JSON, restorable once version 2 is out of the way.
    archive = api.site.archive
    with archive.sessions() as session:
        trash_id = session.get_one(File, first["id"]).trash_id
        entry = next(t for t in list_trash(session, alpha(session)) if t.id == trash_id)
    assert (entry.deleted_by, entry.files) == ("editor", 2)
    in_trash = archive.layout.in_trash(entry.id, Location("alpha", "P01", "S1", first["path"]))
    assert np.array_equal(np.asanyarray(nib.Nifti1Image.from_filename(in_trash).dataobj), first_mask)
    deleted = api.call("editor", "DELETE", f"/rois/{second['id']}")
    assert deleted.status_code == 200, deleted.json
    with archive.unit_of_work() as (session, journal):
        assert restore(session, journal, archive.layout, alpha(session), entry.id) == 2
    assert [(r["id"], r["version"]) for r in listed(api, "P01") if r["label"] == "lesion"] == [(first["id"], 1)]
    assert np.array_equal(downloaded(api, first["id"]), first_mask)

    # A label is text, never a path: it cannot place the mask outside the reference's ROI folder.
    escaping = uploaded(api, "editor", "P01", first_mask, "../../../escape")
    assert escaping["label"] == "../../../escape"
    assert escaping["path"].startswith("rois/001_ax/ax_asc_35sl_6/") and "/../" not in escaping["path"], escaping["path"]


def test_bad_uploads_are_400_naming_the_problem_and_store_nothing(api: RoiApi) -> None:
    sidecar = api.call("editor", "POST", f"{api.study('P03')}/files", content_type="multipart/form-data",
                       data={"folder": "001_ax", "files": [(io.BytesIO(b'{"EchoTime": 0.03}'), "ax_asc_35sl_6.json")]})
    assert sidecar.status_code == 201, sidecar.json
    sidecar_id = sidecar.json["files"][0]["id"]
    mask = lesion().astype(np.uint8)
    shifted = AFFINE.copy()
    shifted[:3, 3] += 2.0
    three_values = mask.copy()
    three_values[30, 33, 17] = 2
    before = stored_state(api, "P03")
    cases: list[tuple[dict[str, Any], int, tuple[str, ...]]] = [
        ({"mask": mask[:, :, :34]}, 400, ("has shape (64, 64, 34)", "has (64, 64, 35)")),
        ({"mask": nifti_bytes(mask, shifted)}, 400, ("has the affine", "resample it onto the reference")),
        ({"mask": three_values}, 400, ("is not binary", "0, 1, 2", "only 0 and 1")),
        ({"label": "x" * 65}, 400, ("has 65 characters", "at most 64")),
        ({"label": "   "}, 400, ("needs a label",)),
        ({"label": "left\\right"}, 400, ("contains a backslash or a control character",)),
        ({"colour": "red"}, 400, ("'red' is not of the form #rrggbb",)),
        ({"mask": b"this is a text file, not an image"}, 400, ("not a readable NIfTI",)),
        ({"mask": gzip.compress(b"text in a gzip stream")}, 400, ("not a readable NIfTI",)),
        ({"mask": nifti_bytes(mask)[:250]}, 400, ("not a readable NIfTI",)),
        ({"mask": nifti_bytes(mask, compressed=False)[:20_000]}, 400, ("not a readable NIfTI",)),
        ({"reference": ""}, 400, ("reference_file_id must name the image",)),
        ({"reference": "abc"}, 400, ("reference_file_id must name the image",)),
        ({"reference": "²"}, 400, ("reference_file_id must name the image",)),
        ({"reference": "9" * 30}, 400, ("reference_file_id must name the image",)),
        ({"reference": sidecar_id}, 400, ("001_ax/ax_asc_35sl_6.json is not a NIfTI image", "ROIs are drawn on images")),
        ({"reference": api.site.files["P01"]}, 400, (f"reference image {api.site.files['P01']} is not in study",)),
        ({"reference": api.site.other_file}, 404, (f"no reference image {api.site.other_file} in project 'alpha'",)),
        ({"reference": 987654}, 404, ("no reference image 987654",)),
    ]
    for change, status, phrases in cases:
        arguments = {"mask": mask, "label": "bad", **change}
        answer = upload(api, "editor", "P03", arguments.pop("mask"), arguments.pop("label"), **arguments)
        assert answer.status_code == status, (change.keys(), answer.text)
        message = error_of(answer, status)
        assert all(phrase in message for phrase in phrases), (change.keys(), message)
        assert str(api.site.archive.settings.var_dir) not in message and "/tmp" not in message, "no server path is told"
    no_mask = api.call("editor", "POST", f"{api.study('P03')}/rois", content_type="multipart/form-data",
                       data={"reference_file_id": str(api.site.files["P03"]), "label": "bad"})
    assert "multipart field 'mask'" in error_of(no_mask, 400)
    assert stored_state(api, "P03") == before, "a refused upload stores nothing"
    assert not any((api.site.archive.settings.var_dir / "uploads").iterdir()), "the spooled upload is removed"


def test_viewers_change_nothing_and_editors_delete_only_their_own_versions(api: RoiApi) -> None:
    mine = uploaded(api, "editor", "P02", lesion(), "roles")
    theirs = uploaded(api, "editor2", "P02", other_lesion(), "roles")
    markers = api.call("editor", "POST", f"{api.study('P02')}/markers", json={"name": "roles", "points": [{"x": 1, "y": 2, "z": 3}]})
    assert markers.status_code == 201, markers.json
    set_id = markers.json["marker_set"]["id"]
    before = stored_state(api, "P02")
    marker_sets = api.call("viewer", "GET", f"{api.study('P02')}/markers").json
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("DELETE", f"/rois/{mine['id']}", {}),
        ("POST", f"/rois/{mine['id']}/operations", {"json": {"operation": "dilate"}}),
        ("POST", f"/rois/{mine['id']}/operations", {"json": {"operation": "union", "other": theirs["id"], "label": "both"}}),
        ("POST", f"/rois/{mine['id']}/seg", {"json": {}}),
        ("POST", f"/rois/{mine['id']}/send", {"json": {"peer": "hospital"}}),
        ("POST", f"{api.study('P02')}/rois/consensus", {"json": {"label": "roles", "method": "majority"}}),
        ("POST", f"{api.study('P02')}/markers", {"json": {"name": "mine now", "points": []}}),
        ("PUT", f"/markers/{set_id}", {"json": {"name": "renamed", "points": []}}),
        ("DELETE", f"/markers/{set_id}", {}),
    ]
    for user in ("viewer", "reader"):
        message = error_of(upload(api, user, "P02", lesion(), "roles"), 403)
        assert message == FORBIDDEN
        for method, url, arguments in attempts:
            assert error_of(api.call(user, method, url, **arguments), 403) == FORBIDDEN, (user, method, url)
    for method, url, arguments in [("GET", f"{api.study('P02')}/rois", {}), ("GET", f"/rois/{mine['id']}", {}),
                                   ("GET", f"{api.study('P02')}/markers", {}), ("GET", f"/files/{mine['id']}/content", {}),
                                   ("GET", f"{api.study('P02')}/rois/agreement?label=roles", {}),
                                   ("POST", f"{api.study('P02')}/roi-statistics",
                                    {"json": {"images": [api.site.files["P02"]], "rois": [mine["id"]]}}),
                                   *attempts]:
        assert error_of(api.call("norole", method, url, **arguments), 404) == HIDDEN, (method, url)
    assert error_of(upload(api, "norole", "P02", lesion(), "roles"), 404) == HIDDEN
    assert stored_state(api, "P02") == before, "refused calls store nothing"
    assert api.call("viewer", "GET", f"{api.study('P02')}/markers").json == marker_sets

    refused = error_of(api.call("editor2", "DELETE", f"/rois/{mine['id']}"), 403)
    assert refused == "ROI 'roles' by editor is not yours; only a project admin deletes others' versions"
    assert error_of(api.call("editor2", "DELETE", f"/markers/{set_id}"), 403).startswith("marker set 'roles' is editor's")
    assert error_of(api.call("editor2", "PUT", f"/markers/{set_id}", json={"points": []}), 403).startswith(
        "marker set 'roles' is editor's")
    assert stored_state(api, "P02") == before
    assert api.call("viewer", "GET", f"{api.study('P02')}/markers").json == marker_sets

    deleted = api.call("admin", "DELETE", f"/rois/{theirs['id']}")
    assert deleted.status_code == 200, deleted.json
    own = api.call("editor", "DELETE", f"/rois/{mine['id']}")
    assert own.status_code == 200, own.json
    assert [r for r in listed(api, "P02") if r["label"] == "roles"] == []
    with api.site.archive.sessions() as session:
        entries = {t.id: (t.deleted_by, t.files) for t in list_trash(session, alpha(session))}
    assert entries[deleted.json["trash_id"]] == ("admin", 2) and entries[own.json["trash_id"]] == ("editor", 2)


def test_ids_of_another_project_are_not_found_and_name_nothing(api: RoiApi) -> None:
    beta_study = f"/projects/beta/studies/{api.site.other_study}"
    answer = api.call("siteadmin", "POST", f"{beta_study}/rois", content_type="multipart/form-data", data={
        "mask": (io.BytesIO(nifti_bytes(lesion().astype(np.uint8))), "mask.nii.gz"),
        "reference_file_id": str(api.site.other_file), "label": "beta lesion"})
    assert answer.status_code == 201, answer.json
    foreign = answer.json["roi"]["id"]
    mine = uploaded(api, "editor", "P01", lesion(), "cross")
    image = api.site.files["P01"]
    attempts: list[tuple[str, str, str, dict[str, Any]]] = [
        ("viewer", "GET", f"/rois/{foreign}", {}),
        ("editor", "GET", f"/rois/{foreign}", {}),
        ("admin", "DELETE", f"/rois/{foreign}", {}),
        ("editor", "POST", f"/rois/{foreign}/operations", {"json": {"operation": "erode"}}),
        ("editor", "POST", f"/rois/{mine['id']}/operations", {"json": {"operation": "union", "other": foreign, "label": "x"}}),
        ("editor", "POST", f"/rois/{foreign}/seg", {"json": {}}),
        ("viewer", "POST", f"{api.study('P01')}/roi-statistics", {"json": {"images": [api.site.other_file], "rois": [mine["id"]]}}),
        ("viewer", "POST", f"{api.study('P01')}/roi-statistics", {"json": {"images": [image], "rois": [foreign]}}),
        ("viewer", "POST", f"{api.study('P01')}/roi-statistics", {"json": {"images": [foreign], "rois": [mine["id"]]}}),
        ("viewer", "GET", f"/projects/alpha/studies/{api.site.other_study}/rois", {}),
        ("viewer", "GET", f"{beta_study}/rois", {}),
        ("editor", "POST", f"/projects/alpha/studies/{api.site.other_study}/markers", {"json": {"name": "m", "points": []}}),
    ]
    for user, method, url, arguments in attempts:
        message = error_of(api.call(user, method, url, **arguments), 404)
        assert "beta" not in message and "Q01" not in message, (method, url, message)
    assert [r["label"] for r in listed(api, "P01") if r["label"] in ("x", "cross")] == ["cross"]
    assert [r["id"] for r in api.call("siteadmin", "GET", f"{beta_study}/rois").json["rois"]] == [foreign]


def test_operations_make_new_versions_with_the_voxels_scipy_gives(api: RoiApi) -> None:
    first, second = lesion(), other_lesion()
    base = uploaded(api, "editor", "P03", first, "ops")
    other = uploaded(api, "editor", "P03", second, "ops other")
    expected = {
        "erode": (ndimage.binary_erosion(first, SIX), {}),
        "dilate": (ndimage.binary_dilation(first, SIX, iterations=2), {"iterations": 2}),
        "union": (first | second, {"other": other["id"]}),
        "difference": (first & ~second, {"other": other["id"]}),
        "remove_salt": (ball((30, 33, 17), 6), {"min_voxels": 2}),
    }
    for name, (mask, extra) in expected.items():
        label = f"ops {name}"
        answer = operation(api, base["id"], operation=name, label=label, **extra)
        assert answer.status_code == 201, (name, answer.json)
        made = answer.json["roi"]
        assert (made["label"], made["author"], made["version"], made["origin"]) == (label, "editor", 1, "operation")
        assert made["reference_file_id"] == api.site.files["P03"]
        result = downloaded(api, made["id"])
        assert int(np.count_nonzero(result)) == int(np.count_nonzero(mask)), name
        assert np.array_equal(result, mask), name
    # Without a label the result is the caller's next version of the ROI's own label.
    again = operation(api, base["id"], user="editor", operation="erode")
    assert again.status_code == 201, again.json
    assert (again.json["roi"]["label"], again.json["roi"]["version"]) == ("ops", 2)

    live = again.json["roi"]["id"]
    before = stored_state(api, "P03")
    assert "unknown ROI operation 'sharpen': use one of erode, dilate" in error_of(operation(api, live, operation="sharpen"), 400)
    assert "union needs a second ROI" in error_of(operation(api, live, operation="union", label="u"), 400)
    assert "erode works on one ROI" in error_of(operation(api, live, operation="erode", other=other["id"], label="u"), 400)
    assert "remove_salt needs the smallest component" in error_of(operation(api, live, operation="remove_salt", label="u"), 400)
    assert "iterations" in error_of(operation(api, live, operation="dilate", iterations=-1, label="u"), 400)
    assert "iterations must be 1 to 100, not 0" in error_of(operation(api, live, operation="dilate", iterations=0, label="u"), 400)
    assert "iterations must be 1 to 100, not 5000" in error_of(operation(api, live, operation="dilate", iterations=5000, label="u"), 400)
    assert "other must be the id" in error_of(operation(api, live, operation="union", other="3", label="u"), 400)
    assert "is not an ROI" in error_of(operation(api, live, operation="union", other=api.site.files["P03"], label="u"), 400)
    assert "send a JSON object" in error_of(api.call("editor", "POST", f"/rois/{live}/operations", data="erode"), 400)
    assert stored_state(api, "P03") == before, "a refused operation stores nothing"


def test_statistics_of_two_images_and_two_rois_match_numpy(api: RoiApi) -> None:
    first, second = lesion(), other_lesion()
    one = uploaded(api, "editor", "P01", first, "stats one")
    two = uploaded(api, "editor2", "P01", second, "stats two")
    images = [api.site.files["P01"], api.site.files["P01/sag"]]
    answer = api.call("viewer", "POST", f"{api.study('P01')}/roi-statistics", json={"images": images, "rois": [one["id"], two["id"]]})
    assert answer.status_code == 200, answer.json
    rows = answer.json["rows"]
    assert [(r["image_id"], r["roi_id"], r["label"], r["author"]) for r in rows] == [
        (images[0], one["id"], "stats one", "editor"), (images[0], two["id"], "stats two", "editor2"),
        (images[1], one["id"], "stats one", "editor"), (images[1], two["id"], "stats two", "editor2"),
    ]
    voxel_ml = abs(float(np.linalg.det(AFFINE[:3, :3]))) / 1000.0
    sagittal = nib.Nifti1Image.from_filename(SAGITTAL)
    for row in rows:
        mask = first if row["roi_id"] == one["id"] else second
        values, outside = values_in(sagittal if row["image_id"] == images[1] else REFERENCE, mask)
        assert (row["voxels"], row["outside"]) == (values.size, outside)
        assert values.size > 100, "the ROI lies (mostly) inside the image"
        assert row["mean"] == pytest.approx(float(values.mean()), rel=1e-9)
        assert row["median"] == pytest.approx(float(np.median(values)), rel=1e-9)
        assert row["std"] == pytest.approx(float(values.std()), rel=1e-9)
        assert row["volume_ml"] == pytest.approx(int(np.count_nonzero(mask)) * voxel_ml, rel=1e-9)
        assert row["image_path"] == ("001_ax/ax_asc_35sl_6.nii" if row["image_id"] == images[0] else "002_sag/sag_asc_36sl_19.nii")

    table = api.call("viewer", "POST", f"{api.study('P01')}/roi-statistics?format=csv",
                     json={"images": images, "rois": [one["id"], two["id"]]})
    assert table.status_code == 200 and table.mimetype == "text/csv"
    assert table.headers["Content-Disposition"] == f'attachment; filename="roi-statistics-study-{api.site.studies["P01"]}.csv"'
    header, *lines = list(csv.reader(io.StringIO(table.text)))
    assert header[:5] == ["image_id", "image_path", "roi_id", "label", "author"] and {"median", "mean", "volume_ml"} <= set(header)
    assert len(lines) == 4
    for line, row in zip(lines, rows, strict=True):
        cells = dict(zip(header, line, strict=True))
        assert int(cells["roi_id"]) == row["roi_id"] and float(cells["mean"]) == pytest.approx(row["mean"], rel=1e-12)

    statistics = f"{api.study('P01')}/roi-statistics"
    assert "images must be a non-empty list of ids" in error_of(api.call("viewer", "POST", statistics, json={"rois": [one["id"]]}), 400)
    assert "rois must be a non-empty list" in error_of(api.call("viewer", "POST", statistics, json={"images": images, "rois": []}), 400)
    assert "is not an ROI" in error_of(api.call("viewer", "POST", statistics, json={"images": images, "rois": [images[0]]}), 400)


def values_in(image: nib.Nifti1Image, mask: NDArray[np.bool_]) -> tuple[NDArray[np.float64], int]:
    """The first volume's values at the mask's voxel centres, nearest neighbour through world space, and how many fell outside."""
    data = np.asanyarray(image.dataobj)[..., 0].astype(np.float64)
    mapping = np.linalg.inv(image.affine) @ AFFINE
    indices = np.argwhere(mask)
    target = np.floor(indices @ mapping[:3, :3].T + mapping[:3, 3] + 0.5).astype(int)
    inside = np.all((target >= 0) & (target < data.shape), axis=1)
    found = target[inside]
    return data[found[:, 0], found[:, 1], found[:, 2]], int(np.count_nonzero(~inside))


def test_agreement_of_two_editors_and_their_consensus(api: RoiApi) -> None:
    first, second = lesion(), other_lesion()
    a = uploaded(api, "editor", "P03", first, "tumour")
    b = uploaded(api, "editor2", "P03", second, "tumour")
    report = api.call("viewer", "GET", f"{api.study('P03')}/rois/agreement", query_string={"label": "tumour"})
    assert report.status_code == 200, report.json
    assert [v["id"] for v in report.json["versions"]] == [a["id"], b["id"]]
    [pair] = report.json["pairs"]
    both = int(np.count_nonzero(first & second))
    assert (pair["a"], pair["b"]) == (a["id"], b["id"])
    assert pair["dice"] == pytest.approx(2 * both / (np.count_nonzero(first) + np.count_nonzero(second)), rel=1e-12)
    voxel_ml = abs(float(np.linalg.det(AFFINE[:3, :3]))) / 1000.0
    assert pair["volume_difference_ml"] == pytest.approx((np.count_nonzero(second) - np.count_nonzero(first)) * voxel_ml, rel=1e-9)
    assert pair["hd95_mm"] > 0

    uploaded(api, "editor", "P03", first, "solo")
    message = error_of(api.call("viewer", "GET", f"{api.study('P03')}/rois/agreement", query_string={"label": "solo"}), 400)
    assert message == f"ROI 'solo' has 1 version(s) in study {api.site.studies['P03']}; agreement needs two or more"
    assert "0 version(s)" in error_of(api.call("viewer", "GET", f"{api.study('P03')}/rois/agreement"), 400)

    consensus = f"{api.study('P03')}/rois/consensus"
    majority = api.call("admin", "POST", consensus, json={"label": "tumour", "method": "majority"})
    assert majority.status_code == 201, majority.json
    made = majority.json["roi"]
    assert (made["label"], made["author"], made["origin"], made["algorithm"], made["version"]) == (
        "tumour", "admin", "consensus", "majority", 1)
    assert made["colour"] == a["colour"] and "no DICOM SEG" in majority.json["seg_message"]
    assert np.array_equal(downloaded(api, made["id"]), first & second), "a majority of two is where both agree"

    staple = api.call("admin", "POST", consensus, json={"label": "tumour", "method": "staple"})
    assert staple.status_code == 201, staple.json
    made = staple.json["roi"]
    assert (made["origin"], made["algorithm"], made["version"]) == ("consensus", "staple", 2), "the admin's majority went to the trash"
    result = downloaded(api, made["id"]).astype(bool)
    assert (first & second <= result).all() and (result <= (first | second)).all()
    assert sorted((r["author"], r["version"]) for r in listed(api, "P03") if r["label"] == "tumour") == [
        ("admin", 2), ("editor", 1), ("editor2", 1)]
    unknown = api.call("admin", "POST", consensus, json={"label": "tumour", "method": "vote"})
    assert "unknown consensus method 'vote'" in error_of(unknown, 400)
    assert "1 version(s)" in error_of(api.call("admin", "POST", consensus, json={"label": "solo"}), 400)


def test_marker_sets_are_created_updated_and_deleted_to_the_trash(api: RoiApi) -> None:
    markers = f"{api.study('P01')}/markers"
    points = [{"x": 1.5, "y": -20.0, "z": 33.0, "name": "nasion"}, {"x": 0, "y": 10, "z": -5}]
    created = api.call("editor", "POST", markers, json={"name": "landmarks", "points": points})
    assert created.status_code == 201, created.json
    landmarks = created.json["marker_set"]
    assert (landmarks["name"], landmarks["author"], landmarks["study_id"]) == ("landmarks", "editor", api.site.studies["P01"])
    assert landmarks["points"] == [{"x": 1.5, "y": -20.0, "z": 33.0, "name": "nasion"}, {"x": 0.0, "y": 10.0, "z": -5.0, "name": ""}]
    assert api.call("viewer", "GET", markers).json["marker_sets"] == [landmarks]
    assert error_of(api.call("viewer", "POST", markers, json={"name": "viewer's", "points": []}), 403) == FORBIDDEN

    tip = [{"x": 4, "y": 5, "z": 6, "name": "tip"}]
    moved = api.call("editor", "PUT", f"/markers/{landmarks['id']}", json={"name": "anatomy", "points": tip})
    assert moved.status_code == 200, moved.json
    [shown] = api.call("viewer", "GET", markers).json["marker_sets"]
    assert (shown["id"], shown["name"], shown["points"]) == (landmarks["id"], "anatomy", [{"x": 4.0, "y": 5.0, "z": 6.0, "name": "tip"}])
    renamed_only = api.call("editor", "PUT", f"/markers/{landmarks['id']}", json={"name": "anatomy"})
    assert renamed_only.json["marker_set"]["points"] == shown["points"], "points are kept when only the name is sent"

    second = api.call("editor2", "POST", markers, json={"name": "second", "points": []})
    assert second.status_code == 201, second.json
    assert "has a marker set named 'anatomy' already" in error_of(api.call("editor", "POST", markers, json={"name": "anatomy"}), 409)
    clash = api.call("editor2", "PUT", f"/markers/{second.json['marker_set']['id']}", json={"name": " anatomy "})
    assert "has a marker set named 'anatomy' already" in error_of(clash, 409)
    bad: list[tuple[Any, str]] = [
        ([{"x": "1", "y": 2, "z": 3}], "point 1 needs finite numbers x, y and z"),
        ([{"x": 1, "y": 2, "z": 3}, {"x": 1, "y": 2}], "point 2 needs finite numbers"),
        ([{"x": True, "y": 2, "z": 3}], "point 1 needs finite numbers"),
        ("1,2,3", "points must be a list"),
        ([[1, 2, 3]], "point 1 is not an object"),
        ([{"x": 1, "y": 2, "z": 3, "name": "n" * 65}], "longer than 64 characters"),
    ]
    for value, phrase in bad:
        assert phrase in error_of(api.call("editor", "PUT", f"/markers/{landmarks['id']}", json={"points": value}), 400), value
        assert phrase in error_of(api.call("editor", "POST", markers, json={"name": "bad", "points": value}), 400), value
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = '{"name": "bad", "points": [{"x": 1, "y": ' + literal + ', "z": 3}]}'
        answer = api.call("editor", "POST", markers, data=body, content_type="application/json")
        assert "point 1 needs finite numbers" in error_of(answer, 400), literal
    assert "needs a name" in error_of(api.call("editor", "POST", markers, json={"name": "  ", "points": []}), 400)
    assert "name must be text" in error_of(api.call("editor", "POST", markers, json={"name": ["x"], "points": []}), 400)
    assert "name must be text" in error_of(api.call("editor", "PUT", f"/markers/{landmarks['id']}", json={"name": 5}), 400)
    assert "longer than 64" in error_of(api.call("editor", "POST", markers, json={"name": "m" * 65, "points": []}), 400)
    assert sorted(s["name"] for s in api.call("viewer", "GET", markers).json["marker_sets"]) == ["anatomy", "second"]

    deleted = api.call("editor", "DELETE", f"/markers/{landmarks['id']}")
    assert deleted.status_code == 200, deleted.json
    assert [s["name"] for s in api.call("viewer", "GET", markers).json["marker_sets"]] == ["second"]
    assert "no such project" in error_of(api.call("editor", "PUT", f"/markers/{landmarks['id']}", json={"name": "x"}), 404)
    with api.site.archive.sessions() as session:
        assert session.get_one(MarkerSet, landmarks["id"]).trash_id == deleted.json["trash_id"]
        entry = session.get_one(Trash, deleted.json["trash_id"])
        assert (entry.summary, entry.deleted_by) == ("marker set 'anatomy'", "editor")
    again = api.call("editor", "POST", markers, json={"name": "anatomy", "points": []})
    assert again.status_code == 201, "a name in the trash is free again"
    by_admin = api.call("admin", "PUT", f"/markers/{second.json['marker_set']['id']}", json={"name": "checked"})
    assert by_admin.status_code == 200 and by_admin.json["marker_set"]["author"] == "editor2", by_admin.json
    by_admin = api.call("admin", "DELETE", f"/markers/{second.json['marker_set']['id']}")
    assert by_admin.status_code == 200, by_admin.json


def test_seg_export_and_sending_without_dicom_provenance_are_refused_and_store_nothing(api: RoiApi) -> None:
    roi = uploaded(api, "editor", "P02", lesion(), "no seg")
    before = stored_state(api, "P02")
    message = error_of(api.call("editor", "POST", f"/rois/{roi['id']}/seg", json={}), 400)
    assert message == f"no DICOM SEG: {REFERENCE_PATH} was not converted from a DICOM series"
    message = error_of(api.call("editor", "POST", f"/rois/{roi['id']}/send", json={"peer": "hospital"}), 400)
    assert message == "ROI 'no seg' has no DICOM SEG (its reference was not converted from DICOM)"
    assert stored_state(api, "P02") == before


def test_a_browser_session_uploads_with_its_csrf_token_only(api: RoiApi) -> None:
    client = api.client.application.test_client()
    csrf = log_in(client, "editor")

    def post(headers: dict[str, str]) -> TestResponse:
        data = {"mask": (io.BytesIO(nifti_bytes(other_lesion().astype(np.uint8))), "mask.nii.gz"),
                "reference_file_id": str(api.site.files["P02"]), "label": "from the viewer"}
        return client.post(f"/api/v1{api.study('P02')}/rois", data=data, headers=headers, content_type="multipart/form-data")

    assert "CSRF" in error_of(post({}), 403)
    assert [r for r in listed(api, "P02") if r["label"] == "from the viewer"] == []
    answer = post({"X-CSRF-Token": csrf})
    assert answer.status_code == 201, answer.json
    assert answer.json["roi"]["author"] == "editor"
