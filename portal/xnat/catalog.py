"""The archive seen as XNAT's tree: a study's series folders are scans, and a scan's files fall
into resources (NIFTI, DICOM, ROI, and any a user uploads by name).

The mapping of paths to scans and resources is plain functions over the study's file records;
the queries that feed it stay small (one per listing), so a project of thousands of studies
lists in one round trip.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from nifti_archive.catalog.registration import file_kind
from nifti_archive.errors import InvalidPath, InvalidValue
from nifti_archive.layout import check_relative_path
from nifti_archive.models import File, FileKind

log = logging.getLogger(__name__)
ROI_FOLDER = "rois"
# What dcm2niix makes of a series: the NIfTI and what describes it.
IMAGE_KINDS = frozenset({FileKind.NIFTI, FileKind.JSON, FileKind.BVAL, FileKind.BVEC})
_SERIES_NUMBER = re.compile(r"^\d+_")


class Resource(Enum):
    """The resources every scan may have; any other label is one a user made by uploading into it."""

    NIFTI = "NIFTI"
    DICOM = "DICOM"
    ROI = "ROI"
    # The DICOM SEG objects that carry the scan's ROIs, in Orthanc.
    SEG = "SEG"
    OTHER = "OTHER"


class SessionType(Enum):
    """XNAT's session and scan types, by the DICOM modality of the study's series."""

    MR = ("xnat:mrSessionData", "xnat:mrScanData")
    CT = ("xnat:ctSessionData", "xnat:ctScanData")
    PET = ("xnat:petSessionData", "xnat:petScanData")
    OTHER = ("xnat:otherDicomSessionData", "xnat:otherDicomScanData")

    @property
    def session_xsi(self) -> str:
        return self.value[0]

    @property
    def scan_xsi(self) -> str:
        return self.value[1]

    @classmethod
    def of(cls, modality: str) -> SessionType:
        return {"MR": cls.MR, "CT": cls.CT, "PT": cls.PET}.get(modality.upper(), cls.OTHER)


@dataclass
class ScanResource:
    label: str
    files: list[File] = field(default_factory=list)
    # Orthanc's ids of the series the scan's images were converted from (the DICOM resource).
    orthanc_series: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class Scan:
    id: str
    resources: dict[str, ScanResource] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return _SERIES_NUMBER.sub("", self.id) or self.id

    def resource(self, label: str) -> ScanResource:
        return self.resources.setdefault(label, ScanResource(label))

    @property
    def sidecar(self) -> File | None:
        images = self.resources.get(Resource.NIFTI.value)
        return next((f for f in images.files if f.kind is FileKind.JSON), None) if images else None


def resource_of(path: str, kind: FileKind) -> tuple[str, str] | None:
    """(scan id, resource label) of a file outside the ROI folder, by its path and kind; None for
    a file at the study's top, which belongs to no scan."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] == ROI_FOLDER:
        return None
    if len(parts) > 2:
        return parts[0], parts[1]
    return parts[0], (Resource.NIFTI if kind in IMAGE_KINDS else Resource.OTHER).value


def stored_path(scan: str, resource: str, name: str) -> str:
    """Where a file uploaded into a scan's resource lies below the study: NIFTI's images and
    sidecars in the series folder itself (as converted), anything else in a folder named after
    its resource there, so that ``resource_of`` finds it in the resource it was put in."""
    if resource == Resource.NIFTI.value and "/" not in name and file_kind(name) in IMAGE_KINDS:
        return f"{scan}/{name}"
    return f"{scan}/{resource}/{name}"


# A resource a user names: a folder name of letters, digits, '_', '-' and '.', not starting with '.'.
_RESOURCE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Resources made elsewhere: DICOM and SEG are Orthanc's, ROIs come through the ROI API.
READ_ONLY = frozenset({Resource.DICOM.value, Resource.ROI.value, Resource.SEG.value})
# Resources whose files are DICOM instances in Orthanc rather than files of the archive.
IN_ORTHANC = frozenset({Resource.DICOM.value, Resource.SEG.value})


def writable(resource: str) -> bool:
    """Whether uploads may make files in a resource of this name (it exists, empty, until they do)."""
    return resource not in READ_ONLY and _RESOURCE_LABEL.fullmatch(resource) is not None


def upload_path(scan: str, resource: str, name: str) -> str:
    """The checked path below the study for a file uploaded into a scan's resource; 400 for a
    resource that is not written through uploads, or a name that is not a plain relative path."""
    if resource in READ_ONLY:
        raise InvalidValue(f"the {resource} resource is not written by uploads: DICOM goes to Orthanc (import), ROIs through /api/v1")
    if not _RESOURCE_LABEL.fullmatch(resource):
        raise InvalidValue(f"invalid resource name {resource[:80]!r}: letters, digits, '_', '-', '.'")
    if "\\" in name or ":" in name:
        raise InvalidPath(f"invalid file name {name[:80]!r}: no backslashes or colons")
    return check_relative_path(stored_path(scan, resource, name))


def scans_of(files: Iterable[File], segs: Mapping[int, str] | None = None) -> dict[str, Scan]:
    """The study's scans by id (series folder), each with its resources; ROIs go to the scan of
    the image they were drawn on (``rois/<series folder>/<image name>/...``), and the Orthanc series of their
    DICOM SEG (``segs``, by the ROI file's id) to its SEG resource."""
    scans: dict[str, Scan] = {}
    rois: list[File] = []
    for record in files:
        if record.path.startswith(f"{ROI_FOLDER}/"):
            rois.append(record)
            continue
        place = resource_of(record.path, record.kind)
        if place is None:
            continue
        scan = scans.setdefault(place[0], Scan(place[0]))
        scan.resource(place[1]).files.append(record)
        if record.orthanc_series_id and record.orthanc_series_id not in scan.resource(Resource.DICOM.value).orthanc_series:
            scan.resource(Resource.DICOM.value).orthanc_series.append(record.orthanc_series_id)
    for record in rois:
        parts = record.path.split("/")
        owner = scans.get(parts[1]) if len(parts) > 3 else None
        if owner is not None:
            owner.resource(Resource.ROI.value).files.append(record)
            seg = (segs or {}).get(record.id)
            if seg and seg not in owner.resource(Resource.SEG.value).orthanc_series:
                owner.resource(Resource.SEG.value).orthanc_series.append(seg)
    return dict(sorted(scans.items()))


def candidate_paths(scan: str, resource: str, name: str) -> list[str]:
    """Where a file a scan's resource lists as ``name`` may lie below the study; ``holds`` tells
    which of them does (a file in the series folder is NIFTI's or OTHER's by its kind)."""
    if resource == Resource.ROI.value:
        return [f"{ROI_FOLDER}/{scan}/{name}"]
    if resource in (Resource.NIFTI.value, Resource.OTHER.value):
        return [f"{scan}/{name}", f"{scan}/{resource}/{name}"]
    return [f"{scan}/{resource}/{name}"]


def holds(scan: str, resource: str, record: File) -> bool:
    """Whether the file, found at one of ``candidate_paths``, is in that scan's resource."""
    if resource == Resource.ROI.value:
        return record.path.startswith(f"{ROI_FOLDER}/{scan}/")
    return resource_of(record.path, record.kind) == (scan, resource)


def relative_name(record: File, resource: str) -> str:
    """A file's name inside its resource (the path below the resource's folder)."""
    parts = record.path.split("/")
    if resource == Resource.ROI.value:
        return "/".join(parts[2:])
    if resource in (Resource.NIFTI.value, Resource.OTHER.value) and len(parts) == 2:
        return parts[1]
    return "/".join(parts[2:])


def modality_of(sidecar: Path) -> str:
    """The DICOM modality a dcm2niix sidecar records; '' when it cannot be read."""
    try:
        value = json.loads(sidecar.read_text()).get("Modality", "")
    except (OSError, ValueError, AttributeError):
        log.warning("cannot read the modality from %s", sidecar)
        return ""
    return value if isinstance(value, str) else ""

