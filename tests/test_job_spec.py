"""Batch specifications and argument resolution, without servers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from jobs.argument_types import PREFIX, ArgType
from jobs.arguments import ResolutionError, StudyListing, resolve
from jobs.catalogue import CATALOGUE, Category
from jobs.spec import Level, SpecError, parse_batch


def batch(*jobs: dict, level: str = "study", **extra: object) -> dict:
    return {"name": "b", "level": level, "jobs": list(jobs), **extra}


BASH = {
    "job": "bash",
    "script": 'fslstats "$f1" -M > "$o1"; echo "$s1 $n1 $b1 $c1"',
    "args": {
        "f1": {"type": "FILE", "value": "t1*/s0__.nii.gz"},
        "o1": {"type": "OUT", "value": "stats/t1_mean.txt TAG(stats)"},
        "s1": {"type": "STRING", "value": "hello world; rm -rf /"},
        "n1": {"type": "NUMERIC", "value": 2.5},
        "b1": {"type": "LOGICAL", "value": True},
        "c1": {"type": "OPTION", "value": "mask", "options": ["mask", "map"]},
    },
}


TRAIN = {"job": "train", "args": {
    "f1": {"type": "FILE", "value": "t1/*.nii.gz"}, "f2": {"type": "FILE", "value": "labels/liver.nii.gz"},
    "s1": {"type": "STRING", "value": "liver"}, "n1": {"type": "NUMERIC", "value": 3},
    "p1": {"type": "PATHOUT", "value": "liver", "study": "analysis:models"},
}}


def test_a_complete_batch_parses() -> None:
    parsed = parse_batch(batch(BASH, resources={"queue": "DPXproc", "cpus": 2, "memory_mb": 4000, "time_minutes": 30}))
    assert parsed.level is Level.STUDY and parsed.resources.cpus == 2 and parsed.resources.queue == "DPXproc"
    job = parsed.jobs[0]
    assert [a.name for a in job.args] == ["b1", "c1", "f1", "n1", "o1", "s1"]
    out = job.arg("o1")
    assert out.type is ArgType.OUT and out.value == "stats/t1_mean.txt" and out.tag == "stats"


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        ([], "batch", "JSON object"),
        (batch(), "jobs", "at least one job"),
        (batch(BASH, level="patient"), "level", "'study', 'subject' or 'project'"),
        (batch(BASH, colour="red"), "batch", "unknown key(s) ['colour']"),
        (batch({"job": "bash"}), "jobs[0].script", "is required"),
        (batch({"job": "bash", "script": "echo $f1"}), "jobs[0].script", "uses $f1 but args does not define them"),
        (batch({"job": "stats", "args": {"f1": {"type": "IMAGE", "value": "x"}}}), "jobs[0].args.f1.type", "unknown argument type 'IMAGE'"),
        (batch({"job": "stats", "args": {"o1": {"type": "FILE", "value": "x"}}}), "jobs[0].args.o1", "named f1..f9"),
        (batch({"job": "stats", "args": {"x1": {"type": "FILE", "value": "x"}}}), "jobs[0].args.x1", "argument names"),
        (batch({"job": "stats", "args": {"o1": {"type": "OUT", "value": "../escape.nii"}}}), "jobs[0].args.o1.value", "'..'"),
        (batch({"job": "stats", "args": {"o1": {"type": "OUT", "value": "/abs.nii"}}}), "jobs[0].args.o1.value", "relative"),
        (batch({"job": "stats", "args": {"f1": {"type": "FILE", "value": "../x"}}}), "jobs[0].args.f1.value", "'..'"),
        (batch({"job": "stats", "args": {"n1": {"type": "NUMERIC", "value": "3"}}}), "jobs[0].args.n1.value", "finite number"),
        (batch({"job": "stats", "args": {"b1": {"type": "LOGICAL", "value": 1}}}), "jobs[0].args.b1.value", "true or false"),
        (batch({"job": "stats", "args": {"c1": {"type": "OPTION", "value": "x", "options": ["a"]}}}),
         "jobs[0].args.c1.value", "not one of"),
        (batch({"job": "stats", "args": {"p1": {"type": "PATHOUT", "value": "d TAG(x)"}}}), "jobs[0].args.p1.value", "only OUT"),
        (batch({"job": "stats", "script": "x"}), "jobs[0].script", "only generic jobs"),
        (batch({"job": "stats", "args": {"f1": {"type": "FILE", "value": "x", "study": "last"}}}),
         "jobs[0].args.f1.study", "subject-level"),
        (batch({"job": "stats", "args": {"f1": {"type": "FILE", "value": "x", "study": "newest"}}}, level="subject"),
         "jobs[0].args.f1.study", "unknown study selector"),
        (batch({"job": "segment_everything"}), "jobs[0].job", "unknown job 'segment_everything'"),
        (batch(TRAIN), "jobs[0].job", "train runs once over all selected studies: the batch's level is project"),
        (batch({"job": "bash", "script": 'cat "$f1"', "args": {"f1": {"type": "FILE", "value": "x"}}}, level="project"),
         "jobs[0].job", "a project-level batch runs only jobs that learn from all its studies"),
        (batch({**TRAIN, "args": {**TRAIN["args"], "p1": {"type": "PATHOUT", "value": "model"}}}, level="project"),
         "jobs[0].args.p1.study", "writes into an analysis"),
        (batch({"job": "stats", "args": {"f1": {"type": "FILE", "value": "x", "study": "analysis:../x"}}}),
         "jobs[0].args.f1.study", "invalid analysis name '../x'"),
        (batch({"job": "bash", "script": "echo $s1", "args": {"s1": {"type": "STRING", "value": "x", "study": "analysis:a"}}}),
         "jobs[0].args.s1.study", "only FILE, OUT and PATHOUT"),
        (batch({"job": "stats", "args": {"f1": {"type": "FILE", "value": "t1/*.nii"}}}), "jobs[0].args.o1", "is required: the JSON"),
        (batch({"job": "reorient", "args": {"f1": {"type": "FILE", "value": "t1/*.nii"}, "o1": {"type": "OUT", "value": "r.nii"},
                                            "n1": {"type": "NUMERIC", "value": 2}}}),
         "jobs[0].args.n1", "reorient takes f1, o1; not n1"),
        (batch({"job": "resample", "args": {"f1": {"type": "FILE", "value": "t1/*.nii"}, "o1": {"type": "OUT", "value": "r.nii"},
                                            "n1": {"type": "NUMERIC", "value": 2},
                                            "c1": {"type": "OPTION", "value": "cubic", "options": ["cubic"]}}}),
         "jobs[0].args.c1.options", "fixed for this job: ['linear', 'nearest']"),
        (batch(BASH, resources={"cpus": 0}), "resources.cpus", "at least 1"),
        (batch(BASH, resources={"cpus": True}), "resources.cpus", "must be int"),
        (batch(BASH, resources={"time_minutes": 0}), "resources.time_minutes", "above 0"),
    ],
)
def test_bad_specs_name_the_field(document: object, field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_batch(document)
    assert info.value.field == field
    assert message in str(info.value)


def study(study_id: str, when: date | None, description: str = "", tags: set[str] | None = None,
          files: tuple[str, ...] = ()) -> StudyListing:
    return StudyListing(study_id, when, description, frozenset(tags or ()), files, Path("/archive/p/S1") / study_id)


BASELINE = study("base", date(2023, 5, 1), "MRI brain", {"baseline"}, ("t1_mprage/s002.nii.gz", "t1_mprage/s002.json"))
FOLLOWUP = study("fu", date(2024, 5, 1), "MRI brain follow-up", set(), ("t1_mprage/s003.nii.gz", "flair/s004.nii.gz"))
UNDATED = study("x", None, "CT head", set(), ("ct/s001.nii.gz",))


def test_study_level_resolution_gives_typed_values_and_staged_outputs(tmp_path: Path) -> None:
    job = parse_batch(batch(BASH)).jobs[0]
    resolved = resolve(job, BASELINE, [BASELINE], tmp_path)
    assert resolved.values == {
        "f1": "/archive/p/S1/base/t1_mprage/s002.nii.gz",
        "o1": str(tmp_path / "base/stats/t1_mean.txt"),
        "s1": "hello world; rm -rf /",
        "n1": "2.5",
        "b1": "true",
        "c1": "mask",
    }
    [output] = resolved.outputs
    assert (output.study, output.path, output.tag, output.is_folder) == ("base", "stats/t1_mean.txt", "stats", False)
    assert resolved.argv()[0] == "true"  # b1 sorts first: positional order is by name


def test_subject_level_selectors(tmp_path: Path) -> None:
    spec = batch({
        "job": "python",
        "script": "print($f1, $f2, $f3, $p1)",
        "args": {
            "f1": {"type": "FILE", "value": "t1*/*.nii.gz", "study": "first"},
            "f2": {"type": "FILE", "value": "t1*/*.nii.gz", "study": "last"},
            "f3": {"type": "FILE", "value": "*.nii.gz", "study": "tag:baseline"},
            "p1": {"type": "PATHOUT", "value": "longitudinal/", "study": "desc:*follow"},
        },
    }, level="subject")
    job = parse_batch(spec).jobs[0]
    resolved = resolve(job, None, [FOLLOWUP, UNDATED, BASELINE], tmp_path)
    assert resolved.values["f1"].endswith("base/t1_mprage/s002.nii.gz")
    assert resolved.values["f2"].endswith("fu/t1_mprage/s003.nii.gz")
    assert resolved.values["f3"].endswith("base/t1_mprage/s002.nii.gz")
    assert resolved.values["p1"] == str(tmp_path / "fu/longitudinal")
    assert resolved.outputs[0].is_folder


def test_unresolvable_arguments_say_why(tmp_path: Path) -> None:
    def job_with(**arg: object):  # type: ignore[no-untyped-def]
        level = "subject" if "study" in arg else "study"
        return parse_batch(batch({"job": "bash", "script": 'cat "$f1"', "args": {"f1": {"type": "FILE", **arg}}}, level=level)).jobs[0]

    with pytest.raises(ResolutionError, match="matches no file in study fu"):
        resolve(job_with(value="dwi*/*.nii.gz"), FOLLOWUP, [FOLLOWUP], tmp_path)
    with pytest.raises(ResolutionError, match="matches 2 files"):
        resolve(job_with(value="*.nii.gz"), FOLLOWUP, [FOLLOWUP], tmp_path)
    with pytest.raises(ResolutionError, match="must name one study, found none"):
        resolve(job_with(value="*", study="tag:control"), None, [BASELINE, FOLLOWUP], tmp_path)
    with pytest.raises(ResolutionError, match="found base, fu"):
        resolve(job_with(value="*", study="desc:mri"), None, [BASELINE, FOLLOWUP], tmp_path)
    with pytest.raises(ResolutionError, match="no study of the subject has a date"):
        resolve(job_with(value="*", study="last"), None, [UNDATED], tmp_path)
    with pytest.raises(ResolutionError, match="needs a study selector"):
        resolve(job_with(value="x", study=None), None, [BASELINE], tmp_path)


def test_every_predefined_job_composed_from_its_defaults_parses() -> None:
    """What the composer fills in for a predefined job is a valid spec, once the rows without a default are given."""
    for definition in CATALOGUE.values():
        assert (definition.category is Category.GENERIC) == definition.script
        args: dict[str, dict[str, object]] = {}
        for argument in definition.args:
            assert argument.name[0] == PREFIX[argument.type], argument
            if argument.type is ArgType.OPTION:
                assert argument.default in argument.options
            # The rows a user must fill: FILE patterns, and STRINGs without a default (a model's name).
            value = argument.default if argument.default is not None else {ArgType.FILE: "t1*/*.nii.gz"}.get(argument.type, "x")
            if argument.required:
                args[argument.name] = {"type": argument.type.value, "value": value}
                if definition.collective and argument.type in (ArgType.OUT, ArgType.PATHOUT):
                    args[argument.name]["study"] = "analysis:models"
        job = {"job": definition.name, "args": args, **({"script": "true"} if definition.script else {})}
        [parsed] = parse_batch(batch(job, level="project" if definition.collective else "study")).jobs
        assert {a.name for a in parsed.args} == {a.name for a in definition.args if a.required}
