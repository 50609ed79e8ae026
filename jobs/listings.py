"""What argument resolution works on, read from the index: each subject's live studies with their
files and tags. In bulk, so that validating a batch over a thousand studies is a handful of queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.arguments import StudyListing
from jobs.spec import Level
from nifti_archive.layout import ANALYSIS_PREFIX, ANALYSIS_STUDY, ArchiveLayout
from nifti_archive.models import File, JobRun, Project, RunStudy, Study, StudyTag, Subject

# Well below SQLite's limit on bound parameters.
_CHUNK = 900


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


@dataclass(frozen=True)
class SubjectListing:
    patient_id: str
    studies: list[StudyListing]


def subject_listings(
    session: Session, layout: ArchiveLayout, project: Project, subject_ids: Iterable[int]
) -> dict[int, SubjectListing]:
    """subject pk -> its patient id and live studies (ordered by study id), each with its live files and tags."""
    wanted = sorted(set(subject_ids))
    patients: dict[int, str] = {}
    for chunk in _chunks(wanted):
        patients.update(session.execute(
            select(Subject.id, Subject.patient_id).where(Subject.project_id == project.id, Subject.id.in_(chunk))
        ).tuples().all())
    studies: list[Study] = []
    for chunk in _chunks(list(patients)):
        studies += session.scalars(select(Study).where(Study.subject_id.in_(chunk), Study.trash_id.is_(None))).all()
    study_ids = [study.id for study in studies]
    files: dict[int, list[str]] = defaultdict(list)
    tags: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(study_ids):
        for study_pk, path in session.execute(
            select(File.study_id, File.path).where(File.study_id.in_(chunk), File.trash_id.is_(None)).order_by(File.path)
        ):
            files[study_pk].append(path)
        for study_pk, tag in session.execute(select(StudyTag.study_id, StudyTag.tag).where(StudyTag.study_id.in_(chunk))):
            tags[study_pk].add(tag)
    listings = {subject: SubjectListing(patient_id, []) for subject, patient_id in patients.items()}
    for study in sorted(studies, key=lambda study: (study.subject_id, study.study_id)):
        listings[study.subject_id].studies.append(StudyListing(
            study.study_id, study.study_date, study.description, frozenset(tags[study.id]), tuple(files[study.id]),
            layout.study_dir(project.name, patients[study.subject_id], study.study_id), study.id, patients[study.subject_id],
        ))
    return listings


def analysis_listings(session: Session, layout: ArchiveLayout, project: Project, names: Iterable[str]) -> dict[str, StudyListing]:
    """Analysis name -> its study, for those of ``names`` the project has (live)."""
    wanted = {ANALYSIS_PREFIX + name: name for name in names}
    if not wanted:
        return {}
    subjects = session.scalars(select(Subject.id).where(
        Subject.project_id == project.id, Subject.trash_id.is_(None), Subject.patient_id.in_(wanted))).all()
    found = {}
    for listing in subject_listings(session, layout, project, subjects).values():
        study = next((s for s in listing.studies if s.study_id == ANALYSIS_STUDY), None)
        if study is not None:
            found[wanted[listing.patient_id]] = study
    return found


def run_listings(session: Session, layout: ArchiveLayout, project: Project, run: JobRun, level: Level) -> list[StudyListing]:
    """The studies a run's arguments resolve in: its subject's, or at project level those it covers."""
    if level is not Level.PROJECT:
        return subject_listings(session, layout, project, [run.subject_id])[run.subject_id].studies
    covered = set(session.scalars(select(RunStudy.study_id).where(RunStudy.run_id == run.id)))
    subjects = session.scalars(select(Study.subject_id).where(Study.id.in_(covered))).all()
    return [s for listing in subject_listings(session, layout, project, subjects).values() for s in listing.studies
            if s.pk in covered]
