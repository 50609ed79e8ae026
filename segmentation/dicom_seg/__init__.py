"""DICOM Segmentation (SEG) codec: ROI masks on a NIfTI grid <-> SEG objects that follow the source series.

Plain functions on pydicom datasets, numpy arrays and affines; no archive, server or database here.
"""

from segmentation.dicom_seg.decode import DecodedSegment, SegReferences, decode, seg_references
from segmentation.dicom_seg.encode import Algorithm, EncodedSeg, SegmentMask, encode
from segmentation.dicom_seg.geometry import ReferenceGrid, SourceSeries, read_source_series

__all__ = [
    "Algorithm",
    "DecodedSegment",
    "EncodedSeg",
    "ReferenceGrid",
    "SegReferences",
    "SegmentMask",
    "SourceSeries",
    "decode",
    "encode",
    "read_source_series",
    "seg_references",
]
