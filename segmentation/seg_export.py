"""ROI versions to DICOM SEG instances in Orthanc, and on to a PACS peer.

A SEG follows the series the ROI's reference NIfTI was converted from (the file's provenance
names the Orthanc series). Each save writes a new instance into the version's SEG series, its
InstanceNumber the version, so a PACS keeps the history instead of a silent overwrite.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import pydicom
from pydicom import Dataset

from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidValue, NotFound
from nifti_archive.models import Roi, RoiOrigin
from nifti_archive.orthanc_api import OrthancApi, OrthancRest, get_json, orthanc_for
from nifti_archive.pacs import peers
from segmentation.dicom_seg import Algorithm, ReferenceGrid, SegmentMask, encode
from segmentation.rois import ReferenceImage, RoiDraft, SegPublisher, SegRecord

log = logging.getLogger(__name__)
# SEG series are numbered after their source series, far enough above to stay apart from the scanner's.
SERIES_NUMBER_OFFSET = 1000
# Origins whose masks a program drew: their segments are AUTOMATIC (SEMIAUTOMATIC where a user's
# clicks steered it) and name the algorithm.
BY_ALGORITHM = (RoiOrigin.ALGORITHM, RoiOrigin.CONSENSUS, RoiOrigin.ASSISTED)


# Source series whose headers were read lately, by Orthanc series id and instance ids: Orthanc's ids are
# hashes of the UIDs, so the same ids are the same instances, and a converted series is read again on
# every save of an ROI drawn on it.
_HEADERS: OrderedDict[tuple[str, tuple[str, ...]], list[Dataset]] = OrderedDict()
_HEADERS_LOCK = threading.Lock()
HEADER_CACHE_SERIES = 16
# Orthanc serves files on parallel connections; a series of single-frame images is hundreds of requests.
FETCH_THREADS = 4


def source_datasets(api: OrthancApi, orthanc_series_id: str) -> list[Dataset]:
    """Every instance of a series, headers only: a SEG needs their geometry and UIDs, not their pixels."""
    instances = tuple(sorted(get_json(api, f"/series/{orthanc_series_id}")["Instances"]))
    key = (orthanc_series_id, instances)
    with _HEADERS_LOCK:
        if key in _HEADERS:
            _HEADERS.move_to_end(key)
            return _HEADERS[key]

    def header(instance_id: str) -> Dataset:
        return pydicom.dcmread(io.BytesIO(api.dicom(instance_id)), stop_before_pixels=True)

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        datasets = list(pool.map(header, instances))
    with _HEADERS_LOCK:
        _HEADERS[key] = datasets
        while len(_HEADERS) > HEADER_CACHE_SERIES:
            _HEADERS.popitem(last=False)
    return datasets


def seg_bytes(
    datasets: list[Dataset], reference: ReferenceImage, draft: RoiDraft, author: str, series_uid: str | None, version: int
) -> tuple[bytes, SegRecord]:
    """The SEG of one ROI version as a Part-10 file, and the UIDs it got."""
    algorithm = (
        Algorithm(draft.algorithm or draft.origin.value, "1", steered=draft.origin is RoiOrigin.ASSISTED)
        if draft.origin in BY_ALGORITHM else None
    )
    number = int(datasets[0].get("SeriesNumber", 0) or 0) + SERIES_NUMBER_OFFSET
    encoded = encode(
        datasets, ReferenceGrid(reference.shape, reference.affine),
        [SegmentMask(draft.label, draft.colour, draft.mask, algorithm)],
        series_number=number, series_instance_uid=series_uid, instance_number=version, content_creator_name=author,
        content_description=f"{draft.label} by {author}, version {version}"[:64],
    )
    buffer = io.BytesIO()
    encoded.dataset.save_as(buffer, enforce_file_format=True)
    record = SegRecord(str(encoded.dataset.SeriesInstanceUID), str(encoded.dataset.SOPInstanceUID), bool(encoded.empty_labels))
    return buffer.getvalue(), record


def publisher(archive: Archive, api: OrthancRest | None = None) -> SegPublisher:
    """The SEG writer ``rois.save_roi`` calls: encodes against the source series and stores in Orthanc."""

    def publish(reference: ReferenceImage, draft: RoiDraft, author: str, series_uid: str | None, version: int) -> SegRecord | None:
        series_id = reference.file.orthanc_series_id
        if not series_id:
            return None
        orthanc = api or orthanc_for(archive.settings)
        data, record = seg_bytes(source_datasets(orthanc, series_id), reference, draft, author, series_uid, version)
        orthanc.store(data)
        log.info("ROI %r by %s version %d stored in Orthanc as SEG %s", draft.label, author, version, record.instance_uid)
        return record

    return publish


def orthanc_instance(api: OrthancRest, sop_instance_uid: str) -> str:
    found = api.post("/tools/lookup", sop_instance_uid.encode(), "text/plain")
    ids = [item["ID"] for item in found or [] if item.get("Type") == "Instance"]
    if not ids:
        raise NotFound(f"SEG {sop_instance_uid} is not in Orthanc (any more)")
    return str(ids[0])


def send(archive: Archive, roi: Roi, peer: str, api: OrthancRest | None = None) -> None:
    """C-STORE the ROI version's SEG to a PACS peer, through Orthanc."""
    if not roi.seg_instance_uid:
        raise InvalidValue(f"ROI {roi.label!r} has no DICOM SEG (its reference was not converted from DICOM)")
    orthanc = api or orthanc_for(archive.settings)
    with archive.sessions() as session:
        target = peers.get_peer(session, peer)
    body = {"Resources": [orthanc_instance(orthanc, roi.seg_instance_uid)], "Synchronous": True}
    orthanc.post(f"/modalities/{target.name}/store", json.dumps(body).encode())
