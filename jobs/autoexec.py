"""A project's autoexec batch, started on a study when a series of it has been converted.

While a run of the autoexec batch for the study is still queued, later series of the same
study join it (it will see them); once it has started, the next converted series queues a
new run, so the batch always sees the study's newest data at least once.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from jobs import runs
from jobs.local_executor import start_dispatcher
from nifti_archive.archive import Archive, get_project
from nifti_archive.models import BatchLaunch, Executor, JobRun, JobState, Study, Subject

log = logging.getLogger(__name__)
AUTOEXEC_USER = "autoexec"


def on_series_converted(archive: Archive, project_name: str, study_pk: int) -> None:
    with archive.unit_of_work() as (session, _journal):
        project = get_project(session, project_name)
        if not project.autoexec_batch:
            return
        waiting = session.scalar(
            select(JobRun.id)
            .join(BatchLaunch, BatchLaunch.id == JobRun.launch_id)
            .where(JobRun.study_id == study_pk, JobRun.state == JobState.QUEUED, BatchLaunch.launched_by == AUTOEXEC_USER)
        )
        if waiting is not None:
            return
        study = session.get_one(Study, study_pk)
        subject = session.get_one(Subject, study.subject_id)
        document = runs.saved_batch(session, project, project.autoexec_batch)
        runs.launch(session, project, document, Executor.LOCAL, AUTOEXEC_USER, psid=f"{subject.patient_id}#{study.study_id}")
    start_dispatcher(archive.settings)
    log.info("autoexec batch %s queued for %s#%s", project.autoexec_batch, subject.patient_id, study.study_id)
