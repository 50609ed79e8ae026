"""The subject and study a series belongs to in its project, found again by who they are.

A subject is found by its real PatientID (kept for every subject, pseudonymised or not, in
``SubjectIdentity``), a study by its StudyInstanceUID; only a new one is named, by the
project's templates (a pseudonymised project's subjects by their pseudonym). Naming is
injective: when the made-safe name is taken by another patient, or differs from a taken one
only in case, the new subject gets a suffix, a short keyed hash of its PatientID, so the same
patient always gets the same folder. Ids an import asks for (``--patients_id``,
``--studies_id``) are the importer's choice and are used as given. No series goes to a
project analysis (``ANALYSIS#<name>``, see catalog/analyses.py), whatever names it.
"""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.catalog.registration import Identity, StudyDetails, ensure_study, live_subject
from nifti_archive.ingest import naming
from nifti_archive.ingest.pseudonyms import keyed_hash, pseudonym
from nifti_archive.layout import check_folder_id
from nifti_archive.models import IngestOverride, Project, Study, Subject, SubjectIdentity

log = logging.getLogger(__name__)

SUFFIX_LENGTH = 6


def pseudonym_key(archive: Archive) -> bytes:
    return bytes.fromhex(archive.settings.read_secret("pseudonym_key"))


def real_patient_id(tags: dict[str, str]) -> str:
    return tags.get("PatientID", "").strip()


def _study_date(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None


def identity_of(tags: dict[str, str]) -> Identity:
    return Identity(real_patient_id=real_patient_id(tags), patient_name=tags.get("PatientName", ""))


def _by_real_id(session: Session, project: Project, real_id: str) -> Subject | None:
    return session.scalar(
        select(Subject).join(SubjectIdentity, SubjectIdentity.subject_id == Subject.id)
        .where(Subject.project_id == project.id, Subject.trash_id.is_(None), SubjectIdentity.real_patient_id == real_id)
        .order_by(Subject.id).limit(1)
    )


def _clashing(session: Session, project: Project, name: str) -> list[Subject]:
    """Live subjects named ``name`` or differently only in case."""
    candidates = session.scalars(
        select(Subject).where(
            Subject.project_id == project.id, Subject.trash_id.is_(None),
            or_(Subject.patient_id == name, func.lower(Subject.patient_id) == name.lower()),
        )
    )
    return [s for s in candidates if naming.same_folder(s.patient_id, name)]


def _subject_name(session: Session, archive: Archive, project: Project, tags: dict[str, str],
                  override: IngestOverride | None) -> str:
    """The folder of the patient's subject: the one it has, else a new name no other patient has."""
    if override is not None and override.patient_id:
        return override.patient_id
    real_id = real_patient_id(tags)
    found = _by_real_id(session, project, real_id) if real_id else None
    if found is not None:
        return found.patient_id
    wanted = pseudonym(pseudonym_key(archive), real_id) if project.pseudonymise else naming.render(project.subject_template, tags)
    clashing = _clashing(session, project, wanted)
    exact = next((s for s in clashing if s.patient_id == wanted), None)
    if exact is not None and not (exact.identity and exact.identity.real_patient_id):
        # A subject made by hand or by an import's ids, nobody's yet: this patient's from now on.
        return wanted
    if not clashing:
        return wanted
    suffix = keyed_hash(pseudonym_key(archive), real_id, SUFFIX_LENGTH)
    base = wanted[: naming.MAX_NAME - SUFFIX_LENGTH - 1].rstrip("_.+-")
    distinct = f"{base}_{suffix}"
    taken = {s.patient_id for s in _clashing(session, project, distinct)}
    return naming.unique_name(distinct, taken)


def study_template(project: Project) -> str:
    """The project's study template; a pseudonymised project's default where its own names the patient
    (a project pseudonymised before its templates were checked for that)."""
    if project.pseudonymise and naming.identifying_fields(project.study_template):
        log.warning("project %s is pseudonymised but its study template names the patient; using %s",
                    project.name, naming.PSEUDONYMISED_STUDY_TEMPLATE)
        return naming.PSEUDONYMISED_STUDY_TEMPLATE
    return project.study_template


def _study_name(archive: Archive, project: Project, tags: dict[str, str]) -> str:
    template = study_template(project)
    values = dict(tags)
    if naming.STUDY_HASH_FIELD in naming.template_fields(template):
        values[naming.STUDY_HASH_FIELD] = keyed_hash(
            pseudonym_key(archive), tags.get("StudyInstanceUID", ""), naming.STUDY_HASH_LENGTH
        )
    return naming.render(template, values)


def _study_folder(session: Session, archive: Archive, project: Project, subject_name: str, tags: dict[str, str],
                  override: IngestOverride | None) -> str:
    """The folder of the DICOM study in the subject: the one it has, the one an import asks for, else a new one."""
    subject = live_subject(session, project, subject_name)
    live = list(session.scalars(select(Study).where(Study.subject_id == subject.id, Study.trash_id.is_(None)))) if subject else []
    uid = tags.get("StudyInstanceUID", "")
    same = next((s for s in live if uid and s.study_instance_uid == uid), None)
    if same is not None:
        return same.study_id
    if override is not None and override.study_id:
        return override.study_id
    return naming.unique_name(_study_name(archive, project, tags), {s.study_id for s in live})


def _details(tags: dict[str, str]) -> StudyDetails:
    return StudyDetails(
        study_date=_study_date(tags.get("StudyDate", "")),
        description=tags.get("StudyDescription", "")[:256],
        accession_number=tags.get("AccessionNumber", "")[:64],
        study_instance_uid=tags.get("StudyInstanceUID", ""),
    )


def subject_and_study(
    session: Session, archive: Archive, project: Project, tags: dict[str, str], override: IngestOverride | None
) -> tuple[Subject, Study]:
    """The subject and study a series with these tags belongs to in a project, made where missing."""
    # DICOM never lands in an analysis (ANALYSIS#...): templates make such ids safe and imports
    # are refused them, and this holds for every way a name is found (overrides, earlier subjects).
    subject_name = check_folder_id("subject", _subject_name(session, archive, project, tags, override))
    study_name = _study_folder(session, archive, project, subject_name, tags, override)
    study = ensure_study(
        session, project, subject_name, study_name, identity=identity_of(tags), details=_details(tags)
    )
    return study.subject, study
