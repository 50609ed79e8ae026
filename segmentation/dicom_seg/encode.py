"""ROI masks on a reference NIfTI grid -> one DICOM Segmentation (BINARY) that follows the source series.

The SEG's frames are the source's slices, so viewers overlay it on the series without resampling:
for single-frame series each frame references its source instance (and copies its position); for a
Siemens mosaic the frames are the mosaic's slices, placed by per-frame positions and referencing the
mosaic as a whole (a frame of the mosaic itself is no slice). See ``geometry`` for the conventions.

BINARY, never LABELMAP: the Label Map Segmentation SOP class is new enough that dciodvfy and common
readers (pydicom-seg) reject it. Segments may overlap; each is stored on its own frames.

Empty masks are allowed and reported in ``EncodedSeg.empty_labels``: highdicom writes the segment's
description but no frame for it (empty frames are omitted), and when every segment is empty it keeps all
frames, all zero, since a SEG cannot have none. Either way the SEG decodes to the same empty masks.

dciodvfy finds no error in these SEGs. What it may warn about are values copied from the source as the
Patient and Study modules require (a PatientName without '^', "Retired Person Name form"): not ours to change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sr.codedict import codes

from nifti_archive.errors import InvalidValue
from segmentation.dicom_seg.geometry import ReferenceGrid, read_source_series

log = logging.getLogger(__name__)

# DICOM LO (SegmentLabel, ContentDescription, AlgorithmName/Version): 64 characters, no backslash or control characters.
MAX_LO = 64
_NOT_IN_LO = re.compile(r"[\\\x00-\x1f\x7f]")
# DICOM CS (ContentLabel): up to 16 upper-case letters, digits, spaces and underscores.
_CS = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# What an ROI is, when nobody said: the generic codes 3D Slicer and OHIF also use for an unnamed structure.
CATEGORY = codes.SCT.Tissue
PROPERTY_TYPE = codes.SCT.Tissue
# CID 7162 has no "other" family; programs that draw ROIs for a research archive are mostly learned models.
ALGORITHM_FAMILY = codes.cid7162.ArtificialIntelligence
# Every SEG says who made it; one archive, so one "device".
MANUFACTURER = "Northanc"
MODEL = "Northanc DICOM SEG export"
DEVICE_SERIAL_NUMBER = "1"


@dataclass(frozen=True)
class Algorithm:
    """The program that drew a segment: it makes the segment AUTOMATIC rather than MANUAL, or
    SEMIAUTOMATIC where a user steered it (interactive tools)."""

    name: str
    version: str
    steered: bool = False


@dataclass(frozen=True, eq=False)
class SegmentMask:
    """One ROI to export: a label (unique in the SEG), a colour ``#rrggbb`` and a boolean mask on the reference grid."""

    label: str
    colour: str
    mask: NDArray[np.bool_]
    algorithm: Algorithm | None = None


@dataclass(frozen=True)
class EncodedSeg:
    """The SEG, and the labels of the segments that have no voxel (for the caller to tell the user)."""

    dataset: hd.seg.Segmentation
    empty_labels: tuple[str, ...]


def encode(
    source_datasets: Sequence[Dataset],
    grid: ReferenceGrid,
    segments: Sequence[SegmentMask],
    *,
    series_number: int,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    content_creator_name: str | None = None,
    content_label: str = "ROI",
    content_description: str | None = None,
) -> EncodedSeg:
    """A SEG of ``segments`` (numbered 1, 2, ... in order) over the series ``source_datasets`` (all its instances; no pixel data needed).

    ``grid`` is the NIfTI dcm2niix made from that series; the masks are on it. ``series_instance_uid``
    None starts a new SEG series. ``content_creator_name`` is the author, as a DICOM person name.
    """
    if not segments:
        raise InvalidValue("a SEG needs at least one segment")
    masks = [_check_segment(segment, grid) for segment in segments]
    labels = [segment.label for segment in segments]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InvalidValue(f"segment labels must be unique in a SEG; repeated: {', '.join(repr(label) for label in duplicates)}")
    _check_text("content label", content_label)
    if not _CS.match(content_label):
        raise InvalidValue(f"content label {content_label!r} must be 1 to 16 upper-case letters, digits, spaces or underscores")
    if content_description is not None:
        _check_text("content description", content_description)
    creator = None if content_creator_name is None else _person_name(content_creator_name)

    source = read_source_series(source_datasets)
    index_map = source.index_map(grid)
    numbers = list(range(1, len(segments) + 1))
    stacked = np.stack([index_map.to_source(mask) for mask in masks], axis=-1).astype(np.uint8)
    empty = tuple(segment.label for segment, mask in zip(segments, masks, strict=True) if not mask.any())
    pixels: NDArray[np.uint8] | hd.Volume
    if source.is_mosaic:
        # The frames are the mosaic's slices, not its frame: give their geometry; highdicom writes per-frame positions.
        pixels = hd.Volume(
            array=stacked,
            affine=source.geometry.affine,
            coordinate_system="PATIENT",
            frame_of_reference_uid=source.frame_of_reference_uid,
            channels={"SegmentNumber": numbers},
        )
    else:
        # Frame i is source instance i: highdicom copies its position and references it.
        pixels = stacked
    seg = hd.seg.Segmentation(
        source_images=list(source.datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(number, segment) for number, segment in zip(numbers, segments, strict=True)],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL,
        software_versions=version("northanc"),
        device_serial_number=DEVICE_SERIAL_NUMBER,
        content_label=content_label,
        content_description=content_description,
        content_creator_name=creator,
        # A SEG with no frame is not allowed: when every mask is empty, keep the empty frames rather than have highdicom warn.
        omit_empty_frames=len(empty) < len(segments),
        # Labels and names are the users' own text: UTF-8 holds any of it.
        specific_character_set="ISO_IR 192",
    )
    log.debug("SEG %s: %d segments, %d frames, %d empty", seg.SOPInstanceUID, len(segments), seg.NumberOfFrames, len(empty))
    return EncodedSeg(dataset=seg, empty_labels=empty)


def _check_segment(segment: SegmentMask, grid: ReferenceGrid) -> NDArray[np.bool_]:
    label = segment.label
    if not label.strip():
        raise InvalidValue("a segment needs a label")
    _check_text(f"segment label {label[:20]!r}", label)
    if label != label.strip():
        raise InvalidValue(f"segment label {label!r} starts or ends with spaces, which DICOM drops")
    if not _COLOUR.match(segment.colour):
        raise InvalidValue(f"segment {label!r}: colour {segment.colour!r} is not of the form #rrggbb")
    mask = np.asarray(segment.mask)
    if mask.shape != grid.shape:
        raise InvalidValue(f"segment {label!r}: the mask has shape {mask.shape}, the reference grid {grid.shape}")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise InvalidValue(f"segment {label!r}: the mask must hold only 0 and 1 (or False and True)")
        mask = mask.astype(np.bool_)
    if segment.algorithm is not None:
        _check_text(f"segment {label!r}: algorithm name", segment.algorithm.name)
        _check_text(f"segment {label!r}: algorithm version", segment.algorithm.version)
    return mask


def _check_text(what: str, text: str) -> None:
    """Refuse what DICOM's LO cannot hold: highdicom neither truncates nor always checks."""
    if not text:
        raise InvalidValue(f"{what} is empty")
    if len(text) > MAX_LO:
        raise InvalidValue(f"{what} has {len(text)} characters; DICOM allows at most {MAX_LO}")
    if _NOT_IN_LO.search(text):
        raise InvalidValue(f"{what} contains a backslash or a control character, which DICOM does not allow")


def _person_name(name: str) -> str:
    """A DICOM PN of one component group; a name without '^' becomes the family name (highdicom wants the caret then)."""
    _check_text("content creator name", name)
    if "=" in name or name.count("^") > 4:
        raise InvalidValue(f"content creator name {name!r} must be at most five '^'-separated parts, without '='")
    return name if "^" in name else f"{name}^"


def _algorithm_type(algorithm: Algorithm | None) -> hd.seg.SegmentAlgorithmTypeValues:
    if algorithm is None:
        return hd.seg.SegmentAlgorithmTypeValues.MANUAL
    if algorithm.steered:
        return hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


def _description(number: int, segment: SegmentMask) -> hd.seg.SegmentDescription:
    algorithm = segment.algorithm
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label,
        segmented_property_category=CATEGORY,
        segmented_property_type=PROPERTY_TYPE,
        algorithm_type=_algorithm_type(algorithm),
        algorithm_identification=None
        if algorithm is None
        else hd.AlgorithmIdentificationSequence(name=algorithm.name, family=ALGORITHM_FAMILY, version=algorithm.version),
        # OHIF warns about segments without a colour.
        display_color=hd.color.CIELabColor.from_string(segment.colour),
    )
