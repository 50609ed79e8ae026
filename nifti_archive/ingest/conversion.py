"""One conversion request, from Orthanc's instances to registered files in a project.

The steps: check the request still describes the series (else supersede it), fetch the
instances into a scratch folder, convert (or describe a non-image object), decide project,
subject, study and series folder, then in one unit of work move the results into the archive
(or into quarantine when the series looks incomplete), move what an earlier conversion of
the series made into the trash, register the files with their provenance and close the
request. A crash before the commit leaves the request running: once its claim's lease has
passed another worker takes it (and Orthanc's next start puts its own workers' back at once).
"""

from __future__ import annotations

import enum
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nifti_archive import hooks
from nifti_archive.archive import Archive, FileJournal
from nifti_archive.catalog.registration import Provenance, file_kind, register_file
from nifti_archive.errors import ArchiveError
from nifti_archive.ingest import conversion_queue, converter, naming, series_projects
from nifti_archive.ingest.placement import subject_and_study
from nifti_archive.layout import Location
from nifti_archive.models import (
    ConversionReason,
    ConversionRequest,
    ConversionState,
    File,
    FileKind,
    IngestOverride,
    Project,
    Study,
    Subject,
    Trash,
)
from nifti_archive.orthanc_api import OrthancApi, OrthancUnavailable, SeriesInfo, series_info

log = logging.getLogger(__name__)

QUARANTINE_FOLDER = ".quarantine"
DICOM_ONLY_FILE = "dicom-only.json"
# The converter a DICOM-only listing records: nothing converted it.
NO_CONVERTER = "none"
# Objects that are not pixel data to stack: kept in Orthanc and listed, never converted.
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "RTSTRUCT", "SEG", "DOC", "RTPLAN", "RTRECORD", "REG"})
NON_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.104.2"})
# Direct identifiers that never go into a sidecar (dcm2niix's -ba removes most already).
PLACEMENT_ATTEMPTS = 3
SIDECAR_DENYLIST = frozenset(
    {"PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientAddress", "AccessionNumber"}
)
# What else a pseudonymised project's sidecars lose: where, by whom and on which device a patient
# was seen, and the ids a hospital can look up. Sex, age, weight and acquisition stay: research data.
PSEUDONYMISED_SIDECAR_DENYLIST = SIDECAR_DENYLIST | frozenset({
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "RequestingPhysician",
    "PhysiciansOfRecord", "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "PatientBirthName",
    "PatientMotherBirthName", "PatientTelephoneNumbers", "OtherPatientNames",
})


class Phase(enum.Enum):
    """The steps of one conversion whose seconds the log reports (bench/ingest reads them)."""

    INSPECT = "inspect"
    FETCH = "fetch"
    CONVERT = "dcm2niix"
    REGISTER = "register"


@dataclass
class PhaseClock:
    """Seconds spent in each phase of one conversion, measured lap by lap."""

    seconds: dict[Phase, float] = field(default_factory=dict)
    _since: float = field(default_factory=time.perf_counter)

    def lap(self, phase: Phase) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._since
        self._since = now

    def summary(self) -> str:
        return " ".join(f"{phase.value}={seconds:.3f}" for phase, seconds in self.seconds.items())


@dataclass(frozen=True)
class Placement:
    project: Project
    subject: Subject
    study: Study
    series_folder: str


@dataclass(frozen=True)
class Converted:
    """What converting a series made in scratch: each output with its archive name, and why the
    series looks incomplete (empty when it does not)."""

    outputs: list[tuple[Path, str]]
    reasons: list[str]
    converter_name: str


def output_kind(name: str) -> FileKind:
    """The kind of a file a conversion made, by its archive name."""
    return FileKind.DICOM_ONLY if name == DICOM_ONLY_FILE else file_kind(name)


def provenance(
    series_uid: str, orthanc_series_id: str, instance_count: int, converter_name: str, note: str | None = None
) -> Provenance:
    """A converted file's provenance, with dcm2niix's version and flags where dcm2niix made it."""
    by_dcm2niix = converter_name == converter.NAME
    return Provenance(
        source_series_uid=series_uid,
        orthanc_series_id=orthanc_series_id,
        instance_count=instance_count,
        converter=converter_name,
        converter_version=converter.version() if by_dcm2niix else None,
        converter_flags=converter.flags() if by_dcm2niix else None,
        note=note,
    )


def is_non_image(info: SeriesInfo) -> bool:
    return info.modality in NON_IMAGE_MODALITIES or info.tags.get("SOPClassUID", "") in NON_IMAGE_SOP_CLASSES


def _project_for(session: Session, journal: FileJournal, archive: Archive, info: SeriesInfo) -> tuple[Project, IngestOverride | None]:
    placed = series_projects.placed_project(session, info.series_uid)
    if placed is not None:
        return placed
    return series_projects.routed_project(session, journal, archive.layout, info.called_aet, info.tags, info.origins), None


def _series_folder(session: Session, study: Study, project: Project, info: SeriesInfo, rename: bool) -> str:
    rows = session.execute(
        select(File.path, File.source_series_uid).where(File.study_id == study.id, File.trash_id.is_(None))
    ).all()
    folders: dict[str, str | None] = {path.split("/", 1)[0]: uid for path, uid in rows}
    mine = next((folder for folder, uid in folders.items() if uid == info.series_uid), None)
    if mine is not None and not rename:
        return mine
    # A reconversion names the series afresh, so a changed template applies; its own folder is
    # free for it, since its earlier files go to the trash in the same unit of work.
    taken = {folder for folder, uid in folders.items() if uid != info.series_uid}
    return naming.unique_name(naming.render(project.series_template, info.tags), taken)


def place(session: Session, journal: FileJournal, archive: Archive, info: SeriesInfo, rename: bool = False) -> Placement:
    """Where a series goes; ``rename``: a reconversion, named by the project's series template again."""
    project, override = _project_for(session, journal, archive, info)
    # Placing reads which folder names are taken, then takes one; two workers placing into one
    # project at once would both find a name free (names must also differ in more than case,
    # which no unique index checks). Touching the project row serialises them until the commit:
    # a row lock on PostgreSQL, the database's write lock on SQLite.
    session.execute(update(Project).where(Project.id == project.id).values(description=Project.description))
    subject, study = subject_and_study(session, archive, project, info.tags, override)
    return Placement(project, subject, study, _series_folder(session, study, project, info, rename))


def _scrub_sidecar(path: Path, denylist: frozenset[str] = SIDECAR_DENYLIST) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    if denylist & set(document):
        path.write_text(json.dumps({k: v for k, v in document.items() if k not in denylist}, indent=2))


def scrub_for_project(project: Project, outputs: list[tuple[Path, str]]) -> None:
    """A pseudonymised project's sidecars lose what else could identify the patient."""
    if project.pseudonymise:
        for path, name in outputs:
            if name.endswith(".json") and name != DICOM_ONLY_FILE:
                _scrub_sidecar(path, PSEUDONYMISED_SIDECAR_DENYLIST)


def _series_number(info: SeriesInfo) -> int:
    try:
        return int(info.tags.get("SeriesNumber", "0"))
    except ValueError:
        return 0


def _describe_non_image(info: SeriesInfo, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    description = {
        "Modality": info.modality,
        "SOPClassUID": info.tags.get("SOPClassUID", ""),
        "SeriesDescription": info.tags.get("SeriesDescription", ""),
        "SeriesInstanceUID": info.series_uid,
        "OrthancSeriesID": info.orthanc_id,
        "Instances": len(info.instance_ids),
        "Note": "stored in Orthanc only; not an image series",
    }
    path = out_dir / DICOM_ONLY_FILE
    path.write_text(json.dumps(description, indent=2))
    return path


def _trash_earlier_conversion(session: Session, journal: FileJournal, archive: Archive, placement: Placement, info: SeriesInfo) -> None:
    earlier = list(
        session.scalars(select(File).where(File.orthanc_series_id == info.orthanc_id, File.trash_id.is_(None)))
    )
    if not earlier:
        return
    entry = Trash(
        project_id=placement.project.id,
        summary=f"replaced by a new conversion of series {info.series_uid}",
        deleted_by="conversion",
    )
    session.add(entry)
    session.flush()
    for record in earlier:
        study = session.get_one(Study, record.study_id)
        subject = session.get_one(Subject, study.subject_id)
        location = Location(placement.project.name, subject.patient_id, study.study_id, record.path)
        journal.move(archive.layout.file_path(location), archive.layout.in_trash(entry.id, location))
        record.trash_id = entry.id
        # A renamed series would leave its old folder behind, empty (a folder with other files stays).
        with suppress(OSError):
            archive.layout.file_path(location).parent.rmdir()
    session.flush()


def _clear_orphan(target: Path) -> None:
    # A file nobody registered is what a conversion left when the process died before its
    # commit: derived data, made again now from the originals in Orthanc.
    if target.exists():
        log.warning("replacing %s, left over by an interrupted conversion", target)
        target.unlink()


def _publish(
    session: Session,
    journal: FileJournal,
    archive: Archive,
    placement: Placement,
    info: SeriesInfo,
    outputs: list[tuple[Path, str]],
    converter_name: str,
) -> str:
    _trash_earlier_conversion(session, journal, archive, placement, info)
    origin = provenance(info.series_uid, info.orthanc_id, len(info.instance_ids), converter_name)
    for scratch_path, name in outputs:
        relative = f"{placement.series_folder}/{name}"
        location = Location(placement.project.name, placement.subject.patient_id, placement.study.study_id, relative)
        target = archive.layout.file_path(location)
        _clear_orphan(target)
        journal.move(scratch_path, target)
        register_file(session, placement.study, relative, target, kind=output_kind(name), provenance=origin)
    return f"{placement.project.name}/{placement.subject.patient_id}/{placement.study.study_id}/{placement.series_folder}"


def _quarantine(journal: FileJournal, archive: Archive, placement: Placement, request_id: int, outputs: list[tuple[Path, str]]) -> str:
    folder = archive.layout.project_dir(placement.project.name) / QUARANTINE_FOLDER / str(request_id)
    for scratch_path, name in outputs:
        _clear_orphan(folder / name)
        journal.move(scratch_path, folder / name)
    return str(folder)


def _fetch(api: OrthancApi, info: SeriesInfo, folder: Path) -> None:
    folder.mkdir(parents=True)
    for index, instance_id in enumerate(info.instance_ids):
        (folder / f"{index:06d}.dcm").write_bytes(api.dicom(instance_id))


@contextmanager
def scratch_folder(archive: Archive, prefix: str) -> Iterator[Path]:
    """A fresh folder under the archive's scratch, removed afterwards."""
    scratch_root = archive.settings.var_dir / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix=prefix) as scratch_text:
        yield Path(scratch_text)


def convert_series(api: OrthancApi, info: SeriesInfo, scratch: Path, clock: PhaseClock) -> Converted:
    """Fetch the series' instances into ``scratch`` and convert them there (or describe a
    non-image object), with the archive's names and sidecars without direct identifiers."""
    if is_non_image(info):
        return Converted([(_describe_non_image(info, scratch / "out"), DICOM_ONLY_FILE)], [], NO_CONVERTER)
    _fetch(api, info, scratch / "dicom")
    clock.lap(Phase.FETCH)
    run = converter.convert(scratch / "dicom", scratch / "out")
    clock.lap(Phase.CONVERT)
    number = _series_number(info)
    outputs = [(path, converter.archive_name(path, number)) for path in run.outputs]
    for path, _name in outputs:
        if path.name.endswith(".json"):
            _scrub_sidecar(path)
    reasons = [r for r in [info.incomplete_reason, info.mixed_sources_reason, *run.suspect_lines] if r]
    return Converted(outputs, reasons, converter.NAME)


def convert_request(archive: Archive, api: OrthancApi, request_id: int) -> tuple[ConversionState, str, str]:
    """Do one claimed request; returns its final state, message and target."""
    with archive.sessions() as session:
        request = session.get_one(ConversionRequest, request_id)
        series_id, wanted_hash = request.orthanc_series_id, request.instances_hash
        rename = request.reason is ConversionReason.RECONVERT
    clock = PhaseClock()
    info = series_info(api, series_id)
    clock.lap(Phase.INSPECT)
    if info.instances_hash != wanted_hash:
        with archive.unit_of_work() as (session, _journal):
            conversion_queue.enqueue(
                session, info.orthanc_id, info.instances_hash, len(info.instance_ids), info.series_uid,
                ConversionReason.NEWER_INSTANCES,
            )
        return ConversionState.SUPERSEDED, "the series has other instances now; a newer request converts them", ""
    special = hooks.converter_for(info.modality)
    if special is not None:
        state, message, target = special(archive, api, info, request_id)
        return ConversionState(state), str(message), str(target)
    with scratch_folder(archive, f"request-{request_id}-") as scratch:
        converted = convert_series(api, info, scratch, clock)
        attempt = 1
        while True:
            try:
                outcome = _commit(archive, info, request_id, converted, rename)
            except IntegrityError:
                # Another worker created the same subject or study a moment ago; the next
                # attempt finds it. The journal has moved our outputs back into scratch.
                if attempt == PLACEMENT_ATTEMPTS:
                    raise
                attempt += 1
                continue
            clock.lap(Phase.REGISTER)
            log.info("conversion request %d of %d instances took %s seconds", request_id, len(info.instance_ids),
                     clock.summary())
            return outcome


def _commit(
    archive: Archive, info: SeriesInfo, request_id: int, converted: Converted, rename: bool
) -> tuple[ConversionState, str, str]:
    with archive.unit_of_work() as (session, journal):
        conversion_queue.confirm_claim(session, request_id)
        placement = place(session, journal, archive, info, rename)
        scrub_for_project(placement.project, converted.outputs)
        request = session.get_one(ConversionRequest, request_id)
        request.project_id, request.study_id = placement.project.id, placement.study.id
        request.series_folder = placement.series_folder
        if converted.reasons:
            target = _quarantine(journal, archive, placement, request_id, converted.outputs)
            state, message = ConversionState.QUARANTINED, "; ".join(converted.reasons)
        else:
            target = _publish(session, journal, archive, placement, info, converted.outputs, converted.converter_name)
            state, message = ConversionState.DONE, ""
        conversion_queue.finish(session, request_id, state, message, target)
        if state is ConversionState.DONE:
            conversion_queue.wake_waiting(session, info.series_uid)
        project_name, study_pk = placement.project.name, placement.study.id
    if state is ConversionState.DONE:
        hooks.fire("series_converted", archive, project_name, study_pk)
    return state, message, target


def work_one(archive: Archive, api: OrthancApi, worker: str) -> bool:
    """Claim and convert one request; False when the queue had nothing to claim. OrthancUnavailable
    when Orthanc cannot be reached (the request is pending again)."""
    lease = timedelta(seconds=archive.settings.conversion_lease_seconds)
    claim = conversion_queue.claim_next(archive.sessions, worker, lease)
    if claim is None:
        return False
    try:
        with conversion_queue.holding(archive.sessions, claim, lease):
            _convert_claimed(archive, api, claim.request_id)
    except conversion_queue.ClaimLost as exc:
        log.warning("%s", exc)
    return True


def _convert_claimed(archive: Archive, api: OrthancApi, request_id: int) -> None:
    try:
        state, message, target = convert_request(archive, api, request_id)
    except conversion_queue.ClaimLost:
        raise
    except Exception as exc:  # one series' fault must never stop the queue: record it, go on
        if isinstance(exc, OrthancUnavailable) and exc.unreachable:
            # Not the series' fault: a worker that reaches Orthanc converts it (this one, once it does).
            with archive.unit_of_work() as (session, _journal):
                conversion_queue.give_back(session, request_id, str(exc)[:2000])
            raise
        if isinstance(exc, (ArchiveError, converter.ConversionFailed)):
            log.warning("conversion request %d failed: %s", request_id, exc)
        else:
            log.exception("conversion request %d failed", request_id)
        with archive.unit_of_work() as (session, _journal):
            conversion_queue.finish(session, request_id, ConversionState.FAILED, str(exc)[:2000])
        return
    if state is ConversionState.SUPERSEDED:
        with archive.unit_of_work() as (session, _journal):
            conversion_queue.finish(session, request_id, state, message)
    log.info("conversion request %d: %s %s %s", request_id, state.value, target, message)


def scratch_cleanup(archive: Archive) -> None:
    """Scratch folders of conversions that died with their process."""
    shutil.rmtree(archive.settings.var_dir / "scratch", ignore_errors=True)
