"""Validating a batch before it is launched: the spec's problems, then, for every study (or subject)
it would run on, which file each argument would get or why it gets none.

Pure: the spec is a document, the studies are listings (jobs/listings.py reads them). It resolves as
the runner does (jobs/arguments.py), a pipeline's earlier outputs included, so what it says is what
a launch would do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jobs.argument_types import ArgType
from jobs.arguments import Analyses, ResolutionError, StudyListing, Written, choose_study, matching_file
from jobs.spec import Argument, Batch, Level, SpecError, parse_argument, parse_batch
from nifti_archive.layout import ANALYSIS_PREFIX

_PLACED = (ArgType.FILE, ArgType.OUT, ArgType.PATHOUT)
# Where an earlier job's output would be staged: validation needs only its name, never the file.
_NOT_YET_WRITTEN = Path("/nonexistent")


@dataclass(frozen=True)
class ArgumentCheck:
    name: str
    type: ArgType
    # The study the argument lands in, and the path below it: the file matched, or the output named.
    study: str | None
    path: str | None
    error: str | None


@dataclass(frozen=True)
class JobCheck:
    index: int
    job: str
    args: tuple[ArgumentCheck, ...]


@dataclass(frozen=True)
class TargetCheck:
    subject: str
    # The batch's study; None at subject level, where every argument chooses its own.
    study: str | None
    jobs: tuple[JobCheck, ...]

    @property
    def ok(self) -> bool:
        return all(a.error is None for job in self.jobs for a in job.args)


@dataclass(frozen=True)
class Target:
    subject: str
    own: StudyListing | None
    studies: list[StudyListing]
    analyses: Analyses


def spec_problems(document: Any) -> list[SpecError]:
    """Every problem of the spec that can be told apart: the first the parser meets, then each
    argument of each job on its own, so that every empty row is named at once."""
    try:
        parse_batch(document)
        return []
    except SpecError as first:
        problems = [first]
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, list):
        return problems
    level = Level.of(document)
    for index, job in enumerate(jobs):
        args = job.get("args") if isinstance(job, dict) else None
        if not isinstance(args, dict):
            continue
        for name, argument in sorted(args.items()):
            try:
                parse_argument(str(job.get("job", "")), name, argument, f"jobs[{index}].args.{name}", level)
            except SpecError as problem:
                if not any(problem.field.startswith(known.field) or known.field.startswith(problem.field) for known in problems):
                    problems.append(problem)
    return problems


def _place(argument: Argument, target: Target, written: Written) -> tuple[StudyListing, str]:
    """The study and the path an argument gets; ResolutionError says why it gets none."""
    study = choose_study(argument.study, target.own, target.studies, target.analyses)
    if argument.type is ArgType.FILE:
        return study, matching_file(argument, study, written)
    return study, str(argument.value)


def _named(study: StudyListing) -> str:
    """A study as the report names it: its id, or the analysis's subject id for an analysis."""
    return study.subject if study.subject.startswith(ANALYSIS_PREFIX) else study.study_id


def check_target(batch: Batch, target: Target) -> TargetCheck:
    written: dict[tuple[str, str, str], Path] = {}
    jobs = []
    for index, job in enumerate(batch.jobs):
        checks = []
        for argument in job.args:
            if argument.type not in _PLACED:
                continue
            try:
                study, path = _place(argument, target, written)
            except ResolutionError as problem:
                checks.append(ArgumentCheck(argument.name, argument.type, None, None, str(problem)))
                continue
            checks.append(ArgumentCheck(argument.name, argument.type, _named(study), path, None))
            if argument.type is ArgType.OUT:
                # What a job writes is a file the next jobs may name, as in a run.
                written[(*study.key, path)] = _NOT_YET_WRITTEN
        jobs.append(JobCheck(index, job.job, tuple(checks)))
    return TargetCheck(target.subject, target.own.study_id if target.own else None, tuple(jobs))


def check_targets(batch: Batch, targets: list[Target]) -> list[TargetCheck]:
    """Every target's check; an output into an analysis that several targets would write is an
    error on each of them: their runs would publish over each other, in no set order (at project
    level the targets are the studies of one run)."""
    checks = [check_target(batch, target) for target in targets]
    if batch.level is Level.PROJECT:
        return checks  # one run over them all
    writers = Counter(
        (a.study, a.path) for check in checks for job in check.jobs for a in job.args
        if a.type in (ArgType.OUT, ArgType.PATHOUT) and a.study and a.study.startswith(ANALYSIS_PREFIX)
    )
    shared: dict[tuple[str | None, str | None], int] = {place: count for place, count in writers.items() if count > 1}
    if not shared:
        return checks
    return [replace(check, jobs=tuple(replace(job, args=tuple(
        replace(a, error=f"{a.name}: {shared[(a.study, a.path)]} runs would write {a.study}/{a.path}; an analysis's file"
                         " is written by one run (launch it on one study, or name the path per study in a bash job)")
        if (a.study, a.path) in shared else a for a in job.args)) for job in check.jobs)) for check in checks]
