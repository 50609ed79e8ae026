"""A reading's results: the table (case × reader × stage × repetition), its CSV, and agreement.

Agreement is computed per answerable item on completed serious-phase answers:

* between readers, on the first repetition of each stage, over the cases every compared reader
  answered: Cohen's kappa for two readers and Fleiss' kappa for more (choices and check
  boxes), quadratic-weighted kappa for two readers' ratings (Fleiss for more), ICC(2,1) for
  numbers and sliders (absolute agreement, Shrout & Fleiss), and the mean Dice of each pair of
  readers' ROIs;
* within a reader, across repetitions of the same case (intra-rater): Cohen's or weighted kappa
  for two repetitions, Fleiss' kappa for more, ICC(2,1) for numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.models import (
    Reading,
    ReadingCase,
    ReadingFormVersion,
    ReadingPhase,
    ReadingResult,
    Study,
    Subject,
    User,
    as_utc,
)
from nifti_archive.readings.agreement import IccForm, Weighting, cohen_kappa, dice, fleiss_kappa, icc, weighted_kappa
from nifti_archive.readings.forms import Form, FormItem, ItemKind
from nifti_archive.readings.service import form_version, parsed

CATEGORICAL = {ItemKind.RADIO, ItemKind.RADIOVERT, ItemKind.COMBO, ItemKind.CHECKBOX}
NUMERIC = {ItemKind.NUMBER, ItemKind.SLIDER}
FIXED_COLUMNS = ("case", "subject", "study", "reader", "phase", "stage", "repetition", "form_version")


@dataclass(frozen=True)
class ResultRow:
    case: int
    subject: str
    study: str
    reader: str
    phase: ReadingPhase
    stage: str
    repetition: int
    form_version: int
    answers: dict[str, Any]
    active_ms: int
    completed: bool
    saved_at: datetime

    def as_json(self, with_identity: bool) -> dict[str, Any]:
        row: dict[str, Any] = {
            "case": self.case, "reader": self.reader, "phase": self.phase.value, "stage": self.stage,
            "repetition": self.repetition, "form_version": self.form_version, "answers": self.answers,
            "active_ms": self.active_ms, "completed": self.completed, "saved_at": self.saved_at.isoformat(),
        }
        if with_identity:
            row["subject"], row["study"] = self.subject, self.study
        return row


def result_rows(session: Session, reading: Reading, reader_id: int | None = None) -> list[ResultRow]:
    """Every saved result of the reading (or of one reader), ordered by phase, case, reader, stage, repetition."""
    stages = {stage.position: stage.name for stage in reading.stages}
    query = (
        select(ReadingResult, ReadingCase.phase, Subject.patient_id, Study.study_id, User.username, ReadingFormVersion.version)
        .join(ReadingCase, ReadingCase.id == ReadingResult.case_id)
        .join(Study, Study.id == ReadingCase.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .join(ReadingFormVersion, ReadingFormVersion.id == ReadingResult.form_version_id)
        .outerjoin(User, User.id == ReadingResult.reader_id)
        .where(ReadingCase.reading_id == reading.id)
        .order_by(ReadingCase.phase, ReadingCase.position, User.username, ReadingResult.stage, ReadingResult.repetition)
    )
    if reader_id is not None:
        query = query.where(ReadingResult.reader_id == reader_id)
    return [
        ResultRow(
            case=result.case_id, subject=subject, study=study, reader=username or f"joint (last: {result.saved_by})",
            phase=phase, stage=stages.get(result.stage, str(result.stage)), repetition=result.repetition,
            form_version=version, answers=json.loads(result.answers), active_ms=result.active_ms,
            completed=result.completed, saved_at=as_utc(result.saved_at),
        )
        for result, phase, subject, study, username, version in session.execute(query).tuples()
    ]


def answer_columns(session: Session, reading: Reading) -> list[FormItem]:
    """The answerable items of the reading's newest form, in form order."""
    return parsed(form_version(session, reading.form)).answer_items()


# A cell starting with one of these is a formula to a spreadsheet: a reader's text answer must
# not run in the administrator's spreadsheet when the CSV is opened.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return json.dumps(value, separators=(",", ":"))


def results_csv(items: Sequence[FormItem], rows: Iterable[ResultRow], with_identity: bool) -> str:
    """The results table as CSV; markers and ROIs are JSON in their cells."""
    out = io.StringIO()
    writer = csv.writer(out)
    fixed = [c for c in FIXED_COLUMNS if with_identity or c not in ("subject", "study")]
    writer.writerow([*fixed, *(item.name for item in items), "active_ms", "completed", "saved_at"])
    for row in rows:
        values = row.as_json(with_identity)
        writer.writerow([
            *(_cell(values[c]) for c in fixed), *(_cell(row.answers.get(item.name or "")) for item in items),
            row.active_ms, _cell(row.completed), values["saved_at"],
        ])
    return out.getvalue()


# -- agreement ---------------------------------------------------------------------------------


def _categorical(item: FormItem, ratings: Sequence[Sequence[Any]]) -> tuple[str, float | None]:
    if len(ratings[0]) == 2:
        first, second = [r[0] for r in ratings], [r[1] for r in ratings]
        if item.kind is ItemKind.RATING:
            assert item.minimum is not None and item.maximum is not None, "parse_form gives every rating its bounds"
            low, high = int(item.minimum), int(item.maximum)
            categories = [float(level) for level in range(low, high + 1)]
            return "weighted kappa (quadratic)", weighted_kappa(
                [float(v) for v in first], [float(v) for v in second], categories, Weighting.QUADRATIC
            )
        return "Cohen's kappa", cohen_kappa(first, second)
    return "Fleiss' kappa", fleiss_kappa(ratings)


def _statistic(item: FormItem, table: list[list[Any]]) -> tuple[str, float | None]:
    """One statistic for an item over a cases × raters table of answers."""
    if item.kind in CATEGORICAL or item.kind is ItemKind.RATING:
        return _categorical(item, table)
    return IccForm.ICC_2_1.value, icc([[float(v) for v in row] for row in table], IccForm.ICC_2_1)


def _complete_table(answers: dict[Any, dict[Any, Any]], raters: Sequence[Any]) -> list[list[Any]]:
    return [[by_rater[r] for r in raters] for by_rater in answers.values() if all(r in by_rater for r in raters)]


def agreement(session: Session, reading: Reading) -> dict[str, list[dict[str, Any]]]:
    """Inter- and intra-rater agreement and Dice per item, on completed serious-phase results."""
    form: Form = parsed(form_version(session, reading.form))
    rows = [r for r in result_rows(session, reading) if r.completed and r.phase is ReadingPhase.SERIOUS]
    inter: list[dict[str, Any]] = []
    intra: list[dict[str, Any]] = []
    overlap: list[dict[str, Any]] = []
    for item in form.answer_items():
        name = item.name or ""
        if item.kind in (ItemKind.TEXT, ItemKind.MARKERPOINT, ItemKind.MARKERSET):
            continue
        # (stage, case) -> reader -> answer, first repetition only; (reader, stage, case) -> repetition -> answer
        across: dict[str, dict[tuple[str, int], dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
        within: dict[tuple[str, str], dict[int, dict[int, Any]]] = defaultdict(lambda: defaultdict(dict))
        for row in rows:
            value = row.answers.get(name)
            if value is None:
                continue
            if row.repetition == 0:
                across[row.stage][(row.stage, row.case)][row.reader] = value
            within[(row.reader, row.stage)][row.case][row.repetition] = value
        for stage, by_case in across.items():
            readers = sorted({reader for answers in by_case.values() for reader in answers})
            if len(readers) < 2:
                continue
            if item.kind is ItemKind.ROI:
                for first, second in combinations(readers, 2):
                    # Masks on different grids (a reader drew on another image) have no overlap to measure.
                    scores = [
                        dice(a[first]["runs"], a[second]["runs"]) for a in by_case.values()
                        if first in a and second in a and a[first]["dims"] == a[second]["dims"]
                    ]
                    defined = [s for s in scores if s is not None]
                    overlap.append({"item": name, "stage": stage, "readers": [first, second], "cases": len(scores),
                                    "value": sum(defined) / len(defined) if defined else None})
                continue
            table = _complete_table(by_case, readers)
            if len(table) < 2:
                continue
            statistic, value = _statistic(item, table)
            inter.append({"item": name, "kind": item.kind.value, "stage": stage, "statistic": statistic, "value": value,
                          "cases": len(table), "readers": readers})
        if item.kind is ItemKind.ROI:
            continue
        for (reader, stage), by_case_repetition in within.items():
            repetitions = sorted({r for answers in by_case_repetition.values() for r in answers})
            table = _complete_table(by_case_repetition, repetitions)
            if len(repetitions) < 2 or len(table) < 2:
                continue
            statistic, value = _statistic(item, table)
            intra.append({"item": name, "kind": item.kind.value, "stage": stage, "reader": reader, "statistic": statistic,
                          "value": value, "cases": len(table), "repetitions": len(repetitions)})
    return {"inter": inter, "intra": intra, "dice": overlap}
