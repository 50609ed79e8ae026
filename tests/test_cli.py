"""The `nora` command against SQLite and PostgreSQL.

Most checks run it in this process (``nora_in_process``); those about the installed entry point
itself (its exit codes, --help, that it answers as the in-process runs do) start it as a command."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from nifti_archive.archive import Archive
from nifti_archive.settings import Settings
from tests.conftest import Nora


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit code 2 and exactly one line on stderr that says what is wrong."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def put(root: Path, relative: str, content: str = "data") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def demo(nora_in_process: Nora, settings: Settings) -> Iterator[Path]:
    """Project 'demo' with three registered files in two subjects; yields the project folder."""
    ok(nora_in_process("-c", "demo", "--description", "a test project"))
    project = settings.archive_root / "demo"
    files = [
        put(project, "P001/S1/002_t1_mprage/s002.nii"),
        put(project, "P001/S1/002_t1_mprage/stats.json", json.dumps({"mask": {"volume": 12.5, "diameter": 3}, "n": 1})),
        put(project, "P002/S1/004_flair/s004.nii"),
    ]
    ok(nora_in_process("-p", "demo", "-a", *map(str, files), "--addtag", "raw"))
    yield project


def test_help_explains_the_flags_and_why_sql_is_missing(nora: Nora) -> None:
    out = ok(nora("--help"))
    for flag in ("--createproject", "--add", "--del_pat", "--select", "--pathout", "--exportmeta", "--byfilename"):
        assert flag in out
    assert "-q/--sql is not offered" in out
    fails(nora("-q", "SELECT 1"), "-q is not offered")


def test_create_and_list_projects(nora: Nora, settings: Settings) -> None:
    assert "created project demo" in ok(nora("-c", "demo", "--description", "first"))
    assert (settings.archive_root / "demo").is_dir()
    fails(nora("-c", "demo"), "already exists")
    fails(nora("-c", "../evil"), "invalid project name")
    assert ok(nora("--projects")) == "demo\tfirst\n"


def test_in_process_runs_answer_as_the_installed_command(nora: Nora, nora_in_process: Nora, demo: Path) -> None:
    for args in (["-p", "demo", "-s", "*", "--json"], ["-p", "demo", "-s", "* & BOGUS:x"], ["-s", "*"], ["--help"]):
        command, in_process = nora(*args), nora_in_process(*args)
        assert (in_process.returncode, in_process.stdout, in_process.stderr) == (command.returncode, command.stdout, command.stderr)


def test_in_process_runs_leave_no_logging_behind(nora_in_process: Nora) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    for _ in range(3):
        fails(nora_in_process("-p", "nope", "-s", "*"), "unknown project 'nope'")
    assert (list(root.handlers), root.level) == before


def test_select_prints_absolute_paths_and_json(nora_in_process: Nora, demo: Path) -> None:
    assert ok(nora_in_process("-p", "demo", "-s", "*/s0__.nii")).splitlines() == [
        str(demo / "P001/S1/002_t1_mprage/s002.nii"),
        str(demo / "P002/S1/004_flair/s004.nii"),
    ]
    grouped = json.loads(ok(nora_in_process("-p", "demo", "-s", "*.nii", "--json")))
    assert grouped == [
        {"psid": "P001#S1", "subject": "P001", "study": "S1", "files": [str(demo / "P001/S1/002_t1_mprage/s002.nii")]},
        {"psid": "P002#S1", "subject": "P002", "study": "S1", "files": [str(demo / "P002/S1/004_flair/s004.nii")]},
    ]
    by_name = json.loads(ok(nora_in_process("-p", "demo", "-s", "002*", "--json", "--byfilename")))
    assert by_name[0]["files"] == {
        "002_t1_mprage/s002.nii": str(demo / "P001/S1/002_t1_mprage/s002.nii"),
        "002_t1_mprage/stats.json": str(demo / "P001/S1/002_t1_mprage/stats.json"),
    }


def test_project_from_the_environment(nora_in_process: Nora, demo: Path) -> None:
    assert len(ok(nora_in_process("-s", "*", extra_env={"NORA_PROJECT": "demo"})).splitlines()) == 3
    fails(nora_in_process("-s", "*"), "no project")


def test_tags_on_selected_files(nora_in_process: Nora, demo: Path) -> None:
    assert "added 2 tag(s) to 1 file(s)" in ok(nora_in_process("-p", "demo", "--addtag", "t1,good", "-s", "*t1*/*.nii"))
    assert ok(nora_in_process("-p", "demo", "-s", "* & FTAG:good")).splitlines() == [str(demo / "P001/S1/002_t1_mprage/s002.nii")]
    assert len(ok(nora_in_process("-p", "demo", "-s", "* & FTAG:raw")).splitlines()) == 3
    assert "removed 3 tag(s)" in ok(nora_in_process("-p", "demo", "--rmtag", "raw", "-s", "*"))
    assert ok(nora_in_process("-p", "demo", "-s", "* & FTAG:raw")) == ""
    fails(nora_in_process("-p", "demo", "--rmtag", "x", "-a", str(demo / "P001/S1/002_t1_mprage/s002.nii")), "--rmtag goes with -s")
    fails(nora_in_process("-p", "demo", "--addtag", "bad tag", "-s", "*"), "invalid tag")


def test_output_paths(nora_in_process: Nora, demo: Path) -> None:
    assert ok(nora_in_process("-p", "demo", "-o", "P001/S1/002*/mask_1.nii")).strip() == str(demo / "P001/S1/002_t1_mprage/mask_1.nii")
    assert ok(nora_in_process("-p", "demo", "-o", "P002/*/new_folder/out.nii")).strip() == str(demo / "P002/S1/new_folder/out.nii")
    assert ok(nora_in_process("-p", "demo", "-pa", "P001/S1/002*")).strip() == str(demo / "P001/S1/002_t1_mprage")
    fails(nora_in_process("-p", "demo", "-o", "P00_/S1/x.nii"), "it must name one study")
    fails(nora_in_process("-p", "demo", "-o", "P009/S1/x.nii"), "no study matches")
    fails(nora_in_process("-p", "demo", "-o", "P001/S1/../../x.nii"), "'..'")
    fails(nora_in_process("-p", "demo", "-o", "x.nii"), "must start with SUBJECT/STUDY/")


def test_exportmeta_writes_csv(nora_in_process: Nora, demo: Path) -> None:
    put(demo, "P002/S1/004_flair/stats.json", json.dumps({"mask": {"volume": 7}}))
    ok(nora_in_process("-p", "demo", "-a", str(demo / "P002/S1/004_flair/stats.json")))
    rows = list(csv.reader(io.StringIO(ok(nora_in_process("-p", "demo", "--exportmeta", "*", "*.json", "--keys", "*.mask.volume")))))
    assert rows == [
        ["subject", "study", "002_t1_mprage/stats.mask.volume", "004_flair/stats.mask.volume"],
        ["P001", "S1", "12.5", ""],
        ["P002", "S1", "", "7"],
    ]
    everything = list(csv.DictReader(io.StringIO(ok(nora_in_process("-p", "demo", "--exportmeta", "P001", "*/stats.json")))))
    assert everything == [
        {
            "subject": "P001",
            "study": "S1",
            "002_t1_mprage/stats.mask.volume": "12.5",
            "002_t1_mprage/stats.mask.diameter": "3",
            "002_t1_mprage/stats.n": "1",
        }
    ]
    fails(nora_in_process("-p", "demo", "--exportmeta", "*", "*.json", "--keys", "a..b"), "invalid --keys")


def test_delete_restore_and_purge_files(nora_in_process: Nora, demo: Path) -> None:
    target = demo / "P001/S1/002_t1_mprage/s002.nii"
    assert "trash entry 1" in ok(nora_in_process("-p", "demo", "-d", str(target)))
    assert not target.exists()
    assert (demo / ".trash/1/P001/S1/002_t1_mprage/s002.nii").read_text() == "data"
    assert str(target) not in ok(nora_in_process("-p", "demo", "-s", "*"))
    assert "1 file(s)" in ok(nora_in_process("-p", "demo", "--trash"))
    fails(nora_in_process("-p", "demo", "-d", str(target)), "not a registered file")

    assert "restored trash entry 1 (1 file(s))" in ok(nora_in_process("-p", "demo", "--restore", "1"))
    assert target.read_text() == "data"
    assert str(target) in ok(nora_in_process("-p", "demo", "-s", "*"))
    assert not (demo / ".trash/1").exists()
    fails(nora_in_process("-p", "demo", "--restore", "1"), "no trash entry 1")

    ok(nora_in_process("-p", "demo", "-d", str(target)))
    assert "purged 0" in ok(nora_in_process("-p", "demo", "--purge", "--older-than", "1"))
    assert (demo / ".trash/2").exists()
    assert "purged 1" in ok(nora_in_process("-p", "demo", "--purge", "--older-than", "0"))
    assert not (demo / ".trash/2").exists()
    assert ok(nora_in_process("-p", "demo", "--trash")) == ""


def test_delete_and_restore_subjects_and_studies(nora_in_process: Nora, demo: Path) -> None:
    ok(nora_in_process("-p", "demo", "-dp", "P001#S1", "P002"))
    assert not (demo / "P001/S1").exists() and not (demo / "P002").exists()
    assert ok(nora_in_process("-p", "demo", "-s", "*")) == ""
    fails(nora_in_process("-p", "demo", "-dp", "P002"), "no subject 'P002'")
    fails(nora_in_process("-p", "demo", "-dp", "P001#"), "invalid subject/study reference")
    ok(nora_in_process("-p", "demo", "--restore", "1"))
    assert len(ok(nora_in_process("-p", "demo", "-s", "*")).splitlines()) == 3
    assert (demo / "P002/S1/004_flair/s004.nii").exists()


def test_restore_refuses_to_overwrite_a_newer_file(nora_in_process: Nora, demo: Path) -> None:
    target = demo / "P002/S1/004_flair/s004.nii"
    ok(nora_in_process("-p", "demo", "-d", str(target)))
    put(demo, "P002/S1/004_flair/s004.nii", "newer")
    ok(nora_in_process("-p", "demo", "-a", str(target)))
    fails(nora_in_process("-p", "demo", "--restore", "1"), "a live file has that path again")
    assert target.read_text() == "newer"
    assert (demo / ".trash/1/P002/S1/004_flair/s004.nii").read_text() == "data"


def test_bad_input_changes_nothing(nora_in_process: Nora, demo: Path, settings: Settings, tmp_path: Path) -> None:
    before = ok(nora_in_process("-p", "demo", "-s", "*"))
    new = put(demo, "P003/S1/x/new.nii")
    fails(nora_in_process("-p", "demo", "-a", str(new), str(demo / "P001/S1/002_t1_mprage/s002.nii")), "already registered")
    fails(nora_in_process("-p", "demo", "-a", str(new), str(new)), "named twice")
    outside = put(tmp_path, "elsewhere/file.nii")
    fails(nora_in_process("-p", "demo", "-a", str(new), str(outside)), "outside the archive root")
    fails(nora_in_process("-p", "demo", "-a", str(demo / "P003/S1/x/missing.nii")), "not a regular file")
    fails(nora_in_process("-p", "demo", "-a", str(demo / "P003/new.nii")), "not a file inside a study folder")
    ok(nora_in_process("-c", "other"))
    fails(nora_in_process("-p", "other", "-a", str(new)), "belongs to project 'demo'")
    assert ok(nora_in_process("-p", "demo", "-s", "*")) == before

    fails(nora_in_process("-p", "nope", "-s", "*"), "unknown project 'nope'")
    fails(nora_in_process("-p", "demo", "-s", "../*"), "'..'")
    fails(nora_in_process("-p", "demo", "-s", "/etc/*"), "absolute")
    fails(nora_in_process("-p", "demo", "-s", "&"), "'&' at the start")
    fails(nora_in_process("-p", "demo", "-s", "* & BOGUS:x"), "unknown attribute BOGUS:")
    fails(nora_in_process("-p", "demo", "-d", str(new), str(demo / "P001/S1/002_t1_mprage/s002.nii")), "not a registered file")
    assert (demo / "P001/S1/002_t1_mprage/s002.nii").exists()
    fails(nora_in_process("-p", "demo", "--addtag", "x"), "nothing to do")


def test_delete_that_fails_half_way_moves_everything_back(nora_in_process: Nora, demo: Path) -> None:
    first = demo / "P001/S1/002_t1_mprage/s002.nii"
    second = demo / "P002/S1/004_flair/s004.nii"
    # A folder where the second file's trash copy must go makes its move fail after the first one moved.
    (demo / ".trash/1/P002/S1/004_flair/s004.nii").mkdir(parents=True)
    result = nora_in_process("-p", "demo", "-d", str(first), str(second))
    fails(result, "already exists")
    assert first.exists() and second.exists()
    assert len(ok(nora_in_process("-p", "demo", "-s", "*")).splitlines()) == 3


def test_unwritable_archive_root(nora_in_process: Nora, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    try:
        fails(nora_in_process("-c", "demo", extra_env={"NORTHANC_ARCHIVE_ROOT": str(locked / "archive")}), "cannot create")
        fails(nora_in_process("--admin", "init", extra_env={"NORTHANC_ARCHIVE_ROOT": str(locked / "archive")}), "cannot create")
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert ok(nora_in_process("--projects")) == ""


def test_uninitialised_archive(tmp_path: Path, nora_in_process: Nora) -> None:
    fails(nora_in_process("--projects", extra_env={"NORTHANC_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite'}"}), "nora --admin init")


def test_admin_users_roles_and_tokens(nora_in_process: Nora, archive: Archive, demo: Path) -> None:
    out = ok(nora_in_process("--admin", "user", "add", "alice"))
    password = out.strip().rsplit(" ", 1)[-1]
    ok(nora_in_process("--admin", "role", "grant", "alice", "demo", "editor"))
    assert ok(nora_in_process("--admin", "role", "list")) == "alice\tdemo\teditor\n"
    fails(nora_in_process("--admin", "role", "grant", "alice", "demo", "boss"), "unknown role 'boss'")
    fails(nora_in_process("--admin", "role", "grant", "alice", "nope", "viewer"), "unknown project 'nope'")
    fails(nora_in_process("--admin", "user", "add", "alice"), "already exists")
    secret = ok(nora_in_process("--admin", "token", "create", "alice", "--name", "scripts")).strip().rsplit(" ", 1)[-1]
    assert secret.startswith("nrt_")
    listed = ok(nora_in_process("--admin", "token", "list", "alice"))
    assert "scripts\tactive" in listed and secret not in listed
    ok(nora_in_process("--admin", "token", "revoke", "1"))
    assert "revoked" in ok(nora_in_process("--admin", "token", "list", "alice"))
    fails(nora_in_process("--admin", "user", "frobnicate"), "invalid choice")
    with archive.engine.connect() as connection:
        stored = " ".join(str(v) for row in connection.execute(text("SELECT * FROM users")) for v in row)
        stored += " ".join(str(v) for row in connection.execute(text("SELECT * FROM api_tokens")) for v in row)
    assert password not in stored and secret not in stored
    assert "$argon2id$" in stored
