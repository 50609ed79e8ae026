"""Resolving a job's arguments for one study (or subject): typed values and absolute paths.

Pure: it works on a listing of the subject's studies and their files, which the caller
reads from the index. Inputs resolve to absolute paths in the archive; outputs resolve to
paths in a staging folder (moved into the study only when the job succeeds), together with
where they go and how they are tagged. Values reach scripts as environment variables and
arguments, never pasted into a shell string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from jobs.argument_types import ArgType
from jobs.spec import Argument, Job, SelectorKind, StudySelector
from nifti_archive.errors import ArchiveError
from nifti_archive.query.patterns import parse_file_pattern, parse_value_pattern


class ResolutionError(ArchiveError):
    """An argument that cannot be resolved for this study; the run of that study fails with it."""


@dataclass(frozen=True)
class StudyListing:
    study_id: str
    study_date: date | None
    description: str
    tags: frozenset[str]
    files: tuple[str, ...]
    folder: Path
    # The study's row in the index, where it has one (validation reports it).
    pk: int | None = None
    # The id of the study's subject: the run's own, or an analysis's (ANALYSIS#NAME).
    subject: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.subject, self.study_id


@dataclass(frozen=True)
class Output:
    """An output file or folder: written at ``staged``, moved to ``subject``/``study``/``path`` on success."""

    staged: Path
    study: str
    path: str
    tag: str | None
    is_folder: bool
    subject: str = ""


@dataclass
class Resolved:
    values: dict[str, str] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        return dict(self.values)

    def argv(self) -> list[str]:
        """Positional arguments in name order (f1 f2 ... o1 ...), for scripts that prefer them."""
        return [self.values[name] for name in sorted(self.values)]


def choose_study(
    selector: StudySelector, own: StudyListing | None, studies: list[StudyListing], analyses: Analyses | None = None
) -> StudyListing:
    """The study an argument refers to; ``analyses`` are the project's that the batch names."""
    if selector.kind is SelectorKind.ANALYSIS:
        analysis = (analyses or {}).get(selector.value)
        if analysis is None:
            raise ResolutionError(f"the project has no analysis {selector.value!r} (nora --create_analysis {selector.value})")
        return analysis
    if selector.kind is SelectorKind.SAME:
        if own is None:
            raise ResolutionError("a subject-level argument needs a study selector (first, last, tag:, desc:)")
        return own
    if selector.kind in (SelectorKind.FIRST, SelectorKind.LAST):
        dated = sorted((s for s in studies if s.study_date is not None), key=lambda s: (s.study_date, s.study_id))
        if not dated:
            raise ResolutionError(f"no study of the subject has a date, so there is no {selector.kind.value} one")
        return dated[0] if selector.kind is SelectorKind.FIRST else dated[-1]
    if selector.kind is SelectorKind.TAG:
        pattern = parse_value_pattern(selector.value)
        matches = [s for s in studies if any(pattern.matches(tag) for tag in s.tags)]
    else:  # SelectorKind.DESC: descriptions match as in the filter bar: case-insensitive, implicit trailing wildcard
        pattern = parse_value_pattern(selector.value.lower())
        matches = [s for s in studies if pattern.matches(s.description.lower(), trailing_wildcard=True)]
    if len(matches) != 1:
        found = ", ".join(s.study_id for s in matches) or "none"
        raise ResolutionError(f"study selector {selector.kind.value}:{selector.value} must name one study, found {found}")
    return matches[0]


# Files an earlier job of the same run wrote, not yet in the archive: (subject, study, path) -> staged file.
Written = Mapping[tuple[str, str, str], Path]
# Analysis name -> its study.
Analyses = Mapping[str, StudyListing]


def matching_file(argument: Argument, study: StudyListing, written: Written) -> str:
    """The one path below ``study`` that a FILE argument's pattern names, among its files and
    those earlier jobs of the run wrote there."""
    regex = parse_file_pattern(argument.value).regex()
    candidates = dict.fromkeys([*study.files, *(path for *key, path in written if tuple(key) == study.key)])
    matches = [path for path in candidates if regex.fullmatch(path)]
    if not matches:
        raise ResolutionError(f"{argument.name}: {argument.value!r} matches no file in study {study.study_id}")
    if len(matches) > 1:
        raise ResolutionError(
            f"{argument.name}: {argument.value!r} matches {len(matches)} files in study {study.study_id}"
            f" ({', '.join(matches[:3])}{'...' if len(matches) > 3 else ''}); make the pattern name one"
        )
    return matches[0]


def output_of(argument: Argument, study: StudyListing, staging: Path) -> Output:
    staged = staging / study.subject / study.study_id / argument.value
    return Output(staged, study.study_id, argument.value, argument.tag, argument.type is ArgType.PATHOUT, study.subject)


def resolve(
    job: Job, own: StudyListing | None, studies: list[StudyListing], staging: Path, written: Written | None = None,
    analyses: Analyses | None = None,
) -> Resolved:
    """All arguments of ``job``; ``own`` is the batch's study (None at subject level)."""
    written = written or {}
    resolved = Resolved()
    for argument in job.args:
        if argument.type is ArgType.FILE:
            study = choose_study(argument.study, own, studies, analyses)
            path = matching_file(argument, study, written)
            resolved.values[argument.name] = str(written.get((*study.key, path), study.folder / path))
        elif argument.type in (ArgType.OUT, ArgType.PATHOUT):
            output = output_of(argument, choose_study(argument.study, own, studies, analyses), staging)
            resolved.outputs.append(output)
            resolved.values[argument.name] = str(output.staged)
        elif argument.type is ArgType.LOGICAL:
            resolved.values[argument.name] = "true" if argument.value else "false"
        else:
            resolved.values[argument.name] = str(argument.value)
    return resolved
