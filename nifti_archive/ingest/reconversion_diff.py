"""What a reconversion would change, found by doing it in scratch: ``nora --reconvert ... --dry-run``.

Each series is fetched from Orthanc and converted exactly as a conversion worker would (the
same fetch, converter, names and sidecar scrubbing; the placement is worked out in a
transaction that is rolled back), then compared file by file with what the archive holds
for it now. A file is paired with its predecessor by its name inside the series folder, so a
new series template shows as renamed files, a converter that names its outputs differently
as files added and removed. Images are compared by what they decode to (shape, affine,
a checksum of the voxel array), sidecars field by field, anything else by its bytes.
Nothing in the archive or its index changes.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np
from sqlalchemy import select

from nifti_archive import hooks
from nifti_archive.archive import Archive, FileJournal
from nifti_archive.ingest import conversion, converter
from nifti_archive.layout import Location
from nifti_archive.models import File, Project, Study, Subject
from nifti_archive.orthanc_api import OrthancApi, SeriesInfo, series_info

IMAGE_SUFFIXES = (".nii.gz", ".nii")


class NameChange(enum.Enum):
    """How a file's place in the archive would change."""

    UNCHANGED = "unchanged"
    RENAMED = "renamed"
    ADDED = "added"
    REMOVED = "removed"


class Outcome(enum.Enum):
    """What a reconversion of the series would do with its result."""

    REPLACE = "replace"
    # The new conversion looks incomplete: it would go to quarantine and the files now there stay.
    QUARANTINE = "quarantine"
    FAILED = "failed"
    # Another package converts this modality; its converter offers no preview.
    NOT_PREVIEWED = "not previewed"


@dataclass(frozen=True)
class Facts:
    """What a file holds, as far as a comparison needs: the voxels' checksum, shape and affine for
    an image, the fields of a JSON document, else the checksum of its bytes."""

    sha256: str
    shape: tuple[int, ...] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None
    fields: dict[str, Any] | None = None


@dataclass(frozen=True)
class FileDiff:
    old_path: str | None  # SUBJECT/STUDY/series folder/name, as the archive holds it now
    new_path: str | None  # the same, as the reconversion would make it
    old: Facts | None
    new: Facts | None
    old_converter: str | None

    @property
    def name_change(self) -> NameChange:
        if self.old_path is None:
            return NameChange.ADDED
        if self.new_path is None:
            return NameChange.REMOVED
        return NameChange.UNCHANGED if self.old_path == self.new_path else NameChange.RENAMED

    @property
    def content_changed(self) -> bool | None:
        """Whether the content differs; None for a file only one side has."""
        if self.old is None or self.new is None:
            return None
        return self.old != self.new

    @property
    def affine_difference(self) -> float | None:
        """The largest absolute difference between the old and the new affine's elements."""
        if self.old is None or self.new is None or self.old.affine is None or self.new.affine is None:
            return None
        return float(np.max(np.abs(np.array(self.old.affine) - np.array(self.new.affine))))

    def sidecar_changes(self) -> dict[str, dict[str, Any]] | None:
        """Fields added, removed and changed (with old and new values); None unless both are JSON."""
        if self.old is None or self.new is None or self.old.fields is None or self.new.fields is None:
            return None
        before, after = self.old.fields, self.new.fields
        return {
            "added": {key: after[key] for key in sorted(after.keys() - before.keys())},
            "removed": {key: before[key] for key in sorted(before.keys() - after.keys())},
            "changed": {key: {"old": before[key], "new": after[key]}
                        for key in sorted(before.keys() & after.keys()) if before[key] != after[key]},
        }


@dataclass(frozen=True)
class SeriesDiff:
    series_uid: str
    orthanc_series_id: str
    project: str
    outcome: Outcome
    reasons: list[str]
    converter: str
    files: list[FileDiff]


@dataclass(frozen=True)
class _Planned:
    project: str
    subject: str
    study: str
    series_folder: str


def facts(path: Path) -> Facts:
    image = nib.load(path) if path.name.endswith(IMAGE_SUFFIXES) else None
    if isinstance(image, nib.Nifti1Image):  # NIfTI-2 too: its class derives from this one
        voxels = np.ascontiguousarray(np.asanyarray(image.dataobj))
        digest = hashlib.sha256(f"{voxels.dtype.str}{voxels.shape}".encode())
        digest.update(voxels.tobytes())
        affine = tuple(tuple(float(value) for value in row) for row in image.affine)
        return Facts(digest.hexdigest(), tuple(int(n) for n in image.shape), affine)
    data = path.read_bytes()
    fields = json.loads(data) if path.name.endswith(".json") else None
    return Facts(hashlib.sha256(data).hexdigest(), fields=fields)


def _name_in_series(path: str) -> str:
    return PurePosixPath(path).name


@dataclass(frozen=True)
class _Current:
    """A live file of the series now: its name in the series folder, where it is, what made it."""

    name: str
    shown: str
    file: Path
    made_by: str | None


def _current_files(archive: Archive, orthanc_series_id: str) -> list[_Current]:
    with archive.sessions() as session:
        rows = session.execute(
            select(File.path, File.converter, File.converter_version, Subject.patient_id, Study.study_id, Project.name)
            .join(Study, Study.id == File.study_id)
            .join(Subject, Subject.id == Study.subject_id)
            .join(Project, Project.id == Subject.project_id)
            .where(File.orthanc_series_id == orthanc_series_id, File.trash_id.is_(None))
        ).all()
    return [
        _Current(
            _name_in_series(path),
            f"{subject}/{study}/{path}",
            archive.layout.file_path(Location(project, subject, study, path)),
            " ".join(part for part in (made_by, version) if part) or None,
        )
        for path, made_by, version, subject, study, project in rows
    ]


def _plan(archive: Archive, info: SeriesInfo, outputs: list[tuple[Path, str]]) -> _Planned:
    """Where the reconversion would put the series, worked out and rolled back; the outputs get
    the project's sidecar scrubbing as they would on publishing."""
    journal = FileJournal()
    session = archive.sessions()
    try:
        placement = conversion.place(session, journal, archive, info, rename=True)
        conversion.scrub_for_project(placement.project, outputs)
        return _Planned(placement.project.name, placement.subject.patient_id, placement.study.study_id,
                        placement.series_folder)
    finally:
        session.rollback()
        session.close()
        journal.undo()


def _not_converted(info: SeriesInfo, outcome: Outcome, reason: str) -> SeriesDiff:
    return SeriesDiff(info.series_uid, info.orthanc_id, "", outcome, [reason], "", [])


def preview_series(archive: Archive, api: OrthancApi, orthanc_series_id: str) -> SeriesDiff:
    info = series_info(api, orthanc_series_id)
    if hooks.converter_for(info.modality) is not None:
        return _not_converted(info, Outcome.NOT_PREVIEWED, f"{info.modality} series are converted by a plug-in converter")
    current = _current_files(archive, orthanc_series_id)
    with conversion.scratch_folder(archive, "preview-") as scratch:
        try:
            converted = conversion.convert_series(api, info, scratch, conversion.PhaseClock())
        except converter.ConversionFailed as exc:
            return _not_converted(info, Outcome.FAILED, str(exc))
        plan = _plan(archive, info, converted.outputs)
        folder = f"{plan.subject}/{plan.study}/{plan.series_folder}"
        unpaired = {name: path for path, name in converted.outputs}
        files = []
        # A series can have a name twice (a restored earlier conversion beside the current one):
        # the file already where the new one would go pairs first, then the others by path; the
        # rest would go to the trash like every live file of the series.
        for old in sorted(current, key=lambda c: (c.shown != f"{folder}/{c.name}", c.shown)):
            new_file = unpaired.pop(old.name, None)
            files.append(FileDiff(old.shown, f"{folder}/{old.name}" if new_file else None, facts(old.file),
                                  facts(new_file) if new_file else None, old.made_by))
        for name, new_file in sorted(unpaired.items()):
            files.append(FileDiff(None, f"{folder}/{name}", None, facts(new_file), None))
    made_by = converter.NAME + " " + converter.version() if converted.converter_name == converter.NAME else converted.converter_name
    outcome = Outcome.QUARANTINE if converted.reasons else Outcome.REPLACE
    return SeriesDiff(info.series_uid, info.orthanc_id, plan.project, outcome, converted.reasons, made_by, files)


def preview(archive: Archive, api: OrthancApi, orthanc_series_ids: list[str]) -> list[SeriesDiff]:
    return [preview_series(archive, api, series_id) for series_id in orthanc_series_ids]


def _file_json(diff: FileDiff) -> dict[str, Any]:
    document: dict[str, Any] = {
        "change": diff.name_change.value,
        "old_path": diff.old_path,
        "new_path": diff.new_path,
        "content_changed": diff.content_changed,
        "old_converter": diff.old_converter,
    }
    sides = [side for side in (diff.old, diff.new) if side is not None]
    if any(side.shape is not None for side in sides):
        document["shape"] = {"old": diff.old.shape if diff.old else None, "new": diff.new.shape if diff.new else None}
        document["affine_max_abs_difference"] = diff.affine_difference
        document["voxel_sha256"] = {"old": diff.old.sha256 if diff.old else None, "new": diff.new.sha256 if diff.new else None}
    elif any(side.fields is not None for side in sides):
        document["sidecar"] = diff.sidecar_changes()
    else:
        document["sha256"] = {"old": diff.old.sha256 if diff.old else None, "new": diff.new.sha256 if diff.new else None}
    return document


def as_json(diffs: list[SeriesDiff]) -> dict[str, Any]:
    """The report for scripts (``--json``)."""
    return {
        "dry_run": True,
        "series": [
            {
                "series_instance_uid": diff.series_uid,
                "orthanc_series_id": diff.orthanc_series_id,
                "project": diff.project,
                "outcome": diff.outcome.value,
                "reasons": diff.reasons,
                "converter": diff.converter,
                "files": [_file_json(file) for file in diff.files],
            }
            for diff in diffs
        ],
    }


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(n) for n in shape) if shape else "-"


def _content_line(diff: FileDiff) -> str:
    old, new = diff.old, diff.new
    if old is None or new is None:
        side = old or new
        assert side is not None
        return f"shape {_shape(side.shape)}, voxels {side.sha256[:12]}" if side.shape else f"sha256 {side.sha256[:12]}"
    if new.shape is not None or old.shape is not None:
        shape = _shape(new.shape) + (" (same)" if old.shape == new.shape else f" (was {_shape(old.shape)})")
        difference = diff.affine_difference
        affine = f"{difference:g}" if difference is not None else "-"
        voxels = "voxels same" if old.sha256 == new.sha256 else f"voxels differ ({old.sha256[:12]} -> {new.sha256[:12]})"
        return f"shape {shape}, affine max |difference| {affine}, {voxels}"
    changes = diff.sidecar_changes()
    if changes is not None:
        parts = [f"{what} {', '.join(fields)}" for what, fields in changes.items() if fields]
        return "fields " + "; ".join(parts) if parts else "fields same"
    return "content same" if old.sha256 == new.sha256 else f"content differs ({old.sha256[:12]} -> {new.sha256[:12]})"


def _file_line(diff: FileDiff, converter_now: str) -> str:
    if diff.name_change is NameChange.RENAMED:
        where = f"{diff.old_path} -> {diff.new_path}"
    else:
        where = str(diff.old_path or diff.new_path)
    made = f" (made by {diff.old_converter})" if diff.old_converter and diff.old_converter != converter_now else ""
    return f"  {diff.name_change.value:<9} {where}{made}\n  {'':<9} {_content_line(diff)}"


def text_report(diffs: list[SeriesDiff]) -> str:
    """The report for people: per series what would happen, per file what would change."""
    lines = []
    counts = {change: 0 for change in NameChange}
    changed = 0
    for diff in diffs:
        heading = f"series {diff.series_uid} ({diff.project or 'no project'}): {diff.outcome.value}"
        if diff.converter:
            heading += f" with {diff.converter}"
        lines.append(heading + (": " + "; ".join(diff.reasons) if diff.reasons else ""))
        for file in diff.files:
            lines.append(_file_line(file, diff.converter))
            counts[file.name_change] += 1
            changed += bool(file.content_changed)
    summary = ", ".join(f"{count} {change.value}" for change, count in counts.items())
    lines.append(f"{len(diffs)} series, files: {summary}; {changed} with other content. Dry run: nothing was changed.")
    return "\n".join(lines) + "\n"
