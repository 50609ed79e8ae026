"""BIDS export end to end: both DICOM test sets through a real Orthanc into the archive, exported
with `nora --bids`, checked with the BIDS validator (npm bids-validator) and read with pybids."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from bids import BIDSLayout
from pydicom.uid import generate_uid
from sqlalchemy import select
from werkzeug.serving import make_server

from jobs.sandbox import job_environment
from nifti_archive import accounts
from nifti_archive.archive import get_project
from nifti_archive.models import File, Role, Study, Subject
from portal.app import create_app
from testbed.northanc import Northanc, northanc_settings
from tests.reference import DATASETS

VALIDATOR = Path(__file__).resolve().parent / "tools" / "node_modules" / ".bin" / "bids-validator"
SIEMENS = DATASETS["dcm_qa_nih"] / "In" / "20180918Si"
GE = DATASETS["dcm_qa_nih"] / "In" / "20180918GE"
REAL_ID, REAL_NAME = "HOSP-4711-0815", "Realname^Secret"


@dataclass
class Exports:
    northanc: Northanc
    first: Path  # exported before the GE series arrived
    first_stats: dict[str, tuple[int, int]]  # path -> (inode, mtime_ns)
    first_output: str
    tmp: Path


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def renamed_copy(source: Path, target: Path) -> Path:
    """The series of ``source`` as another patient's: new UIDs, ``REAL_ID`` and ``REAL_NAME``."""
    target.mkdir(parents=True)
    uids: dict[str, str] = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            setattr(dataset, keyword, uids.setdefault(getattr(dataset, keyword), generate_uid()))
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.PatientID, dataset.PatientName = REAL_ID, REAL_NAME
        dataset.save_as(target / f"{path.parent.name}_{path.name}")
    return target


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exports]:
    tmp = tmp_path_factory.mktemp("bids")
    northanc = Northanc.start(northanc_settings(tmp / "var"))
    try:
        for project in ("open", "pseudo"):
            ok(northanc.nora("-c", project))
        ok(northanc.nora("--admin", "project", "set", "pseudo", "--pseudonymise", "yes"))
        for project, source in (("open", DATASETS["dcm_qa"] / "In"), ("open", SIEMENS),
                                ("pseudo", renamed_copy(SIEMENS, tmp / "renamed"))):
            ok(northanc.nora("-p", project, "--import", str(source), "--wait", "300"))
        first = tmp / "first"
        first_output = ok(northanc.nora("-p", "open", "--bids", str(first)))
        first_stats = stats(first)
        ok(northanc.nora("-p", "open", "--import", str(GE), "--wait", "300"))
        yield Exports(northanc, first, first_stats, first_output, tmp)
    finally:
        northanc.stop()


def validate(dataset: Path) -> dict[str, object]:
    result = subprocess.run([str(VALIDATOR), "--json", str(dataset)], capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    errors = [(issue["key"], issue["reason"]) for issue in report["issues"]["errors"]]
    assert errors == [], errors
    return dict(report)


def test_both_test_sets_export_as_valid_bids_that_pybids_reads(exports: Exports) -> None:
    out = exports.tmp / "full"
    printed = ok(exports.northanc.nora("-p", "open", "--bids", str(out)))
    validate(out)
    layout = BIDSLayout(out)
    assert sorted(layout.get_subjects()) == ["DEV", "crlab"]
    assert len(layout.get_sessions(subject="DEV")) == 2 and len(layout.get_sessions(subject="crlab")) == 1
    assert layout.get_datatypes(subject="DEV") == ["fmap", "func"] and layout.get_datatypes(subject="crlab") == ["func"]
    # GE's four EPI-fMRI series and dcm_qa's two multiband ones share one name in their session: runs.
    assert len(layout.get(subject="DEV", suffix="bold", extension=".nii.gz")) == 4
    assert layout.get_runs(subject="crlab", suffix="bold") == [1, 2]
    assert sorted(layout.get_directions(suffix="epi")) == ["AP", "LR", "PA", "RL"]
    bold = layout.get(subject="crlab", suffix="bold", extension=".json")[0]
    assert bold.get_dict()["TaskName"] == "fmri" and bold.get_dict()["RepetitionTime"] == 3
    # The 19 orientation series of dcm_qa match no default rule: printed and kept in the dataset.
    assert printed.count("not mapped:") == 19 and "ax_asc_35sl" in printed
    assert "runs added: 2 series" in printed and "runs added: 4 series" in printed
    report = (out / "sourcedata" / "northanc" / "report.txt").read_text()
    assert report.count("not mapped:") == 19
    assert not [p for p in exports.tmp.iterdir() if ".partial-" in p.name]


def test_images_are_copies_unless_read_only_links_are_asked_for(exports: Exports) -> None:
    archive_root = exports.northanc.settings.archive_root
    copied = exports.tmp / "copied"
    ok(exports.northanc.nora("-p", "open", "--bids", str(copied), "--filter", "SDESC:*"))
    manifest = (copied / "sourcedata" / "northanc" / "files.tsv").read_text().splitlines()[1:]
    image, source = manifest[0].split("\t")
    archived = archive_root / "open" / source
    before = archived.read_bytes()
    assert (copied / image).stat().st_ino != archived.stat().st_ino
    with (copied / image).open("r+b") as edited:  # a user's edit in place stays in the dataset
        edited.write(b"edited")
    assert archived.read_bytes() == before
    linked = exports.tmp / "linked"
    printed = ok(exports.northanc.nora("-p", "open", "--bids", str(linked), "--link"))
    assert (linked / image).stat().st_ino == archived.stat().st_ino
    assert stat.S_IMODE((linked / image).stat().st_mode) & 0o222 == 0, "a link is read-only"
    assert "do not edit them in place" in printed
    assert "do not edit them in place" in (linked / "sourcedata" / "northanc" / "report.txt").read_text()
    validate(linked)


def test_export_again_adds_only_the_new_series(exports: Exports) -> None:
    assert "4 image(s)" not in exports.first_output and "6 image(s)" in exports.first_output
    printed = ok(exports.northanc.nora("-p", "open", "--bids", str(exports.first)))
    after = stats(exports.first)
    unchanged = {path: after[path] for path in exports.first_stats if not path.endswith(".tsv") and "sourcedata" not in path}
    assert unchanged == {path: exports.first_stats[path] for path in unchanged}
    added = sorted(set(after) - set(exports.first_stats))
    assert len([p for p in added if p.endswith("_bold.nii.gz")]) == 4 and all("sub-DEV" in p for p in added if p.startswith("sub-"))
    assert "10 image(s)" in printed
    validate(exports.first)
    # Nothing new: nothing written.
    again = stats(exports.first)
    assert "0 file(s) written" in ok(exports.northanc.nora("-p", "open", "--bids", str(exports.first)))
    assert stats(exports.first) == again


def test_a_pseudonymised_project_exports_pseudonyms_only(exports: Exports) -> None:
    out = exports.tmp / "pseudo"
    ok(exports.northanc.nora("-p", "pseudo", "--bids", str(out)))
    validate(out)
    (subject,) = BIDSLayout(out).get_subjects()
    assert subject not in REAL_ID and len(subject) == 12
    for path in [out, *out.rglob("*")]:
        text = path.name if path.is_dir() else path.read_bytes().decode("latin-1")
        for secret in (REAL_ID, "Realname", "Secret", "DEV", "Test^Regression"):
            assert secret not in text, f"{secret} in {path}"


def test_project_rules_rename_and_runs_must_tell_series_apart(exports: Exports) -> None:
    nora, tmp = exports.northanc.nora, exports.tmp
    rules = tmp / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"description": "^(?P<acq>ax|cor|sag)_(asc|desc|int)_3[56]sl$", "sequence": "EP", "suffix": "bold",
         "entities": {"task": "orientation"}},
        {"description": "(?i)pe=", "ignore": True},
    ]}))
    ok(nora("--admin", "project", "set", "open", "--bids-rules", str(rules)))
    try:
        out = tmp / "ruled"
        printed = ok(nora("-p", "open", "--bids", str(out), "--filter", "SDESC:*"))
        assert "not mapped:" not in printed and "left out by rules[1]" in printed
        layout = BIDSLayout(out)
        assert sorted(layout.get_acquisitions(subject="crlab")) == ["ax", "cor", "sag"]
        assert len(layout.get(subject="crlab", acquisition="ax", extension=".nii.gz")) == 7
        assert layout.get(suffix="epi") == []
        validate(out)
        rules.write_text(json.dumps({"rules": [
            {"description": "^ax_", "suffix": "T1w", "entities": {"run": "1"}}]}))
        ok(nora("--admin", "project", "set", "open", "--bids-rules", str(rules)))
        refused = nora("-p", "open", "--bids", str(tmp / "clash"))
        assert refused.returncode == 2 and "rule sets run- itself" in refused.stderr
        assert "ax_asc_35sl" in refused.stderr and refused.stderr.count("\n") == 1
        assert not (tmp / "clash").exists()
        rules.write_text(json.dumps({"rules": [{"description": "(", "suffix": "T1w"}]}))
        bad = nora("--admin", "project", "set", "open", "--bids-rules", str(rules))
        assert bad.returncode == 2 and "rules[0].description: not a regular expression" in bad.stderr
    finally:
        ok(nora("--admin", "project", "set", "open", "--bids-rules", ""))
    assert "bids_rules\t\n" in ok(nora("--admin", "project", "show", "open"))


def test_bad_input_is_refused_with_one_line_and_nothing_written(exports: Exports) -> None:
    nora, tmp = exports.northanc.nora, exports.tmp
    other = tmp / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    before = sorted(p.name for p in tmp.iterdir())
    cases = [
        (("-p", "nosuch", "--bids", str(tmp / "a")), "nosuch"),
        (("-p", "open", "--bids", str(tmp / "b"), "--filter", "STAG:x & & t1"), "at character"),
        (("-p", "open", "--bids", str(exports.northanc.settings.archive_root / "open" / "bids")), "inside the archive"),
        (("-p", "open", "--bids", str(other)), "not a BIDS dataset"),
        (("-p", "open", "--bids", str(tmp / "c"), "--wait", "3"), "--wait goes with"),
        (("-p", "open", "-s", "*", "--link"), "--link goes with --bids"),
    ]
    for argv, message in cases:
        result = nora(*argv)
        assert result.returncode == 2, (argv, result.stdout)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp.iterdir()) == before
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


@pytest.fixture(scope="module")
def tokens(exports: Exports) -> dict[str, str]:
    """API tokens of an editor and a viewer of the pseudonymised project."""
    with exports.northanc.archive.unit_of_work() as (session, _journal):
        for name, role in (("ed", Role.EDITOR), ("vi", Role.VIEWER)):
            user, _password = accounts.create_user(session, name, False)
            accounts.grant_role(session, user, get_project(session, "pseudo"), role)
        return {name: accounts.create_token(session, accounts.get_user(session, name), "t", None).secret for name in ("ed", "vi")}


def test_the_portal_streams_the_export_as_a_zip_to_editors(exports: Exports, tokens: dict[str, str]) -> None:
    client = create_app(exports.northanc.settings, exports.northanc.archive).test_client()
    url = "/api/v1/projects/pseudo/bids.zip"
    assert client.get(url, headers={"Authorization": f"Bearer {tokens['vi']}"}).status_code == 403
    answer = client.get(url, headers={"Authorization": f"Bearer {tokens['ed']}"})
    assert answer.status_code == 200 and answer.mimetype == "application/zip"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="pseudo_bids.zip"'
    unpacked = exports.tmp / "unzipped"
    with zipfile.ZipFile(io.BytesIO(answer.data)) as bundle:
        bundle.extractall(unpacked)
    validate(unpacked / "pseudo_bids")
    assert len(BIDSLayout(unpacked / "pseudo_bids").get(suffix="epi", extension=".nii.gz")) == 4
    bad = client.get(url, query_string={"filter": "STAG:x & & y"}, headers={"Authorization": f"Bearer {tokens['ed']}"})
    assert bad.status_code == 400 and "at character" in bad.json["error"]


def test_the_predefined_job_exports_through_the_api_as_a_job_sees_it(exports: Exports, tokens: dict[str, str]) -> None:
    """The job's side without the sandbox: its environment, the API on a Unix socket, its output folder."""
    socket_path = exports.tmp / "api.sock"
    server = make_server(f"unix://{socket_path}", 0, create_app(exports.northanc.settings, exports.northanc.archive),
                         threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        staged = exports.tmp / "staging" / "bids"
        staged.mkdir(parents=True)  # the runner makes a PATHOUT folder before the job starts
        environment = job_environment({"p1": str(staged), "s1": "SDESC:*"}, "pseudo", Path(sys.executable).parent,
                                      exports.northanc.settings.archive_root, tokens["ed"])
        environment["NORTHANC_API_SOCKET"] = str(socket_path)
        result = subprocess.run([sys.executable, "-m", "jobs.library", "bids"], env=environment, capture_output=True,
                                text=True, timeout=120, check=False)
    finally:
        server.shutdown()
        serving.join()
    assert result.returncode == 0, result.stderr
    assert "copies (a job cannot hard-link" in result.stdout
    validate(staged)
    assert all(p.stat().st_nlink == 1 for p in staged.rglob("*") if p.is_file())  # the runner publishes plain files only
    assert len(BIDSLayout(staged).get(suffix="epi", extension=".nii.gz")) == 4
    assert [p.name for p in staged.parent.iterdir()] == ["bids"]


def test_a_series_converted_again_replaces_its_stale_image(exports: Exports) -> None:
    out = exports.first
    image, source = (exports.first / "sourcedata" / "northanc" / "files.tsv").read_text().splitlines()[1].split("\t")
    subject, study, path = source.split("/", 2)
    with exports.northanc.archive.sessions() as session:
        uid = session.scalars(select(File.source_series_uid).join(Study, Study.id == File.study_id)
                              .join(Subject, Subject.id == Study.subject_id)
                              .where(Subject.patient_id == subject, Study.study_id == study, File.path == path,
                                     File.trash_id.is_(None))).one()
    stale = (out / image).stat().st_mtime_ns
    ok(exports.northanc.nora("--reconvert", str(uid), "--wait", "300"))
    archived = exports.northanc.settings.archive_root / "open" / source
    assert archived.stat().st_mtime_ns != stale
    printed = ok(exports.northanc.nora("-p", "open", "--bids", str(out)))
    assert "file(s) replaced: changed in the archive since the last export" in printed
    assert (out / image).stat().st_mtime_ns == archived.stat().st_mtime_ns
    assert (out / image).read_bytes() == archived.read_bytes()
    validate(out)
