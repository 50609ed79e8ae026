"""Independent checks of DICOM SEG objects: dcmqi (QIICR's C++ converter, from PyPI) and dciodvfy (dicom3tools)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

BIN = Path(sys.executable).parent
DCIODVFY = "/usr/bin/dciodvfy"
TISSUE = {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"}


@dataclass(frozen=True)
class DcmqiSegment:
    label: str
    rgb: tuple[int, int, int]
    image: Any  # nibabel image: the segment's voxels on the grid dcmqi chose, RAS+ affine as NIfTI defines it


def dcmqi_read(seg: Path, out: Path) -> list[DcmqiSegment]:
    """Every segment of ``seg`` as segimage2itkimage writes it: one NIfTI per segment, and a JSON of their attributes."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [BIN / "segimage2itkimage", "--inputDICOM", str(seg), "--outputDirectory", str(out), "-t", "nifti", "-p", "seg"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    meta = json.loads((out / "seg-meta.json").read_text())
    segments = []
    for group in meta["segmentAttributes"]:
        for attributes in group:
            image = nib.load(out / f"seg-{attributes['labelID']}.nii.gz")
            segments.append(DcmqiSegment(attributes["SegmentLabel"], tuple(attributes["recommendedDisplayRGBValue"]), image))
    return segments


def dcmqi_write(labels: NDArray[np.uint8], affine: NDArray[np.float64], names: Sequence[str], sources: Sequence[Path], out: Path) -> Path:
    """A SEG written by itkimage2segimage from a label image (value i is segment ``names[i - 1]``) on a NIfTI grid."""
    out.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), out / "labels.nii.gz")
    meta = {
        "ContentCreatorName": "Reader^Dcmqi",
        "SeriesDescription": "dcmqi",
        "SeriesNumber": "300",
        "InstanceNumber": "1",
        "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1",
        "BodyPartExamined": "BRAIN",
        "segmentAttributes": [
            [
                {
                    "labelID": number,
                    "SegmentLabel": name,
                    "SegmentDescription": name,
                    "SegmentAlgorithmType": "MANUAL",
                    "SegmentedPropertyCategoryCodeSequence": TISSUE,
                    "SegmentedPropertyTypeCodeSequence": TISSUE,
                    "recommendedDisplayRGBValue": [40 * number, 200, 30],
                }
                for number, name in enumerate(names, start=1)
            ]
        ],
    }
    (out / "meta.json").write_text(json.dumps(meta))
    seg = out / "dcmqi.dcm"
    run = subprocess.run(
        [
            BIN / "itkimage2segimage",
            "--inputImageList",
            str(out / "labels.nii.gz"),
            "--inputDICOMList",
            ",".join(str(p) for p in sources),
            "--outputDICOM",
            str(seg),
            "--inputMetadata",
            str(out / "meta.json"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return seg


def dciodvfy(path: Path) -> tuple[int, list[str]]:
    """dciodvfy's exit status and its lines (it writes the IOD name, warnings and errors to stderr)."""
    run = subprocess.run([DCIODVFY, str(path)], check=False, capture_output=True, text=True, timeout=60)
    return run.returncode, [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
