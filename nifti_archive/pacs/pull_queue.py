"""The durable pull queue: a cohort's studies found on a PACS and retrieved into a project.

Each row is claimed, looked up (C-FIND by accession number, or patient id and date), and
pulled (``peers.pull_study``), at most ``pull_concurrency`` at a time. A PACS that does not
answer is tried again after ``pull_retry_seconds``, doubling, up to ``pull_attempts`` times;
a study the PACS does not have, or two studies where the row means one, fail at once. Rows
left running by a process that died are queued again by the next one (``resume``), so a
cohort always ends with every row done or failed, and a report that says which and why.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nifti_archive.archive import Archive, get_project
from nifti_archive.db import rows_changed
from nifti_archive.errors import ArchiveError, Conflict, InvalidValue, NotFound
from nifti_archive.models import PacsPeer, Project, PullCohort, PullRow, PullState
from nifti_archive.orthanc_api import OrthancRest, orthanc_for
from nifti_archive.pacs import peers
from nifti_archive.pacs.cohort import CohortRow, write_report
from nifti_archive.pacs.query import PacsQuery
from nifti_archive.processes import child_environment, python_executable
from nifti_archive.settings import Settings, load_settings

log = logging.getLogger(__name__)
IDLE_SECONDS = 0.5


def _now() -> datetime:
    return datetime.now(UTC)


def create_cohort(session: Session, project_name: str, peer_name: str, source: str, created_by: str,
                  rows: Sequence[CohortRow]) -> PullCohort:
    cohort = PullCohort(project_id=get_project(session, project_name).id, peer_id=peers.get_peer(session, peer_name).id,
                        source=source[:1024], created_by=created_by)
    session.add(cohort)
    session.flush()
    session.add_all(
        PullRow(cohort_id=cohort.id, line=row.line, accession_number=row.accession_number, patient_id=row.patient_id,
                study_date=row.study_date, modality=row.modality, series_description=row.series_description,
                study_instance_uid=row.study_instance_uid, state=PullState.QUEUED, next_attempt_at=_now())
        for row in rows
    )
    session.flush()
    return cohort


def get_cohort(session: Session, cohort_id: int) -> PullCohort:
    cohort = session.get(PullCohort, cohort_id)
    if cohort is None:
        raise NotFound(f"no pull {cohort_id}")
    return cohort


def resume(session: Session, cohort_id: int) -> int:
    """Queue again what a stopped process left running; returns how many rows."""
    result = session.execute(
        update(PullRow).where(PullRow.cohort_id == cohort_id, PullRow.state == PullState.RUNNING)
        .values(state=PullState.QUEUED, next_attempt_at=_now())
    )
    return rows_changed(result)


def progress(session: Session, cohort_id: int) -> dict[str, int]:
    counts = {state: count for state, count in session.execute(
        select(PullRow.state, func.count()).where(PullRow.cohort_id == cohort_id).group_by(PullRow.state)
    )}
    return {state.value: counts.get(state, 0) for state in PullState}


def _claim(archive: Archive, cohort_id: int) -> int | None:
    with archive.unit_of_work() as (session, _journal):
        row_id = session.scalar(
            select(PullRow.id).where(PullRow.cohort_id == cohort_id, PullRow.state == PullState.QUEUED,
                                     PullRow.next_attempt_at <= _now())
            .order_by(PullRow.next_attempt_at, PullRow.id).limit(1).with_for_update(skip_locked=True)
        )
        if row_id is None:
            return None
        claimed = session.execute(
            update(PullRow).where(PullRow.id == row_id, PullRow.state == PullState.QUEUED)
            .values(state=PullState.RUNNING, attempts=PullRow.attempts + 1)
        )
        return row_id if rows_changed(claimed) else None


def _query(row: PullRow) -> PacsQuery:
    if row.accession_number:
        return PacsQuery(accession_number=row.accession_number)
    return PacsQuery(patient_id=row.patient_id, study_date=row.study_date)


def _describe(row: PullRow) -> str:
    if row.accession_number:
        return f"accession number {row.accession_number}"
    return f"patient {row.patient_id} on {row.study_date}"


class _Permanent(ArchiveError):
    """A row that no retry can help: the study is not there, or is not one."""


def _study_uid(orthanc: OrthancRest, row: PullRow, peer: PacsPeer) -> str:
    if row.study_instance_uid and not (row.accession_number or row.patient_id):
        return row.study_instance_uid
    answers = peers.find(orthanc, peer, _query(row))
    if not answers:
        raise _Permanent(f"{peer.name} has no study with {_describe(row)}")
    if len({a.get("StudyInstanceUID") for a in answers}) > 1:
        raise _Permanent(f"{peer.name} has {len(answers)} studies with {_describe(row)}; name one (AccessionNumber)")
    return answers[0]["StudyInstanceUID"]


def _pull_row(archive: Archive, orthanc: OrthancRest, row: PullRow, peer: PacsPeer, project: str) -> tuple[str, int]:
    study_uid = _study_uid(orthanc, row, peer)
    choice = peers.SeriesChoice(row.modality, row.series_description)
    try:
        series = peers.pull_study(archive, orthanc, peer.name, project, study_uid, choice)
    except (NotFound, Conflict) as exc:
        raise _Permanent(str(exc)) from exc
    return study_uid, len(series)


def _work_row(archive: Archive, orthanc: OrthancRest, row_id: int) -> None:
    with archive.sessions() as session:
        row = session.get_one(PullRow, row_id)
        cohort = session.get_one(PullCohort, row.cohort_id)
        peer = session.get_one(PacsPeer, cohort.peer_id)
        project_name = session.get_one(Project, cohort.project_id).name
        session.expunge_all()
    values: dict[str, object]
    try:
        study_uid, series = _pull_row(archive, orthanc, row, peer, project_name)
        values = {"state": PullState.DONE, "study_instance_uid": study_uid, "series_count": series, "message": ""}
    except _Permanent as exc:
        values = {"state": PullState.FAILED, "message": str(exc)}
    except ArchiveError as exc:
        settings = archive.settings
        if row.attempts >= settings.pull_attempts:
            values = {"state": PullState.FAILED, "message": f"gave up after {row.attempts} attempts: {exc}"}
        else:
            delay = settings.pull_retry_seconds * 2 ** (row.attempts - 1)
            values = {"state": PullState.QUEUED, "message": f"attempt {row.attempts} failed, retrying in {delay} s: {exc}",
                      "next_attempt_at": _now() + timedelta(seconds=delay)}
    except Exception as exc:
        log.exception("pull of row %d failed", row_id)
        values = {"state": PullState.FAILED, "message": f"internal error: {type(exc).__name__}: {exc}"}
    with archive.unit_of_work() as (session, _journal):
        session.execute(update(PullRow).where(PullRow.id == row_id).values(**values))


def run(archive: Archive, orthanc: OrthancRest, cohort_id: int, on_progress: Callable[[dict[str, int]], None]) -> dict[str, int]:
    """Work the cohort's queue until every row is done or failed; returns the final counts."""
    with archive.unit_of_work() as (session, _journal):
        get_cohort(session, cohort_id)
        resumed = resume(session, cohort_id)
    if resumed:
        log.warning("pull %d: %d row(s) left running by a stopped pull are queued again", cohort_id, resumed)
    slots = threading.Semaphore(max(1, archive.settings.pull_concurrency))
    threads: list[threading.Thread] = []
    last: dict[str, int] = {}
    while True:
        with archive.sessions() as session:
            counts = progress(session, cohort_id)
        if counts != last:
            on_progress(counts)
            last = counts
        if counts["queued"] == 0 and counts["running"] == 0:
            break
        if slots.acquire(timeout=IDLE_SECONDS):
            row_id = _claim(archive, cohort_id)
            if row_id is None:
                slots.release()
                time.sleep(IDLE_SECONDS)  # nothing due yet: a retry waits for its time
                continue

            def work(claimed: int = row_id) -> None:
                try:
                    _work_row(archive, orthanc, claimed)
                finally:
                    slots.release()

            thread = threading.Thread(target=work, name=f"pull-{row_id}", daemon=True)
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join()
    return last


def run_and_report(archive: Archive, cohort_id: int, report_path: Path,
                   on_progress: Callable[[dict[str, int]], None] = lambda _counts: None) -> dict[str, int]:
    """Work the cohort to its end, then write its report CSV."""
    counts = run(archive, orthanc_for(archive.settings), cohort_id, on_progress)
    with archive.sessions() as session:
        text = report(session, cohort_id)
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(text)
    except OSError as exc:
        raise InvalidValue(f"cannot write the report {report_path}: {exc.strerror}; the pull itself is done") from exc
    return counts


def report_path(settings: Settings, cohort_id: int) -> Path:
    """Where a pull writes its report unless its caller names a file: the report folder, by id.
    Never derived from the cohort's recorded source, which is a label (a portal upload's is a
    name its user chose), not a place to write."""
    return settings.var_dir / "pulls" / f"{cohort_id}.report.csv"


def portal_source(description: str) -> str:
    """A portal pull's source: a label that no one can take for a file."""
    return f"portal: {description}"


def uploaded_source(filename: str | None) -> str:
    """The source of a cohort uploaded in the portal: its base name alone, as a label."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return portal_source(f"upload {name or 'cohort.csv'!r}")


def start_background(settings: Settings, cohort_id: int) -> None:
    """Work a cohort in a process of its own (the portal's pulls outlive the request)."""
    subprocess.Popen(
        [python_executable(), "-m", "nifti_archive.pacs.pull_queue", str(cohort_id)],
        env=child_environment(settings), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    archive = Archive(load_settings())
    cohort_id = int(sys.argv[1])
    try:
        run_and_report(archive, cohort_id, report_path(archive.settings, cohort_id))
    finally:
        archive.close()
    return 0


def report(session: Session, cohort_id: int) -> str:
    rows = session.scalars(select(PullRow).where(PullRow.cohort_id == cohort_id).order_by(PullRow.line))
    return write_report(
        (r.line, r.accession_number, r.patient_id, r.study_date, r.state.value, r.attempts, r.study_instance_uid,
         r.series_count, r.message)
        for r in rows
    )


if __name__ == "__main__":
    sys.exit(main())
