"""Drop folders as someone who may write into the mount sees them: links and hard links to the
archive's secrets, files changed between the survey and the import, pipes, deep trees, hostile
names, files written into done/ and failed/, a folder redirected into var/ after it was declared.

The tests run as root, who may read any file, so a secret that reached the archive would show.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nifti_archive.dropfolders import scan, step
from nifti_archive.dropfolders.poller import Poller
from nifti_archive.errors import InvalidPath
from nifti_archive.models import DropEntry, DropFolder, DropState
from testbed.northanc import Northanc, northanc_settings
from tests.polling import wait_until

SECRET = b"the archive's secret 7f3a9c"


@pytest.fixture(scope="module")
def northanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Northanc]:
    running = Northanc.start(northanc_settings(tmp_path_factory.mktemp("var")))
    (running.settings.secrets_dir / "attack_target").write_bytes(SECRET)
    yield running
    running.stop()


def declare(northanc: Northanc, name: str, drop: Path) -> None:
    drop.mkdir(exist_ok=True)
    for args in (("-c", name), ("--admin", "dropfolder", "add", name, str(drop), "--project", name, "--stable-seconds", "0")):
        result = northanc.nora(*args)
        assert result.returncode == 0, result.stderr


def settled(poller: Poller, drop: Path, left: set[str]) -> None:
    """Poll passes until only ``left`` (and done/, failed/) remain at the top of the folder."""

    def passed() -> bool:
        poller.poll_once()
        return {p.name for p in drop.iterdir()} - {scan.DONE_FOLDER, scan.FAILED_FOLDER} == left

    wait_until(passed, 120, f"{drop} settled", interval=0.05)


def archive_holds_secret(northanc: Northanc) -> bool:
    return any(SECRET in path.read_bytes() for path in northanc.settings.archive_root.rglob("*")
               if path.is_file() and not path.is_symlink())


def reasons(drop: Path) -> dict[str, str]:
    failed = drop / scan.FAILED_FOLDER
    return {p.name.removesuffix(scan.REASON_SUFFIX): p.read_text() for p in failed.glob(f"*{scan.REASON_SUFFIX}")}


# -- the private copy the importer reads, without servers ------------------------------------


def test_a_folder_swapped_for_a_link_after_the_survey_is_not_followed(tmp_path: Path) -> None:
    drop, secrets = tmp_path / "drop", tmp_path / "secrets"
    (drop / "exam" / "series").mkdir(parents=True)
    secrets.mkdir()
    (secrets / "a.dcm").write_bytes(SECRET)
    (drop / "exam" / "series" / "a.dcm").write_bytes(b"instrument data")
    assert scan.survey(drop, "exam").refusal is None
    (drop / "exam" / "series").rename(drop / "exam" / "gone")
    (drop / "exam" / "series").symlink_to(secrets)
    step.snapshot(drop, "exam", tmp_path / "copy", 1 << 20)
    copied = sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*"))
    assert copied == ["gone", "gone/a.dcm"]
    assert not any(p.is_symlink() for p in (tmp_path / "copy").rglob("*"))


def test_a_file_swapped_for_a_link_or_a_pipe_after_the_survey_is_refused(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (tmp_path / "secret").write_bytes(SECRET)
    for name in ("scan.dcm", "pipe.dcm"):
        (drop / name).write_bytes(b"instrument data")
        assert scan.survey(drop, name).refusal is None
    (drop / "scan.dcm").unlink()
    (drop / "scan.dcm").symlink_to(tmp_path / "secret")
    (drop / "pipe.dcm").unlink()
    os.mkfifo(drop / "pipe.dcm")
    with pytest.raises(InvalidPath, match="pointing out of the drop folder"):
        step.snapshot(drop, "scan.dcm", tmp_path / "one", 1 << 20)
    # A pipe opened for reading would wait for a writer forever: it must not block.
    with pytest.raises(InvalidPath, match="became a link, pipe or device"):
        step.snapshot(drop, "pipe.dcm", tmp_path / "two", 1 << 20)
    assert not (tmp_path / "one").exists()


def test_a_link_inside_the_folder_is_copied_as_what_it_names(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / "exam").mkdir(parents=True)
    (drop / "exam" / "ok.dcm").write_bytes(b"instrument data")
    (drop / "inside").symlink_to(drop / "exam" / "ok.dcm")
    (drop / "itself").symlink_to(drop)
    step.snapshot(drop, "inside", tmp_path / "copy", 1 << 20)
    assert (tmp_path / "copy").read_bytes() == b"instrument data" and not (tmp_path / "copy").is_symlink()
    with pytest.raises(InvalidPath, match="the drop folder itself"):
        step.snapshot(drop, "itself", tmp_path / "again", 1 << 20)


def test_a_hard_link_and_a_tree_too_deep_are_refused(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (tmp_path / "secret").write_bytes(SECRET)
    os.link(tmp_path / "secret", drop / "report.pdf")
    with pytest.raises(InvalidPath, match="hard link"):
        step.snapshot(drop, "report.pdf", tmp_path / "copy", 1 << 20)
    # Deeper than os.walk's recursion would go: the survey answers, and the pass goes on.
    chain = [drop / "deep"]
    for _ in range(1100):
        chain[-1].mkdir()
        chain.append(chain[-1] / "d")
    try:
        assert scan.survey(drop, "deep").refusal == f"folders nested deeper than {scan.MAX_DEPTH}"
    finally:
        # pytest's own clean-up recurses too, and would fail on this tree.
        for folder in reversed(chain[:-1]):
            folder.rmdir()


def test_names_too_long_for_a_number_and_a_note_are_cut(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    for _ in range(2):
        (drop / ("x" * 250 + ".dcm")).write_bytes(b"again")
        step.move_aside(drop, "x" * 250 + ".dcm", scan.FAILED_FOLDER, (scan.REASON_SUFFIX, "why"))
    failed = sorted(p.name for p in (drop / scan.FAILED_FOLDER).iterdir())
    assert len(failed) == 4 and all(len(name.encode()) <= scan.NAME_MAX for name in failed)
    assert sum(name.endswith(scan.REASON_SUFFIX) for name in failed) == 2


# -- the poller against a real Northanc --------------------------------------------------------


def test_links_hard_links_pipes_and_hostile_names_never_bring_a_secret_in(northanc: Northanc, tmp_path: Path) -> None:
    drop = tmp_path / "attack"
    declare(northanc, "attack", drop)
    secret = northanc.settings.secrets_dir / "attack_target"
    (drop / "direct.pdf").symlink_to(secret)
    (drop / "shadow").symlink_to("/etc/shadow")
    (drop / "inner").mkdir()
    (drop / "inner" / "notes.txt").write_text("an instrument's note")
    (drop / "inner" / "key").symlink_to(secret)
    (drop / "linked-folder").symlink_to(northanc.settings.secrets_dir)
    os.link(secret, drop / "hard.raw")
    os.mkfifo(drop / "pipe.raw")
    (drop / "sub").mkdir()
    os.mkfifo(drop / "sub" / "pipe.raw")
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        for name, target in (("shadow", "/etc/shadow"), ("key", str(secret))):
            member = tarfile.TarInfo(name)
            member.type, member.linkname = tarfile.SYMTYPE, target
            tar.addfile(member)
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, str(secret)
        tar.addfile(hard)
    (drop / "links.tar").write_bytes(packed.getvalue())
    with zipfile.ZipFile(drop / "slip.zip", "w") as archive:
        archive.writestr("../../../etc/evil.txt", "out of the tree")
    newline = "report\nINFO forged line.txt"
    (drop / newline).write_text("a note with a hostile name")
    (drop / "fine.txt").write_text("what the instrument meant to send")
    (drop / scan.DONE_FOLDER).mkdir()
    (drop / scan.DONE_FOLDER / "planted.txt").write_text("written straight into done/")
    (drop / scan.FAILED_FOLDER).mkdir()
    (drop / scan.FAILED_FOLDER / "planted.txt").write_text("written straight into failed/")
    (drop / "planted.txt").write_text("named like what lies in done/ already")

    settled(Poller(northanc.archive, northanc.rest), drop, set())
    assert not archive_holds_secret(northanc)
    assert secret.read_bytes() == SECRET and not (Path("/etc") / "evil.txt").exists()
    why = reasons(drop)
    for name in ("direct.pdf", "shadow", "linked-folder"):
        assert why[name] == "a symbolic link pointing out of the drop folder\n", name
    assert why["inner"] == "inner/key: a symbolic link pointing out of the drop folder\n"
    assert "hard link" in why["hard.raw"]
    assert why["pipe.raw"] == "not a regular file (a pipe, socket or device)\n"
    assert why["sub"] == "sub/pipe.raw: not a regular file (a pipe, socket or device)\n"
    assert why["links.tar"] == why["slip.zip"].replace("slip.zip", "links.tar")  # every member skipped
    assert why["slip.zip"] == "slip.zip holds no files to import\n"
    assert why[newline] == f"invalid file path {'extra/' + newline!r}: control characters\n"
    with northanc.archive.sessions() as session:
        folder = session.scalars(select(DropFolder).where(DropFolder.name == "attack")).one()
        imported = {row.name for row in session.scalars(select(DropEntry).where(DropEntry.folder_id == folder.id))
                    if row.state is DropState.DONE}
    assert imported == {"fine.txt", "planted.txt"}
    assert {p.name for p in (drop / scan.DONE_FOLDER).iterdir()} == {"planted.txt", "planted~2.txt", "fine.txt"}
    assert (drop / scan.DONE_FOLDER / "planted~2.txt").read_text() == "named like what lies in done/ already"
    assert (drop / scan.DONE_FOLDER / "planted.txt").read_text() == "written straight into done/"
    assert (drop / scan.FAILED_FOLDER / "planted.txt").read_text() == "written straight into failed/"


def test_a_folder_redirected_into_var_after_it_was_declared_is_not_polled(northanc: Northanc, tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    declare(northanc, "moved", mount / "instrument")
    (mount / "instrument").rmdir()
    # The mount's writer owns the path to the folder: it points it at the archive's var/.
    (mount / "instrument").symlink_to(northanc.settings.var_dir)
    before = sorted(p.name for p in northanc.settings.var_dir.iterdir())
    Poller(northanc.archive, northanc.rest).poll_once()
    assert sorted(p.name for p in northanc.settings.var_dir.iterdir()) == before
    assert (northanc.settings.secrets_dir / "attack_target").read_bytes() == SECRET
    status = northanc.nora("--status").stdout
    assert f"it now leads into the archive's own folder {northanc.settings.var_dir}" in status


def test_a_flood_of_tiny_files_does_not_hold_up_the_folder(northanc: Northanc, tmp_path: Path) -> None:
    drop = tmp_path / "flood"
    declare(northanc, "flood", drop)
    (drop / "many").mkdir()
    for number in range(20000):
        (drop / "many" / f"{number:05}.raw").write_bytes(b"x")
    os.mkfifo(drop / "many" / "zz-pipe")
    (drop / "zz-after.txt").write_text("written after the flood")
    settled(Poller(northanc.archive, northanc.rest), drop, set())
    assert reasons(drop)["many"] == "many/zz-pipe: not a regular file (a pipe, socket or device)\n"
    assert {p.name for p in (drop / scan.DONE_FOLDER).iterdir()} == {"zz-after.txt"}
