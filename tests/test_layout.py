"""The on-disk layout: ids that are safe folder names, and locating files by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from nifti_archive.errors import InvalidPath
from nifti_archive.layout import ArchiveLayout, Location, check_folder_id, check_relative_path


def test_layout_of_a_file(tmp_path: Path) -> None:
    layout = ArchiveLayout(tmp_path)
    location = Location("stroke", "P001", "20240312_1", "003_t1/s003.nii.gz")
    assert layout.file_path(location) == tmp_path / "stroke/P001/20240312_1/003_t1/s003.nii.gz"
    assert layout.locate(tmp_path / "stroke/P001/20240312_1/003_t1/s003.nii.gz") == location
    assert location.psid == "P001#20240312_1"


@pytest.mark.parametrize("value", ["..", ".trash", "a/b", "", "a b", "_x", "x" * 129])
def test_unsafe_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidPath):
        check_folder_id("subject", value)


def test_unicode_ids_are_allowed() -> None:
    assert check_folder_id("subject", "Müller-01.b") == "Müller-01.b"


@pytest.mark.parametrize("path", ["/abs", "a/../b", "a//b", "./a", ".hidden/x", "a/\x01"])
def test_unsafe_relative_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        check_relative_path(path)


def test_locate_refuses_paths_outside_or_above_a_study(tmp_path: Path) -> None:
    layout = ArchiveLayout(tmp_path / "archive")
    with pytest.raises(InvalidPath, match="outside the archive root"):
        layout.locate(tmp_path / "elsewhere/p/s/t/f.nii")
    with pytest.raises(InvalidPath, match="not a file inside a study folder"):
        layout.locate(tmp_path / "archive/p/s/t")


def test_locate_sees_through_symlinks_that_leave_the_archive(tmp_path: Path) -> None:
    (tmp_path / "archive/p/s/t").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (tmp_path / "archive/p/s/t/link.nii").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidPath, match="outside the archive root"):
        ArchiveLayout(tmp_path / "archive").locate(tmp_path / "archive/p/s/t/link.nii")
