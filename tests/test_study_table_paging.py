"""The studies table's cursor, and its cached counts and page starts: a cursor pages through every
study once while studies come and go, a malformed one is a clear 400, and no change a user makes
(registration, tags, trash and restore, a study moved, a file added) leaves a count or a deep
page behind, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from nifti_archive.archive import Archive, get_project
from nifti_archive.catalog.projects import create_project
from nifti_archive.catalog.registration import StudyDetails, ensure_study
from nifti_archive.catalog.tags import TagLevel, add_tags, remove_tags
from nifti_archive.catalog.trash import delete_subjects_or_studies, restore
from nifti_archive.errors import InvalidValue
from nifti_archive.models import ConversionState, File, FileKind, JobRun, JobState, Study
from nifti_archive.query.paging import decode_cursor, encode_cursor
from nifti_archive.query.study_table import Cursor, TablePage, parse_table_query, study_page
from portal.app import create_app
from tests.held_series import hold_series
from tests.portal_site import SiteTemplate, copy_site
from tests.test_portal_api import bearer, token_for

MALFORMED = "malformed cursor 'after'"


def test_a_cursor_token_gives_back_its_values() -> None:
    values = ["-study_description", "IRM crâne", "P0012", "S1", 9050]
    assert decode_cursor(encode_cursor(values), 5) == values
    assert decode_cursor(encode_cursor([None, 0]), 2) == [None, 0]
    assert set(encode_cursor(values)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("token", [
    "", "not a cursor!", "e30", encode_cursor(["patient_id", "P1", "S1"]), encode_cursor(["a", "b", "c", "d", True]),
    encode_cursor(["a", "b", "c", "d", 1.5]), encode_cursor(["a", ["b"], "c", "d", 1]), "A" * 5000,
])
def test_a_malformed_cursor_is_refused_with_what_to_do(token: str) -> None:
    with pytest.raises(InvalidValue, match=MALFORMED):
        decode_cursor(token, 5)


def test_a_cursor_must_fit_the_sort_it_pages() -> None:
    token = Cursor("-study_description", "MRI brain", "P01", "S1", 50).token()
    assert parse_table_query({"sort": "-study_description", "after": token}, False).after == Cursor(
        "-study_description", "MRI brain", "P01", "S1", 50)
    with pytest.raises(InvalidValue, match="sorted by '-study_description', not 'study_description'"):
        parse_table_query({"sort": "study_description", "after": token}, False)
    with pytest.raises(InvalidValue, match="either offset or after"):
        parse_table_query({"sort": "-study_description", "after": token, "offset": "50"}, False)
    dated = Cursor("study_date", date(2024, 3, 12), "P01", "S1", 1).token()
    assert parse_table_query({"sort": "study_date", "after": dated}, False).after == Cursor(
        "study_date", date(2024, 3, 12), "P01", "S1", 1)
    with pytest.raises(InvalidValue, match="not a date"):
        parse_table_query({"sort": "study_date", "after": encode_cursor(["study_date", "2024-13-01", "P", "S", 0])}, False)
    for bad in (["patient_id", None, "P", "S", 0], ["patient_id", "P", "P", "S", -1], ["patient_id", "P", 3, "S", 0]):
        with pytest.raises(InvalidValue, match=MALFORMED):
            parse_table_query({"after": encode_cursor(bad)}, False)


def table(archive: Archive, **args: str) -> TablePage:
    with archive.sessions() as session:
        return study_page(session, get_project(session, "alpha"), parse_table_query(args, True))


def subjects(page: TablePage) -> list[str]:
    return [f"{row.subject}/{row.study}" for row in page.rows]


@pytest.fixture
def alpha(archive: Archive) -> Iterator[Archive]:
    """Project alpha: subjects P01..P09 with one study each, descriptions alternating."""
    with archive.unit_of_work() as (session, journal):
        project = create_project(session, journal, archive.layout, "alpha")
        create_project(session, journal, archive.layout, "beta")
        for number in range(1, 10):
            details = StudyDetails(date(2024, 1, number) if number % 3 else None, "MRI head" if number % 2 else "CT chest")
            ensure_study(session, project, f"P0{number}", "S1", details=details)
            journal.make_dir(archive.layout.study_dir("alpha", f"P0{number}", "S1"))
    yield archive


def change(archive: Archive, action: Any) -> Any:
    with archive.unit_of_work() as (session, journal):
        return action(session, journal, get_project(session, "alpha"))


def test_counts_and_deep_pages_follow_every_change_at_once(alpha: Archive) -> None:
    queries: list[dict[str, str]] = [
        {}, {"f_study_description": "MRI"}, {"f_files": "STAG:control"}, {"f_files": "t1*"},
        {"sort": "-study_description", "offset": "4", "limit": "3"}, {"sort": "study_date", "offset": "2", "limit": "3"},
    ]

    def expect(total: int, mri: int, control: int, t1: int) -> None:
        # Asked twice: the second answer comes from what the first left in the caches.
        for _ in range(2):
            pages = [table(alpha, **query) for query in queries]
            assert [page.total for page in pages[:4]] == [total, mri, control, t1]
            assert subjects(pages[4]) == subjects(table(alpha, sort="-study_description", limit="500"))[4:7]
            assert subjects(pages[5]) == subjects(table(alpha, sort="study_date", limit="500"))[2:5]

    def study(session: Any, patient_id: str) -> Study:
        project = get_project(session, "alpha")
        return ensure_study(session, project, patient_id, "S1")

    expect(9, 5, 0, 0)
    change(alpha, lambda session, journal, project: ensure_study(
        session, project, "P00", "S1", details=StudyDetails(date(2023, 1, 1), "CT chest")))
    expect(10, 5, 0, 0)
    change(alpha, lambda session, journal, project: add_tags(session, TagLevel.STUDY, [study(session, "P05").id], ["control"]))
    expect(10, 5, 1, 0)
    change(alpha, lambda session, journal, project: session.add(
        File(study_id=study(session, "P05").id, path="t1_mprage/s002.nii", kind=FileKind.NIFTI, size=1, sha256="0" * 64)))
    expect(10, 5, 1, 1)
    entry = change(alpha, lambda session, journal, project: delete_subjects_or_studies(
        session, journal, alpha.layout, project, ["P05#S1"], "editor").id)
    expect(9, 4, 0, 0)
    change(alpha, lambda session, journal, project: restore(session, journal, alpha.layout, project, entry))
    expect(10, 5, 1, 1)
    change(alpha, lambda session, journal, project: remove_tags(session, TagLevel.STUDY, [study(session, "P05").id], ["control"]))
    expect(10, 5, 0, 1)

    def move_to_beta(session: Any, journal: Any, project: Any) -> None:
        moved = study(session, "P05")
        moved.subject_id = ensure_study(session, get_project(session, "beta"), "Q01", "S9").subject_id

    change(alpha, move_to_beta)
    expect(9, 4, 0, 0)


# Per order: a study that sorts before the first page (never shown: pages already read do not
# shift) and one that sorts after it (shown once, in its place).
BEFORE_AND_AFTER = {
    "patient_id": (StudyDetails(None, ""), StudyDetails(date(2023, 6, 1), "MRI head")),
    "-study_description": (StudyDetails(None, "zz"), StudyDetails(date(2023, 6, 1), "MRI head")),
    "study_date": (StudyDetails(None, ""), StudyDetails(date(2023, 6, 1), "MRI head")),
    "-study_date": (StudyDetails(date(2099, 1, 1), ""), StudyDetails(date(2023, 6, 1), "MRI head")),
    "study_id": (StudyDetails(None, ""), StudyDetails(date(2023, 6, 1), "MRI head")),
}


def test_a_cursor_pages_through_every_study_once_while_studies_are_added(alpha: Archive) -> None:
    for index, (sort, (before, after)) in enumerate(BEFORE_AND_AFTER.items()):
        # Study ids going down: each early study sorts before those earlier orders left behind.
        early, late = f"0{9 - index}", f"Z{index}"
        seen: list[str] = []
        page = table(alpha, sort=sort, limit="2")
        while True:
            seen += subjects(page)
            if len(seen) == 2:
                change(alpha, lambda session, journal, project, early=early, late=late, before=before, after=after: [
                    ensure_study(session, project, "P00", early, details=before),
                    ensure_study(session, project, "P99", late, details=after),
                ])
            if page.next is None:
                break
            page = table(alpha, sort=sort, limit="2", after=page.next)
        assert seen == [s for s in subjects(table(alpha, sort=sort, limit="500")) if s != f"P00/{early}"], sort
        assert f"P99/{late}" in seen and len(set(seen)) == len(seen)


def test_the_api_hands_out_next_and_answers_a_bad_cursor_with_a_400(tmp_path: Path, portal_site: SiteTemplate) -> None:
    built = copy_site(portal_site, tmp_path / "var", orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    try:
        client = create_app(built.archive.settings, built.archive).test_client()
        auth = bearer(token_for(built.archive, "viewer"))

        def get(**query: str) -> Any:
            return client.get("/api/v1/projects/alpha/studies", query_string=query, headers=auth)

        answers = [get(sort="-study_date", limit="1").json]
        while answers[-1]["next"]:
            answers.append(get(sort="-study_date", limit="1", after=answers[-1]["next"]).json)
        assert [(a["offset"], a["total"], [r["subject"] for r in a["rows"]]) for a in answers] == [
            (0, 3, ["P03"]), (1, 3, ["P02"]), (2, 3, ["P01"])]
        bad = get(sort="-study_date", after="not-a-cursor")
        assert bad.status_code == 400 and "malformed cursor 'after'" in bad.json["error"]
        other_order = get(sort="study_date", after=answers[0]["next"])
        assert other_order.status_code == 400 and "sorted by '-study_date'" in other_order.json["error"]
    finally:
        built.archive.close()


def test_a_pages_rows_carry_their_tags_files_jobs_and_held_series(alpha: Archive) -> None:
    def details(session: Any, journal: Any, project: Any) -> int:
        p01, p02 = (ensure_study(session, project, patient_id, "S1") for patient_id in ("P01", "P02"))
        add_tags(session, TagLevel.STUDY, [p01.id], ["b", "a"])
        add_tags(session, TagLevel.SUBJECT, [p01.subject_id], ["twin"])
        for path in ("t1/s002.nii", "t1/s002.json"):
            session.add(File(study_id=p01.id, path=path, kind=FileKind.NIFTI, size=1, sha256="0" * 64))
        for state, dismissed in ((JobState.DONE, False), (JobState.DONE, True), (JobState.CANCELLED, False),
                                 (JobState.RUNNING, False), (JobState.DONE, False)):
            session.add(JobRun(project_id=project.id, subject_id=p01.subject_id, study_id=p01.id, state=state, message="",
                               dismissed=dismissed))
        session.flush()
        return p02.id

    p02 = change(alpha, details)
    for series, state in enumerate((ConversionState.QUARANTINED, ConversionState.FAILED, ConversionState.RELEASED), start=2):
        hold_series(alpha, p02, f"{series:03d}_epi", state, "")
    rows = {row.subject: row for row in table(alpha).rows}
    assert (rows["P01"].study_tags, rows["P01"].subject_tags, rows["P01"].file_count) == (["a", "b"], ["twin"], 2)
    assert rows["P01"].jobs == {"done": 2, "running": 1} and rows["P01"].held == {}
    assert rows["P02"].held == {"quarantined": 1, "failed": 1} and rows["P02"].jobs == {}
    assert (rows["P02"].study_tags, rows["P02"].subject_tags, rows["P02"].file_count) == ([], [], 0)
