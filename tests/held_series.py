"""Conversion requests as ingestion leaves them, for tests of what the portal shows about them."""

from __future__ import annotations

from sqlalchemy import select

from nifti_archive.archive import Archive
from nifti_archive.models import ConversionReason, ConversionRequest, ConversionState, Study, Subject


def hold_series(archive: Archive, study_id: int, series_folder: str, state: ConversionState, message: str) -> int:
    """A series of the study whose conversion ended in ``state`` with ``message``; its request's id."""
    with archive.unit_of_work() as (session, _journal):
        project_id = session.scalar(select(Subject.project_id).join(Study, Study.subject_id == Subject.id).where(Study.id == study_id))
        request = ConversionRequest(
            orthanc_series_id=f"orthanc-{study_id}-{series_folder}", instances_hash="h", instance_count=149,
            series_instance_uid=f"1.2.826.0.1.{study_id}", state=state,
            reason=ConversionReason.STABLE_SERIES, message=message, project_id=project_id, study_id=study_id,
            series_folder=series_folder,
        )
        session.add(request)
        session.flush()
        return request.id
