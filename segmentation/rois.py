"""ROIs in the archive: one author's binary mask on the grid of a reference NIfTI.

An ROI version is two files in the study, ``rois/<reference>/<label>.<author>.nii.gz`` (uint8,
the reference's affine and sform/qform codes) and a JSON beside it (label, colour, author,
reference, created/modified, the DICOM SEG that carries it), plus its ``Roi`` row. Saving the
same label again, by the same author on the same reference, moves the earlier version to the
trash (restorable) and counts the version up; the SEG series stays the same, so DICOM sees a
new instance of one series rather than a new series.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, FileJournal
from nifti_archive.catalog.registration import Provenance, register_file
from nifti_archive.catalog.trash import delete_files
from nifti_archive.errors import Forbidden, InvalidValue, NotFound
from nifti_archive.ingest.naming import safe_folder_name, unique_name
from nifti_archive.layout import Location
from nifti_archive.models import File, FileKind, Project, Roi, RoiOrigin, Study, Subject, as_utc, utcnow

ROI_FOLDER = "rois"
# DICOM's LO (the SEG's SegmentLabel): 64 characters, no backslash, no control characters.
MAX_LABEL = 64
_BAD_LABEL = re.compile(r"[\\\x00-\x1f\x7f]")
_COLOUR = re.compile(r"^#[0-9a-f]{6}$")
# Distinct colours for labels saved without one, in order.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990")
# World positions of two grids closer than this (mm) are the same grid.
AFFINE_TOLERANCE = 1e-4
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ReferenceImage:
    """The NIfTI an ROI is drawn on, and where it lies."""

    file: File
    study: Study
    subject: Subject
    project: Project
    path: Path
    shape: tuple[int, int, int]
    affine: NDArray[np.float64]
    sform_code: int
    qform_code: int

    @property
    def stem(self) -> str:
        """The reference's path in the study without its NIfTI suffix: the folder its ROIs go in."""
        text = self.file.path
        for suffix in NIFTI_SUFFIXES:
            if text.endswith(suffix):
                return text[: -len(suffix)]
        return text


@dataclass(frozen=True)
class SegRecord:
    """The DICOM SEG instance that carries an ROI version, and whether its mask was empty."""

    series_uid: str
    instance_uid: str
    empty: bool = False


@dataclass(frozen=True)
class RoiDraft:
    """An ROI version about to be saved. ``mask`` lies on the reference's grid."""

    label: str
    mask: NDArray[np.bool_]
    colour: str = ""
    origin: RoiOrigin = RoiOrigin.DRAWN
    algorithm: str | None = None
    # The ROI files it was computed from (an operation's operands, a consensus' versions).
    inputs: tuple[int, ...] = ()
    # Set when the draft was read from a SEG: that SEG carries it, nothing is written to DICOM.
    seg: SegRecord | None = None
    note: str = ""


# Writes the SEG for a draft: (reference, draft, author, SEG series to add to or None, version).
SegPublisher = Callable[[ReferenceImage, RoiDraft, str, str | None, int], SegRecord | None]


@dataclass(frozen=True)
class SavedRoi:
    roi: Roi
    # Why no SEG was written, or what the SEG export said (an empty mask), for the caller to show.
    seg_message: str = ""


def check_label(label: str) -> str:
    text = label.strip()
    if not text:
        raise InvalidValue("an ROI needs a label")
    if len(text) > MAX_LABEL:
        raise InvalidValue(f"ROI label {text[:20]!r}... has {len(text)} characters; DICOM allows at most {MAX_LABEL}")
    if _BAD_LABEL.search(text):
        raise InvalidValue(f"ROI label {text!r} contains a backslash or a control character, which DICOM does not allow")
    return text


def check_colour(colour: str) -> str:
    text = colour.strip().lower()
    if not _COLOUR.match(text):
        raise InvalidValue(f"colour {colour!r} is not of the form #rrggbb")
    return text


def load_nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise InvalidValue(f"{path.name} is not a NIfTI-1 image")
    return image


def reference_image(archive: Archive, session: Session, file_id: int) -> ReferenceImage:
    """The live NIfTI file ``file_id`` as a reference grid for ROIs."""
    row = session.execute(
        select(File, Study, Subject, Project)
        .join(Study, Study.id == File.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .join(Project, Project.id == Subject.project_id)
        .where(File.id == file_id, File.trash_id.is_(None))
    ).first()
    if row is None:
        raise NotFound(f"no file {file_id} in the archive")
    record, study, subject, project = row
    if record.kind is not FileKind.NIFTI:
        raise InvalidValue(f"{record.path} is not a NIfTI image ({record.kind.value}); ROIs are drawn on images")
    path = archive.layout.file_path(Location(project.name, subject.patient_id, study.study_id, record.path))
    image = load_nifti(path)
    if len(image.shape) < 3:
        raise InvalidValue(f"{record.path} has shape {image.shape}; an ROI needs a 3D grid")
    shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
    return ReferenceImage(
        record, study, subject, project, path, shape, np.asarray(image.affine, dtype=np.float64),
        int(image.header["sform_code"]), int(image.header["qform_code"]),
    )


def binary_mask(data: NDArray[Any], what: str) -> NDArray[np.bool_]:
    """A mask of 0 and 1 as booleans; anything else is refused (a probability map or label map
    must be thresholded or split on purpose, not here by accident)."""
    if data.dtype == np.bool_:
        return data
    # Bounds first: a whole-volume unique() costs a tenth of a second, and is only needed to name bad values.
    if data.size == 0 or (data.min() >= 0 and data.max() <= 1 and (np.issubdtype(data.dtype, np.integer) or np.isin(data, (0, 1)).all())):
        return np.asarray(data, dtype=bool)
    values = np.unique(data)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise InvalidValue(f"{what} is not binary: it holds the values {shown}; an ROI holds only 0 and 1")
    return np.asarray(data, dtype=bool)


def mask_from_nifti(image: nib.Nifti1Image, reference: ReferenceImage, what: str) -> NDArray[np.bool_]:
    """An uploaded mask, checked against the reference's grid (shape and affine)."""
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if shape != reference.shape:
        raise InvalidValue(f"{what} has shape {shape}, but its reference {reference.file.path} has {reference.shape}")
    if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE, rtol=0):
        raise InvalidValue(
            f"{what} has the affine {np.round(image.affine, 4).tolist()}, but its reference {reference.file.path} "
            f"has {np.round(reference.affine, 4).tolist()}: resample it onto the reference first"
        )
    return binary_mask(np.asanyarray(image.dataobj).reshape(shape), what)


def live_rois(session: Session, study_id: int) -> list[Roi]:
    return list(
        session.scalars(
            select(Roi).join(File, File.id == Roi.file_id)
            .where(File.study_id == study_id, File.trash_id.is_(None))
            .order_by(Roi.label, Roi.author, Roi.file_id)
        )
    )


def live_roi(session: Session, file_id: int) -> Roi:
    roi = session.scalar(select(Roi).join(File, File.id == Roi.file_id).where(Roi.file_id == file_id, File.trash_id.is_(None)))
    if roi is None:
        record = session.scalar(select(File).where(File.id == file_id, File.trash_id.is_(None)))
        if record is not None:
            raise InvalidValue(f"file {file_id} ({record.path}) is not an ROI")
        raise NotFound(f"no ROI {file_id} in the archive")
    return roi


def versions_of(session: Session, study_id: int, label: str) -> list[Roi]:
    """Every author's live version of one label in a study (on any reference)."""
    return [roi for roi in live_rois(session, study_id) if roi.label == label]


def _earlier(session: Session, reference: ReferenceImage, label: str, author: str) -> Roi | None:
    return session.scalar(
        select(Roi).join(File, File.id == Roi.file_id)
        .where(Roi.reference_file_id == reference.file.id, Roi.label == label, Roi.author == author, File.trash_id.is_(None))
    )


def _file_name(session: Session, reference: ReferenceImage, label: str, author: str) -> str:
    folder = f"{ROI_FOLDER}/{reference.stem}"
    taken = {
        PurePosixPath(path).name.removesuffix(".nii.gz")
        for path in session.scalars(
            select(File.path).where(File.study_id == reference.study.id, File.path.startswith(f"{folder}/"), File.trash_id.is_(None))
        )
    }
    name = unique_name(f"{safe_folder_name(label)}.{safe_folder_name(author)}", taken)
    return f"{folder}/{name}"


def _colour(session: Session, reference: ReferenceImage, draft: RoiDraft) -> str:
    if draft.colour:
        return check_colour(draft.colour)
    same_label = session.scalar(select(Roi.colour).join(File, File.id == Roi.file_id).where(
        File.study_id == reference.study.id, Roi.label == draft.label, File.trash_id.is_(None)).limit(1))
    if same_label:
        return same_label
    labels = set(session.scalars(select(Roi.label).join(File, File.id == Roi.file_id).where(File.study_id == reference.study.id)))
    return PALETTE[len(labels) % len(PALETTE)]


def document(roi: Roi, reference_path: str, inputs: Sequence[int] = (), note: str = "") -> dict[str, Any]:
    """The JSON kept beside an ROI's mask: what a script reading the archive's files needs."""
    return {
        "label": roi.label, "colour": roi.colour, "author": roi.author, "origin": roi.origin.value,
        "algorithm": roi.algorithm, "version": roi.version,
        "reference": {"file_id": roi.reference_file_id, "path": reference_path},
        "created": as_utc(roi.created_at).isoformat(), "modified": as_utc(roi.modified_at).isoformat(),
        "seg": {"series_instance_uid": roi.seg_series_uid, "sop_instance_uid": roi.seg_instance_uid} if roi.seg_instance_uid else None,
        "inputs": list(inputs), "note": note,
    }


def _write_mask(target: Path, mask: NDArray[np.bool_], reference: ReferenceImage) -> None:
    image = nib.Nifti1Image(mask.astype(np.uint8), reference.affine)
    image.set_sform(reference.affine, reference.sform_code or 2)
    image.set_qform(reference.affine, reference.qform_code or 0)
    image.header.set_data_dtype(np.uint8)
    nib.save(image, target)


def save_roi(
    archive: Archive,
    session: Session,
    journal: FileJournal,
    reference: ReferenceImage,
    draft: RoiDraft,
    author: str,
    publish_seg: SegPublisher | None = None,
) -> SavedRoi:
    """Save ``draft`` as ``author``'s newest version of its label on ``reference``; with a
    publisher, also as a DICOM SEG instance (a new instance of the version's SEG series)."""
    label = check_label(draft.label)
    mask = binary_mask(np.asarray(draft.mask), f"the mask of ROI {label!r}")
    if mask.shape != reference.shape:
        raise InvalidValue(
            f"the mask of ROI {label!r} has shape {mask.shape}, but its reference {reference.file.path} has {reference.shape}"
        )
    earlier = _earlier(session, reference, label, author)
    version = earlier.version + 1 if earlier else 1
    created = as_utc(earlier.created_at) if earlier else utcnow()
    seg_series = earlier.seg_series_uid if earlier else None
    colour = _colour(session, reference, draft)
    if earlier is not None:
        delete_files(session, journal, archive.layout, reference.project, _roi_paths(archive, session, earlier), author)
    seg, seg_message = draft.seg, ""
    if seg is None and publish_seg is not None:
        ready = RoiDraft(label, mask, colour, draft.origin, draft.algorithm, draft.inputs)
        seg = publish_seg(reference, ready, author, seg_series, version)
        if seg is None:
            seg_message = f"no DICOM SEG: {reference.file.path} was not converted from a DICOM series"
        elif seg.empty:
            seg_message = f"ROI {label!r} is empty: its DICOM SEG has a segment without any frame"
    relative = _file_name(session, reference, label, author)
    study_dir = reference.path.parents[len(PurePosixPath(reference.file.path).parts) - 1]
    spool = archive.settings.var_dir / "scratch"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool, prefix="roi-") as scratch_text:
        scratch = Path(scratch_text)
        _write_mask(scratch / "mask.nii.gz", mask, reference)
        journal.move(scratch / "mask.nii.gz", study_dir / f"{relative}.nii.gz")
        record = register_file(
            session, reference.study, f"{relative}.nii.gz", study_dir / f"{relative}.nii.gz", kind=FileKind.ROI,
            provenance=Provenance(derived_from_id=reference.file.id, note=draft.note or None,
                                  source_series_uid=seg.series_uid if seg and draft.seg else None),
        )
        roi = Roi(
            file_id=record.id, file=record, reference_file_id=reference.file.id, label=label, colour=colour, author=author,
            origin=draft.origin, algorithm=draft.algorithm, version=version,
            seg_series_uid=seg.series_uid if seg else None, seg_instance_uid=seg.instance_uid if seg else None,
            created_at=created, modified_at=utcnow(),
        )
        session.add(roi)
        session.flush()
        meta = document(roi, reference.file.path, draft.inputs, draft.note)
        (scratch / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        journal.move(scratch / "meta.json", study_dir / f"{relative}.json")
        register_file(session, reference.study, f"{relative}.json", study_dir / f"{relative}.json", kind=FileKind.JSON,
                      provenance=Provenance(derived_from_id=record.id))
    return SavedRoi(roi, seg_message)


def _sidecar(session: Session, roi: Roi) -> File | None:
    json_path = roi.file.path.removesuffix(".nii.gz") + ".json"
    return session.scalar(select(File).where(File.study_id == roi.file.study_id, File.path == json_path, File.trash_id.is_(None)))


def _roi_paths(archive: Archive, session: Session, roi: Roi) -> list[Path]:
    subject, study, project = _owners(session, roi)
    location = Location(project.name, subject.patient_id, study.study_id, roi.file.path)
    paths = [archive.layout.file_path(location)]
    sidecar = _sidecar(session, roi)
    if sidecar is not None:
        paths.append(archive.layout.file_path(Location(project.name, subject.patient_id, study.study_id, sidecar.path)))
    return paths


def _owners(session: Session, roi: Roi) -> tuple[Subject, Study, Project]:
    row = session.execute(
        select(Subject, Study, Project)
        .join(Study, Study.subject_id == Subject.id)
        .join(Project, Project.id == Subject.project_id)
        .where(Study.id == roi.file.study_id)
    ).one()
    return row[0], row[1], row[2]


def roi_path(archive: Archive, session: Session, roi: Roi) -> Path:
    return _roi_paths(archive, session, roi)[0]


def load_mask(archive: Archive, session: Session, roi: Roi) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """An ROI's mask and the affine of its grid."""
    image = load_nifti(roi_path(archive, session, roi))
    data = np.asanyarray(image.dataobj)
    return data.reshape(data.shape[:3]) > 0, np.asarray(image.affine, dtype=np.float64)


def delete_roi(archive: Archive, session: Session, journal: FileJournal, roi: Roi, deleted_by: str, may_delete_others: bool) -> int:
    """Move an ROI version (mask and JSON) to the trash; returns the trash entry's id."""
    if roi.author != deleted_by and not may_delete_others:
        raise Forbidden(f"ROI {roi.label!r} by {roi.author} is not yours; only a project admin deletes others' versions")
    _subject, _study, project = _owners(session, roi)
    return delete_files(session, journal, archive.layout, project, _roi_paths(archive, session, roi), deleted_by).id


def describe(roi: Roi, reference_path: str | None) -> dict[str, Any]:
    """An ROI as the API and ``nora`` list it."""
    return {
        "id": roi.file_id, "path": roi.file.path, "label": roi.label, "colour": roi.colour, "author": roi.author,
        "origin": roi.origin.value, "algorithm": roi.algorithm, "version": roi.version,
        "reference_file_id": roi.reference_file_id, "reference_path": reference_path,
        "seg_series_uid": roi.seg_series_uid, "seg_instance_uid": roi.seg_instance_uid,
        "created": as_utc(roi.created_at).isoformat(), "modified": as_utc(roi.modified_at).isoformat(),
    }
