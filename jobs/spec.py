"""Batch and job specifications in JSON, validated with errors that name the field.

A batch is an ordered list of jobs run for every selected study (``"level": "study"``) or
subject (``"level": "subject"``), or once over all of them (``"level": "project"``, for jobs
that learn from them all: ``train``)::

    {"name": "t1 stats", "level": "study",
     "jobs": [{"job": "bash",
               "script": "fslstats \\"$f1\\" -M > \\"$o1\\"",
               "args": {"f1": {"type": "FILE", "value": "t1*/s*.nii.gz"},
                        "o1": {"type": "OUT", "value": "stats/t1_mean.txt TAG(stats)"}}}],
     "resources": {"queue": "DPXproc", "cpus": 1, "memory_mb": 2000, "time_minutes": 60, "network": false}}

Argument names follow NORA's generic jobs: ``f1..f9`` FILE, ``o1..o9`` OUT, ``p1..p9``
PATHOUT, ``s1..s9`` STRING, ``n1..n9`` NUMERIC, and here also ``b1..b9`` LOGICAL and
``c1..c9`` OPTION. FILE, OUT and PATHOUT may name another study of the subject at subject
level with ``"study"``: ``first`` or ``last`` by date, ``tag:NAME`` or ``desc:PATTERN``; at
either level, ``analysis:NAME`` names the project's analysis (``ANALYSIS#NAME``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from jobs.argument_types import ARG_NAME, PREFIX, SCRIPT_REFERENCE, ArgType
from jobs.catalogue import CATALOGUE, SEGTRAIN, ArgDefinition, JobDefinition
from nifti_archive.errors import ArchiveError, PatternError
from nifti_archive.layout import analysis_name_problem, check_relative_path
from nifti_archive.query.patterns import parse_file_pattern, parse_value_pattern


class SpecError(ArchiveError):
    """A batch or job specification that cannot run; the message starts with the field's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


GENERIC_JOBS = frozenset(name for name, definition in CATALOGUE.items() if definition.script)
# The predefined jobs of jobs/library.py: the composer's, and the training job ``nora --model_train``
# composes itself (it needs a model version reserved for it).
PREDEFINED_JOBS = frozenset(CATALOGUE) - GENERIC_JOBS | {SEGTRAIN}
TAG_SUFFIX = re.compile(r"^(?P<path>.*?)\s+TAG\((?P<tag>[\w.+-]{1,64})\)\s*$")
MAX_SCRIPT = 100_000


class Level(Enum):
    STUDY = "study"
    SUBJECT = "subject"
    # One run over every selected study, for the jobs that learn from them all (train); their
    # FILE arguments name a file in each study, their outputs go into an analysis.
    PROJECT = "project"

    @classmethod
    def of(cls, document: object) -> Level:
        """The level a batch document names, study where it names none it could (validation
        reports the document's problems; this only says how to resolve its arguments)."""
        named = document.get("level") if isinstance(document, dict) else None
        return next((level for level in cls if level.value == named), cls.STUDY)


class SelectorKind(Enum):
    """How an argument chooses its study among the subject's."""

    # The batch's own study (study-level batches; the default).
    SAME = "same"
    # The earliest or the latest by study date.
    FIRST = "first"
    LAST = "last"
    # The one study with a tag matching the pattern (``tag:NAME``).
    TAG = "tag"
    # The one study whose description matches the pattern (``desc:PATTERN``).
    DESC = "desc"
    # The project's analysis of that name (``analysis:NAME``): results spanning studies.
    ANALYSIS = "analysis"


# The kinds written alone; the others carry a pattern after a colon.
_BARE_SELECTORS = (SelectorKind.SAME, SelectorKind.FIRST, SelectorKind.LAST)


@dataclass(frozen=True)
class StudySelector:
    """Which study of the subject an argument refers to: the batch's own study, or one chosen."""

    kind: SelectorKind
    value: str = ""

    @classmethod
    def parse(cls, text: str | None, field: str) -> StudySelector:
        if not text:
            return cls(SelectorKind.SAME)
        bare = {kind.value: kind for kind in _BARE_SELECTORS}
        if text in bare:
            return cls(bare[text])
        prefix, _, value = text.partition(":")
        patterned = {kind.value: kind for kind in SelectorKind if kind not in _BARE_SELECTORS}
        if prefix == SelectorKind.ANALYSIS.value:
            problem = analysis_name_problem(value)
            if problem:
                raise SpecError(field, f"invalid analysis name {value!r}: {problem}")
            return cls(SelectorKind.ANALYSIS, value)
        if prefix in patterned and value:
            try:
                parse_value_pattern(value)
            except PatternError as exc:
                raise SpecError(field, str(exc)) from exc
            return cls(patterned[prefix], value)
        raise SpecError(field, f"unknown study selector {text!r}; use first, last, tag:NAME, desc:PATTERN or analysis:NAME")


@dataclass(frozen=True)
class Argument:
    name: str
    type: ArgType
    value: Any
    study: StudySelector = StudySelector(SelectorKind.SAME)
    tag: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    job: str
    script: str
    args: tuple[Argument, ...]

    def arg(self, name: str) -> Argument:
        return next(a for a in self.args if a.name == name)


@dataclass(frozen=True)
class Resources:
    queue: str | None = None
    cpus: int = 1
    memory_mb: int = 2000
    time_minutes: float = 60
    # Whether the jobs need the network; they get it only where their project allows it.
    network: bool = False


@dataclass(frozen=True)
class Batch:
    name: str
    level: Level
    jobs: tuple[Job, ...]
    resources: Resources

    def analyses(self) -> set[str]:
        """The names of the analyses its arguments read or write."""
        return {a.study.value for job in self.jobs for a in job.args if a.study.kind is SelectorKind.ANALYSIS}


def _require(document: dict[str, Any], key: str, field: str, kind: type) -> Any:
    if key not in document:
        raise SpecError(f"{field}.{key}" if field else key, "is required")
    value = document[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SpecError(f"{field}.{key}" if field else key, f"must be {kind.__name__}, not {type(value).__name__}")
    return value


def _unknown_keys(document: dict[str, Any], allowed: set[str], field: str) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise SpecError(field or "batch", f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _value(arg_type: ArgType, raw: Any, field: str, choices: tuple[str, ...]) -> tuple[Any, str | None]:
    """The checked value of an argument, and the tag of an OUT written as ``path TAG(tag)``."""
    if arg_type is ArgType.NUMERIC:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise SpecError(field, f"NUMERIC needs a finite number, not {raw!r}")
        return raw, None
    if arg_type is ArgType.LOGICAL:
        if not isinstance(raw, bool):
            raise SpecError(field, f"LOGICAL needs true or false, not {raw!r}")
        return raw, None
    if not isinstance(raw, str):
        raise SpecError(field, f"{arg_type.value} needs a string, not {type(raw).__name__}")
    try:
        if arg_type is ArgType.FILE:
            parse_file_pattern(raw)
        elif arg_type in (ArgType.OUT, ArgType.PATHOUT):
            tagged = TAG_SUFFIX.match(raw)
            path, tag = (tagged["path"], tagged["tag"]) if tagged else (raw.strip(), None)
            if tag is not None and arg_type is ArgType.PATHOUT:
                raise SpecError(field, "only OUT files can be tagged")
            return check_relative_path(path.rstrip("/") if arg_type is ArgType.PATHOUT else path), tag
        elif arg_type is ArgType.OPTION and raw not in choices:
            raise SpecError(field, f"{raw!r} is not one of the options {list(choices)}")
    except ArchiveError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(field, str(exc)) from exc
    return raw, None


def _argument(name: str, document: Any, field: str, level: Level, definition: ArgDefinition | None = None) -> Argument:
    """One argument; ``definition`` is the predefined job's, whose options are fixed."""
    if not ARG_NAME.fullmatch(name):
        raise SpecError(field, "argument names are f1..f9, o1..o9, p1..p9, s1..s9, n1..n9, b1..b9 or c1..c9")
    if not isinstance(document, dict):
        raise SpecError(field, "must be an object with type and value")
    _unknown_keys(document, {"type", "value", "study", "options"}, field)
    type_text = _require(document, "type", field, str)
    try:
        arg_type = ArgType(type_text)
    except ValueError:
        raise SpecError(f"{field}.type", f"unknown argument type {type_text!r}; known: {[t.value for t in ArgType]}") from None
    if PREFIX[arg_type] != name[0]:
        raise SpecError(field, f"a {arg_type.value} argument is named {PREFIX[arg_type]}1..{PREFIX[arg_type]}9")
    choices: tuple[str, ...] = ()
    if arg_type is ArgType.OPTION and definition is not None:
        choices = definition.options
        if document.get("options", list(choices)) != list(choices):
            raise SpecError(f"{field}.options", f"are fixed for this job: {list(choices)}")
    elif arg_type is ArgType.OPTION:
        options = _require(document, "options", field, list)
        if not options or not all(isinstance(o, str) for o in options):
            raise SpecError(f"{field}.options", "must be a non-empty list of strings")
        choices = tuple(options)
    if "value" not in document:
        raise SpecError(f"{field}.value", "is required")
    value, tag = _value(arg_type, document["value"], f"{field}.value", choices)
    study = StudySelector.parse(document.get("study"), f"{field}.study")
    if study.kind is not SelectorKind.SAME and arg_type not in (ArgType.FILE, ArgType.OUT, ArgType.PATHOUT):
        raise SpecError(f"{field}.study", "only FILE, OUT and PATHOUT arguments choose a study")
    if study.kind not in (SelectorKind.SAME, SelectorKind.ANALYSIS) and level is not Level.SUBJECT:
        raise SpecError(f"{field}.study", "only subject-level batches choose among the subject's studies (analysis:NAME is open to all)")
    if level is Level.PROJECT and arg_type in (ArgType.OUT, ArgType.PATHOUT) and study.kind is not SelectorKind.ANALYSIS:
        raise SpecError(f"{field}.study", "a project-level run writes into an analysis: give analysis:NAME")
    return Argument(name, arg_type, value, study, tag, choices)


def parse_argument(job: str, name: str, document: Any, field: str, level: Level) -> Argument:
    """One argument of a ``job``, checked as parse_batch checks it."""
    definition = CATALOGUE.get(job)
    return _argument(name, document, field, level, definition.arg(name) if definition else None)


def _check_predefined_args(definition: JobDefinition, args: dict[str, Any], field: str) -> None:
    known = [a.name for a in definition.args]
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise SpecError(f"{field}.args.{unknown[0]}", f"{definition.name} takes {', '.join(known)}; not {', '.join(unknown)}")
    for argument in definition.args:
        if argument.required and argument.name not in args:
            raise SpecError(f"{field}.args.{argument.name}", f"is required: {argument.help}")


def _job(document: Any, field: str, level: Level) -> Job:
    if not isinstance(document, dict):
        raise SpecError(field, "must be an object")
    _unknown_keys(document, {"job", "script", "args"}, field)
    kind = _require(document, "job", field, str)
    args_document = document.get("args", {})
    if not isinstance(args_document, dict):
        raise SpecError(f"{field}.args", "must be an object of named arguments")
    args = tuple(parse_argument(kind, name, spec, f"{field}.args.{name}", level) for name, spec in sorted(args_document.items()))
    definition = CATALOGUE.get(kind)
    script = ""
    if kind in GENERIC_JOBS:
        script = _require(document, "script", field, str)
        if not script.strip() or len(script) > MAX_SCRIPT:
            raise SpecError(f"{field}.script", f"must be a non-empty script of at most {MAX_SCRIPT} characters")
        missing = sorted(set(SCRIPT_REFERENCE.findall(script)) - {a.name for a in args})
        if missing:
            raise SpecError(f"{field}.script", f"uses ${', $'.join(missing)} but args does not define them")
    elif kind not in PREDEFINED_JOBS:
        known = sorted(GENERIC_JOBS | PREDEFINED_JOBS)
        raise SpecError(f"{field}.job", f"unknown job {kind!r}; known: {', '.join(known)}")
    elif "script" in document:
        raise SpecError(f"{field}.script", f"only generic jobs ({', '.join(sorted(GENERIC_JOBS))}) take a script")
    if definition is not None and not definition.script:
        _check_predefined_args(definition, args_document, field)
    collective = definition is not None and definition.collective
    if collective != (level is Level.PROJECT):
        raise SpecError(f"{field}.job", f"{kind} runs once over all selected studies: the batch's level is project"
                        if collective else f"a project-level batch runs only jobs that learn from all its studies, not {kind}")
    return Job(kind, script, args)


def _resources(document: Any) -> Resources:
    if document is None:
        return Resources()
    if not isinstance(document, dict):
        raise SpecError("resources", "must be an object")
    _unknown_keys(document, {"queue", "cpus", "memory_mb", "time_minutes", "network"}, "resources")
    values: dict[str, Any] = {}
    for key in ("cpus", "memory_mb"):
        if key in document:
            value = _require(document, key, "resources", int)
            if value < 1:
                raise SpecError(f"resources.{key}", "must be at least 1")
            values[key] = value
    if "time_minutes" in document:
        minutes = document["time_minutes"]
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= 60 * 24 * 30:
            raise SpecError("resources.time_minutes", "must be a number of minutes above 0 and at most 30 days")
        values["time_minutes"] = minutes
    if "queue" in document:
        values["queue"] = _require(document, "queue", "resources", str)
    if "network" in document:
        values["network"] = _require(document, "network", "resources", bool)
    return Resources(**values)


def parse_batch(document: Any) -> Batch:
    if not isinstance(document, dict):
        raise SpecError("batch", "must be a JSON object")
    _unknown_keys(document, {"name", "level", "jobs", "resources"}, "")
    name = document.get("name", "batch")
    if not isinstance(name, str):
        raise SpecError("name", "must be a string")
    level_text = document.get("level", "study")
    try:
        level = Level(level_text)
    except ValueError:
        raise SpecError("level", f"must be 'study', 'subject' or 'project', not {level_text!r}") from None
    jobs = _require(document, "jobs", "", list)
    if not jobs:
        raise SpecError("jobs", "needs at least one job")
    return Batch(
        name,
        level,
        tuple(_job(job, f"jobs[{index}]", level) for index, job in enumerate(jobs)),
        _resources(document.get("resources")),
    )
