"""The validation data in tests/data: scanner DICOM and dcm2niix's reference NIfTI for each series."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

DATA = Path(__file__).resolve().parent / "data"
DATASETS = {"dcm_qa": DATA / "dcm_qa", "dcm_qa_nih": DATA / "dcm_qa_nih"}
# Sidecar fields that carry the acquisition's timing and geometry.
KEY_FIELDS = (
    "RepetitionTime", "EchoTime", "FlipAngle", "SliceTiming", "PhaseEncodingDirection", "SliceThickness",
    "EffectiveEchoSpacing", "TotalReadoutTime", "SeriesNumber", "ProtocolName", "ImageOrientationPatientDICOM",
)


@dataclass(frozen=True)
class Reference:
    nifti: Path
    sidecar: dict[str, object]

    @property
    def key(self) -> tuple[str, int]:
        return str(self.sidecar["ProtocolName"]), int(self.sidecar["SeriesNumber"])  # type: ignore[arg-type]


def input_files(dataset: str) -> list[Path]:
    folder = DATASETS[dataset] / "In"
    if not folder.is_dir():
        raise FileNotFoundError(f"the test data is not at {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def references(dataset: str) -> dict[tuple[str, int], Reference]:
    found = {}
    for sidecar in sorted((DATASETS[dataset] / "Ref").glob("*.json")):
        reference = Reference(sidecar.with_suffix(".nii"), json.loads(sidecar.read_text()))
        found[reference.key] = reference
    return found


def sidecar_key(sidecar: dict[str, object]) -> tuple[str, int]:
    return str(sidecar["ProtocolName"]), int(sidecar["SeriesNumber"])  # type: ignore[arg-type]


def compare(ours: Path, our_sidecar: dict[str, object], reference: Reference) -> list[str]:
    """What differs between our conversion and the reference (empty when nothing does)."""
    problems = []
    mine, theirs = nib.load(ours), nib.load(reference.nifti)
    if mine.shape != theirs.shape:
        problems.append(f"shape {mine.shape} != {theirs.shape}")
    if not np.allclose(mine.get_sform(), theirs.get_sform(), atol=1e-4, rtol=0):
        problems.append(f"sform differs:\n{mine.get_sform()}\n{theirs.get_sform()}")
    if int(mine.header["sform_code"]) != int(theirs.header["sform_code"]):
        problems.append("sform_code differs")
    if mine.get_data_dtype() != theirs.get_data_dtype():
        problems.append(f"dtype {mine.get_data_dtype()} != {theirs.get_data_dtype()}")
    elif mine.shape == theirs.shape and not np.array_equal(mine.dataobj.get_unscaled(), theirs.dataobj.get_unscaled()):
        problems.append("voxel values differ")
    for field in KEY_FIELDS:
        if field in reference.sidecar and our_sidecar.get(field) != reference.sidecar[field]:
            problems.append(f"{field}: {our_sidecar.get(field)!r} != {reference.sidecar[field]!r}")
    return problems
