"""The cases a model of one label learns from: the project's ROIs of that label on their images.

One case per reference image: where several authors drew the label on the same image, the most
recently modified version is the one taken (two masks of one image would teach the network two
answers, and could put the same image on both sides of the validation split). ROIs of every origin count:
one saved from the assistant's proposal was accepted and saved by its author, like a drawn one.

The split is deterministic and stable as cases are added: a case is for validation when its
reference file's seeded hash ranks among the lowest, so retraining with more ROIs keeps most
earlier validation cases where they were.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from nifti_archive.archive import Archive
from nifti_archive.errors import InvalidValue
from nifti_archive.layout import Location
from nifti_archive.models import File, Project, Roi, Study, Subject

MIN_TRAINING_ROIS = 4
VALIDATION_FRACTION = 0.2
SPLIT_SEED = "northanc-segtrain-1"


class Split(Enum):
    TRAINING = "training"
    VALIDATION = "validation"


@dataclass(frozen=True)
class TrainingCase:
    # The ROI version the mask is; none for a mask a train job's FILE pattern named.
    roi_id: int | None
    roi_version: int | None
    reference_file_id: int
    study_pk: int
    image: Path
    mask: Path
    split: Split = Split.TRAINING

    def manifest_entry(self) -> dict[str, Any]:
        """The case as the trainer reads it (train_unet.py)."""
        return {"roi": self.roi_id, "version": self.roi_version, "image": str(self.image), "mask": str(self.mask),
                "split": self.split.value}


def _rank(case: TrainingCase) -> str:
    return hashlib.sha256(f"{SPLIT_SEED}:{case.reference_file_id}".encode()).hexdigest()


def split(cases: list[TrainingCase]) -> list[TrainingCase]:
    """The cases with their split: a fifth (at least one) for validation, the rest for training."""
    validation_count = max(1, math.ceil(len(cases) * VALIDATION_FRACTION))
    held_out = {c.reference_file_id for c in sorted(cases, key=_rank)[:validation_count]}
    return [TrainingCase(c.roi_id, c.roi_version, c.reference_file_id, c.study_pk, c.image, c.mask,
                         Split.VALIDATION if c.reference_file_id in held_out else Split.TRAINING) for c in cases]


def collect(archive: Archive, session: Session, project: Project, label: str) -> list[TrainingCase]:
    """The project's live cases of ``label``, split; too few to train and validate on is an error."""
    mask_file, reference = aliased(File), aliased(File)
    rows = session.execute(
        select(Roi, mask_file.path, reference.path, Study, Subject.patient_id)
        .join(mask_file, mask_file.id == Roi.file_id)
        .join(reference, reference.id == Roi.reference_file_id)
        .join(Study, Study.id == mask_file.study_id)
        .join(Subject, Subject.id == Study.subject_id)
        .where(Subject.project_id == project.id, Roi.label == label, mask_file.trash_id.is_(None), reference.trash_id.is_(None))
        .order_by(Roi.reference_file_id, Roi.modified_at.desc(), Roi.file_id.desc())
    ).all()
    cases: dict[int, TrainingCase] = {}
    for roi, mask_path, reference_path, study, patient_id in rows:
        if roi.reference_file_id in cases:
            continue  # an older version or another author's, on the same image
        image, mask = (archive.layout.file_path(Location(project.name, patient_id, study.study_id, path))
                       for path in (reference_path, mask_path))
        cases[roi.reference_file_id] = TrainingCase(roi.file_id, roi.version, roi.reference_file_id, study.id, image, mask)
    if len(cases) < MIN_TRAINING_ROIS:
        raise InvalidValue(f"training {label!r} needs at least {MIN_TRAINING_ROIS} ROIs; the project has {len(cases)}")
    return split(sorted(cases.values(), key=lambda c: c.roi_id or 0))
