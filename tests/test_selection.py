"""Filter bars and file patterns against a real index, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive
from nifti_archive.catalog.tags import TagLevel, add_tags
from nifti_archive.errors import FilterSyntaxError
from nifti_archive.models import File, FileKind, JobRun, JobState, Project, Study, Subject, SubjectIdentity, Trash
from nifti_archive.query.filter_sql import Column
from nifti_archive.query.selection import select_files, study_selection

SUBJECTS = {
    # patient id: (name, subject tags, {study id: (date, description, study tags, {path: file tags})})
    "P001": ("Müller^Anna", ["control"], {
        "S1": (date(2024, 3, 12), "MRI brain", ["baseline"], {
            "t1_mprage/s002.nii": ["t1"],
            "004_flair/s004.nii": [],
        }),
        "S2": (date(2025, 1, 5), "MRI brain follow-up", ["followup"], {"t1_mprage/s002.nii": ["t1"]}),
    }),
    "P002": ("Meier^Bob", [], {
        "S1": (date(2024, 7, 1), "CT head", ["control_like"], {"003_ct/ct_100%.nii": [], "a_b/x.nii": ["seg"]}),
    }),
    "P003": ("O'Brien^Cara", ["patient"], {
        "S1": (None, "MRT Schädel", [], {"MPR_t1/s01.nii": [], "axb/x.nii": []}),
    }),
}


def populate(session: Session) -> Project:
    project = Project(name="demo")
    session.add(project)
    session.flush()
    for patient_id, (name, subject_tags, studies) in SUBJECTS.items():
        subject = Subject(project_id=project.id, patient_id=patient_id)
        session.add(subject)
        session.flush()
        session.add(SubjectIdentity(subject_id=subject.id, patient_name=name, real_patient_id=patient_id))
        add_tags(session, TagLevel.SUBJECT, [subject.id], subject_tags)
        for study_id, (when, description, study_tags, files) in studies.items():
            study = Study(subject_id=subject.id, study_id=study_id, study_date=when, description=description)
            session.add(study)
            session.flush()
            add_tags(session, TagLevel.STUDY, [study.id], study_tags)
            for path, file_tags in files.items():
                record = File(study_id=study.id, path=path, kind=FileKind.NIFTI, size=1, sha256="0" * 64)
                session.add(record)
                session.flush()
                add_tags(session, TagLevel.FILE, [record.id], file_tags)
    return project


@pytest.fixture
def demo(archive: Archive) -> tuple[Session, Project]:
    session = archive.sessions()
    project = populate(session)
    session.commit()
    yield session, project
    session.close()


def psids(session: Session, project: Project, **bars: str) -> list[str]:
    studies = session.scalars(study_selection(project.id, {Column(k): v for k, v in bars.items()})).all()
    return [f"{s.subject.patient_id}#{s.study_id}" for s in studies]


def test_patient_id_bar_prefix_and_or(demo) -> None:
    session, project = demo
    assert psids(session, project, patient_id="P001") == ["P001#S1", "P001#S2"]
    assert psids(session, project, patient_id="P001 P003") == ["P001#S1", "P001#S2", "P003#S1"]
    assert psids(session, project, patient_id="p00_") == ["P001#S1", "P001#S2", "P002#S1", "P003#S1"]


def test_patient_name_bar_is_case_insensitive_and_unicode(demo) -> None:
    session, project = demo
    assert psids(session, project, patient_name="mül") == ["P001#S1", "P001#S2"]
    assert psids(session, project, patient_name="o'b") == ["P003#S1"]
    assert psids(session, project, patient_name="M*^B") == ["P002#S1"]


def test_study_date_prefix_compact_and_range(demo) -> None:
    session, project = demo
    assert psids(session, project, study_date="2024") == ["P001#S1", "P002#S1"]
    assert psids(session, project, study_date="20240312") == ["P001#S1"]
    assert psids(session, project, study_date="2024-06-01..2025-12-31") == ["P001#S2", "P002#S1"]
    assert psids(session, project, study_date="..2024-06-01") == ["P001#S1"]


def test_description_bar_and_sdesc_attribute(demo) -> None:
    session, project = demo
    assert psids(session, project, study_description="mri") == ["P001#S1", "P001#S2"]
    assert psids(session, project, study_description="MRI & SDESC:*follow") == ["P001#S2"]
    assert psids(session, project, study_description="MRT Sch") == ["P003#S1"]


def test_tag_attributes(demo) -> None:
    session, project = demo
    assert psids(session, project, patient_id="STAG:control") == ["P002#S1"]  # implicit trailing wildcard
    assert psids(session, project, patient_id="PTAG:control") == ["P001#S1", "P001#S2"]
    assert psids(session, project, patient_id="FTAG:seg") == ["P002#S1"]
    assert psids(session, project, patient_id="PTAG:control & STAG:follow") == ["P001#S2"]


def test_file_search_bar(demo) -> None:
    session, project = demo
    assert psids(session, project, files="t1*/s0*.nii MPR_t1*/s*.nii & PTAG:control") == ["P001#S1", "P001#S2"]
    assert psids(session, project, files="t1*/s0*.nii MPR_t1*/s*.nii") == ["P001#S1", "P001#S2", "P003#S1"]
    assert psids(session, project, files="*flair") == ["P001#S1"]  # implicit trailing wildcard
    assert psids(session, project, files="flair") == []


def test_job_states(demo, archive: Archive) -> None:
    session, project = demo
    subject = session.query(Subject).filter_by(patient_id="P002").one()
    study = subject.studies[0]
    session.add(JobRun(project_id=project.id, subject_id=subject.id, study_id=study.id, state=JobState.ERROR))
    other = session.query(Subject).filter_by(patient_id="P001").one()
    session.add(JobRun(project_id=project.id, subject_id=other.id, study_id=None, state=JobState.QUEUED))
    session.commit()
    assert psids(session, project, patient_id="JOB:e") == ["P002#S1"]
    assert psids(session, project, patient_id="JOB:q") == ["P001#S1", "P001#S2"]  # a subject-level run
    assert psids(session, project, patient_id="JOB:r") == []


def test_several_bars_must_all_hold(demo) -> None:
    session, project = demo
    assert psids(session, project, patient_id="P001", study_date="2025") == ["P001#S2"]


def test_trashed_studies_and_files_are_invisible(demo) -> None:
    session, project = demo
    entry = Trash(project_id=project.id, summary="x", deleted_by="test")
    session.add(entry)
    session.flush()
    study = session.query(Study).filter_by(description="CT head").one()
    study.trash_id = entry.id
    for record in study.files:
        record.trash_id = entry.id
    session.commit()
    assert "P002#S1" not in psids(session, project)
    assert [(f.subject, f.study, f.path) for f in select_files(session, project, "*")] == [
        ("P001", "S1", "004_flair/s004.nii"),
        ("P001", "S1", "t1_mprage/s002.nii"),
        ("P001", "S2", "t1_mprage/s002.nii"),
        ("P003", "S1", "MPR_t1/s01.nii"),
        ("P003", "S1", "axb/x.nii"),
    ]


def test_select_files_with_literal_underscore_and_percent(demo) -> None:
    session, project = demo
    assert [f.path for f in select_files(session, project, "a_b/x.nii")] == ["a_b/x.nii", "axb/x.nii"]
    assert [f.path for f in select_files(session, project, "a\\_b/x.nii")] == ["a_b/x.nii"]
    assert [f.path for f in select_files(session, project, "*/ct_100%.nii")] == ["003_ct/ct_100%.nii"]
    assert [f.path for f in select_files(session, project, "*1%0*")] == []  # '%' is no wildcard
    assert [f.path for f in select_files(session, project, "*ct_1*")] == ["003_ct/ct_100%.nii"]


def test_select_files_with_tags_and_study_attributes(demo) -> None:
    session, project = demo
    selected = select_files(session, project, "* & FTAG:t1 & STAG:base")
    assert [(f.subject, f.study, f.path) for f in selected] == [("P001", "S1", "t1_mprage/s002.nii")]


def test_select_is_exact_unless_trailing_wildcard(demo) -> None:
    session, project = demo
    assert select_files(session, project, "t1_mprage/s002") == []
    assert len(select_files(session, project, "t1_mprage/s002", trailing_wildcard=True)) == 2


def test_malformed_filter_raises_a_syntax_error_not_a_database_error(demo) -> None:
    session, project = demo
    with pytest.raises(FilterSyntaxError, match="unknown attribute"):
        psids(session, project, patient_id="XTAG:a")
    with pytest.raises(FilterSyntaxError, match="not a date"):
        psids(session, project, study_date="2024-13-01..2024-12-31")
    with pytest.raises(FilterSyntaxError, match="'..'"):
        select_files(session, project, "../x")


def test_sql_injection_attempts_are_plain_text(demo) -> None:
    session, project = demo
    assert psids(session, project, patient_name="x' OR '1'='1") == []
    assert select_files(session, project, "'; DROP TABLE files; --") == []
    assert len(select_files(session, project, "*")) == 7
