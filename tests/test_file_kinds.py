"""The archive records what each file is by its name: NIfTI and its sidecars, the other volume
formats the viewer opens (NRRD, MGH/MGZ), meshes (GIFTI, STL, OBJ, FreeSurfer surfaces) and
tractograms (TCK, TRK); files registered before those kinds existed take them on upgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.catalog.projects import create_project
from nifti_archive.catalog.registration import add_files, ensure_study, file_kind, register_file
from nifti_archive.models import File, FileKind

NAMES = {
    "001_t1/s001.nii.gz": FileKind.NIFTI,
    "001_t1/s001.json": FileKind.JSON,
    "dwi/vol.nrrd": FileKind.NRRD,
    "dwi/vol.NHDR": FileKind.NRRD,
    "fs/mri/orig.mgz": FileKind.MGH,
    "fs/mri/T1.mgh": FileKind.MGH,
    "surf/lh.midthickness.surf.gii": FileKind.GIFTI,
    "models/skull.stl": FileKind.STL,
    "models/skull.OBJ": FileKind.OBJ,
    "fs/surf/lh.pial": FileKind.FREESURFER_SURFACE,
    "fs/surf/rh.white": FileKind.FREESURFER_SURFACE,
    "fs/surf/lh.inflated": FileKind.FREESURFER_SURFACE,
    "fs/surf/rh.sphere": FileKind.FREESURFER_SURFACE,
    "fs/surf/lh.sphere.reg": FileKind.FREESURFER_SURFACE,
    "fs/surf/rh.smoothwm": FileKind.FREESURFER_SURFACE,
    "sub-01.lh.pial": FileKind.FREESURFER_SURFACE,
    "tracts/af.tck": FileKind.TCK,
    "tracts/cst.trk": FileKind.TRK,
    # Not surfaces: a FreeSurfer curvature, a name ".orig" ends as often as a backup's, the surface's folder.
    "fs/surf/lh.curv": FileKind.OTHER,
    "fs/surf/lh.orig": FileKind.OTHER,
    "notes.json.orig": FileKind.OTHER,
    "pial/readme.txt": FileKind.OTHER,
}


@pytest.mark.parametrize(("path", "kind"), NAMES.items())
def test_a_files_kind_is_what_its_name_says(path: str, kind: FileKind) -> None:
    assert file_kind(path) is kind


def _files_of(archive: Archive) -> list[Path]:
    study_dir = archive.layout.study_dir("alpha", "P01", "S1")
    paths = []
    for name in NAMES:
        target = study_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(name.encode())
        paths.append(target)
    return paths


def test_registration_records_each_files_kind(archive: Archive) -> None:
    with archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, archive.layout, "alpha")
        add_files(session, archive.layout, project, _files_of(archive))
    with archive.unit_of_work() as (session, _journal):
        recorded = dict(session.execute(select(File.path, File.kind)).tuples().all())
    assert recorded == NAMES


def test_files_registered_as_other_before_the_new_kinds_take_them_on_upgrade(archive: Archive) -> None:
    with archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, archive.layout, "alpha")
        study = ensure_study(session, project, "P01", "S1")
        for real in _files_of(archive):
            register_file(session, study, real.relative_to(archive.layout.study_dir("alpha", "P01", "S1")).as_posix(), real,
                          kind=FileKind.NIFTI if real.name.endswith(".nii.gz") else FileKind.OTHER)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    config.attributes["engine"] = archive.engine
    command.downgrade(config, "0022")
    command.upgrade(config, "head")
    with archive.unit_of_work() as (session, _journal):
        recorded = dict(session.execute(select(File.path, File.kind)).tuples().all())
    # JSON was a kind before: a file registered as other then keeps it.
    assert recorded == {**NAMES, "001_t1/s001.json": FileKind.OTHER}
