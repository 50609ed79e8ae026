"""The local dispatcher's workers: forked from it, they run runs without a process start each,
and nothing of the dispatcher reaches a job; a worker that dies leaves no run running, a
cancel still stops the job, and the dispatcher leaves when idle without stranding a launch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from sqlalchemy import select

from jobs import runs
from nifti_archive.archive import Archive, get_project
from nifti_archive.models import Executor, JobRun, JobState, Subject
from nifti_archive.processes import child_environment, python_executable
from nifti_archive.settings import Settings
from tests.conftest import Nora
from tests.polling import wait_until
from tests.test_jobs_local import ok, project

__all__ = ["project"]  # the fixture, shared with the local executor's tests

# Each job waits while its study holds a "hold" file (the test removes it), then writes its output.
HELD = {"jobs": [{"job": "bash",
                  "script": 'study="$(dirname "$(dirname "$f1")")"\n'
                            'while test -e "$study/hold"; do sleep 0.05; done\n'
                            'echo written > "$o1"',
                  "args": {"f1": {"type": "FILE", "value": "t1/*.nii"}, "o1": {"type": "OUT", "value": "held.txt"}}}]}


def hold(project: Path, held: bool) -> None:
    for study in project.glob("*/S1"):
        if held:
            (study / "hold").write_text("")
        else:
            (study / "hold").unlink(missing_ok=True)


def states(archive: Archive) -> dict[str, JobRun]:
    """The runs by their subject's patient id."""
    with archive.sessions() as session:
        return {patient: run for run, patient in session.execute(select(JobRun, Subject.patient_id).join(Subject))}


def job_processes(study: Path) -> list[int]:
    """Processes of a job working on ``study`` (its path is among their arguments)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and b"nora-bash" in command and any(str(study).encode() in word for word in command):
            found.append(int(entry.name))
    return found


def test_a_run_whose_runner_dies_is_an_error_and_the_dispatcher_goes_on(nora: Nora, archive: Archive, project: Path) -> None:
    hold(project, True)
    ok(nora("-p", "demo", "--launch", json.dumps(HELD)))
    running = wait_until(lambda: [p for p, r in states(archive).items() if r.state is JobState.RUNNING], 60, "no run started")
    victim = running[0]
    wait_until(lambda: job_processes(project / victim / "S1"), 30, "the job did not start")
    os.kill(int(states(archive)[victim].executor_id), signal.SIGKILL)  # as the kernel's OOM killer would

    wait_until(lambda: states(archive)[victim].state is JobState.ERROR, 30, "the run stayed running")
    run = states(archive)[victim]
    assert run.message == "the runner was killed by SIGKILL before the run ended" and run.finished_at
    assert "--- failed: the runner was killed by SIGKILL" in Path(run.log_path).read_text()
    wait_until(lambda: not job_processes(project / victim / "S1"), 30, "the job outlived its runner")
    hold(project, False)
    out = ok(nora("-p", "demo", "--rerun", "--wait", "60", "--throwerror"))
    assert "queued 1 errored run(s) again" in out
    wait_until(lambda: all(r.state is JobState.DONE for r in states(archive).values()), 60, "the other runs did not end")
    assert sorted(p.parent.parent.name for p in project.glob("*/S1/held.txt")) == ["P1", "P2", "P3"]


def test_cancel_stops_running_jobs_and_the_next_launch_runs(nora: Nora, archive: Archive, project: Path) -> None:
    hold(project, True)
    ok(nora("-p", "demo", "--launch", json.dumps(HELD)))
    running = wait_until(lambda: [p for p, r in states(archive).items() if r.state is JobState.RUNNING], 60, "no run started")
    wait_until(lambda: job_processes(project / running[0] / "S1"), 30, "the job did not start")
    assert "cancelled 3 run(s)" in ok(nora("-p", "demo", "--cancel"))
    wait_until(lambda: all(r.finished_at for r in states(archive).values()), 30, "cancelled runs not finished")
    assert {r.state for r in states(archive).values()} == {JobState.CANCELLED}
    wait_until(lambda: not any(job_processes(study) for study in project.glob("*/S1")), 30, "a cancelled job goes on")
    hold(project, False)
    assert not list(project.rglob("held.txt"))
    assert "3 run(s) done or cancelled, 0 in error" in ok(nora("-p", "demo", "--launch", json.dumps(HELD), "--wait", "60"))
    assert len(list(project.rglob("held.txt"))) == 3


# A dispatcher that, as it finds its queue empty, meets a launch: the launch's runs are queued
# and the dispatcher the launch starts leaves at once, since this one still holds the lock.
DISPATCHER_MEETING_A_LAUNCH = """
import json, sys
from jobs import local_executor, runs
from nifti_archive.archive import get_project
from nifti_archive.models import Executor

run_queue, launched = local_executor._run_queue, []

def run_queue_then_a_launch(archive, lock):
    run_queue(archive, lock)
    if not launched:
        with archive.unit_of_work() as (session, _journal):
            launched.extend(runs.launch(session, get_project(session, "demo"), json.loads(sys.argv[1]), Executor.LOCAL, "t")[1])
        local_executor.dispatch(archive)

local_executor._run_queue = run_queue_then_a_launch
sys.exit(local_executor.main())
"""


def writing(name: str) -> dict[str, object]:
    return {"jobs": [{"job": "bash", "script": f'echo {name} > "$o1"', "args": {"o1": {"type": "OUT", "value": f"{name}.txt"}}}]}


def test_the_dispatcher_leaves_when_idle_and_runs_a_launch_that_came_as_it_left(
    archive: Archive, settings: Settings, project: Path
) -> None:
    first, second = (writing(name) for name in ("first", "second"))
    with archive.unit_of_work() as (session, _journal):
        runs.launch(session, get_project(session, "demo"), first, Executor.LOCAL, "t")
    dispatcher = subprocess.run([python_executable(), "-c", DISPATCHER_MEETING_A_LAUNCH, json.dumps(second)],
                                env=child_environment(settings), capture_output=True, text=True, timeout=120, check=False)
    assert dispatcher.returncode == 0, dispatcher.stderr  # it left by itself once idle
    assert {r.state for r in states(archive).values()} == {JobState.DONE}
    with archive.sessions() as session:
        assert len(session.scalars(select(JobRun)).all()) == 6
    assert len(list(project.rglob("first.txt"))) == 3 and len(list(project.rglob("second.txt"))) == 3


def test_a_job_finds_no_descriptor_and_no_secret_of_the_dispatcher(nora: Nora, archive: Archive, settings: Settings,
                                                                   project: Path) -> None:
    # The job's shell lists its own descriptors through a child (find), which adds none to it.
    probe = {"jobs": [{"job": "bash", "script": 'find /proc/$$/fd -mindepth 1 -printf "FD %f %l\\n"\n'
                                                'env | sed "s/^/ENV /"'}]}
    # The dispatcher this launch starts has the secret in its settings and its environment.
    secret = "orthanc-secret-4f9c2e"
    out = ok(nora("-p", "demo", "--launch", json.dumps(probe), "--wait", "60", "--throwerror",
                  extra_env={"NORTHANC_ORTHANC_PASSWORD": secret}))
    assert "3 run(s) done or cancelled, 0 in error" in out
    for run in states(archive).values():
        log = Path(run.log_path).read_text()
        descriptors = dict(line.split()[1:3] for line in log.splitlines() if line.startswith("FD "))
        # Standard input from /dev/null, the log as output: no database connection, lock, pipe or pidfd.
        assert sorted(descriptors) == ["0", "1", "2"], log
        assert descriptors["0"] == "/dev/null" and descriptors["1"] == descriptors["2"] == run.log_path
        names = {line[4:].split("=", 1)[0] for line in log.splitlines() if line.startswith("ENV ")}
        assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "NORA_PROJECT", "NORTHANC_ARCHIVE_ROOT", "NORTHANC_API_SOCKET",
                         "NORTHANC_API_TOKEN", "NORTHANC_JOB_INDEX", "PWD", "SHLVL", "_"}, log
        assert secret not in log and settings.database_url not in log
