"""Readings in the index: saving forms and configurations, starting, and a reader's way through.

One reader's way through a phase is their *sequence* (``ordering.reading_sequence``): every
(stage, repetition, case) in the order the reading's rules give that reader. A slot is a
place in it, named by its index; the API never names a study, so blinded readers see none.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nifti_archive import accounts
from nifti_archive.catalog.analyses import analysis_subjects
from nifti_archive.catalog.tags import TagLevel
from nifti_archive.catalog.viewer_documents import parse_preset, resolve_preset
from nifti_archive.db import rows_changed
from nifti_archive.errors import Conflict, Forbidden, InvalidValue, NotFound
from nifti_archive.models import (
    File,
    FileKind,
    Project,
    Reading,
    ReadingCase,
    ReadingForm,
    ReadingFormVersion,
    ReadingMode,
    ReadingPhase,
    ReadingReader,
    ReadingResult,
    ReadingStage,
    ReadingState,
    Role,
    Study,
    Subject,
    User,
    ViewerPreset,
    as_utc,
    utcnow,
)
from nifti_archive.query.filter_sql import Column
from nifti_archive.query.patterns import parse_file_pattern
from nifti_archive.query.selection import study_selection
from nifti_archive.readings.config import ReadingConfig, StageConfig, check_form_name, parse_bars
from nifti_archive.readings.forms import Form, answer_tags, check_answers, form_document, parse_form
from nifti_archive.readings.ordering import CaseOrder, Slot, case_order, reading_sequence

# Settings that decide which slots exist; once readers have answered they stay as they are.
FIXED_AFTER_START = ("cases", "training_cases", "mode", "order", "repetitions", "stages")
MOST_ACTIVE_MS = 7 * 24 * 3600 * 1000


# -- forms -------------------------------------------------------------------------------------


def find_form(session: Session, project: Project, name: str) -> ReadingForm:
    form = session.scalar(select(ReadingForm).where(ReadingForm.project_id == project.id, ReadingForm.name == name))
    if form is None:
        raise NotFound(f"no reading form {name!r} in project {project.name!r}")
    return form


def form_version(session: Session, form: ReadingForm, version: int | None = None) -> ReadingFormVersion:
    """The form's newest document, or the one of ``version``."""
    query = select(ReadingFormVersion).where(ReadingFormVersion.form_id == form.id)
    query = query.where(ReadingFormVersion.version == version) if version else query.order_by(ReadingFormVersion.version.desc())
    found = session.scalars(query.limit(1)).first()
    if found is None:
        raise NotFound(f"form {form.name!r} has no version {version}")
    return found


def save_form(session: Session, project: Project, name: str, document: Any, author: str) -> tuple[ReadingFormVersion, bool]:
    """Save a form document; a new version when it differs from the newest. Returns (version, changed)."""
    check_form_name(name)
    canonical = json.dumps(form_document(parse_form(document)), sort_keys=True)
    form = session.scalar(select(ReadingForm).where(ReadingForm.project_id == project.id, ReadingForm.name == name))
    if form is None:
        form = ReadingForm(project_id=project.id, name=name)
        session.add(form)
        session.flush()
        newest = None
    else:
        newest = form_version(session, form)
        if newest.document == canonical:
            return newest, False
    saved = ReadingFormVersion(form_id=form.id, version=(newest.version + 1) if newest else 1, document=canonical, saved_by=author)
    session.add(saved)
    session.flush()
    return saved, True


def list_forms(session: Session, project: Project) -> list[ReadingForm]:
    return list(session.scalars(select(ReadingForm).where(ReadingForm.project_id == project.id).order_by(ReadingForm.name)))


def form_versions(session: Session, form: ReadingForm) -> list[ReadingFormVersion]:
    query = select(ReadingFormVersion).where(ReadingFormVersion.form_id == form.id).order_by(ReadingFormVersion.version)
    return list(session.scalars(query))


def parsed(version: ReadingFormVersion) -> Form:
    return _parsed_document(version.document)


@functools.lru_cache(maxsize=64)
def _parsed_document(document: str) -> Form:
    # A saved version never changes and a Form is immutable: each slot need not parse it again.
    return parse_form(json.loads(document))


@dataclass(frozen=True)
class FormVersion:
    """A saved form version as a reader's slot uses it: parsed, and as the API sends it."""

    id: int
    version: int
    form: Form
    document: dict[str, Any]


# Versions by id and saving time (an id alone may be reused after its form is deleted). A saved
# version never changes, so an entry never goes stale; the bound keeps a worker's memory flat.
_versions: OrderedDict[tuple[int, str], FormVersion] = OrderedDict()
_versions_lock = threading.Lock()
MOST_VERSIONS = 64


def _form_version(session: Session, version_id: int, number: int, saved_at: Any) -> FormVersion:
    key = (version_id, as_utc(saved_at).isoformat())
    with _versions_lock:
        found = _versions.get(key)
        if found is not None:
            _versions.move_to_end(key)
            return found
    document = session.scalar(select(ReadingFormVersion.document).where(ReadingFormVersion.id == version_id))
    if document is None:
        raise NotFound(f"form version {version_id} was deleted")
    form = _parsed_document(document)
    found = FormVersion(version_id, number, form, form_document(form))
    with _versions_lock:
        _versions[key] = found
        while len(_versions) > MOST_VERSIONS:
            _versions.popitem(last=False)
    return found


# -- configuration -----------------------------------------------------------------------------


def reading_config(session: Session, reading: Reading) -> ReadingConfig:
    """The configuration a reading row holds, as ``parse_config`` would give it."""
    readers = session.scalars(
        select(User.username).join(ReadingReader, ReadingReader.user_id == User.id)
        .where(ReadingReader.reading_id == reading.id).order_by(User.username)
    )
    return ReadingConfig(
        name=reading.name,
        form=reading.form.name,
        cases=parse_bars(json.loads(reading.cases_filter), "cases"),
        training_cases=parse_bars(json.loads(reading.training_filter), "training_cases") if reading.training_filter else None,
        preset=reading.preset,
        mode=reading.mode,
        blinding=frozenset(
            flag for flag, on in (
                ("identity", reading.blind_identity), ("dates", reading.blind_dates), ("description", reading.blind_description),
                ("other_readers", reading.blind_other_readers), ("own_earlier", reading.blind_own_earlier),
            ) if on
        ),
        order=reading.case_order,
        repetitions=reading.repetitions,
        stages=tuple(StageConfig(stage.name, stage.overlay) for stage in reading.stages),
        instructions=reading.instructions,
        instructions_url=reading.instructions_url,
        allow_restart_training=reading.allow_restart_training,
        allow_restart_serious=reading.allow_restart_serious,
        readers=tuple(readers),
    )


def _bars_json(bars: dict[Column, str] | None) -> str | None:
    return json.dumps({column.value: text for column, text in bars.items()}, sort_keys=True) if bars else None


def _readers(session: Session, project: Project, usernames: Sequence[str]) -> list[User]:
    users = {user.username: user for user in session.scalars(select(User).where(User.username.in_(usernames)))}
    unknown = [name for name in usernames if name not in users]
    if unknown:
        raise InvalidValue(f"no user {unknown[0]!r}: readers must be accounts of this site")
    for name in usernames:
        role = accounts.effective_role(users[name], accounts.role_on(session, users[name], project))
        if role is None or not role.allows(Role.READER):
            raise InvalidValue(f"{name!r} has no reader role on project {project.name!r}; grant one before assigning")
    return [users[name] for name in usernames]


def save_reading(session: Session, project: Project, config: ReadingConfig, author: str, reading: Reading | None) -> Reading:
    """Create a reading (``reading`` None) or change one; a started reading keeps its slots."""
    form = find_form(session, project, config.form)
    if config.preset and session.scalar(
        select(ViewerPreset.id).where(ViewerPreset.project_id == project.id, ViewerPreset.name == config.preset)
    ) is None:
        raise InvalidValue(f"no viewer preset {config.preset!r} in project {project.name!r}")
    readers = _readers(session, project, config.readers)
    taken = session.scalar(select(Reading.id).where(Reading.project_id == project.id, Reading.name == config.name))
    if taken is not None and (reading is None or taken != reading.id):
        raise Conflict(f"project {project.name!r} already has a reading named {config.name!r}")
    if reading is None:
        reading = Reading(project_id=project.id, state=ReadingState.DRAFT, created_by=author)
    elif reading.state is not ReadingState.DRAFT:
        current = reading_config(session, reading)
        changed = [field for field in FIXED_AFTER_START if getattr(current, field) != getattr(config, field)]
        if changed:
            raise Conflict(f"the reading has started: {', '.join(changed)} can no longer change (make a new reading)")
    reading.name, reading.form_id, reading.mode = config.name, form.id, config.mode
    reading.case_order, reading.repetitions, reading.preset = config.order, config.repetitions, config.preset
    reading.cases_filter = _bars_json(config.cases) or "{}"
    reading.training_filter = _bars_json(config.training_cases)
    reading.blind_identity = "identity" in config.blinding
    reading.blind_dates = "dates" in config.blinding
    reading.blind_description = "description" in config.blinding
    reading.blind_other_readers = "other_readers" in config.blinding
    reading.blind_own_earlier = "own_earlier" in config.blinding
    reading.instructions, reading.instructions_url = config.instructions, config.instructions_url
    reading.allow_restart_training = config.allow_restart_training
    reading.allow_restart_serious = config.allow_restart_serious
    reading.stages = [ReadingStage(position=i, name=s.name, overlay=s.overlay) for i, s in enumerate(config.stages)]
    kept = {row.user_id: row for row in reading.readers}
    reading.readers = [kept.get(user.id) or _new_reader(user) for user in readers]
    session.add(reading)
    session.flush()
    return reading


def _new_reader(user: User) -> ReadingReader:
    return ReadingReader(user_id=user.id, training_seed=secrets.token_hex(8), serious_seed=secrets.token_hex(8))


def start_reading(session: Session, project: Project, reading: Reading) -> dict[ReadingPhase, int]:
    """Choose the cases by the filters, once; a filter that selects nothing refuses the start."""
    if reading.state is not ReadingState.DRAFT:
        raise Conflict(f"reading {reading.name!r} has already started")
    config = reading_config(session, reading)
    if not config.readers:
        raise InvalidValue("assign at least one reader before starting")
    counts = {}
    for phase, bars in ((ReadingPhase.SERIOUS, config.cases), (ReadingPhase.TRAINING, config.training_cases)):
        if bars is None:
            counts[phase] = 0
            continue
        # An analysis holds results, not a case to read.
        patients = study_selection(project.id, bars).where(~analysis_subjects())
        studies = session.scalars(patients.with_only_columns(Study.id)).all()
        if not studies:
            shown = "; ".join(f"{column.value}: {text}" for column, text in bars.items())
            raise InvalidValue(f"the {phase.value} cases' filter selects no study of project {project.name!r} ({shown})")
        session.add_all(ReadingCase(reading_id=reading.id, phase=phase, study_id=study, position=i) for i, study in enumerate(studies))
        counts[phase] = len(studies)
    reading.state = ReadingState.OPEN
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Readers start at once, before autovacuum has counted the new cases: without statistics
        # the planner takes a reading's cases for one row and counts a reader's progress by a
        # slow plan on every save.
        session.execute(text("ANALYZE reading_cases"))
    return counts


def case_counts(session: Session, reading: Reading) -> dict[ReadingPhase, int]:
    counts = dict.fromkeys(ReadingPhase, 0)
    for phase, in session.execute(select(ReadingCase.phase).where(ReadingCase.reading_id == reading.id)):
        counts[phase] += 1
    return counts


# -- a reader's way through --------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """Who reads, and whose results they read and write (``owner`` None: the joint results)."""

    user: User
    seeds: ReadingReader
    owner: int | None


def reader_of(session: Session, reading: Reading, user: User) -> Reader:
    """The assigned reader; anyone else learns nothing of the reading (not found)."""
    seeds = session.get(ReadingReader, (reading.id, user.id))
    if seeds is None:
        raise NotFound(f"no reading {reading.id} assigned to {user.username!r}")
    return Reader(user, seeds, None if reading.mode is ReadingMode.JOINT else user.id)


# Stages by reading (its id and creation time). A started reading's stages never change
# (FIXED_AFTER_START), so an entry never goes stale; a draft's are read each time.
_stages: OrderedDict[tuple[int, str], tuple[StageConfig, ...]] = OrderedDict()
_stages_lock = threading.Lock()
MOST_STAGES = 256


def stages_of(reading: Reading) -> tuple[StageConfig, ...]:
    """The reading's stages in order, without reading them again once the reading has started."""
    if reading.state is ReadingState.DRAFT:
        return tuple(StageConfig(stage.name, stage.overlay) for stage in reading.stages)
    key = (reading.id, as_utc(reading.created_at).isoformat())
    with _stages_lock:
        found = _stages.get(key)
        if found is not None:
            _stages.move_to_end(key)
            return found
    found = tuple(StageConfig(stage.name, stage.overlay) for stage in reading.stages)
    with _stages_lock:
        _stages[key] = found
        while len(_stages) > MOST_STAGES:
            _stages.popitem(last=False)
    return found


@dataclass(frozen=True)
class Assigned:
    """What a reader's slot request needs of its reading: the row, the reader and the newest form."""

    reading: Reading
    reader: Reader
    version: FormVersion


@functools.cache
def _assigned_statement() -> Select[tuple[Reading, ReadingReader, int, int, Any]]:
    # Built once: building and hashing a statement costs more Python than running it.
    return (
        select(Reading, ReadingReader, ReadingFormVersion.id, ReadingFormVersion.version, ReadingFormVersion.saved_at)
        .outerjoin(ReadingReader, and_(ReadingReader.reading_id == Reading.id, ReadingReader.user_id == bindparam("user_id")))
        .join(ReadingFormVersion, ReadingFormVersion.form_id == Reading.form_id)
        .where(Reading.id == bindparam("reading_id"))
        .order_by(ReadingFormVersion.version.desc())
        .limit(1)
    )


def assigned(session: Session, project: Project, reading_id: int, user: User) -> Assigned:
    """The reading, its assigned reader and its form's newest version in one statement; anyone
    not assigned learns nothing of the reading (not found)."""
    row = session.execute(_assigned_statement(), {"reading_id": reading_id, "user_id": user.id}).first()
    if row is None or row[0].project_id != project.id:
        raise NotFound(f"no reading {reading_id} in project {project.name!r}")
    reading, seeds, version_id, number, saved_at = row
    if seeds is None:
        raise NotFound(f"no reading {reading.id} assigned to {user.username!r}")
    reader = Reader(user, seeds, None if reading.mode is ReadingMode.JOINT else user.id)
    return Assigned(reading, reader, _form_version(session, version_id, number, saved_at))


def _seed(reading: Reading, reader: Reader, phase: ReadingPhase) -> str:
    # A joint reading is one sequence shared by its readers, so its random order is the reading's.
    if reader.owner is None:
        return f"reading-{reading.id}"
    return reader.seeds.training_seed if phase is ReadingPhase.TRAINING else reader.seeds.serious_seed


SequenceKey = tuple[int, str, ReadingPhase, str, CaseOrder, int, int]


@dataclass(frozen=True)
class Sequenced:
    """A reader's sequence of a phase, and the study of each of its cases."""

    slots: list[Slot]
    studies: dict[int, int]


# Sequences by reading (its id and creation time: an id alone may be reused), phase, seed and the
# rules that shape them. A started reading's cases never change and a restart draws a new seed,
# so an entry never goes stale; the bound keeps a worker's memory flat.
_sequences: OrderedDict[SequenceKey, Sequenced] = OrderedDict()
_sequences_lock = threading.Lock()
MOST_SEQUENCES = 256


def sequence(session: Session, reading: Reading, reader: Reader, phase: ReadingPhase) -> list[Slot]:
    return _sequenced(session, reading, reader, phase).slots


def _sequenced(session: Session, reading: Reading, reader: Reader, phase: ReadingPhase) -> Sequenced:
    stages = len(stages_of(reading))
    key = (reading.id, as_utc(reading.created_at).isoformat(), phase, _seed(reading, reader, phase), reading.case_order,
           reading.repetitions, stages)
    with _sequences_lock:
        found = _sequences.get(key)
        if found is not None:
            _sequences.move_to_end(key)
    if found is None:
        cases = session.execute(
            select(ReadingCase.id, ReadingCase.study_id, Study.study_instance_uid, Study.study_id)
            .join(Study, Study.id == ReadingCase.study_id)
            .where(ReadingCase.reading_id == reading.id, ReadingCase.phase == phase)
            .order_by(ReadingCase.position)
        ).all()
        # NORA's idhash hashes the study's id; the StudyInstanceUID is that id across archives.
        keyed = [(case_id, uid or name) for case_id, _study, uid, name in cases]
        found = Sequenced(
            reading_sequence(case_order(keyed, reading.case_order, key[3]), reading.repetitions, stages),
            {case_id: study for case_id, study, _uid, _name in cases},
        )
        if reading.state is not ReadingState.DRAFT:
            with _sequences_lock:
                _sequences[key] = found
                while len(_sequences) > MOST_SEQUENCES:
                    _sequences.popitem(last=False)
    return found


def _completed(session: Session, reading: Reading, owner: int | None, phase: ReadingPhase, below_stage: int | None = None) -> int:
    query = _owned(reading, owner).with_only_columns(func.count()).where(ReadingCase.phase == phase, ReadingResult.completed)
    if below_stage is not None:
        query = query.where(ReadingResult.stage < below_stage)
    return int(session.scalar(query) or 0)


SlotKey = tuple[int, int, int]  # (case, stage, repetition)


def _key(slot: Slot) -> SlotKey:
    return (slot.case, slot.stage, slot.repetition)


def _owned(reading: Reading, owner: int | None) -> Any:
    condition = ReadingResult.reader_id.is_(None) if owner is None else ReadingResult.reader_id == owner
    return select(ReadingResult).join(ReadingCase, ReadingCase.id == ReadingResult.case_id).where(
        ReadingCase.reading_id == reading.id, condition
    )


def results_by_slot(session: Session, reading: Reading, owner: int | None, phase: ReadingPhase) -> dict[SlotKey, ReadingResult]:
    """The owner's results in a phase."""
    query = _owned(reading, owner).where(ReadingCase.phase == phase)
    return {(row.case_id, row.stage, row.repetition): row for row in session.scalars(query)}


@dataclass(frozen=True)
class PhaseProgress:
    done: int
    total: int

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def phase_progress(slots: Sequence[Slot], results: dict[SlotKey, ReadingResult]) -> PhaseProgress:
    return PhaseProgress(sum(1 for slot in slots if (r := results.get(_key(slot))) is not None and r.completed), len(slots))


@dataclass(frozen=True)
class Position:
    """Where a reader stands: the phase to read now (None when all is done) and its first open slot."""

    phase: ReadingPhase | None
    index: int
    progress: dict[ReadingPhase, PhaseProgress | None]


def position(session: Session, reading: Reading, reader: Reader) -> Position:
    progress: dict[ReadingPhase, PhaseProgress | None] = {}
    current: tuple[ReadingPhase, int] | None = None
    for phase in (ReadingPhase.TRAINING, ReadingPhase.SERIOUS):
        slots = sequence(session, reading, reader, phase)
        if not slots:
            progress[phase] = None
            continue
        results = results_by_slot(session, reading, reader.owner, phase)
        progress[phase] = counted = phase_progress(slots, results)
        if current is None and not counted.finished:
            first_open = next(i for i, s in enumerate(slots) if not ((r := results.get(_key(s))) and r.completed))
            current = (phase, first_open)
    if current is None:
        return Position(None, 0, progress)
    return Position(current[0], current[1], progress)


@dataclass(frozen=True)
class OpenSlot:
    """A slot the reader may open now, with the study its case shows."""

    slot: Slot
    index: int
    total: int
    done: int
    study_id: int
    result: ReadingResult | None
    # The owner's results of this case: its other stages and repetitions.
    results: dict[SlotKey, ReadingResult]
    slots: list[Slot]
    # Other readers' names and answers to this slot, by name; None where they are not asked for
    # or the reading does not show them.
    others: list[tuple[str, str]] | None


def open_slot(
    session: Session, reading: Reading, reader: Reader, phase: ReadingPhase, index: int, with_others: bool = False
) -> OpenSlot:
    """The slot at ``index`` of the reader's sequence, if its turn has come: the training must be
    finished before the serious phase, and a stage before the next one. ``with_others``: with the
    other readers' answers, where the reading shows them."""
    if reading.state is ReadingState.DRAFT:
        raise Conflict(f"reading {reading.name!r} has not started yet")
    sequenced = _sequenced(session, reading, reader, phase)
    slots = sequenced.slots
    if not 0 <= index < len(slots):
        raise InvalidValue(f"the {phase.value} phase of this reading has slots 0 to {len(slots) - 1}, not {index}")
    # Counted, not listed: a late case of a long reading must not read every earlier answer.
    if phase is ReadingPhase.SERIOUS and reading.training_filter is not None:
        training = len(sequence(session, reading, reader, ReadingPhase.TRAINING))
        if _completed(session, reading, reader.owner, ReadingPhase.TRAINING) < training:
            raise InvalidValue("finish the training cases before the serious reading")
    slot = slots[index]
    stages = stages_of(reading)
    per_stage = len(slots) // len(stages)
    if slot.stage and _completed(session, reading, reader.owner, phase, below_stage=slot.stage) < slot.stage * per_stage:
        raise InvalidValue(f"stage {stages[slot.stage].name!r} opens once the earlier stage is finished")
    others = with_others and not reading.blind_other_readers and reader.owner is not None
    done, results, by_others = _case_results(session, reading, reader.owner, phase, slot.case, others)
    shown = [
        (name, result.answers) for name, result in by_others if (result.stage, result.repetition) == (slot.stage, slot.repetition)
    ] if others else None
    return OpenSlot(slot, index, len(slots), done, sequenced.studies[slot.case], results.get(_key(slot)), results, slots, shown)


@functools.cache
def _case_results_statement(joint: bool, others: bool) -> Select[tuple[int, ReadingResult, str]]:
    """The owner's completed slots of a phase, counted, beside their results of one case (with
    ``others``, every reader's, by reader name): one row with no result when there are none.
    Built once per shape."""
    def owned() -> Any:
        return ReadingResult.reader_id.is_(None) if joint else ReadingResult.reader_id == bindparam("owner")
    done = (
        select(func.count().label("done")).select_from(ReadingResult)
        .join(ReadingCase, ReadingCase.id == ReadingResult.case_id)
        .where(ReadingCase.reading_id == bindparam("reading_id"), ReadingCase.phase == bindparam("phase"), owned(),
               ReadingResult.completed)
        .subquery()
    )
    of_case = ReadingResult.case_id == bindparam("case_id")
    statement = select(done.c.done, ReadingResult, User.username).select_from(done).outerjoin(
        ReadingResult, of_case if others else and_(of_case, owned())
    ).outerjoin(User, User.id == ReadingResult.reader_id)
    return statement.order_by(User.username) if others else statement


def _case_results(
    session: Session, reading: Reading, owner: int | None, phase: ReadingPhase, case: int, others: bool
) -> tuple[int, dict[SlotKey, ReadingResult], list[tuple[str, ReadingResult]]]:
    """How many of the phase's slots the owner has completed, their results of ``case`` and (with
    ``others``) the other readers' results of it by name, in one statement."""
    bound: dict[str, Any] = {"reading_id": reading.id, "phase": phase, "case_id": case}
    if owner is not None:
        bound["owner"] = owner
    rows = session.execute(_case_results_statement(owner is None, others), bound).all()
    results: dict[SlotKey, ReadingResult] = {}
    by_others: list[tuple[str, ReadingResult]] = []
    for _done, row, username in rows:
        if row is None:
            continue
        if row.reader_id == owner:
            results[(row.case_id, row.stage, row.repetition)] = row
        elif username is not None:
            by_others.append((username, row))
    return int(rows[0][0]), results, by_others


@dataclass(frozen=True)
class Layer:
    file_id: int
    path: str
    viewport: int
    overlay: bool
    colormap: str | None
    window: list[float] | None


@functools.cache
def _layer_files_statement() -> Select[tuple[str, int, FileKind]]:
    return select(File.path, File.id, File.kind).where(
        File.study_id == bindparam("study_id"), File.trash_id.is_(None), File.kind.in_((FileKind.NIFTI, FileKind.ROI))
    )


def case_layers(session: Session, reading: Reading, study_id: int, stage: int) -> tuple[str, list[Layer]]:
    """What the viewer opens for a case: the preset's images (or the study's first NIfTI) and
    the stage's overlay. Returns (layout, layers)."""
    rows = session.execute(_layer_files_statement(), {"study_id": study_id}).tuples().all()
    files = {path: file_id for path, file_id, _kind in rows}
    layers: list[Layer] = []
    layout = "1x1"
    if reading.preset:
        spec = session.scalar(
            select(ViewerPreset.spec).where(ViewerPreset.project_id == reading.project_id, ViewerPreset.name == reading.preset)
        )
        if spec is None:
            raise NotFound(f"the reading's viewer preset {reading.preset!r} was deleted; tell the reading's administrator")
        state = resolve_preset(parse_preset(json.loads(spec)), list(files))
        layout = state["layout"]
        for number, viewport in enumerate(state["viewports"]):
            for layer in [viewport["base"], *viewport["overlays"]]:
                if layer:
                    layers.append(Layer(files[layer["path"]], layer["path"], number, layer is not viewport["base"],
                                        layer["colormap"], layer["window"]))
    else:
        first = min((path for path, _id, kind in rows if kind is FileKind.NIFTI), default=None)
        if first is not None:
            layers.append(Layer(files[first], first, 0, False, None, None))
    overlay = stages_of(reading)[stage].overlay
    if overlay:
        pattern = parse_file_pattern(overlay)
        match = next((path for path in sorted(files) if pattern.matches(path)), None)
        if match is not None:
            layers.append(Layer(files[match], match, 0, True, "red", None))
    return layout, layers


@dataclass(frozen=True)
class Saved:
    """A saved slot: whether it is finished now, and the phase's finished slots and slots."""

    completed: bool
    done: int
    total: int


def save_slot(
    session: Session, found: Assigned, phase: ReadingPhase, index: int, answers: Any, active_ms: Any, complete: Any,
) -> Saved:
    """Keep a reader's answers to a slot in the newest version of the form: the autosave while
    typing (``complete`` False) or the finished answer. Concurrent saves of one slot leave one
    row: the last save wins."""
    reading, reader, version = found.reading, found.reader, found.version
    if reading.state is ReadingState.CLOSED:
        raise Conflict(f"reading {reading.name!r} is closed")
    if not isinstance(complete, bool):
        raise InvalidValue("complete must be true or false")
    if not isinstance(active_ms, int) or isinstance(active_ms, bool) or not 0 <= active_ms <= MOST_ACTIVE_MS:
        raise InvalidValue("active_ms must be the milliseconds spent on the case, a whole number")
    opened = open_slot(session, reading, reader, phase, index)
    form = version.form
    cleaned = check_answers(form, answers, complete)
    values = {
        "case_id": opened.slot.case, "reader_id": reader.owner, "stage": opened.slot.stage, "repetition": opened.slot.repetition,
        "form_version_id": version.id, "answers": json.dumps(cleaned), "active_ms": active_ms,
        # _upsert keeps a finished case finished: a later autosave does not take it out of the count.
        "completed": complete,
        "saved_by": reader.user.username, "saved_at": utcnow(),
    }
    completed = _upsert(session, values)
    if complete and phase is ReadingPhase.SERIOUS:
        _tag(session, form, cleaned, opened.study_id)
    # Counted before the save, in this transaction: the save adds its slot if it finished it.
    newly = completed and not (opened.result is not None and opened.result.completed)
    return Saved(completed, opened.done + newly, opened.total)


@functools.cache
def _upsert_statement(dialect_name: str, joint: bool) -> Any:
    """One statement, so two saves of the same slot at once cannot both insert: the unique index
    (per reader, or per case in a joint reading) makes the second an update. Built once per
    database and reading mode; the values are bound."""
    keys = ["case_id", "stage", "repetition"] if joint else ["case_id", "reader_id", "stage", "repetition"]
    where = ReadingResult.reader_id.is_(None) if joint else ReadingResult.reader_id.is_not(None)
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(ReadingResult)
    changing: dict[str, Any] = {name: statement.excluded[name] for name in _UPSERTED if name not in keys}
    # Decided in the statement, not from the row read before: an autosave racing a finishing save
    # must not unfinish it.
    changing["completed"] = ReadingResult.completed | statement.excluded.completed
    upsert = statement.on_conflict_do_update(index_elements=keys, index_where=where, set_=changing)
    return upsert.returning(ReadingResult.completed)


_UPSERTED = (
    "case_id", "reader_id", "stage", "repetition", "form_version_id", "answers", "active_ms", "completed", "saved_by", "saved_at",
)


def _upsert(session: Session, values: dict[str, Any]) -> bool:
    """Whether the slot is finished after the save."""
    connection = session.connection()
    return bool(connection.execute(_upsert_statement(connection.dialect.name, values["reader_id"] is None), values).scalar_one())


@functools.cache
def _tag_statements(dialect_name: str, level: TagLevel) -> tuple[Any, Any]:
    """Untagging one owner and tagging it (a tag already there stays as it is), built once."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    untag = delete(level.model).where(level.owner == bindparam("owner"), level.model.tag.in_(bindparam("tags", expanding=True)))
    tag = dialect.insert(level.model).values({level.owner: bindparam("owner"), level.model.tag: bindparam("tag")})
    return untag, tag.on_conflict_do_nothing()


def _tag(session: Session, form: Form, answers: dict[str, Any], study_id: int) -> None:
    """Answers of ``useastag`` items become the case's study or subject tags (the last save wins).
    An insert that leaves a tag already there alone, rather than reading the owner's tags first:
    one statement fewer, and a joint reading's readers tagging a study at once do not collide."""
    connection = session.connection()
    subject_id: int | None = None
    for level, adding, removing in answer_tags(form, answers):
        if level is TagLevel.SUBJECT and subject_id is None:
            subject_id = session.get_one(Study, study_id).subject_id
        owner = subject_id if level is TagLevel.SUBJECT and subject_id is not None else study_id
        untag, tag = _tag_statements(connection.dialect.name, level)
        if removing - adding:
            connection.execute(untag, {"owner": owner, "tags": sorted(removing - adding)})
        if adding:
            connection.execute(tag, [{"owner": owner, "tag": name} for name in sorted(adding)])


def answers_of(result: ReadingResult | None) -> dict[str, Any]:
    answers: dict[str, Any] = json.loads(result.answers) if result else {}
    return answers


def earlier_answers(opened: OpenSlot) -> list[dict[str, Any]]:
    """The reader's answers to the same case in the slots before this one (other repetitions and stages)."""
    return [
        {"stage": slot.stage, "repetition": slot.repetition, "answers": answers_of(result)}
        for slot in opened.slots[:opened.index]
        if slot.case == opened.slot.case and (result := opened.results.get(_key(slot))) is not None
    ]


def others_answers(opened: OpenSlot) -> list[dict[str, Any]] | None:
    """Other readers' answers to this case, stage and repetition; None where the reading does not show them."""
    if opened.others is None:
        return None
    return [{"reader": username, "answers": json.loads(answers)} for username, answers in opened.others]


def restart(session: Session, reading: Reading, reader: Reader, phase: ReadingPhase) -> int:
    """Delete this reader's results of a phase, where the reading allows it; others' stay."""
    allowed = reading.allow_restart_training if phase is ReadingPhase.TRAINING else reading.allow_restart_serious
    if not allowed:
        raise Forbidden(f"this reading does not allow restarting its {phase.value} phase")
    if reader.owner is None:
        raise Forbidden("a joint reading's results are shared by its readers: one reader cannot restart them")
    cases = select(ReadingCase.id).where(ReadingCase.reading_id == reading.id, ReadingCase.phase == phase)
    deleted = rows_changed(session.execute(
        delete(ReadingResult).where(ReadingResult.reader_id == reader.owner, ReadingResult.case_id.in_(cases))
    ))
    seed = secrets.token_hex(8)
    if phase is ReadingPhase.TRAINING:
        reader.seeds.training_seed = seed
    else:
        reader.seeds.serious_seed = seed
    session.flush()
    return deleted


def study_of(session: Session, study_id: int) -> tuple[Subject, Study]:
    """The study and its subject, in one statement."""
    subject, study = session.execute(
        select(Subject, Study).join(Study, Study.subject_id == Subject.id).where(Study.id == study_id)
    ).one()
    return subject, study


def readings_of(session: Session, project: Project, user: User | None, all_of_them: bool) -> list[Reading]:
    query = select(Reading).where(Reading.project_id == project.id).order_by(Reading.name)
    if not all_of_them:
        if user is None:
            return []
        query = query.join(ReadingReader, ReadingReader.reading_id == Reading.id).where(ReadingReader.user_id == user.id)
    return list(session.scalars(query))


def get_reading(session: Session, project: Project, reading_id: int) -> Reading:
    reading = session.get(Reading, reading_id)
    if reading is None or reading.project_id != project.id:
        raise NotFound(f"no reading {reading_id} in project {project.name!r}")
    return reading
