"""Batches on the local executor, end to end through `nora --launch`."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from nifti_archive.archive import Archive
from nifti_archive.catalog.tags import TagLevel, add_tags
from nifti_archive.models import JobRun, JobState, Study, Subject
from tests.conftest import Nora
from tests.polling import wait_until

COUNT_BYTES = {
    "name": "size",
    "jobs": [{
        "job": "bash",
        "script": 'test -e "$(dirname "$(dirname "$f1")")/ok.flag" || { echo "no flag for $f1" >&2; exit 3; }\n'
                  'wc -c < "$f1" > "$o1"',
        "args": {"f1": {"type": "FILE", "value": "t1/*.nii"}, "o1": {"type": "OUT", "value": "stats/size.txt TAG(stats)"}},
    }],
}


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def project(nora: Nora, archive: Archive, settings) -> Path:  # type: ignore[no-untyped-def]
    ok(nora("-c", "demo"))
    root = settings.archive_root / "demo"
    for subject, flag in (("P1", True), ("P2", False), ("P3", True)):
        for study in ("S1",):
            folder = root / subject / study
            (folder / "t1").mkdir(parents=True)
            (folder / "t1" / "s002.nii").write_text(f"image of {subject}")
            if flag:
                (folder / "ok.flag").write_text("")
            ok(nora("-p", "demo", "-a", str(folder / "t1" / "s002.nii")))
    return root


def runs(archive: Archive) -> dict[str, JobRun]:
    with archive.sessions() as session:
        found = session.execute(select(JobRun, Study.study_id).join(Study, Study.id == JobRun.study_id)).all()
        return {f"{run.subject_id}#{study}": run for run, study in found}


def test_a_failing_study_leaves_the_others_done_and_can_be_rerun(nora: Nora, archive: Archive, project: Path) -> None:
    out = ok(nora("-p", "demo", "--launch", json.dumps(COUNT_BYTES), "--wait", "120"))
    assert "3 run(s) on local" in out and "2 run(s) done or cancelled, 1 in error" in out
    assert (project / "P1/S1/stats/size.txt").read_text().strip() == str(len("image of P1"))
    assert not (project / "P2/S1/stats").exists()  # nothing half-written for the failed study
    jobs = ok(nora("-p", "demo", "--jobs")).splitlines()
    [failed] = [line for line in jobs if "\terror\t" in line]
    assert "P2#S1" in failed and "exited with status 3" in failed
    log_path = failed.split("\t")[4]
    assert "no flag for" in Path(log_path).read_text()
    assert ok(nora("-p", "demo", "-s", "* & JOB:e")).splitlines() == [str(project / "P2/S1/t1/s002.nii")]
    assert len(ok(nora("-p", "demo", "-s", "* & FTAG:stats")).splitlines()) == 2

    result = nora("-p", "demo", "--rerun", "--wait", "60", "--throwerror")
    assert result.returncode == 2 and "ended in error" in result.stderr
    (project / "P2/S1/ok.flag").write_text("")
    assert "queued 1 errored run(s) again" in ok(nora("-p", "demo", "--rerun", "--wait", "60", "--throwerror"))
    assert (project / "P2/S1/stats/size.txt").exists()
    assert ok(nora("-p", "demo", "-s", "* & JOB:e")) == ""


def test_subject_level_batch_with_study_selectors(nora: Nora, archive: Archive, project: Path) -> None:
    second = project / "P1/S2/t1"
    second.mkdir(parents=True)
    (second / "s002.nii").write_text("later image")
    ok(nora("-p", "demo", "-a", str(second / "s002.nii")))
    with archive.unit_of_work() as (session, _journal):
        for study in session.scalars(select(Study)):
            study.study_date = date(2024, 1, 1) if study.study_id == "S1" else date(2025, 1, 1)
    batch = {
        "level": "subject",
        "jobs": [{
            "job": "python",
            "script": "import os\n"
                      "open(os.environ['o1'], 'w').write(open(os.environ['f1']).read() + ' -> ' + open(os.environ['f2']).read())",
            "args": {
                "f1": {"type": "FILE", "value": "t1/*.nii", "study": "first"},
                "f2": {"type": "FILE", "value": "t1/*.nii", "study": "last"},
                "o1": {"type": "OUT", "value": "change.txt", "study": "last"},
            },
        }],
    }
    out = ok(nora("-p", "demo", "--launch", json.dumps(batch), "--wait", "60"))
    assert "3 run(s) on local" in out and "3 run(s) done" in out  # one run per subject
    assert (project / "P1/S2/change.txt").read_text() == "image of P1 -> later image"
    assert (project / "P2/S1/change.txt").read_text() == "image of P2 -> image of P2"


def test_cancel_stops_a_running_job(nora: Nora, archive: Archive, project: Path) -> None:
    sleeper = {"jobs": [{"job": "bash", "script": 'sleep 60; echo done > "$o1"',
                         "args": {"o1": {"type": "OUT", "value": "slept.txt"}}}]}
    ok(nora("-p", "demo", "--launch", json.dumps(sleeper), "--filter", "t1/*"))
    wait_until(lambda: any(r.state is JobState.RUNNING for r in runs(archive).values()), 60, "no run started")
    assert "cancelled 3 run(s)" in ok(nora("-p", "demo", "--cancel"))
    wait_until(lambda: all(r.finished_at for r in runs(archive).values()), 30, "cancelled runs not finished")
    assert {r.state for r in runs(archive).values()} == {JobState.CANCELLED}
    assert not list(project.rglob("slept.txt"))


def test_bad_batches_are_refused_and_unresolvable_studies_fail_alone(nora: Nora, project: Path) -> None:
    bad_type = {"jobs": [{"job": "bash", "script": "cat $f1", "args": {"f1": {"type": "IMAGE", "value": "x"}}}]}
    result = nora("-p", "demo", "--launch", json.dumps(bad_type))
    assert result.returncode == 2 and "jobs[0].args.f1.type: unknown argument type 'IMAGE'" in result.stderr
    escape = {"jobs": [{"job": "bash", "script": "touch $o1", "args": {"o1": {"type": "OUT", "value": "../../x"}}}]}
    result = nora("-p", "demo", "--launch", json.dumps(escape))
    assert result.returncode == 2 and "jobs[0].args.o1.value" in result.stderr
    result = nora("-p", "demo", "--launch", "{not json")
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    (project / "P3/S1/t1/s002.nii").rename(project / "P3/S1/t1/other.nii")
    ok(nora("-p", "demo", "-d", str(project / "P1/S1/t1/s002.nii")))
    missing = {"jobs": [{"job": "bash", "script": 'cp "$f1" "$o1"',
                         "args": {"f1": {"type": "FILE", "value": "t1/s002.nii"}, "o1": {"type": "OUT", "value": "copy.nii"}}}]}
    out = ok(nora("-p", "demo", "--launch", json.dumps(missing), "--wait", "60"))
    assert "1 run(s) done or cancelled, 2 in error" in out
    jobs = ok(nora("-p", "demo", "--jobs"))
    assert "matches no file in study S1" in jobs and (project / "P2/S1/copy.nii").exists()


def test_predefined_stats_job_feeds_exportmeta(nora: Nora, project: Path) -> None:
    import nibabel as nib
    import numpy as np

    image = project / "P1/S1/t1/img.nii.gz"
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 7, dtype=np.int16), np.eye(4)), image)
    ok(nora("-p", "demo", "-a", str(image)))
    batch = {"jobs": [{"job": "stats", "args": {"f1": {"type": "FILE", "value": "t1/img.nii.gz"},
                                                 "o1": {"type": "OUT", "value": "stats/t1.json TAG(stats)"}}}]}
    out = ok(nora("-p", "demo", "--launch", json.dumps(batch), "--filter", "t1/img", "--wait", "60", "--throwerror"))
    assert "1 run(s) on local" in out
    csv_text = ok(nora("-p", "demo", "--exportmeta", "P1", "stats/*.json", "--keys", "*.mean,*.voxels"))
    assert csv_text.splitlines() == ["subject,study,stats/t1.mean,stats/t1.voxels", "P1,S1,7.0,27"]


def test_a_later_job_reads_what_an_earlier_one_wrote(nora: Nora, project: Path) -> None:
    import nibabel as nib
    import numpy as np

    image = project / "P1/S1/t1/img.nii.gz"
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), flipped), image)
    ok(nora("-p", "demo", "-a", str(image)))
    pipeline = {"jobs": [
        {"job": "reorient", "args": {"f1": {"type": "FILE", "value": "t1/img.nii.gz"},
                                     "o1": {"type": "OUT", "value": "work/ras.nii.gz"}}},
        {"job": "stats", "args": {"f1": {"type": "FILE", "value": "work/ras.nii.gz"},
                                  "o1": {"type": "OUT", "value": "stats/ras.json"}}},
    ]}
    ok(nora("-p", "demo", "--launch", json.dumps(pipeline), "--filter", "t1/img", "--wait", "60", "--throwerror"))
    assert nib.aff2axcodes(nib.load(project / "P1/S1/work/ras.nii.gz").affine) == ("R", "A", "S")
    stats = json.loads((project / "P1/S1/stats/ras.json").read_text())
    assert (stats["shape"], stats["mean"]) == ([2, 3, 4], 11.5)
    listed = ok(nora("-p", "demo", "-s", "*/*.*"))
    assert "work/ras.nii.gz" in listed and "stats/ras.json" in listed


def test_predefined_roistats_job_measures_an_image_inside_an_roi_and_feeds_exportmeta(nora: Nora, project: Path) -> None:
    import nibabel as nib
    import numpy as np

    values = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(values, affine), project / "P1/S1/t1/image.nii.gz")
    mask = np.zeros((4, 4, 3), dtype=np.uint8)
    mask[1:3, 1:3, 1] = 1
    (project / "P1/S1/rois").mkdir()
    nib.save(nib.Nifti1Image(mask, affine), project / "P1/S1/rois/lesion.nii.gz")
    ok(nora("-p", "demo", "-a", str(project / "P1/S1/t1/image.nii.gz"), str(project / "P1/S1/rois/lesion.nii.gz")))
    batch = {"jobs": [{"job": "roistats", "args": {
        "f1": {"type": "FILE", "value": "t1/image.nii.gz"}, "f2": {"type": "FILE", "value": "rois/lesion.nii.gz"},
        "o1": {"type": "OUT", "value": "stats/lesion.json"}}}]}
    ok(nora("-p", "demo", "--launch", json.dumps(batch), "--filter", "t1/image", "--wait", "60", "--throwerror"))
    inside = values[mask > 0]
    csv_text = ok(nora("-p", "demo", "--exportmeta", "P1", "stats/*.json", "--keys", "*.median,*.voxels,*.volume_ml,*.area_cm2"))
    header, row = csv_text.splitlines()
    assert header == "subject,study,stats/lesion.median,stats/lesion.voxels,stats/lesion.volume_ml,stats/lesion.area_cm2"
    median, voxels, volume, area = (float(v) for v in row.split(",")[2:])
    assert (median, voxels) == (float(np.median(inside)), 4.0)
    assert volume == pytest.approx(4 * 2 * 2 * 3 / 1000) and area == pytest.approx(4 * 2 * 2 / 100)


def test_saved_batches_and_dismissed_errors(nora: Nora, project: Path) -> None:
    assert "saved batch 'size'" in ok(nora("-p", "demo", "--savebatch", "size", json.dumps(COUNT_BYTES)))
    assert ok(nora("-p", "demo", "--batches")).startswith("size\t")
    result = nora("-p", "demo", "--savebatch", "broken", '{"jobs": []}')
    assert result.returncode == 2 and "jobs: needs at least one job" in result.stderr
    assert "1 in error" in ok(nora("-p", "demo", "--launch_saved", "size", "--wait", "60"))
    assert len(ok(nora("-p", "demo", "-s", "* & JOB:e")).splitlines()) == 1
    assert "dismissed 1 errored run(s)" in ok(nora("-p", "demo", "--dismiss"))
    assert ok(nora("-p", "demo", "-s", "* & JOB:e")) == ""
    assert "\terror\t" not in ok(nora("-p", "demo", "--jobs"))
    result = nora("-p", "demo", "--launch_saved", "nope")
    assert result.returncode == 2 and "no saved batch 'nope'" in result.stderr


def test_autoexec_batch_runs_on_one_study(nora: Nora, project: Path) -> None:
    result = nora("-p", "demo", "--launch_autoexec", "P1#S1")
    assert result.returncode == 2 and "has no autoexec batch" in result.stderr
    ok(nora("-p", "demo", "--savebatch", "size", json.dumps(COUNT_BYTES)))
    assert "autoexec_batch\tsize" in ok(nora("--admin", "project", "set", "demo", "--autoexec", "size"))
    out = ok(nora("-p", "demo", "--launch_autoexec", "P3#S1", "--handle_job_result", "--wait", "60", "--throwerror"))
    assert "1 run(s) on local" in out
    done, results = out.splitlines()[-2:]
    assert done == "DONE" and [r["state"] for r in json.loads(results)] == ["done"]
    assert (project / "P3/S1/stats/size.txt").exists() and not (project / "P1/S1/stats").exists()
    result = nora("-p", "demo", "--launch_autoexec", "P9")
    assert result.returncode == 2 and "no study 'P9'" in result.stderr


def test_a_script_that_never_ends_hits_its_time_limit(nora: Nora, project: Path) -> None:
    endless = {"jobs": [{"job": "bash", "script": 'sleep 600; touch "$o1"', "args": {"o1": {"type": "OUT", "value": "never.txt"}}}],
               "resources": {"time_minutes": 0.05}}
    out = ok(nora("-p", "demo", "--launch", json.dumps(endless), "--filter", "t1/*", "--wait", "120"))
    assert "0 run(s) done or cancelled, 3 in error" in out
    assert ok(nora("-p", "demo", "--jobs")).count("exceeded its time limit of 0.05 min") == 3
    assert not list(project.rglob("never.txt"))


def test_validate_shows_each_study_s_files_and_launches_nothing(nora: Nora, archive: Archive, project: Path) -> None:
    batch = {"jobs": [{"job": "bash", "script": 'cat "$f1" > "$o1"',
                       "args": {"f1": {"type": "FILE", "value": "t1/*.nii"}, "o1": {"type": "OUT", "value": "copy.txt"}}}]}
    lines = ok(nora("-p", "demo", "--validate", json.dumps(batch))).splitlines()
    assert lines[:2] == ["P1#S1\tjobs[0].f1\tS1\tt1/s002.nii", "P1#S1\tjobs[0].o1\tS1\tcopy.txt"]
    assert lines[-1] == "3 of 3 target(s) resolve"
    batch["jobs"][0]["args"]["f1"]["value"] = "t2/*.nii"
    refused = nora("-p", "demo", "--validate", json.dumps(batch), "--filter", "t1/s002")
    assert refused.returncode == 2 and "3 target(s) failing" in refused.stderr
    assert "P2#S1\tjobs[0].f1\t\tf1: 't2/*.nii' matches no file in study S1" in refused.stdout.splitlines()
    assert runs(archive) == {}


def test_jobs_write_into_an_analysis_and_read_from_it(nora: Nora, archive: Archive, project: Path) -> None:
    ok(nora("-p", "demo", "--create_analysis", "group"))
    into = {"jobs": [{"job": "bash", "script": 'wc -c < "$f1" > "$o1"', "args": {
        "f1": {"type": "FILE", "value": "t1/*.nii"},
        "o1": {"type": "OUT", "value": "sizes/first.txt TAG(size)", "study": "analysis:group"},
    }}]}
    everything = nora("-p", "demo", "--validate", json.dumps(into))
    # Every study of the three subjects, not the analysis itself; and each would write the same file.
    assert everything.returncode == 2 and everything.stdout.splitlines()[-1] == "0 of 3 target(s) resolve"
    assert "P1#S1\tjobs[0].o1\tANALYSIS#group\to1: 3 runs would write ANALYSIS#group/sizes/first.txt" in everything.stdout
    with archive.unit_of_work() as (session, _journal):
        first = session.scalars(select(Study.id).join(Subject).where(Subject.patient_id == "P1")).one()
        add_tags(session, TagLevel.STUDY, [first], ["first"])
    assert "P1#S1\tjobs[0].o1\tANALYSIS#group\tsizes/first.txt" in ok(nora("-p", "demo", "--validate", json.dumps(into),
                                                                          "--filter", "t1/* & STAG:first"))
    ok(nora("-p", "demo", "--launch", json.dumps(into), "--filter", "t1/* & STAG:first", "--wait", "60", "--throwerror"))
    written = project / "ANALYSIS#group/analysis/sizes/first.txt"
    assert written.read_text().strip() == str(len("image of P1"))
    back = {"jobs": [{"job": "bash", "script": 'cp "$f1" "$o1"', "args": {
        "f1": {"type": "FILE", "value": "sizes/*.txt", "study": "analysis:group"},
        "o1": {"type": "OUT", "value": "from_group.txt"},
    }}]}
    ok(nora("-p", "demo", "--launch", json.dumps(back), "--filter", "t1/*", "--wait", "60", "--throwerror"))
    assert (project / "P2/S1/from_group.txt").read_text() == written.read_text()
    listed = json.loads(ok(nora("-p", "demo", "--analyses", "--json")))
    assert [(a["name"], a["files"]) for a in listed] == [("group", 1)]
    missing = nora("-p", "demo", "--validate", json.dumps({"jobs": [{"job": "bash", "script": 'cat "$f1"', "args": {
        "f1": {"type": "FILE", "value": "*", "study": "analysis:nowhere"}}}]}))
    assert missing.returncode == 2
    assert "the project has no analysis 'nowhere' (nora --create_analysis nowhere)" in missing.stdout
