"""Files only the archive can read: var/ is private, the NIfTI tree is readable by the jobs group alone."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from pathlib import Path

from nifti_archive.archive import Archive
from nifti_archive.permissions import jobs_group
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from testbed import TEST_PASSWORD_COST
from testbed.northanc import Northanc, northanc_settings
from tests.conftest import NORA
from tests.reference import DATASETS

MOSAIC = DATASETS["dcm_qa"] / "In" / "Orientation" / "ax" / "axasc35"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _init(tmp_path: Path) -> Settings:
    var = tmp_path / "var"
    settings = Settings(var_dir=var, database_url=f"sqlite:///{var / 'archive.sqlite'}", archive_root=var / "archive",
                        log_dir=var / "log", password_cost=TEST_PASSWORD_COST)
    env = child_environment(settings)
    # A caller's lax umask must not leak into what the archive writes.
    result = subprocess.run([str(NORA), "--admin", "init"], env=env, capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: os.umask(0o000), check=False)
    assert result.returncode == 0, result.stderr
    return settings


def test_init_leaves_var_private_and_the_tree_to_the_jobs_group(tmp_path: Path) -> None:
    settings = _init(tmp_path)
    assert _mode(settings.var_dir) == 0o700
    assert _mode(settings.secrets_dir) == 0o700
    assert {_mode(p) for p in settings.secrets_dir.iterdir()} == {0o600}
    assert _mode(settings.var_dir / "archive.sqlite") == 0o600
    assert _mode(settings.log_dir) == 0o700
    assert {_mode(p) & 0o077 for p in settings.log_dir.iterdir()} <= {0o040, 0o000}
    root = settings.archive_root.stat()
    assert root.st_gid == grp.getgrnam(settings.jobs_user).gr_gid
    assert stat.S_IMODE(root.st_mode) == 0o2750
    everything = [p for p in settings.var_dir.rglob("*")]
    assert everything and not [p for p in everything if p.stat().st_mode & 0o007], "nothing is open to other accounts"


def test_files_moved_into_the_tree_take_its_group_and_nobody_else_reads_them(tmp_path: Path) -> None:
    settings = _init(tmp_path)
    archive = Archive(settings)
    try:
        scratch = settings.var_dir / "scratch"
        scratch.mkdir()
        made = scratch / "s001.nii.gz"
        made.write_bytes(b"nifti")
        target = settings.archive_root / "demo" / "P001" / "S1" / "001_t1" / "s001.nii.gz"
        with archive.unit_of_work() as (_session, journal):
            journal.move(made, target)
    finally:
        archive.close()
    gid = jobs_group(settings)
    assert target.stat().st_gid == gid and _mode(target) == 0o640
    for folder in (target.parent, target.parent.parent, settings.archive_root / "demo"):
        assert folder.stat().st_gid == gid
        assert _mode(folder) == 0o2750
    # The private side stays private: the scratch folder the file came from is not the group's.
    assert scratch.stat().st_gid != gid and _mode(scratch) & 0o007 == 0


def test_a_running_stack_keeps_originals_logs_and_conversions_private(tmp_path: Path) -> None:
    running = Northanc.start(northanc_settings(tmp_path / "var"))
    try:
        running.storescu(sorted(MOSAIC.iterdir()))
        assert running.wait_for_conversions(1) == {"done": 1}
        settings = running.settings
        storage = settings.var_dir / "orthanc" / "storage"
        originals = [p for p in storage.rglob("*") if p.is_file()]
        assert originals and _mode(settings.var_dir / "orthanc") == 0o700
        assert not [p for p in originals if p.stat().st_mode & 0o077 & ~0o040], "originals: owner (and group root) only"
        assert _mode(settings.log_dir / "orthanc.log") == 0o600
        converted = list(settings.archive_root.rglob("*.nii.gz"))
        assert converted and {p.stat().st_gid for p in converted} == {jobs_group(settings)}
        assert {_mode(p) for p in converted} == {0o640}
    finally:
        running.stop()
