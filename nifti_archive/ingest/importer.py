"""``nora -p P --import PATH``: DICOM from a folder, zip or tar archive, into Orthanc.

The originals go to Orthanc over its REST API, so they are kept and converted by the same
queue as anything a scanner sends. Before the first instance of a series is uploaded, an
override row says which project (and, with --patients_id, --studies_id or --pattern,
which subject and study) the series belongs to, whatever the routing rules say. An import
without a project (a drop folder with --routing) places each series as Orthanc's own ingest
does: where it lives already, else where the routing rules on its tags send it.

Archives are read member by member in memory: nothing is ever extracted by its stored name,
so a member called ``../../etc/passwd`` cannot land anywhere; such members are reported
and skipped. Sizes are checked before reading (the declared total, the compression ratio)
and while reading (a member may not grow past what it declared).

Everything is read once before anything is written: a damaged or lying archive, an id that
is not a valid folder name, or a series that lives in another project already refuses the
whole import, with nothing stored and no override written. Messages name the user's input
(the path given, the uploaded file's name, the member), never a path on the server.
"""

from __future__ import annotations

import io
import logging
import lzma
import re
import shutil
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from nifti_archive.archive import Archive, FileJournal, get_project
from nifti_archive.catalog.registration import StudyDetails, ensure_study, register_file
from nifti_archive.errors import ArchiveError, Conflict, InvalidValue
from nifti_archive.ingest import series_projects
from nifti_archive.ingest.placement import subject_and_study
from nifti_archive.layout import check_folder_id, check_relative_path
from nifti_archive.models import IngestOverride, Project
from nifti_archive.orthanc_api import OrthancRest, OrthancUnavailable

if TYPE_CHECKING:
    import pydicom
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# A member that inflates more than this is refused, and with it the archive.
MAX_COMPRESSION_RATIO = 200
MIN_SIZE_FOR_RATIO_CHECK = 1 << 20
EXTRA_FOLDER = "extra"
NAMING_TAGS = (
    "PatientID", "PatientName", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyInstanceUID",
    "StudyDescription", "SeriesNumber", "SeriesDescription", "ProtocolName", "SeriesInstanceUID", "Modality",
)
MAX_UID = 64
COPY_BLOCK = 1 << 20
# Files carry no called AET: only the routing rules on tags can place them.
NO_CALLED_AET = ""
# What the standard library raises for archives whose bytes do not match their headers.
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
           RuntimeError, OSError, ValueError)
# How archives start, to tell a damaged archive from a file that is no archive at all.
ARCHIVE_SIGNATURES = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"),
                      (b"\xfd7zXZ\x00", "xz"))


class UnsafeArchive(ArchiveError):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    # Writes the member's bytes to a file in pieces, checked against its header as they come:
    # a large member (an upload extracted into a resource) never sits in memory whole.
    copy_to: Callable[[IO[bytes]], object]

    def read(self) -> bytes:
        sink = io.BytesIO()
        self.copy_to(sink)
        return sink.getvalue()


@dataclass(frozen=True)
class ExtrasStudy:
    """Where extra files with no DICOM beside them go: a subject and study that are no patient's
    (a drop folder's own), made where missing."""

    subject: str
    study: str
    study_date: date | None = None

    def __post_init__(self) -> None:
        check_folder_id("subject", self.subject)
        check_folder_id("study", self.study)


@dataclass
class ImportOptions:
    # None: each series where it lives already, else where the routing rules send it (no called
    # AET: a file has none), and extra files with the series beside them.
    project: str | None
    patients_id: str | None = None
    studies_id: str | None = None
    pattern: re.Pattern[str] | None = None
    extra_extensions: frozenset[str] = frozenset()
    # None: such files are skipped, as nothing tells their subject and study.
    extras_study: ExtrasStudy | None = None


@dataclass
class ImportReport:
    stored: int = 0
    already_stored: int = 0
    extras: int = 0
    series: set[str] = field(default_factory=set)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))
        log.warning("skipped %s: %s", name, reason)


def compile_pattern(text: str) -> re.Pattern[str]:
    """NORA writes named groups as ``(?<name>...)``; Python as ``(?P<name>...)``: take both."""
    try:
        pattern = re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", text))
    except re.error as exc:
        raise InvalidValue(f"invalid --pattern {text!r}: {exc}") from exc
    if not {"patients_id", "studies_id"} & set(pattern.groupindex):
        raise InvalidValue("--pattern needs a named group patients_id or studies_id")
    return pattern


def parse_extensions(text: str) -> frozenset[str]:
    return frozenset("." + part.strip().lstrip(".").lower() for part in text.split(",") if part.strip())


class _SinkFailed(Exception):
    """Writing a member's bytes failed (a full disk): the writer's fault, not the archive's."""

    def __init__(self, fault: OSError) -> None:
        super().__init__(str(fault))
        self.fault = fault


def _bounded_copy(stream: IO[bytes], sink: IO[bytes], declared: int, name: str) -> int:
    copied = 0
    while block := stream.read(min(COPY_BLOCK, declared + 1 - copied)):
        copied += len(block)
        if copied > declared:
            raise UnsafeArchive(f"{name} holds more data than its header declares: refusing the archive")
        try:
            sink.write(block)
        except OSError as exc:
            raise _SinkFailed(exc) from exc
    return copied


def _copy_file(path: Path, sink: IO[bytes]) -> None:
    with path.open("rb") as source:
        shutil.copyfileobj(source, sink)


def _unsafe_name(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "absolute path in the archive"
    if ".." in path.parts:
        return "'..' in the archive path"
    return None


def check_sizes(sizes: list[tuple[int, int]], limit: int, display: str) -> None:
    total = sum(size for size, _ in sizes)
    if total > limit:
        raise UnsafeArchive(f"{display} would unpack to {total} bytes, over the limit of {limit} (import_max_bytes)")
    for size, compressed in sizes:
        if size >= MIN_SIZE_FOR_RATIO_CHECK and size > MAX_COMPRESSION_RATIO * max(compressed, 1):
            raise UnsafeArchive(f"{display} has a member compressed {size // max(compressed, 1)}:1: refusing a likely zip bomb")


def _damaged(display: str, exc: BaseException, member: str | None = None) -> UnsafeArchive:
    where = f"{display}, member {member}" if member else display
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return UnsafeArchive(f"{where}: damaged or inconsistent archive ({reason}); nothing was imported")


def _guarded(copy: Callable[[IO[bytes]], object], display: str, member: str) -> Callable[[IO[bytes]], object]:
    def guarded(sink: IO[bytes]) -> object:
        try:
            return copy(sink)
        except _SinkFailed as failed:
            raise failed.fault from None
        except DAMAGED as exc:
            raise _damaged(display, exc, member) from exc

    return guarded


def _zip_members(archive: zipfile.ZipFile, display: str, limit: int, report: ImportReport) -> Iterator[Member]:
    infos = [i for i in archive.infolist() if not i.is_dir()]
    check_sizes([(i.file_size, i.compress_size) for i in infos], limit, display)
    for info in infos:
        reason = _unsafe_name(info.filename)
        if reason:
            report.skip(info.filename, reason)
            continue

        def copy(sink: IO[bytes], info: zipfile.ZipInfo = info) -> None:
            with archive.open(info) as stream:
                _bounded_copy(stream, sink, info.file_size, info.filename)

        yield Member(info.filename, info.file_size, _guarded(copy, display, info.filename))


def _tar_members(archive: tarfile.TarFile, source: Path, display: str, limit: int, report: ImportReport) -> Iterator[Member]:
    infos = archive.getmembers()
    files = [i for i in infos if i.isfile()]
    compressed = source.stat().st_size
    check_sizes([(sum(i.size for i in files), compressed)], limit, display)
    for info in infos:
        reason = _unsafe_name(info.name) or (None if info.isfile() or info.isdir() else "not a regular file")
        if reason:
            report.skip(info.name, reason)
            continue
        if info.isdir():
            continue

        def copy(sink: IO[bytes], info: tarfile.TarInfo = info) -> None:
            stream = archive.extractfile(info)
            assert stream is not None
            copied = _bounded_copy(stream, sink, info.size, info.name)
            if copied < info.size:
                raise EOFError(f"{copied} of {info.size} bytes")

        yield Member(info.name, info.size, _guarded(copy, display, info.name))


def _folder_members(source: Path, report: ImportReport) -> Iterator[Member]:
    for path in sorted(p for p in source.rglob("*") if not p.is_dir()):
        relative = path.relative_to(source).as_posix()
        if path.is_symlink() or not path.is_file():
            report.skip(relative, "not a regular file")
            continue
        yield Member(relative, path.stat().st_size, partial(_copy_file, path))


def archive_kind(source: Path) -> str | None:
    """``zip`` or ``tar`` for an archive Python can open, else None."""
    if zipfile.is_zipfile(source):
        return "zip"
    if tarfile.is_tarfile(source):
        return "tar"
    return None


def _looks_like_archive(source: Path) -> str | None:
    with source.open("rb") as fh:
        head = fh.read(512)
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    return next((kind for signature, kind in ARCHIVE_SIGNATURES if head.startswith(signature)), None)


def check_archive(source: Path, display: str) -> None:
    """Refuses what is not a zip or tar archive, telling a damaged one from a file of another kind."""
    if archive_kind(source) is not None:
        return
    kind = _looks_like_archive(source)
    if kind is not None:
        raise UnsafeArchive(f"{display} is a damaged or truncated {kind} archive; nothing was imported")
    raise InvalidValue(f"{display} is not a zip or tar archive")


@contextmanager
def _opened(source: Path, display: str, kind: str) -> Iterator[zipfile.ZipFile | tarfile.TarFile]:
    try:
        archive: zipfile.ZipFile | tarfile.TarFile = zipfile.ZipFile(source) if kind == "zip" else tarfile.open(source)
    except DAMAGED as exc:
        raise _damaged(display, exc) from exc
    with archive:
        yield archive


@contextmanager
def open_members(source: Path, limit: int, report: ImportReport, display: str) -> Iterator[list[Member]]:
    """The files to import, listed up front (for progress); archives stay open while in use."""
    if source.is_dir():
        yield list(_folder_members(source, report))
        return
    if not source.is_file():
        raise InvalidValue(f"{display} does not exist")
    kind = archive_kind(source)
    if kind is None:
        if _looks_like_archive(source):
            check_archive(source, display)
        yield [Member(source.name, source.stat().st_size, partial(_copy_file, source))]
        return
    with _opened(source, display, kind) as archive:
        try:
            if isinstance(archive, zipfile.ZipFile):
                listed = list(_zip_members(archive, display, limit, report))
            else:
                listed = list(_tar_members(archive, source, display, limit, report))
        except DAMAGED as exc:
            raise _damaged(display, exc) from exc
        yield listed


def read_header(data: bytes) -> pydicom.Dataset | None:
    """The DICOM header, or None for anything that is not DICOM."""
    # Imported here: pydicom takes a third of a second to load, and every nora command loads
    # this module, while only imports read DICOM.
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=data[128:132] != b"DICM")
    except (InvalidDicomError, EOFError, ValueError, TypeError, OSError, KeyError, AttributeError):
        return None
    if "SOPInstanceUID" not in dataset or "SeriesInstanceUID" not in dataset:
        return None
    return dataset


def naming_tags(dataset: pydicom.Dataset) -> dict[str, str]:
    return {name: str(dataset.get(name, "") or "") for name in NAMING_TAGS}


class Progress:
    """A progress line on a terminal; a log line every tenth of the way elsewhere."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self.last_tenth = -1

    def update(self, done: int) -> None:
        fraction = done / self.total
        if self.tty:
            bar = "#" * int(30 * fraction)
            self.stream.write(f"\rimport [{bar:<30}] {done}/{self.total}")
            self.stream.flush()
        elif int(fraction * 10) != self.last_tenth:
            self.last_tenth = int(fraction * 10)
            log.info("import: %d of %d files", done, self.total)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


@dataclass
class Survey:
    """What the first reading found: each DICOM member's series, the extra files, and per folder
    the tags of its first DICOM file (which names the subject and study of the extra files)."""

    dicom: list[tuple[Member, str]] = field(default_factory=list)
    extras: list[Member] = field(default_factory=list)
    folder_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    first_member: dict[str, str] = field(default_factory=dict)
    series_tags: dict[str, dict[str, str]] = field(default_factory=dict)


def _folder(member: Member) -> str:
    return str(PurePosixPath(member.name).parent)


class Importer:
    def __init__(self, archive: Archive, orthanc: OrthancRest, options: ImportOptions) -> None:
        self.archive = archive
        self.orthanc = orthanc
        self.options = options
        self.report = ImportReport()
        # The project each series went to, by its SeriesInstanceUID.
        self.projects: dict[str, str] = {}

    def _ids_for(self, name: str) -> tuple[str | None, str | None]:
        patient, study = self.options.patients_id, self.options.studies_id
        if self.options.pattern is not None:
            match = self.options.pattern.search(name)
            if match:
                groups = match.groupdict()
                patient = groups.get("patients_id") or patient
                study = groups.get("studies_id") or study
        return (
            check_folder_id("subject", patient) if patient else None,
            check_folder_id("study", study) if study else None,
        )

    def _survey(self, listed: list[Member]) -> Survey:
        survey = Survey()
        for member in listed:
            dataset = read_header(member.read())
            if dataset is None:
                if member.name.lower().endswith(tuple(self.options.extra_extensions)):
                    survey.extras.append(member)
                else:
                    self.report.skip(member.name, "not DICOM")
                continue
            series_uid = str(dataset.SeriesInstanceUID).strip()
            if not series_uid or len(series_uid) > MAX_UID:
                self.report.skip(member.name, f"SeriesInstanceUID is empty or longer than {MAX_UID} characters")
                continue
            survey.folder_tags.setdefault(_folder(member), naming_tags(dataset))
            survey.first_member.setdefault(series_uid, member.name)
            survey.series_tags.setdefault(series_uid, naming_tags(dataset))
            survey.dicom.append((member, series_uid))
        return survey

    def _claim(self, survey: Survey) -> None:
        """One override per series, all or none; refused where a series lives in another project."""
        claims = {}
        for series_uid, name in survey.first_member.items():
            patient, study = self._ids_for(name)
            claims[series_uid] = series_projects.Claim(patient, study)
        try:
            with self.archive.unit_of_work() as (session, journal):
                if self.options.project is None:
                    self._route(session, journal, survey, claims)
                else:
                    series_projects.claim(session, get_project(session, self.options.project), claims)
                    self.projects = dict.fromkeys(claims, self.options.project)
        except series_projects.PlacedElsewhere as exc:
            members = ", ".join(survey.first_member[uid] for uid in exc.series_uids)
            raise Conflict(
                f"{members}: series {', '.join(exc.series_uids)} belong(s) to another project already and a series "
                f"lives in one project: import into that project instead; nothing was imported"
            ) from exc

    def _route(self, session: Session, journal: FileJournal, survey: Survey, claims: dict[str, series_projects.Claim]) -> None:
        """Each series to the project it lives in, or claimed for the one the routing rules give it."""
        routed: dict[int, tuple[Project, dict[str, series_projects.Claim]]] = {}
        for series_uid, wanted in claims.items():
            placed = series_projects.placed_project(session, series_uid)
            if placed is not None:
                self.projects[series_uid] = placed[0].name
                continue
            project = series_projects.routed_project(session, journal, self.archive.layout, NO_CALLED_AET,
                                                     survey.series_tags[series_uid])
            routed.setdefault(project.id, (project, {}))[1][series_uid] = wanted
            self.projects[series_uid] = project.name
        for project, routed_claims in routed.values():
            series_projects.claim(session, project, routed_claims)

    def _store(self, member: Member, series_uid: str) -> None:
        try:
            answer = self.orthanc.store(member.read())
        except OrthancUnavailable as exc:
            if exc.status is not None and 400 <= exc.status < 500:  # a broken file, not a broken link
                self.report.skip(member.name, f"Orthanc refused it: {exc}")
                return
            raise
        self.report.series.add(series_uid)
        if answer.get("Status") == "AlreadyStored":
            self.report.already_stored += 1
        else:
            self.report.stored += 1

    def _extra(self, member: Member, folder_tags: dict[str, str]) -> None:
        home = self.options.extras_study
        if not folder_tags and home is None:
            self.report.skip(member.name, "an extra file with no DICOM beside it to tell its subject and study")
            return
        data = member.read()
        with self.archive.unit_of_work() as (session, journal):
            if folder_tags:
                project = get_project(session, self.projects[folder_tags["SeriesInstanceUID"].strip()])
                override = session.get(IngestOverride, folder_tags["SeriesInstanceUID"])
                subject, study = subject_and_study(session, self.archive, project, folder_tags, override)
            else:
                assert home is not None and self.options.project is not None
                project = get_project(session, self.options.project)
                # Made without an identity: this subject stands for no patient.
                study = ensure_study(session, project, home.subject, home.study, details=StudyDetails(study_date=home.study_date))
                subject = study.subject
            relative = check_relative_path(f"{EXTRA_FOLDER}/{PurePosixPath(member.name).name}")
            target = self.archive.layout.study_dir(project.name, subject.patient_id, study.study_id) / relative
            if target.exists():
                self.report.skip(member.name, f"{relative} exists already in its study")
                return
            journal.make_dir(target.parent)
            target.write_bytes(data)
            register_file(session, study, relative, target)
        self.report.extras += 1

    def run(self, source: Path, progress_stream: IO[str] = sys.stderr, display: str | None = None) -> ImportReport:
        """Import ``source``; ``display`` is how messages name it (the upload's name), by default the path given."""
        shown = display if display is not None else str(source)
        if self.options.project is not None:
            with self.archive.sessions() as session:
                get_project(session, self.options.project)
        with open_members(source, self.archive.settings.import_max_bytes, self.report, shown) as listed:
            if not listed:
                raise InvalidValue(f"{shown} holds no files to import")
            survey = self._survey(listed)
            if survey.dicom:
                self._claim(survey)
            self._send(survey, progress_stream)
        return self.report

    def _send(self, survey: Survey, progress_stream: IO[str]) -> None:
        progress = Progress(len(survey.dicom), progress_stream)
        for done, (member, series_uid) in enumerate(survey.dicom, start=1):
            self._store(member, series_uid)
            progress.update(done)
        progress.close()
        for member in survey.extras:
            self._extra(member, survey.folder_tags.get(_folder(member), {}))
