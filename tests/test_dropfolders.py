"""Drop folders: a folder an instrument writes into, polled, imported by the importer of
``nora --import`` once its entries stop changing, the entries then moved to done/ or failed/.

One Northanc (real Orthanc with the plugin, dcm2niix) serves the module. The poller runs in this
process, one pass at a time, except in the restart test, which runs the service as the stack does
and kills it in the middle of a folder. The tests run as root, who may read any file: the file the
poller cannot read is a named pipe (reading it would block), and the file it cannot move is one
whose failed/ folder cannot be made.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nifti_archive.dropfolders import folders, scan, step
from nifti_archive.dropfolders.folders import pid_file
from nifti_archive.dropfolders.poller import Poller
from nifti_archive.errors import InvalidPath, InvalidValue
from nifti_archive.ingest.importer import ExtrasStudy
from nifti_archive.models import DropAction, DropEntry, DropFolder, DropState, File, Project, Study, Subject
from testbed.northanc import Northanc, northanc_settings
from tests.polling import wait_until
from tests.reference import DATASETS

PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
ORIENTATION = DATASETS["dcm_qa"] / "In" / "Orientation"
MOSAIC_SERIES = sorted(p for p in ORIENTATION.glob("*/*") if p.is_dir())


@pytest.fixture(scope="module")
def northanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Northanc]:
    running = Northanc.start(northanc_settings(tmp_path_factory.mktemp("var")))
    yield running
    running.stop()


@pytest.fixture
def poller(northanc: Northanc) -> Poller:
    return Poller(northanc.archive, northanc.rest)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def dicom_of(series: Path) -> list[Path]:
    return sorted(p for p in series.iterdir() if p.name.startswith("MR.") or p.suffix == ".dcm")


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def archive_files(northanc: Northanc, project: str) -> set[tuple[str, str]]:
    """(study folder, path) of every live file of the project."""
    with northanc.archive.sessions() as session:
        rows = session.execute(select(Study.study_id, File.path).join(File, File.study_id == Study.id)
                               .join(Subject, Subject.id == Study.subject_id).join(Project, Project.id == Subject.project_id)
                               .where(Project.name == project, File.trash_id.is_(None))).all()
    return {(study, path) for study, path in rows}


def converted(northanc: Northanc, project: str, count: int) -> set[tuple[str, str]]:
    def found() -> set[tuple[str, str]] | None:
        nifti = {f for f in archive_files(northanc, project) if f[1].endswith(".nii.gz")}
        return nifti if len(nifti) >= count else None

    return wait_until(found, 180, f"{count} series converted in {project}", interval=0.5)


def until(poller: Poller, condition: str, check: Callable[[], object]) -> None:
    """Poll passes until ``check()`` holds: what the service does every few seconds."""

    def passed() -> bool:
        poller.poll_once()
        return bool(check())

    wait_until(passed, 120, condition, interval=0.05)


def status(northanc: Northanc) -> str:
    return ok(northanc.nora("--status"))


# -- decisions, without servers ---------------------------------------------------------------


def test_an_entry_is_stable_after_two_sightings_and_the_wait() -> None:
    stability = scan.Stability()
    entry = scan.Entry("a.dcm", scan.Signature(10, 1.0))
    assert stability.stable([entry], now=0.0, seconds=0) == set()  # seen once: it may be growing
    assert stability.stable([entry], now=0.5, seconds=1) == set()
    grown = scan.Entry("a.dcm", scan.Signature(20, 2.0))
    assert stability.stable([grown], now=1.5, seconds=1) == set()  # changed: the wait starts again
    assert stability.stable([grown], now=2.0, seconds=1) == set()
    assert stability.stable([grown], now=2.5, seconds=1) == {"a.dcm"}
    assert stability.stable([], now=3.0, seconds=1) == set() and stability.first_seen == {}


def test_what_is_done_with_an_entry() -> None:
    entry = scan.Entry("x", scan.Signature(1, 1.0))
    refused = scan.Entry("y", scan.Signature(1, 1.0), "no permission to read it")
    done = scan.Remembered(entry.signature, DropState.DONE)
    assert scan.decide(entry, False, None, DropAction.MOVE) is scan.Step.WAIT
    assert scan.decide(scan.Entry("exam", scan.Signature(0, 1.0, 0)), True, None, DropAction.MOVE) is scan.Step.WAIT
    assert scan.decide(entry, True, None, DropAction.MOVE) is scan.Step.IMPORT
    assert scan.decide(refused, True, None, DropAction.MOVE) is scan.Step.REFUSE
    assert scan.decide(entry, False, done, DropAction.MOVE) is scan.Step.FINISH  # imported before a restart
    assert scan.decide(entry, True, done, DropAction.KEEP) is scan.Step.NOTHING
    changed = scan.Remembered(scan.Signature(2, 1.0), DropState.DONE)
    assert scan.decide(entry, True, changed, DropAction.KEEP) is scan.Step.IMPORT  # a new file under the old name
    interrupted = scan.Remembered(entry.signature, DropState.IMPORTING)
    assert scan.decide(entry, True, interrupted, DropAction.MOVE) is scan.Step.IMPORT
    left = scan.Remembered(entry.signature, DropState.FAILED)
    assert scan.decide(entry, True, left, DropAction.MOVE) is scan.Step.NOTHING


def test_names_in_done_and_failed() -> None:
    taken = {"scan.tar.gz", "scan~2.tar.gz", "exam", "README"}
    assert scan.unique_name("new.dcm", taken.__contains__) == "new.dcm"
    assert scan.unique_name("scan.tar.gz", taken.__contains__) == "scan~3.tar.gz"
    assert scan.unique_name("exam", taken.__contains__) == "exam~2"
    assert scan.unique_name("README", taken.__contains__) == "README~2"
    assert all(scan.ignored(name) for name in ("done", "failed", ".partial.dcm", ".DS_Store"))


def test_the_folder_study_of_files_without_dicom() -> None:
    plain, pseudonymised = Project(name="lab", pseudonymise=False), Project(name="cohort", pseudonymise=True)
    noon = datetime(2026, 3, 4, 12, 0).timestamp()
    by_day = DropFolder(name="scope", project=plain, extra_subject="scope", extra_study="")
    assert folders.extras_study(by_day, noon) == ExtrasStudy("scope", "20260304", date(2026, 3, 4))
    fixed = DropFolder(name="scope", project=plain, extra_subject="bench", extra_study="runs")
    assert folders.extras_study(fixed, noon) == ExtrasStudy("bench", "runs")
    assert folders.extras_study(DropFolder(name="routed", project=None, extra_subject=None), noon) is None
    # Pseudonymised later than declared: refused at import, so the entry fails with the reason.
    looks_pseudonymous = DropFolder(name="scope", project=pseudonymised, extra_subject="sub-abc", extra_study="")
    with pytest.raises(InvalidValue, match="looks like a pseudonym"):
        folders.extras_study(looks_pseudonymous, noon)
    assert folders.check_extras_subject(pseudonymised, "scope") == "scope"
    with pytest.raises(InvalidPath, match="invalid study id"):
        ExtrasStudy("scope", "../up")


def test_the_poller_line_says_whether_it_runs_and_passes() -> None:
    assert folders.poller_line(41, 1.2) == "drop folder poller: running (pid 41); last pass 1 s ago"
    assert folders.poller_line(None, None) == (
        "drop folder poller: PROBLEM: not running (python -m nifti_archive.dropfolders.service start); never passed")
    stale = folders.poller_line(41, folders.STALE_PASSES * folders.POLL_SECONDS + 1)
    assert stale.startswith("drop folder poller: PROBLEM: no pass for over 5 poll intervals") and stale.endswith("last pass 11 s ago")


def test_links_out_of_the_folder_pipes_and_inner_escapes_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    (folder / "exam").mkdir(parents=True)
    (tmp_path / "secret").write_text("not the instrument's")
    (folder / "out").symlink_to(tmp_path / "secret")
    (folder / "exam" / "inner").symlink_to("../../secret")
    (folder / "exam" / "ok.dcm").write_bytes(b"x" * 10)
    (folder / "inside").symlink_to(folder / "exam" / "ok.dcm")
    os.mkfifo(folder / "pipe")
    assert scan.survey(folder, "out").refusal == "a symbolic link pointing out of the drop folder"
    assert scan.survey(folder, "exam").refusal == "exam/inner: a symbolic link pointing out of the drop folder"
    assert scan.survey(folder, "pipe").refusal == "not a regular file (a pipe, socket or device)"
    assert scan.survey(folder, "inside").refusal is None
    (folder / "exam" / "inner").unlink()
    assert scan.survey(folder, "exam") == scan.Entry("exam", scan.Signature(10, scan.survey(folder, "exam").signature.mtime, 1))


# -- declaring ----------------------------------------------------------------------------------


def test_declaring_drop_folders_with_nora_admin(northanc: Northanc, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "scanners"))
    out = ok(northanc.nora("--admin", "dropfolder", "add", "ct1", str(tmp_path / "ct1"), "--project", "scanners",
                           "--stable-seconds", "5", "--keep"))
    assert "ct1" in out and "project scanners, files without DICOM to ct1/YYYYMMDD/extra" in out and "kept and remembered" in out
    ok(northanc.nora("--admin", "dropfolder", "add", "lab", str(tmp_path / "lab"), "--routing"))
    listed = ok(northanc.nora("--admin", "dropfolder", "list")).splitlines()
    assert [line.split("\t")[0] for line in listed] == ["ct1", "lab"]
    assert "routing rules" in listed[1] and "stable 10 s" in listed[1] and "moved to done/" in listed[1]
    refused = [
        (["ct1", str(tmp_path / "x"), "--project", "scanners"], "exists already"),
        (["ct2", "relative/path", "--project", "scanners"], "must be absolute"),
        (["ct2", str(northanc.settings.archive_root / "scanners"), "--project", "scanners"], "overlaps the archive"),
        (["ct2", str(tmp_path / "y"), "--project", "nope"], "unknown project"),
        (["ct2", str(tmp_path / "ct1"), "--routing"], "is a drop folder already"),
        (["bad name", str(tmp_path / "z"), "--routing"], "invalid drop folder name"),
        (["ct2", str(tmp_path / "y"), "--project", "scanners", "--subject", "../up"], "invalid subject id '../up'"),
        (["ct2", str(tmp_path / "y"), "--project", "scanners", "--study", "a/b"], "invalid study id 'a/b'"),
        (["sub-scope", str(tmp_path / "y"), "--project", "hidden"], "looks like a pseudonym"),  # the default subject
        (["ct2", str(tmp_path / "y"), "--routing", "--subject", "bench"], "--subject and --study need --project"),
        (["ct2", str(tmp_path / "y"), "--project", "hidden", "--subject", "sub-4bcd"], "looks like a pseudonym"),
    ]
    ok(northanc.nora("-c", "hidden"))
    ok(northanc.nora("--admin", "project", "set", "hidden", "--pseudonymise", "yes"))
    for args, message in refused:
        result = northanc.nora("--admin", "dropfolder", "add", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    result = northanc.nora("--admin", "dropfolder", "add", "ct2", str(tmp_path / "y"), "--project", "scanners", "--routing")
    assert result.returncode == 2 and "not allowed with" in result.stderr
    out = ok(northanc.nora("--admin", "dropfolder", "add", "ct3", str(tmp_path / "ct3"), "--project", "hidden",
                           "--subject", "bench", "--study", "runs"))
    assert "project hidden, files without DICOM to bench/runs/extra" in out
    for name in ("ct1", "lab", "ct3"):
        ok(northanc.nora("--admin", "dropfolder", "remove", name))
    assert ok(northanc.nora("--admin", "dropfolder", "list")) == ""
    assert "drop folder" not in status(northanc)


# -- importing --------------------------------------------------------------------------------


def slowly(target: Path, data: bytes, chunks: int = 10, pause: float = 0.1) -> None:
    """Write as an instrument over a network mount does: a piece at a time."""
    with target.open("wb") as out:
        for start in range(0, len(data), -(-len(data) // chunks)):
            out.write(data[start:start + -(-len(data) // chunks)])
            out.flush()
            time.sleep(pause)


def test_files_written_slowly_a_zip_and_other_files(northanc: Northanc, poller: Poller, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "slow"))
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "slow", str(drop), "--project", "slow", "--stable-seconds", "1.5"))
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in dicom_of(MOSAIC_SERIES[1]):
            archive.write(path, f"bundle/{path.name}")
    exam = drop / "exam7"
    exam.mkdir()
    mosaic = MOSAIC_SERIES[0]

    def instrument() -> None:
        slowly(drop / "bundle.zip", bundle.getvalue())
        for path in dicom_of(mosaic):
            slowly(exam / path.name, path.read_bytes(), chunks=4)
        slowly(exam / "raw.dat", b"\x00instrument raw data" * 1000, chunks=3)
        slowly(exam / "report.pdf", b"%PDF-1.4 the report\n", chunks=2)

    writer = threading.Thread(target=instrument)
    writer.start()
    try:
        until(poller, "both entries in done/", lambda: names(drop / "done") >= {"bundle.zip", "exam7"})
    finally:
        writer.join()
    assert names(drop) == {"done"}  # nothing half imported went to failed/
    assert names(drop / "done" / "exam7") == {p.name for p in dicom_of(mosaic)} | {"raw.dat", "report.pdf"}
    files = converted(northanc, "slow", 2)
    assert len(files) == 2
    study = next(study for study, path in archive_files(northanc, "slow") if path == "extra/report.pdf")
    assert {p for s, p in archive_files(northanc, "slow") if s == study and p.startswith("extra/")} == {"extra/raw.dat", "extra/report.pdf"}
    assert (northanc.settings.archive_root / "slow").rglob("raw.dat").__next__().read_bytes() == b"\x00instrument raw data" * 1000
    instances = {s["ID"]: s for s in json.loads(northanc.rest.get("/series?expand"))}
    assert sorted(len(s["Instances"]) for s in instances.values()) == sorted([len(dicom_of(MOSAIC_SERIES[1])), len(dicom_of(mosaic))])
    assert "drop folder slow" in status(northanc) and "done=2 failed=0" in status(northanc)


def test_failures_go_to_failed_with_their_reason(northanc: Northanc, poller: Poller, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "fails"))
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "fails", str(drop), "--project", "fails", "--stable-seconds", "0"))
    (drop / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "elsewhere.dcm").write_bytes(dicom_of(MOSAIC_SERIES[1])[0].read_bytes())
    (drop / "link.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    os.mkfifo(drop / "pipe")
    until(poller, "three entries in failed/", lambda: len(names(drop / "failed")) == 6)
    failed = drop / "failed"
    assert names(failed) == {f"{name}{suffix}" for name in ("broken.zip", "link.dcm", "pipe")
                             for suffix in ("", scan.REASON_SUFFIX)}
    reasons = {name: (failed / f"{name}{scan.REASON_SUFFIX}").read_text() for name in ("broken.zip", "link.dcm", "pipe")}
    assert "damaged or truncated zip archive" in reasons["broken.zip"]
    assert reasons["link.dcm"] == "a symbolic link pointing out of the drop folder\n"
    assert reasons["pipe"] == "not a regular file (a pipe, socket or device)\n"
    assert (failed / "link.dcm").is_symlink()  # the link moved, not what it points to
    assert names(drop) == {"failed"} and archive_files(northanc, "fails") == set()

    # A second failure of the same name gets a name of its own; one that cannot be moved is left and reported.
    (drop / "broken.zip").write_bytes(b"PK\x03\x04 again")
    until(poller, "the second broken.zip in failed/", lambda: "broken~2.zip" in names(failed))
    (drop / "failed").rename(tmp_path / "failed-before")
    (drop / "failed").write_text("an instrument's file named like the folder")
    (drop / "late.zip").write_bytes(b"PK\x03\x04 truncated too")
    until(poller, "late.zip reported", lambda: "left in place: late.zip" in status(northanc))
    assert "late.zip" in names(drop) and "could not be moved to failed/" in status(northanc)


def test_files_without_dicom_go_to_the_folder_study(northanc: Northanc, poller: Poller, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "bench"))
    drop, fixed = tmp_path / "scope", tmp_path / "fixed"
    drop.mkdir()
    fixed.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "scope", str(drop), "--project", "bench", "--stable-seconds", "0"))
    ok(northanc.nora("--admin", "dropfolder", "add", "fixed", str(fixed), "--project", "bench", "--stable-seconds", "0",
                     "--subject", "lab", "--study", "runs"))
    (drop / "report.pdf").write_bytes(b"%PDF-1.4 a lone report\n")
    (drop / "run3").mkdir()
    (drop / "run3" / "spectrum.raw").write_bytes(b"\x00raw" * 100)
    march = datetime(2026, 3, 4, 12, 0).timestamp()
    for path in (drop / "report.pdf", drop / "run3" / "spectrum.raw", drop / "run3"):
        os.utime(path, (march, march))
    (fixed / "notes.txt").write_text("a lone note")
    until(poller, "all entries in done/", lambda: names(drop / "done") == {"report.pdf", "run3"} and names(fixed / "done") == {"notes.txt"})
    assert names(drop) == {"done"} and names(fixed) == {"done"}
    root = northanc.settings.archive_root / "bench"
    listed = ok(northanc.nora("-p", "bench", "-s", "extra/*")).splitlines()
    assert sorted(listed) == sorted(str(root / path) for path in (
        "scope/20260304/extra/report.pdf", "scope/20260304/extra/spectrum.raw", "lab/runs/extra/notes.txt"))
    assert (root / "scope/20260304/extra/spectrum.raw").read_bytes() == b"\x00raw" * 100
    with northanc.archive.sessions() as session:
        study = session.scalars(select(Study).join(Subject).where(Subject.patient_id == "scope")).one()
        assert study.study_date == date(2026, 3, 4) and study.subject.identity is None


def test_a_folder_that_disappears_is_reported_and_polled_again(northanc: Northanc, poller: Poller, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "mount"))
    drop = tmp_path / "mnt" / "scanner"
    drop.mkdir(parents=True)
    ok(northanc.nora("--admin", "dropfolder", "add", "mount", str(drop), "--project", "mount", "--stable-seconds", "0"))
    poller.poll_once()
    assert "drop folder mount" in status(northanc) and "): ok;" in status(northanc)
    (tmp_path / "mnt").rename(tmp_path / "unmounted")
    poller.poll_once()
    shown = status(northanc)
    assert f"drop folder mount ({drop}): PROBLEM since" in shown and "cannot list the folder: No such file or directory" in shown
    assert "drop folder poller: PROBLEM: not running" in shown and "; last pass" in shown
    (tmp_path / "unmounted").rename(tmp_path / "mnt")
    for path in dicom_of(MOSAIC_SERIES[2]):
        (drop / path.name).write_bytes(path.read_bytes())
    until(poller, "the files in done/", lambda: len(names(drop / "done")) == len(dicom_of(MOSAIC_SERIES[2])))
    assert "): ok;" in status(northanc).split("drop folder mount")[1]
    converted(northanc, "mount", 1)


def test_kept_files_are_remembered_and_routed_by_tags(northanc: Northanc, poller: Poller, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "routed"))
    ok(northanc.nora("--admin", "route", "add", "routed", "--tag", "SeriesDescription", "--pattern", "^ax_desc_35sl$"))
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "kept", str(drop), "--routing", "--keep", "--stable-seconds", "0"))
    series = MOSAIC_SERIES[3]
    for path in dicom_of(series):
        (drop / path.name).write_bytes(path.read_bytes())
    (drop / "notes.txt").write_text("no project to put it in")
    expected = len(dicom_of(series))
    until(poller, "the files imported", lambda: f"done={expected} failed=1" in status(northanc))
    poller.poll_once()  # a later pass finds them again and leaves them
    assert names(drop) == {p.name for p in dicom_of(series)} | {"failed"}
    assert f"importing=0 done={expected} failed=1" in status(northanc).split("drop folder kept")[1]
    reason = (drop / "failed" / f"notes.txt{scan.REASON_SUFFIX}").read_text()
    assert reason.startswith("notes.txt: an extra file with no DICOM beside it")
    assert "files without DICOM need a folder declared with --project" in reason
    converted(northanc, "routed", 1)


def test_a_routing_folder_places_each_series_by_its_own_tags(northanc: Northanc, poller: Poller, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "first"))
    ok(northanc.nora("-c", "second"))
    ok(northanc.nora("--admin", "route", "add", "first", "--tag", "SeriesDescription", "--pattern", "^sag_asc_35sl$"))
    ok(northanc.nora("--admin", "route", "add", "second", "--tag", "SeriesDescription", "--pattern", "^sag_asc_36sl$"))
    by_name = {series.name: series for series in MOSAIC_SERIES}
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "mixed", str(drop), "--routing", "--stable-seconds", "0"))
    exam = drop / "exam"
    exam.mkdir()
    # One patient's exam of three series: placed by its first file, all three would go to "first".
    for series in ("sagasc35", "sagasc36", "sagdesc35"):
        (exam / series).mkdir()
        for path in dicom_of(by_name[series]):
            (exam / series / path.name).write_bytes(path.read_bytes())
    (exam / "sagasc36" / "report.pdf").write_bytes(b"%PDF-1.4 beside the second series\n")
    until(poller, "the exam in done/", lambda: names(drop / "done") == {"exam"})
    first, second = converted(northanc, "first", 1), converted(northanc, "second", 1)
    unmatched = converted(northanc, "inbox", 1)  # where a series no rule claims goes when Orthanc receives it
    assert [path.split("/")[0] for _study, path in first] == ["022_sag_asc_35sl"]
    assert [path.split("/")[0] for _study, path in second] == ["019_sag_asc_36sl"]
    assert [path.split("/")[0] for _study, path in unmatched] == ["023_sag_desc_35sl"]
    assert "extra/report.pdf" in {path for _study, path in archive_files(northanc, "second")}
    assert "extra/report.pdf" not in {path for _study, path in archive_files(northanc, "first")}


def test_files_written_during_the_import_wait_for_the_next_pass(northanc: Northanc, poller: Poller, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ok(northanc.nora("-c", "late"))
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "late", str(drop), "--project", "late", "--stable-seconds", "0"))
    exam = drop / "exam"
    exam.mkdir()
    series = dicom_of(MOSAIC_SERIES[12])
    for path in series:
        (exam / path.name).write_bytes(path.read_bytes())
    copy = step.snapshot
    written: list[Path] = []

    def then_the_instrument_writes(*args: Any) -> Any:
        copied = copy(*args)
        if not written:  # the instrument adds a file once the poller has copied the entry
            written.append(exam / "late.pdf")
            written[0].write_bytes(b"%PDF-1.4 written during the import\n")
        return copied

    monkeypatch.setattr(step, "snapshot", then_the_instrument_writes)
    until(poller, "the exam in done/", lambda: "exam" in names(drop / "done"))
    assert names(drop / "done" / "exam") == {path.name for path in series}
    assert names(exam) == {"late.pdf"}  # not imported yet, so not moved
    until(poller, "the late file imported", lambda: names(drop) == {"done"})
    assert names(drop / "done") == {"exam", "exam~2"} and names(drop / "done" / "exam~2") == {"late.pdf"}
    assert "extra/late.pdf" in {path for _study, path in archive_files(northanc, "late")}
    converted(northanc, "late", 1)


def test_two_pollers_on_one_folder_import_each_entry_once(northanc: Northanc, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ok(northanc.nora("-c", "twice"))
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "twice", str(drop), "--project", "twice", "--stable-seconds", "0"))
    chosen = MOSAIC_SERIES[13:15]
    for series in chosen:
        (drop / series.name).mkdir()
        for path in dicom_of(series):
            (drop / series.name / path.name).write_bytes(path.read_bytes())
        (drop / series.name / f"report-{series.name}.pdf").write_bytes(b"%PDF " + series.name.encode())
    first, second = Poller(northanc.archive, northanc.rest), Poller(northanc.archive, northanc.rest)
    imports: Counter[str] = Counter()
    inside, go_on = threading.Event(), threading.Event()
    real_import = step.import_entry

    def counted(*args: Any) -> Any:
        if args[2].name != "twice":  # the other tests' folders, polled too
            return real_import(*args)
        imports[args[3].name] += 1
        if threading.current_thread() is not threading.main_thread():  # the first poller stays in its first import
            inside.set()
            go_on.wait(120)
        return real_import(*args)

    monkeypatch.setattr(step, "import_entry", counted)
    everything = {series.name for series in chosen}
    with ThreadPoolExecutor(1) as pool:
        first_run = pool.submit(until, first, "the first poller done", lambda: names(drop / "done") >= everything)
        try:
            wait_until(inside.is_set, 60, "the first poller inside an import")
            for _ in range(3):  # the second sees every entry unchanged for longer than the stable time
                second.poll_once()
        finally:
            go_on.set()
        first_run.result()
    until(second, "every entry in done/", lambda: names(drop) == {"done"})
    assert imports == Counter(everything)
    assert names(drop / "done") == everything  # no entry~2 and no skipped-files note of a second import
    assert len(converted(northanc, "twice", len(chosen))) == len(chosen)
    assert f"importing=0 done={len(chosen)} failed=0" in status(northanc).split("drop folder twice")[1]


def test_an_entry_claimed_by_a_poller_elsewhere_is_left_to_it(northanc: Northanc, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "claims"))
    ok(northanc.nora("--admin", "dropfolder", "add", "claims", str(tmp_path), "--project", "claims"))
    with northanc.archive.sessions() as session:
        folder_id = folders.get_drop_folder(session, "claims").id
    entry = scan.Entry("exam", scan.Signature(10, 1.0, 2))
    here, there = "host-a:/srv/northanc/var", "host-b:/srv/northanc/var"

    def seen() -> scan.Remembered:
        with northanc.archive.sessions() as session:
            row = session.scalars(select(DropEntry).where(DropEntry.folder_id == folder_id)).one()
            return scan.Remembered(scan.Signature(row.size, row.mtime, row.files), row.state, row.message)

    assert step.claim(northanc.archive, folder_id, entry, None, there)
    assert not step.claim(northanc.archive, folder_id, entry, None, here)  # both saw no row: one wins
    claimed = seen()
    assert scan.decide(entry, True, claimed, DropAction.MOVE, here) is scan.Step.NOTHING  # being imported there
    # The same poller after a restart (it holds the folder's lock, so the claim is a dead run's): again.
    assert scan.decide(entry, True, claimed, DropAction.MOVE, there) is scan.Step.IMPORT
    assert step.claim(northanc.archive, folder_id, entry, claimed, there)
    grown = scan.Entry("exam", scan.Signature(20, 2.0, 3))
    with northanc.archive.unit_of_work() as (session, _journal):
        step.remember(session, session.get_one(DropFolder, folder_id), entry, DropState.DONE)
    done = seen()
    assert step.claim(northanc.archive, folder_id, grown, done, here)
    assert not step.claim(northanc.archive, folder_id, grown, done, there)  # what it saw changed meanwhile
    ok(northanc.nora("--admin", "dropfolder", "remove", "claims"))


def test_a_restart_in_the_middle_of_a_folder_imports_nothing_twice(northanc: Northanc, tmp_path: Path) -> None:
    ok(northanc.nora("-c", "restart"))
    drop = tmp_path / "drop"
    drop.mkdir()
    ok(northanc.nora("--admin", "dropfolder", "add", "restart", str(drop), "--project", "restart", "--stable-seconds", "0"))
    chosen = MOSAIC_SERIES[4:12]
    for series in chosen:
        exam = drop / series.name
        exam.mkdir()
        for path in dicom_of(series):
            (exam / path.name).write_bytes(path.read_bytes())
        (exam / f"report-{series.name}.pdf").write_bytes(b"%PDF " + series.name.encode())
    service = [str(PYTHON), "-m", "nifti_archive.dropfolders.service"]
    ok(subprocess.run([*service, "start"], env=northanc.env(), capture_output=True, text=True, timeout=180, check=False))
    try:
        wait_until(lambda: names(drop / "done"), 120, "the first entry in done/", interval=0.02)
        os.kill(int(pid_file(northanc.settings).read_text()), signal.SIGKILL)
        finished_before = names(drop / "done")
        assert len(finished_before) < len(chosen), "the poller finished before it could be stopped in the middle"
        wait_until(lambda: subprocess.run([*service, "status"], env=northanc.env(), capture_output=True, check=False)
                   .returncode == 1, 30, "the poller to be gone")
        ok(subprocess.run([*service, "start"], env=northanc.env(), capture_output=True, text=True, timeout=180, check=False))
        assert f"drop folder poller: running (pid {pid_file(northanc.settings).read_text()}); last pass" in status(northanc)
        wait_until(lambda: len(names(drop / "done")) == len(chosen), 120, "every entry in done/", interval=0.2)
    finally:
        subprocess.run([*service, "stop"], env=northanc.env(), capture_output=True, check=False, timeout=180)
    done = names(drop / "done")
    assert {name for name in done if not name.endswith(scan.NOTE_SUFFIX)} == {s.name for s in chosen}  # no exam~2
    assert names(drop) == {"done"}
    extras = sorted(path for _study, path in archive_files(northanc, "restart") if path.startswith("extra/"))
    assert extras == sorted(f"extra/report-{s.name}.pdf" for s in chosen)
    assert len(converted(northanc, "restart", len(chosen))) == len(chosen)
    assert f"importing=0 done={len(chosen)} failed=0" in status(northanc)
