""""Debug in a notebook": an errored run's jobs as a notebook, with the arguments and the
environment the runner gave them, resolved again as the runner resolves them; its outputs go
to a folder beside the notebook, never into the archive.

Written by the notebook hub's spawner (jobs/notebook_hub.py) into the user's notebook folder
before the server starts; the notebook runs in the same sandbox as the job did.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jobs import runs
from jobs.argument_types import ArgType
from jobs.arguments import resolve
from jobs.listings import analysis_listings, run_listings
from jobs.spec import Level
from nifti_archive.archive import Archive
from nifti_archive.errors import NotFound
from nifti_archive.models import JobRun, JobState, Project, Study


def _cell(kind: str, source: str) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "id": uuid.uuid4().hex[:8], "metadata": {}, "source": source}
    if kind == "code":
        cell |= {"execution_count": None, "outputs": []}
    return cell


def notebook_name(run_id: int) -> str:
    return f"debug-run-{run_id}.ipynb"


def write_debug_notebook(archive: Archive, project_name: str, run_id: int, folder: Path) -> Path:
    """The notebook of errored run ``run_id`` of the project, in ``folder``; NotFound for a run
    of another project or one that did not fail."""
    with archive.sessions() as session:
        run = session.get(JobRun, run_id)
        project = session.scalar(select(Project).where(Project.name == project_name))
        if run is None or project is None or run.project_id != project.id or run.launch_id is None:
            raise NotFound(f"no run {run_id} in project {project_name}")
        if run.state is not JobState.ERROR:
            raise NotFound(f"run {run_id} did not fail ({run.state.value}); only an errored run is debugged")
        batch = runs.batch_of(session, run)
        listings = run_listings(session, archive.layout, project, run, batch.level)
        analyses = analysis_listings(session, archive.layout, project, batch.analyses())
        own_study = session.get(Study, run.study_id) if run.study_id else None
        message = run.message
    own = next((s for s in listings if own_study and s.study_id == own_study.study_id), None)
    staging = folder / f"run-{run_id}-outputs"
    cells = [_cell("markdown", f"# Run {run_id} of batch {batch.name}\n\nIt failed: {message}\n\n"
                               f"Outputs go to `{staging.name}/`, not into the archive.")]
    written: dict[tuple[str, str, str], Path] = {}
    for index, job in enumerate(batch.jobs, start=1):
        placed = replace(job, args=tuple(a for a in job.args if a.type is not ArgType.FILE)) if batch.level is Level.PROJECT else job
        resolved = resolve(placed, own, listings, staging, written, analyses)
        values = {**resolved.environment(), "NORTHANC_JOB_INDEX": str(index)}
        folders = sorted({str(o.staged if o.is_folder else o.staged.parent) for o in resolved.outputs})
        cells.append(_cell("markdown", f"## Job {index}: {job.job}"))
        cells.append(_cell("code", "import os, subprocess, sys\n"
                                   f"os.environ.update({values!r})\n"
                                   f"for folder in {folders!r}:\n    os.makedirs(folder, exist_ok=True)\n"
                                   f"sys.argv = {['job', *resolved.argv()]!r}"))
        if job.job == "python":
            cells.append(_cell("code", job.script))
        elif job.job == "bash":
            command = ["bash", "-c", job.script, f"nora-{job.job}", *resolved.argv()]
            cells.append(_cell("code", f"subprocess.run({command!r}, check=False)"))
        else:
            cells.append(_cell("code", f"subprocess.run({[sys.executable, '-m', 'jobs.library', job.job]!r}, check=False)"))
        written.update({(o.subject, o.study, o.path): o.staged for o in resolved.outputs if not o.is_folder})
    document = {"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    path = folder / notebook_name(run_id)
    path.write_text(json.dumps(document, indent=1))
    return path
