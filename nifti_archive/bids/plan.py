"""From a project's converted series to the files of a BIDS dataset (pure: no database, no writing).

Each NIfTI a conversion made is mapped by the project's rules; several files of one series
with distinct echo numbers get ``echo-`` (a field map's second magnitude becomes magnitude2),
its magnitude and phase images ``part-mag`` and ``part-phase``; files that would still share a
name get ``run-`` in the order of their series numbers, unless a rule set the run itself, which
is refused with both series named. A phase difference map carries EchoTime1 and EchoTime2, from
its magnitude echoes where dcm2niix did not write them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nifti_archive.bids.naming import file_stem, label, subject_label
from nifti_archive.bids.rules import Match, RuleSet, SeriesInfo
from nifti_archive.bids.vocabulary import ALLOWED, COMPANIONS, Entity, Suffix
from nifti_archive.errors import InvalidValue
from nifti_archive.ingest.conversion import PSEUDONYMISED_SIDECAR_DENYLIST, SIDECAR_DENYLIST

BIDS_VERSION = "1.8.0"
REPORT_FOLDER = "sourcedata/northanc"
MANIFEST = f"{REPORT_FOLDER}/files.tsv"
REPORT = f"{REPORT_FOLDER}/report.txt"
IMAGE_EXTENSIONS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class SeriesFile:
    """One NIfTI of a converted series, with its sidecar and what lies beside it."""

    subject: str  # the archive's folder names (pseudonyms where the project asks)
    study: str
    path: str  # in the study folder: "003_t1_mprage/s003.nii.gz"
    image: Path
    sidecar: Mapping[str, Any]
    companions: Mapping[str, Path]  # ".bval", ".bvec"

    @property
    def source(self) -> str:
        return f"{self.subject}/{self.study}/{self.path}"

    @property
    def extension(self) -> str:
        return next(ext for ext in IMAGE_EXTENSIONS if self.path.endswith(ext))

    @property
    def order(self) -> tuple[int, str]:
        number = self.sidecar.get("SeriesNumber")
        return (number if isinstance(number, int) else 0, self.path)


@dataclass(frozen=True)
class Entry:
    """A file of the dataset: a link to (or copy of) ``source``, or ``text`` written as it is."""

    target: str
    source: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Unmapped:
    source: str
    description: str
    reason: str


@dataclass
class Plan:
    entries: list[Entry] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # dataset image path -> archive source
    unmapped: list[Unmapped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        lines = [f"not mapped: {u.source} ({u.description or 'no description'}): {u.reason}" for u in self.unmapped]
        return [*lines, *self.notes]


@dataclass(frozen=True)
class _Named:
    series: SeriesFile
    subject: str
    session: str
    entities: dict[Entity, str]
    suffix: Suffix
    explicit_run: bool

    @property
    def stem(self) -> str:
        return file_stem(self.subject, self.session, self.suffix, self.entities)


def _labels(names: Iterable[str], kind: str, make: Callable[[str], str]) -> dict[str, str]:
    """Labels for archive folder names; two folders with one label are refused, both named."""
    labels: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in sorted(set(names)):
        value = make(name)
        if not value:
            raise InvalidValue(f"{kind} folder {name!r} has no letters or digits to make a BIDS label of")
        if value in seen:
            raise InvalidValue(f"{kind} folders {seen[value]!r} and {name!r} would both be labelled {value!r} in BIDS")
        seen[value] = name
        labels[name] = value
    return labels


def _part(sidecar: Mapping[str, Any]) -> str | None:
    """``mag`` or ``phase`` from the ImageType dcm2niix records; None where it says neither."""
    image_type = {str(value).upper() for value in sidecar.get("ImageType") or []}
    if image_type & {"P", "PHASE"}:
        return "phase"
    if image_type & {"M", "MAGNITUDE"}:
        return "mag"
    return None


def _told_apart(item: _Named, part: str | None, echo: int | None) -> _Named:
    if item.suffix is Suffix.MAGNITUDE1 and echo == 2:
        return replace(item, suffix=Suffix.MAGNITUDE2)
    entities = dict(item.entities)
    if part is not None and Entity.PART in ALLOWED[item.suffix]:
        entities[Entity.PART] = part
    if echo is not None and Entity.ECHO in ALLOWED[item.suffix]:
        entities[Entity.ECHO] = str(echo)
    return replace(item, entities=entities)


def _with_echoes_and_parts(named: list[_Named]) -> list[_Named]:
    """Files of one series that differ by echo number, or are its magnitude and phase, get
    ``echo-`` and ``part-`` in their names (a field map's second magnitude becomes magnitude2)."""
    groups: dict[tuple[str, str, str, Suffix], list[_Named]] = defaultdict(list)
    for item in named:
        groups[(item.series.subject, item.series.study, item.series.path.split("/")[0], item.suffix)].append(item)
    result = []
    for group in groups.values():
        if len(group) < 2:
            result.extend(group)
            continue
        parts = [_part(item.series.sidecar) for item in group]
        by_part = None not in parts and len(set(parts)) > 1
        echoes = [item.series.sidecar.get("EchoNumber") for item in group]
        by_echo = all(isinstance(echo, int) for echo in echoes) and len(set(echoes)) > 1
        keys = list(zip(parts if by_part else [None] * len(group), echoes if by_echo else [None] * len(group), strict=True))
        if not (by_part or by_echo) or len(set(keys)) != len(group):
            result.extend(group)  # still alike: runs tell them apart
            continue
        result += [_told_apart(item, part, echo) for item, (part, echo) in zip(group, keys, strict=True)]
    return result


def _echo_times(sidecar: Mapping[str, Any]) -> tuple[float, float] | None:
    first, second = sidecar.get("EchoTime1"), sidecar.get("EchoTime2")
    if isinstance(first, int | float) and isinstance(second, int | float):
        return float(first), float(second)
    return None


def _magnitude_echo_times(phasediff: _Named, magnitudes: Sequence[_Named]) -> tuple[float, float] | None:
    """EchoTime1 and EchoTime2 of a phase difference from the magnitude series of its session
    with two echoes, the nearest by series number (the one before it on a tie)."""
    folders: dict[str, list[SeriesFile]] = defaultdict(list)
    for item in magnitudes:
        if (item.series.subject, item.series.study) == (phasediff.series.subject, phasediff.series.study):
            folders[item.series.path.split("/")[0]].append(item.series)
    number = phasediff.series.order[0]
    found = []
    for files in folders.values():
        times = {float(t) for f in files if isinstance(t := f.sidecar.get("EchoTime"), int | float)}
        if len(times) == 2:
            theirs = files[0].order[0]
            found.append(((abs(number - theirs), theirs > number), (min(times), max(times))))
    return min(found)[1] if found else None


def _with_echo_times(named: list[_Named], unmapped: list[Unmapped]) -> list[_Named]:
    """Phase differences with EchoTime1 and EchoTime2 in their sidecars (BIDS requires them),
    taken from the magnitude echoes where dcm2niix wrote none; reported as unmapped otherwise."""
    magnitudes = [item for item in named if item.suffix in (Suffix.MAGNITUDE1, Suffix.MAGNITUDE2)]
    result = []
    for item in named:
        if item.suffix is not Suffix.PHASEDIFF or _echo_times(item.series.sidecar) is not None:
            result.append(item)
            continue
        times = _magnitude_echo_times(item, magnitudes)
        if times is None:
            unmapped.append(Unmapped(item.series.source, SeriesInfo.from_sidecar(item.series.sidecar).description,
                                     "phasediff needs EchoTime1 and EchoTime2: its sidecar has none, and no magnitude "
                                     "series with two echoes in its session gives them"))
            continue
        sidecar = {**item.series.sidecar, "EchoTime1": times[0], "EchoTime2": times[1]}
        result.append(replace(item, series=replace(item.series, sidecar=sidecar)))
    return result


def _with_runs(named: list[_Named], notes: list[str]) -> list[_Named]:
    by_stem: dict[str, list[_Named]] = defaultdict(list)
    for item in named:
        by_stem[item.stem].append(item)
    result = []
    for stem, group in sorted(by_stem.items()):
        if len(group) == 1:
            result.extend(group)
            continue
        sources = " and ".join(item.series.source for item in group[:2])
        if any(item.explicit_run for item in group):
            raise InvalidValue(f"{sources} would both be {stem.rsplit('/', 1)[1]}: their rule sets run- itself; "
                               "make the rules tell them apart")
        group.sort(key=lambda item: item.series.order)
        for run, item in enumerate(group, start=1):
            result.append(replace(item, entities={**item.entities, Entity.RUN: str(run)}))
        notes.append(f"runs added: {len(group)} series would all be {stem.rsplit('/', 1)[1]} "
                     f"({', '.join(item.series.source for item in group)}): run-1 to run-{len(group)} by series number")
    return result


def _sidecar(item: _Named, pseudonymised: bool) -> str:
    denied = PSEUDONYMISED_SIDECAR_DENYLIST if pseudonymised else SIDECAR_DENYLIST
    document = {key: value for key, value in item.series.sidecar.items() if key not in denied}
    if Entity.TASK in item.entities:
        document.setdefault("TaskName", item.entities[Entity.TASK])
    return json.dumps(document, indent=2) + "\n"


def _tsv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    return "".join("\t".join(row) + "\n" for row in [header, *rows])


def plan_dataset(project: str, series: Sequence[SeriesFile], rules: RuleSet, pseudonymised: bool) -> Plan:
    plan = Plan()
    studies: dict[str, set[str]] = defaultdict(set)
    for item in series:
        studies[item.subject].add(item.study)
    subjects = _labels(studies, "subject", subject_label)
    sessions = {subject: _labels(studies[subject], "study", label) for subject in subjects}
    named: list[_Named] = []
    for item in sorted(series, key=lambda s: (s.subject, s.study, s.order)):
        info = SeriesInfo.from_sidecar(item.sidecar)
        found = rules.match(info)
        if found is None:
            plan.unmapped.append(Unmapped(item.source, info.description, "no rule matches"))
            continue
        if not isinstance(found, Match):
            plan.notes.append(f"left out by {found.where}: {item.source}")
            continue
        missing = [ext for ext in COMPANIONS.get(found.suffix, ()) if ext not in item.companions]
        if missing:
            reason = f"{found.suffix.value} needs {' and '.join(missing)} beside the image ({found.rule.where})"
            plan.unmapped.append(Unmapped(item.source, info.description, reason))
            continue
        named.append(_Named(item, subjects[item.subject], sessions[item.subject][item.study],
                            dict(found.entities), found.suffix, Entity.RUN in found.entities))
    finals = _with_runs(_with_echo_times(_with_echoes_and_parts(named), plan.unmapped), plan.notes)
    for final in finals:
        image = final.stem + final.series.extension
        plan.images[image] = final.series.source
        plan.entries.append(Entry(image, source=str(final.series.image)))
        plan.entries.append(Entry(final.stem + ".json", text=_sidecar(final, pseudonymised)))
        plan.entries += [Entry(final.stem + ext, source=str(path)) for ext, path in sorted(final.series.companions.items())]
    exported = sorted({(item.subject, item.session) for item in finals})
    _add_tables(plan, project, exported)
    return plan


def _add_tables(plan: Plan, project: str, exported: list[tuple[str, str]]) -> None:
    description = {
        "Name": project, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
        "GeneratedBy": [{"Name": "Northanc", "Description": f"BIDS export of the archive project {project}"}],
    }
    subjects = sorted({subject for subject, _session in exported})
    plan.entries += [
        Entry("dataset_description.json", text=json.dumps(description, indent=2) + "\n"),
        Entry("README", text=f"BIDS export of the Northanc project {project}. Series that could not be mapped are "
                             f"listed in {REPORT}.\n"),
        Entry("participants.tsv", text=_tsv(["participant_id"], ([f"sub-{s}"] for s in subjects))),
    ]
    for subject in subjects:
        rows = ([f"ses-{session}"] for s, session in exported if s == subject)
        plan.entries.append(Entry(f"sub-{subject}/sub-{subject}_sessions.tsv", text=_tsv(["session_id"], rows)))
    plan.entries.append(Entry(MANIFEST, text=_tsv(["bids_file", "archive_file"], sorted(plan.images.items()))))
