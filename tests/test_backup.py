"""Backup, restore and rebuild (``nora --admin backup|restore|rebuild``) on SQLite and PostgreSQL.

A backup is checked by what a user gets back: after wiping the index and the tree, a restore
answers ``nora -s '*' --json`` as before and gives every file (trash included) its checksum."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text, update

from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.models import ConversionState, File, Study, Subject
from nifti_archive.settings import Settings
from testbed.northanc import Northanc
from tests.conftest import Nora
from tests.held_series import hold_series
from tests.reference import DATASETS

# One small series (three instances of a Siemens mosaic): rebuilding is converting it again.
MOSAIC = DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], message: str) -> str:
    """Exit code 2 and one line on stderr that says what is wrong; returns the line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    return lines[0]


def checksums(root: Path) -> dict[str, str]:
    """Every file below ``root`` (the trash too) by its path: its sha256."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def put(root: Path, relative: str, content: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def wipe(archive: Archive) -> None:
    """The index's contents dropped and the tree deleted: what a lost disk leaves."""
    if archive.engine.dialect.name == "sqlite":
        archive.engine.dispose()
        database = Path(str(archive.engine.url.database))
        for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            path.unlink(missing_ok=True)
    else:
        with archive.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        archive.engine.dispose()
    shutil.rmtree(archive.settings.archive_root)


@pytest.fixture
def filled(nora_in_process: Nora, settings: Settings, archive: Archive) -> dict[str, str]:
    """A project with tagged files, one file in the trash and a series held in quarantine, and an empty
    project; what ``nora`` lists of them."""
    ok(nora_in_process("--admin", "init"))
    ok(nora_in_process("-c", "demo", "--description", "backed up"))
    ok(nora_in_process("-c", "empty"))
    project = settings.archive_root / "demo"
    files = [
        put(project, "P001/S1/002_t1/s002.nii", "t1 voxels"),
        put(project, "P001/S1/002_t1/s002.json", json.dumps({"EchoTime": 0.003})),
        put(project, "P002/S1/004_flair/s004.nii", "flair voxels"),
        put(project, "P002/S2/005_dwi/s005.bval", "0 1000"),
    ]
    ok(nora_in_process("-p", "demo", "-a", *map(str, files), "--addtag", "raw"))
    ok(nora_in_process("-p", "demo", "-d", str(files[3])))
    with archive.sessions() as session:
        study = session.scalar(select(Study.id).join(Subject).where(Subject.patient_id == "P002", Study.study_id == "S1"))
    assert study is not None
    held = hold_series(archive, study, "006_epi", ConversionState.QUARANTINED, "dcm2niix: missing images")
    put(project, f".quarantine/{held}/s006.nii.gz", "partial volume")
    return {"listing": ok(nora_in_process("-p", "demo", "-s", "*", "--json")), "projects": ok(nora_in_process("--projects"))}


def test_backup_wipe_restore_gives_the_same_archive(
    nora_in_process: Nora, archive: Archive, settings: Settings, filled: dict[str, str], tmp_path: Path
) -> None:
    before = checksums(settings.archive_root)
    assert any("/.trash/" in path for path in before) and any("/.quarantine/" in path for path in before)
    target = tmp_path / "backups" / "monday"
    out = ok(nora_in_process("--admin", "backup", str(target)))
    assert "5 files copied" in out
    described = json.loads((target / "backup.json").read_text())
    assert described["database"] == archive.engine.dialect.name
    assert described["schema_revision"] == ok(nora_in_process("--admin", "init")).split("schema ")[1].rstrip(")\n")
    assert described["counts"] | {"bytes": 0} == {"projects": 2, "subjects": 2, "studies": 3, "files": 3,
                                                  "trashed_files": 1, "quarantined_files": 1, "manifest_files": 5,
                                                  "bytes": 0}
    assert len((target / "manifest.tsv").read_text().splitlines()) == 5

    wipe(archive)
    fails(nora_in_process("--projects"), "not initialised")
    out = ok(nora_in_process("--admin", "restore", str(target)))
    assert "restored 5 files" in out
    assert ok(nora_in_process("-p", "demo", "-s", "*", "--json")) == filled["listing"]
    assert ok(nora_in_process("--projects")) == filled["projects"]
    assert checksums(settings.archive_root) == before
    assert (settings.archive_root / "empty").is_dir()
    # The restored archive takes new files: its ids go on where they were (PostgreSQL's sequences came back too).
    added = put(settings.archive_root / "demo", "P003/S1/001_new/s001.nii", "new")
    assert "registered 1 file(s)" in ok(nora_in_process("-p", "demo", "-a", str(added)))
    assert str(added) in ok(nora_in_process("-p", "demo", "-s", "*")).splitlines()


def test_restore_onto_a_non_empty_archive_needs_force(
    nora_in_process: Nora, settings: Settings, filled: dict[str, str], tmp_path: Path
) -> None:
    before = checksums(settings.archive_root)
    target = tmp_path / "linked"
    assert "5 files hard-linked" in ok(nora_in_process("--admin", "backup", str(target), "--link"))
    one = next(path for path in before if path.endswith("s002.nii"))
    assert (target / "archive" / one).stat().st_ino == (settings.archive_root / one).stat().st_ino
    fails(nora_in_process("--admin", "backup", str(target)), "is not an empty folder")

    ok(nora_in_process("-p", "demo", "-d", str(settings.archive_root / one)))
    fails(nora_in_process("--admin", "restore", str(target)), "the archive is not empty (2 project(s) in the index and files under")
    out = ok(nora_in_process("--admin", "restore", str(target), "--force"))
    assert "the archive tree it replaced is in" in out
    assert ok(nora_in_process("-p", "demo", "-s", "*", "--json")) == filled["listing"]
    assert checksums(settings.archive_root) == before


def test_a_damaged_backup_restores_nothing(
    nora_in_process: Nora, archive: Archive, settings: Settings, filled: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "backup"
    ok(nora_in_process("--admin", "backup", str(target)))
    damaged = next(path for path in (target / "archive").rglob("s004.nii"))
    damaged.write_text("flair voxels, bit-rotted")
    wipe(archive)
    line = fails(nora_in_process("--admin", "restore", str(target)), "does not match its checksum in the manifest")
    assert "demo/P002/S1/004_flair/s004.nii" in line and "nothing restored" in line
    assert not settings.archive_root.exists() or checksums(settings.archive_root) == {}
    assert list(settings.archive_root.parent.glob(".archive.restore-*")) == []
    fails(nora_in_process("--projects"), "not initialised")


def test_a_crafted_backup_reaches_nothing_outside_the_archive(
    nora_in_process: Nora, archive: Archive, settings: Settings, filled: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "backup"
    ok(nora_in_process("--admin", "backup", str(target)))
    description = json.loads((target / "backup.json").read_text())
    (target / "backup.json").write_text(json.dumps({**description, "projects": ["../../escaped"]}))
    wipe(archive)
    fails(nora_in_process("--admin", "restore", str(target)), "which is not a path inside the archive")
    assert not (settings.archive_root.parent.parent / "escaped").exists()
    (target / "backup.json").write_text(json.dumps(description))
    secret = tmp_path / "outside.txt"
    secret.write_text("not the archive's")
    linked = next(path for path in (target / "archive").rglob("s004.nii"))
    linked.unlink()
    linked.symlink_to(secret)
    fails(nora_in_process("--admin", "restore", str(target)), "is missing from the backup")
    assert not settings.archive_root.exists() or checksums(settings.archive_root) == {}


def test_a_backup_taken_before_an_upgrade_is_upgraded_on_restore(
    nora_in_process: Nora, archive: Archive, filled: dict[str, str], tmp_path: Path
) -> None:
    # The index as the version before this one left it: the backup an admin takes before `init` upgrades.
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    config.attributes["engine"] = archive.engine
    command.downgrade(config, "-1")
    archive.engine.dispose()
    fails(nora_in_process("-p", "demo", "-s", "*"), "run `nora --admin init`")
    target = tmp_path / "before-upgrade"
    ok(nora_in_process("--admin", "backup", str(target)))
    older = json.loads((target / "backup.json").read_text())["schema_revision"]
    assert older != db.SCHEMA_REVISION
    wipe(archive)
    assert f"(schema {older} upgraded to the current one)" in ok(nora_in_process("--admin", "restore", str(target)))
    assert ok(nora_in_process("-p", "demo", "-s", "*", "--json")) == filled["listing"]


def decoded(root: Path) -> dict[str, str]:
    """The live tree below ``root`` (not the trash): an image's decoded voxels and affine, else its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or relative.startswith(".trash/"):
            continue
        if path.name.endswith(".nii.gz"):
            image = nib.load(path)
            assert isinstance(image, nib.Nifti1Image)
            voxels = np.ascontiguousarray(np.asanyarray(image.dataobj))
            found[relative] = hashlib.sha256(voxels.tobytes() + image.affine.tobytes()).hexdigest()
        else:
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_rebuild_makes_lost_and_damaged_files_again_from_orthanc(northanc: Northanc, tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    sent.mkdir()
    for path in MOSAIC.glob("MR.*"):
        shutil.copyfile(path, sent / path.name)
    ok(northanc.nora("-c", "mosaic"))
    assert "1 series converted" in ok(northanc.nora("-p", "mosaic", "--import", str(sent), "--patients_id", "P01",
                                                    "--studies_id", "S1", "--wait", "120"))
    project = northanc.settings.archive_root / "mosaic"
    original = decoded(project)
    image = next(project / path for path in original if path.endswith(".nii.gz"))
    sidecar = image.with_name(image.name.replace(".nii.gz", ".json"))
    assert sidecar.is_file()
    assert "1 series, 2 converted files" in ok(northanc.nora("--admin", "rebuild", "mosaic"))

    image.unlink()
    sidecar.write_text('{"EchoTime": 0.1')
    report = ok(northanc.nora("--admin", "rebuild", "mosaic", "--dry-run"))
    shown = image.relative_to(project).as_posix()
    assert f"missing   {shown}\n" in report
    assert f"differs   {shown.replace('.nii.gz', '.json')} (unreadable (JSONDecodeError))\n" in report
    assert report.endswith("0 equal, 1 missing, 1 differ, 0 not made again, 0 in series skipped; dry run: nothing changed\n")
    assert not image.exists()

    report = ok(northanc.nora("--admin", "rebuild", "mosaic"))
    assert f"missing   {shown}: replaced\n" in report and report.endswith("; 2 replaced\n")
    assert decoded(project) == original
    assert ok(northanc.nora("--admin", "rebuild", "mosaic")).endswith("2 equal, 0 missing, 0 differ, 0 not made again, "
                                                                      "0 in series skipped; nothing to replace\n")
    # The index took the rebuilt files' checksums: a backup, which checks each file against them, goes through.
    ok(northanc.nora("--admin", "backup", str(tmp_path / "after-rebuild")))
    fails(northanc.nora("--admin", "rebuild", "nosuch"), "unknown project 'nosuch'")

    # Files another dcm2niix made are a reconversion's to replace (with provenance and the trash).
    with northanc.archive.unit_of_work() as (session, _journal):
        session.execute(update(File).values(converter_version="v1.0.20170101"))
    report = ok(northanc.nora("--admin", "rebuild", "mosaic"))
    assert "made by dcm2niix v1.0.20170101" in report and "use --reconvert" in report
    assert report.endswith("0 equal, 0 missing, 0 differ, 0 not made again, 2 in series skipped; nothing to replace\n")
