"""``nora --admin rebuild PROJECT``: a project's converted files made again from Orthanc's originals.

Every live file that the index says a conversion made (it names its Orthanc series) is made again
in scratch by the conversion workers' own steps (``conversion.convert_series``, the project's
sidecar scrubbing) and compared with the file in the tree as a reconversion preview compares
(``reconversion_diff.facts``: an image's voxels, shape and affine, a sidecar's fields, the bytes of
anything else). A file that is missing or differs is replaced by the one made again, and its
index row takes the new size and checksum; the row itself (its id, tags and provenance) stays.
So the rebuilt tree is the live one file for file, nothing is registered twice, and a second
rebuild finds nothing to do. The trash is not rebuilt: its files' series may have other
instances now, and nobody asked for them back.
"""

from __future__ import annotations

import enum
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nibabel.filebasedimages import ImageFileError
from sqlalchemy import select

from nifti_archive import hooks
from nifti_archive.archive import Archive, get_project
from nifti_archive.catalog.registration import sha256_of
from nifti_archive.errors import Conflict
from nifti_archive.ingest import conversion, converter, reconversion_diff
from nifti_archive.layout import Location
from nifti_archive.models import File, Project, Study, Subject
from nifti_archive.orthanc_api import OrthancApi, OrthancUnavailable, SeriesInfo, series_info

log = logging.getLogger(__name__)

# What reading a damaged file can raise: a truncated or garbled gzip, NIfTI header or JSON.
UNREADABLE = (OSError, EOFError, ValueError, zlib.error, ImageFileError)


class Finding(enum.Enum):
    EQUAL = "equal"
    MISSING = "missing"
    DIFFERS = "differs"
    # The conversion makes no file of this name any more (a converter upgrade): --reconvert's business.
    NOT_MADE = "not made"


REPLACEABLE = (Finding.MISSING, Finding.DIFFERS)


@dataclass(frozen=True)
class Indexed:
    """A live converted file of the project, as the index has it."""

    file_id: int
    location: Location
    instance_count: int | None
    converter_version: str | None

    @property
    def shown(self) -> str:
        return f"{self.location.subject}/{self.location.study}/{self.location.path}"

    @property
    def name(self) -> str:
        return PurePosixPath(self.location.path).name


@dataclass(frozen=True)
class FileCheck:
    file: Indexed
    finding: Finding
    detail: str = ""


@dataclass(frozen=True)
class SeriesCheck:
    orthanc_series_id: str
    series_uid: str
    # How many live files of the series the index names.
    indexed: int
    files: list[FileCheck]
    # Why the series was not made again (its files are then left as they are).
    skipped: str | None = None
    replaced: bool = False


def _indexed_series(archive: Archive, project_name: str) -> tuple[Project, dict[str, list[Indexed]]]:
    with archive.sessions() as session:
        project = get_project(session, project_name)
        rows = session.execute(
            select(File.id, File.orthanc_series_id, Subject.patient_id, Study.study_id, File.path, File.instance_count,
                   File.converter_version)
            .join(Study, Study.id == File.study_id)
            .join(Subject, Subject.id == Study.subject_id)
            .where(Subject.project_id == project.id, File.trash_id.is_(None), File.orthanc_series_id.is_not(None))
            .order_by(File.id)
        ).all()
    series: dict[str, list[Indexed]] = defaultdict(list)
    for file_id, series_id, subject, study, path, count, made_by in rows:
        series[series_id].append(Indexed(file_id, Location(project.name, subject, study, path), count, made_by))
    return project, dict(series)


def _difference(live: reconversion_diff.Facts, made: reconversion_diff.Facts) -> str:
    if live.shape is not None or made.shape is not None:
        parts = [what for what, same in (("shape", live.shape == made.shape), ("affine", live.affine == made.affine),
                                         ("voxels", live.sha256 == made.sha256)) if not same]
        return ", ".join(parts) + " differ"
    if live.fields is not None and made.fields is not None:
        changed = sorted(key for key in live.fields.keys() | made.fields.keys() if live.fields.get(key) != made.fields.get(key))
        return "sidecar fields differ: " + ", ".join(changed[:8])
    return "bytes differ"


def _check(archive: Archive, file: Indexed, made: dict[str, Path]) -> FileCheck:
    new = made.get(file.name)
    if new is None:
        return FileCheck(file, Finding.NOT_MADE, "the conversion makes no file of this name now (--reconvert)")
    live = archive.layout.file_path(file.location)
    if not live.is_file():
        return FileCheck(file, Finding.MISSING)
    try:
        found = reconversion_diff.facts(live)
    except UNREADABLE as exc:
        return FileCheck(file, Finding.DIFFERS, f"unreadable ({type(exc).__name__})")
    expected = reconversion_diff.facts(new)
    return FileCheck(file, Finding.EQUAL) if found == expected else FileCheck(file, Finding.DIFFERS, _difference(found, expected))


def _why_not(info: SeriesInfo, files: list[Indexed]) -> str | None:
    if hooks.converter_for(info.modality) is not None:
        return f"{info.modality} series are converted by a plug-in converter"
    # Another dcm2niix's files would all "differ" and be replaced without their provenance or a
    # trash entry: that is a reconversion, which records both.
    versions = {file.converter_version for file in files if file.converter_version is not None}
    if versions - {converter.version()}:
        return f"made by dcm2niix {', '.join(sorted(versions))}, this is {converter.version()}: use --reconvert"
    counts = {file.instance_count for file in files if file.instance_count is not None}
    if counts and counts != {len(info.instance_ids)}:
        return (f"Orthanc holds {len(info.instance_ids)} instances of it now, the files were made from "
                f"{', '.join(map(str, sorted(counts)))}: use --reconvert")
    return None


def _replace(archive: Archive, scratch: Path, checks: list[FileCheck], made: dict[str, Path]) -> None:
    """Put the files made again in place of the missing or different ones, in one unit of work."""
    aside = scratch / "replaced"
    with archive.unit_of_work() as (session, journal):
        for check in checks:
            if check.finding not in REPLACEABLE:
                continue
            record = session.get(File, check.file.file_id)
            if record is None or record.trash_id is not None or record.path != check.file.location.path:
                raise Conflict(f"{check.file.shown} changed during the rebuild: run it again")
            live = archive.layout.file_path(check.file.location)
            if live.exists():
                journal.move(live, aside / str(record.id) / check.file.name)
            journal.move(made[check.file.name], live)
            record.size, record.sha256 = live.stat().st_size, sha256_of(live)


def rebuild_series(archive: Archive, api: OrthancApi, project: Project, series_id: str, files: list[Indexed],
                   dry_run: bool) -> SeriesCheck:
    try:
        info = series_info(api, series_id)
    except OrthancUnavailable as exc:
        if exc.status != 404:
            raise
        return SeriesCheck(series_id, "", len(files), [], "its originals are no longer in Orthanc")
    skipped = _why_not(info, files)
    if skipped is not None:
        return SeriesCheck(series_id, info.series_uid, len(files), [], skipped)
    with conversion.scratch_folder(archive, "rebuild-") as scratch:
        try:
            converted = conversion.convert_series(api, info, scratch, conversion.PhaseClock())
        except converter.ConversionFailed as exc:
            return SeriesCheck(series_id, info.series_uid, len(files), [], str(exc))
        conversion.scrub_for_project(project, converted.outputs)
        made = {name: path for path, name in converted.outputs}
        checks = [_check(archive, file, made) for file in files]
        replace = not dry_run and any(check.finding in REPLACEABLE for check in checks)
        if replace:
            _replace(archive, scratch, checks, made)
    return SeriesCheck(series_id, info.series_uid, len(files), checks, None, replace)


def rebuild(archive: Archive, api: OrthancApi, project_name: str, dry_run: bool) -> list[SeriesCheck]:
    """Check (and unless ``dry_run`` repair) every converted file of the project; series by series."""
    archive.check_schema()
    project, series = _indexed_series(archive, project_name)
    results = []
    for series_id, files in series.items():
        result = rebuild_series(archive, api, project, series_id, files, dry_run)
        log.info("rebuild of series %s in %s: %s", series_id, project.name,
                 result.skipped or ", ".join(f"{c.file.shown} {c.finding.value}" for c in result.files))
        results.append(result)
    return results


def report(project: str, results: list[SeriesCheck], dry_run: bool) -> str:
    """What the rebuild found, a line per file that is not equal and per series left alone, then the counts."""
    lines = []
    counts = dict.fromkeys(Finding, 0)
    skipped_files = 0
    for result in results:
        if result.skipped is not None:
            skipped_files += result.indexed
            lines.append(f"  skipped   series {result.series_uid or result.orthanc_series_id} ({result.indexed} files): "
                         f"{result.skipped}")
        for check in result.files:
            counts[check.finding] += 1
            if check.finding is Finding.EQUAL:
                continue
            done = ": replaced" if result.replaced and check.finding in REPLACEABLE else ""
            detail = f" ({check.detail})" if check.detail else ""
            lines.append(f"  {check.finding.value:<9} {check.file.shown}{detail}{done}")
    files = sum(result.indexed for result in results)
    summary = (f"{counts[Finding.EQUAL]} equal, {counts[Finding.MISSING]} missing, {counts[Finding.DIFFERS]} differ, "
               f"{counts[Finding.NOT_MADE]} not made again, {skipped_files} in series skipped")
    to_do = counts[Finding.MISSING] + counts[Finding.DIFFERS]
    outcome = ("dry run: nothing changed" if dry_run else f"{to_do} replaced") if to_do else "nothing to replace"
    head = f"rebuild of project {project} from Orthanc: {len(results)} series, {files} converted files"
    return "\n".join([head, *lines, f"{summary}; {outcome}"]) + "\n"
