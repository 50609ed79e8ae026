"""Reconversion with a diff: ``--reconvert ... --dry-run`` after a changed series template reports
every file's old and new name with its content unchanged and leaves the archive and its index as
they were; the real reconversion then renames, records the converter, and trashes the old files
where ``--restore`` brings them back."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select

from nifti_archive.ingest import converter
from nifti_archive.models import ConversionRequest, File, Project, Study, Subject, Trash
from testbed.northanc import Northanc, northanc_settings
from tests.reference import DATASETS

MOSAIC = DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35"
OLD_FOLDER = "006_ax_asc_35sl"  # the default template, {SeriesNumber:03d}_{SeriesDescription}
NEW_TEMPLATE = "{SeriesDescription}_s{SeriesNumber}"
NEW_FOLDER = "ax_asc_35sl_s6"


@pytest.fixture(scope="module")
def northanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Northanc]:
    """One stack with the mosaic series converted into the inbox, for the whole module."""
    running = Northanc.start(northanc_settings(tmp_path_factory.mktemp("reconvert") / "var"))
    running.storescu(sorted(MOSAIC.glob("MR*")))
    assert running.wait_for_conversions(1) == {"done": 1}
    yield running
    running.stop()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def archive_tree(northanc: Northanc) -> dict[str, str]:
    """Every file below the archive root (trash included) with the checksum of its bytes."""
    root = northanc.settings.archive_root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def index_rows(northanc: Northanc) -> dict[str, list[tuple[Any, ...]]]:
    with northanc.archive.sessions() as session:
        return {
            model.__tablename__: [tuple(row) for row in session.execute(select(model.__table__).order_by(model.__table__.c.id))]
            for model in (Project, Subject, Study, File, Trash, ConversionRequest)
        }


def live(northanc: Northanc) -> tuple[str, list[File]]:
    """The SUBJECT/STUDY of the series and its live files."""
    with northanc.archive.sessions() as session:
        rows = session.execute(
            select(Subject.patient_id, Study.study_id, File).join(Study, Study.id == File.study_id)
            .join(Subject, Subject.id == Study.subject_id).where(File.trash_id.is_(None)).order_by(File.path)
        ).all()
    assert len({(subject, study) for subject, study, _file in rows}) == 1
    return f"{rows[0][0]}/{rows[0][1]}", [record for _subject, _study, record in rows]


def test_dry_run_reports_the_renamed_files_then_reconvert_renames_and_trashes(northanc: Northanc) -> None:
    psid, before = live(northanc)
    assert sorted(f.path for f in before) == [f"{OLD_FOLDER}/s006.json", f"{OLD_FOLDER}/s006.nii.gz"]
    ok(northanc.nora("--admin", "project", "set", "inbox", "--series-template", NEW_TEMPLATE))
    tree, rows = archive_tree(northanc), index_rows(northanc)

    text = ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--dry-run"))
    assert f"renamed   {psid}/{OLD_FOLDER}/s006.nii.gz -> {psid}/{NEW_FOLDER}/s006.nii.gz" in text
    assert f"renamed   {psid}/{OLD_FOLDER}/s006.json -> {psid}/{NEW_FOLDER}/s006.json" in text
    assert "affine max |difference| 0, voxels same" in text and "fields same" in text
    assert "files: 0 unchanged, 2 renamed, 0 added, 0 removed; 0 with other content. Dry run: nothing was changed." in text

    report = json.loads(ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--dry-run", "--json")))
    [series] = report["series"]
    assert series["outcome"] == "replace" and series["converter"] == f"dcm2niix {converter.version()}"
    files = {file["new_path"]: file for file in series["files"]}
    image, sidecar = files[f"{psid}/{NEW_FOLDER}/s006.nii.gz"], files[f"{psid}/{NEW_FOLDER}/s006.json"]
    assert image["change"] == sidecar["change"] == "renamed" and image["old_path"] == f"{psid}/{OLD_FOLDER}/s006.nii.gz"
    assert image["content_changed"] is False and sidecar["content_changed"] is False
    assert image["shape"] == {"old": [64, 64, 35, 2], "new": [64, 64, 35, 2]}  # two volumes, one per instance
    assert image["affine_max_abs_difference"] == 0.0
    assert image["voxel_sha256"]["old"] == image["voxel_sha256"]["new"]
    assert sidecar["sidecar"] == {"added": {}, "removed": {}, "changed": {}}

    assert archive_tree(northanc) == tree and index_rows(northanc) == rows
    assert not any((northanc.settings.var_dir / "scratch").glob("preview-*"))

    out = ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--wait", "120"))
    assert "1 series queued" in out and "1 series converted" in out
    _psid, after = live(northanc)
    assert sorted(f.path for f in after) == [f"{NEW_FOLDER}/s006.json", f"{NEW_FOLDER}/s006.nii.gz"]
    for record in after:
        assert record.converter == "dcm2niix" and record.converter_version == converter.version()
        assert record.converter_flags == converter.flags()
    old_sums = {f.path.split("/")[1]: f.sha256 for f in before}
    assert {f.path.split("/")[1]: f.sha256 for f in after} == old_sums  # same data, other folder
    study_dir = northanc.settings.archive_root / "inbox" / psid
    assert not (study_dir / OLD_FOLDER).exists()

    [entry] = ok(northanc.nora("-p", "inbox", "--trash")).splitlines()
    trash_id, *_rest = entry.split("\t")
    assert "2 file(s)\treplaced by a new conversion of series" in entry
    assert f"restored trash entry {trash_id} (2 file(s))" in ok(northanc.nora("-p", "inbox", "--restore", trash_id))
    for name, checksum in old_sums.items():
        assert hashlib.sha256((study_dir / OLD_FOLDER / name).read_bytes()).hexdigest() == checksum

    # Both conversions live now: a reconversion keeps the files already named as it would name
    # them and trashes the others.
    report = json.loads(ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--dry-run", "--json")))
    changes = sorted((file["change"], file["old_path"]) for file in report["series"][0]["files"])
    assert changes == [("removed", f"{psid}/{OLD_FOLDER}/s006.json"), ("removed", f"{psid}/{OLD_FOLDER}/s006.nii.gz"),
                       ("unchanged", f"{psid}/{NEW_FOLDER}/s006.json"), ("unchanged", f"{psid}/{NEW_FOLDER}/s006.nii.gz")]


def test_reconvert_of_nothing_is_refused(northanc: Northanc) -> None:
    rows = index_rows(northanc)
    for extra in ((), ("--dry-run",)):
        result = northanc.nora("-p", "inbox", "--reconvert", "nothing*", *extra)
        assert result.returncode == 2 and "no converted series matches 'nothing*'" in result.stderr
    result = northanc.nora("--reconvert", "1.2.3.4", "--dry-run")
    assert result.returncode == 2 and "no converted series matches '1.2.3.4'" in result.stderr
    result = northanc.nora("-p", "inbox", "-s", "*", "--dry-run")
    assert result.returncode == 2 and "--dry-run goes with --reconvert" in result.stderr
    assert index_rows(northanc) == rows



def test_dry_run_reports_what_an_older_conversion_made_differently(northanc: Northanc) -> None:
    """Files as an older converter might have made them (a sidecar field fewer, another echo time,
    another grid and voxels) against what dcm2niix makes of the same DICOM now."""
    report = json.loads(ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--dry-run", "--json")))
    paired = {Path(file["old_path"]).name: file for file in report["series"][0]["files"]
              if file["old_path"] and file["new_path"]}
    study_dir = northanc.settings.archive_root / "inbox"
    sidecar_path, image_path = study_dir / paired["s006.json"]["old_path"], study_dir / paired["s006.nii.gz"]["old_path"]
    sidecar = json.loads(sidecar_path.read_text())
    software, echo_time = sidecar.pop("ConversionSoftware"), sidecar["EchoTime"]
    sidecar_path.write_text(json.dumps({**sidecar, "EchoTime": 0.5, "Legacy": True}))
    image = nib.load(image_path)
    shifted = image.affine.copy()
    shifted[0, 3] += 0.25
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[..., :1] + 1, shifted, image.header), image_path)

    report = json.loads(ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--dry-run", "--json")))
    files = {Path(file["old_path"]).name: file for file in report["series"][0]["files"] if file["old_path"] == file["new_path"]}
    assert files["s006.json"]["content_changed"] is True
    assert files["s006.json"]["sidecar"] == {
        "added": {"ConversionSoftware": software}, "removed": {"Legacy": True},
        "changed": {"EchoTime": {"old": 0.5, "new": echo_time}},
    }
    image_diff = files["s006.nii.gz"]
    assert image_diff["content_changed"] is True and image_diff["affine_max_abs_difference"] == pytest.approx(0.25)
    assert image_diff["shape"] == {"old": [64, 64, 35, 1], "new": [64, 64, 35, 2]}
    assert image_diff["voxel_sha256"]["old"] != image_diff["voxel_sha256"]["new"]
    text = ok(northanc.nora("-p", "inbox", "--reconvert", "*.nii.gz", "--dry-run"))
    assert "fields added ConversionSoftware; removed Legacy; changed EchoTime" in text
    assert "shape 64x64x35x2 (was 64x64x35x1), affine max |difference| 0.25, voxels differ" in text
