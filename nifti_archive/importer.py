"""``nora -p P --import PATH``: DICOM from a folder, zip or tar archive, into Orthanc.

The originals go to Orthanc over its REST API, so they are kept and converted by the same
queue as anything a scanner sends. Before the first instance of a series is uploaded, an
override row says which project (and, with --patients_id, --studies_id or --pattern,
which subject and study) the series belongs to, whatever the routing rules say.

Archives are read member by member in memory: nothing is ever extracted by its stored name,
so a member called ``../../etc/passwd`` cannot land anywhere; such members are reported
and skipped. Sizes are checked before reading (the declared total, the compression ratio)
and while reading (a member may not grow past what it declared).
"""

from __future__ import annotations

import io
import logging
import re
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import pydicom
from pydicom.errors import InvalidDicomError

from . import ingest
from .archive import Archive, get_project
from .errors import ArchiveError, InvalidValue
from .layout import check_folder_id, check_relative_path
from .models import File, IngestOverride
from .orthanc_api import OrthancRest, OrthancUnavailable
from .registration import file_kind, sha256_of

log = logging.getLogger(__name__)

# A member that inflates more than this is refused, and with it the archive.
MAX_COMPRESSION_RATIO = 200
MIN_SIZE_FOR_RATIO_CHECK = 1 << 20
EXTRA_FOLDER = "extra"
NAMING_TAGS = (
    "PatientID", "PatientName", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyInstanceUID",
    "StudyDescription", "SeriesNumber", "SeriesDescription", "ProtocolName", "SeriesInstanceUID", "Modality",
)


class UnsafeArchive(ArchiveError):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    read: Callable[[], bytes]


@dataclass
class ImportOptions:
    project: str
    patients_id: str | None = None
    studies_id: str | None = None
    pattern: re.Pattern[str] | None = None
    extra_extensions: frozenset[str] = frozenset()


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


def _bounded_read(stream: IO[bytes], declared: int, name: str) -> bytes:
    data = stream.read(declared + 1)
    if len(data) > declared:
        raise UnsafeArchive(f"{name} holds more data than its header declares: refusing the archive")
    return data


def _unsafe_name(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "absolute path in the archive"
    if ".." in path.parts:
        return "'..' in the archive path"
    return None


def _check_sizes(sizes: list[tuple[int, int]], limit: int, source: Path) -> None:
    total = sum(size for size, _ in sizes)
    if total > limit:
        raise UnsafeArchive(f"{source} would unpack to {total} bytes, over the limit of {limit} (import_max_bytes)")
    for size, compressed in sizes:
        if size >= MIN_SIZE_FOR_RATIO_CHECK and size > MAX_COMPRESSION_RATIO * max(compressed, 1):
            raise UnsafeArchive(f"{source} has a member compressed {size // max(compressed, 1)}:1: refusing a likely zip bomb")


def _zip_members(archive: zipfile.ZipFile, source: Path, limit: int, report: ImportReport) -> Iterator[Member]:
    infos = [i for i in archive.infolist() if not i.is_dir()]
    _check_sizes([(i.file_size, i.compress_size) for i in infos], limit, source)
    for info in infos:
        reason = _unsafe_name(info.filename)
        if reason:
            report.skip(info.filename, reason)
            continue

        def read(info: zipfile.ZipInfo = info) -> bytes:
            with archive.open(info) as stream:
                return _bounded_read(stream, info.file_size, info.filename)

        yield Member(info.filename, info.file_size, read)


def _tar_members(archive: tarfile.TarFile, source: Path, limit: int, report: ImportReport) -> Iterator[Member]:
    infos = archive.getmembers()
    files = [i for i in infos if i.isfile()]
    compressed = source.stat().st_size
    _check_sizes([(sum(i.size for i in files), compressed)], limit, source)
    for info in infos:
        reason = _unsafe_name(info.name) or (None if info.isfile() or info.isdir() else "not a regular file")
        if reason:
            report.skip(info.name, reason)
            continue
        if info.isdir():
            continue

        def read(info: tarfile.TarInfo = info) -> bytes:
            stream = archive.extractfile(info)
            assert stream is not None
            return _bounded_read(stream, info.size, info.name)

        yield Member(info.name, info.size, read)


def _folder_members(source: Path, report: ImportReport) -> Iterator[Member]:
    for path in sorted(p for p in source.rglob("*") if not p.is_dir()):
        relative = path.relative_to(source).as_posix()
        if path.is_symlink() or not path.is_file():
            report.skip(relative, "not a regular file")
            continue
        yield Member(relative, path.stat().st_size, path.read_bytes)


@contextmanager
def open_members(source: Path, limit: int, report: ImportReport) -> Iterator[list[Member]]:
    """The files to import, listed up front (for progress); archives stay open while in use."""
    if source.is_dir():
        yield list(_folder_members(source, report))
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            yield list(_zip_members(archive, source, limit, report))
    elif source.is_file() and tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            yield list(_tar_members(archive, source, limit, report))
    elif source.is_file():
        yield [Member(source.name, source.stat().st_size, source.read_bytes)]
    else:
        raise InvalidValue(f"{source} does not exist")


def read_header(data: bytes) -> pydicom.Dataset | None:
    """The DICOM header, or None for anything that is not DICOM."""
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


class Importer:
    def __init__(self, archive: Archive, orthanc: OrthancRest, options: ImportOptions) -> None:
        self.archive = archive
        self.orthanc = orthanc
        self.options = options
        self.report = ImportReport()
        self._overridden: set[str] = set()

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

    def _override(self, series_uid: str, name: str) -> IngestOverride:
        patient, study = self._ids_for(name)
        with self.archive.unit_of_work() as (session, _journal):
            project = get_project(session, self.options.project)
            override = session.get(IngestOverride, series_uid) or IngestOverride(series_instance_uid=series_uid)
            override.project_id, override.patient_id, override.study_id = project.id, patient, study
            session.add(override)
        self._overridden.add(series_uid)
        return override

    def _store(self, member: Member, data: bytes, dataset: pydicom.Dataset) -> None:
        series_uid = str(dataset.SeriesInstanceUID)
        if series_uid not in self._overridden:
            self._override(series_uid, member.name)
        try:
            answer = self.orthanc.store(data)
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

    def _extra(self, member: Member, data: bytes, folder_tags: dict[str, str]) -> None:
        if not folder_tags:
            self.report.skip(member.name, "an extra file with no DICOM beside it to tell its subject and study")
            return
        with self.archive.unit_of_work() as (session, journal):
            project = get_project(session, self.options.project)
            series_uid = folder_tags["SeriesInstanceUID"]
            override = session.get(IngestOverride, series_uid)
            subject, study = ingest.subject_and_study(session, self.archive, project, folder_tags, override)
            relative = check_relative_path(f"{EXTRA_FOLDER}/{PurePosixPath(member.name).name}")
            target = self.archive.layout.study_dir(project.name, subject.patient_id, study.study_id) / relative
            if target.exists():
                self.report.skip(member.name, f"{target} exists already")
                return
            journal.make_dir(target.parent)
            target.write_bytes(data)
            session.add(File(study_id=study.id, path=relative, kind=file_kind(relative), size=len(data), sha256=sha256_of(target)))
        self.report.extras += 1

    def run(self, source: Path, progress_stream: IO[str] = sys.stderr) -> ImportReport:
        with self.archive.sessions() as session:
            get_project(session, self.options.project)
        with open_members(source, self.archive.settings.import_max_bytes, self.report) as listed:
            if not listed:
                raise InvalidValue(f"{source} holds no files to import")
            self._send(listed, progress_stream)
        return self.report

    def _send(self, listed: list[Member], progress_stream: IO[str]) -> None:
        progress = Progress(len(listed), progress_stream)
        folder_tags: dict[str, dict[str, str]] = {}
        extras: list[tuple[Member, bytes]] = []
        for done, member in enumerate(listed, start=1):
            data = member.read()
            dataset = read_header(data)
            folder = str(PurePosixPath(member.name).parent)
            if dataset is not None:
                folder_tags.setdefault(folder, naming_tags(dataset))
                self._store(member, data, dataset)
            elif member.name.lower().endswith(tuple(self.options.extra_extensions)):
                extras.append((member, data))
            else:
                self.report.skip(member.name, "not DICOM")
            progress.update(done)
        progress.close()
        for member, data in extras:
            self._extra(member, data, folder_tags.get(str(PurePosixPath(member.name).parent), {}))
