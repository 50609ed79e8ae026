"""DICOM SEG series that reach Orthanc become ROIs: the converter the queue runs for modality SEG.

Each segment of the newest SEG instance of the series becomes one ROI on the grid of the NIfTI
converted from the series the SEG was drawn on, voxel-exact; overlapping segments stay separate
masks. Until that series is converted the request waits (``waiting_for``) and the conversion of
the series wakes it. SEG instances this archive wrote itself (an ROI saved in the portal) are
already ROIs and are left alone.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import pydicom
from pydicom import Dataset
from sqlalchemy import select

from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidValue
from nifti_archive.ingest import conversion_queue
from nifti_archive.models import ConversionState, File, FileKind, Roi, RoiOrigin
from nifti_archive.orthanc_api import OrthancApi, SeriesInfo, get_json
from segmentation import rois
from segmentation.dicom_seg import DecodedSegment, ReferenceGrid, SegReferences, decode, read_source_series, seg_references
from segmentation.rois import RoiDraft, SegRecord
from segmentation.seg_export import source_datasets

log = logging.getLogger(__name__)
# Who drew a segment when the SEG does not say.
UNKNOWN_AUTHOR = "dicom"
# Each segment becomes files in the study: a SEG from an unknown sender must not flood it.
MAX_SEGMENTS = 256
# A SEG segment's SegmentAlgorithmType as an ROI's origin (MANUAL ones keep the SEG as their origin).
ORIGIN_OF_ALGORITHM_TYPE = {"AUTOMATIC": RoiOrigin.ALGORITHM, "SEMIAUTOMATIC": RoiOrigin.ASSISTED}


def _newest(datasets: Sequence[Dataset]) -> Dataset:
    return max(
        datasets, key=lambda ds: (int(ds.get("InstanceNumber", 0) or 0), str(ds.get("ContentDate", "")), str(ds.get("ContentTime", "")))
    )


def _labels(segments: list[DecodedSegment]) -> list[str]:
    """Segment labels made unique: two segments of one label would otherwise replace each other as versions."""
    labels = [segment.label.strip() or f"segment {segment.number}" for segment in segments]
    return [
        label if labels.count(label) == 1 else f"{label} ({segment.number})"[:64]
        for label, segment in zip(labels, segments, strict=True)
    ]


def convert(archive: Archive, api: OrthancApi, info: SeriesInfo, request_id: int) -> tuple[ConversionState, str, str]:
    """Turn the SEG series ``info`` into ROIs, or wait for its source series; finishes the request."""
    datasets = [pydicom.dcmread(io.BytesIO(api.dicom(i))) for i in info.instance_ids]
    with archive.sessions() as session:
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        ours = set(session.scalars(select(Roi.seg_instance_uid).where(Roi.seg_instance_uid.in_(uids))))
    foreign = [ds for ds in datasets if str(ds.SOPInstanceUID) not in ours]
    if not foreign:
        return _finish(archive, request_id, ConversionState.DONE, "a SEG this archive wrote: its ROIs are in the archive already")
    seg = _newest(foreign)
    references = seg_references(seg)
    count = len(seg.get("SegmentSequence", []))
    if count > MAX_SEGMENTS:
        raise InvalidValue(f"SEG {references.sop_instance_uid} has {count} segments; the archive takes at most {MAX_SEGMENTS} as ROIs")
    source_series = references.series_instance_uids or _series_of_instances(api, info, references)
    with archive.sessions() as session:
        reference_file = session.scalar(
            select(File).where(
                File.source_series_uid.in_(source_series), File.kind == FileKind.NIFTI, File.trash_id.is_(None)
            ).order_by(File.path).limit(1)
        )
        reference_id = reference_file.id if reference_file else None
        orthanc_series = reference_file.orthanc_series_id if reference_file else None
    if reference_id is None or not orthanc_series:
        awaited = source_series[0]
        message = f"waits for its source series {awaited} to be converted into the archive"
        return _finish(archive, request_id, ConversionState.WAITING, message, waiting_for=awaited)
    source = read_source_series(source_datasets(api, orthanc_series))
    with archive.unit_of_work() as (session, journal):
        reference = rois.reference_image(archive, session, reference_id)
        segments = decode(seg, ReferenceGrid(reference.shape, reference.affine), source)
        record = SegRecord(str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID))
        for label, segment in zip(_labels(segments), segments, strict=True):
            draft = RoiDraft(
                label, segment.mask, segment.colour or "",
                ORIGIN_OF_ALGORITHM_TYPE.get(segment.algorithm_type, RoiOrigin.DICOM_SEG),
                algorithm=segment.algorithm_name[:64] if segment.algorithm_name else None,
                seg=record, note=f"segment {segment.number} of DICOM SEG {record.instance_uid}",
            )
            rois.save_roi(archive, session, journal, reference, draft, segment.content_creator or UNKNOWN_AUTHOR)
        target = f"{reference.project.name}/{reference.subject.patient_id}/{reference.study.study_id}/{rois.ROI_FOLDER}/{reference.stem}"
        message = f"{len(segments)} ROI(s) from SEG {record.instance_uid}"
        conversion_queue.finish(session, request_id, ConversionState.DONE, message, target)
    log.info("conversion request %d: %s", request_id, message)
    return ConversionState.DONE, message, target


def _series_of_instances(api: OrthancApi, info: SeriesInfo, references: SegReferences) -> tuple[str, ...]:
    """The series of the source instances a SEG names frame by frame, where it names no series
    (dcmqi writes such SEGs): found among the instances Orthanc holds in the SEG's study."""
    wanted = set(references.source_instance_uids)
    if not wanted:
        # dcmqi writes SEGs of Siemens mosaics so: only a frame of reference, which every series of a session shares.
        raise InvalidValue(
            f"SEG {references.sop_instance_uid} names neither a source series nor source instances: which image it was drawn"
            " on cannot be told"
        )
    study = get_json(api, f"/series/{info.orthanc_id}")["ParentStudy"]
    for instance in get_json(api, f"/studies/{study}/instances"):
        if instance.get("MainDicomTags", {}).get("SOPInstanceUID") in wanted:
            return (str(get_json(api, f"/series/{instance['ParentSeries']}")["MainDicomTags"]["SeriesInstanceUID"]),)
    raise InvalidValue(
        f"SEG {references.sop_instance_uid} names no source series, and none of the instances it was drawn on is in Orthanc:"
        " send them, then nora --retry"
    )


def _finish(
    archive: Archive, request_id: int, state: ConversionState, message: str, waiting_for: str = ""
) -> tuple[ConversionState, str, str]:
    with archive.unit_of_work() as (session, _journal):
        conversion_queue.finish(session, request_id, state, message, waiting_for=waiting_for)
    return state, message, ""
