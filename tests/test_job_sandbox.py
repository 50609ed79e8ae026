"""Batch jobs run in a sandbox as the jobs account: an editor's job cannot read the archive's
secrets, database, Orthanc's storage, other projects, uploads or logs, reach anything over
TCP or write its project, while its own inputs, outputs and ``nora`` (through the portal's
API with a token of its run) work; locally and on Slurm."""

from __future__ import annotations

import json
import pwd
import shlex
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from jobs.runner import TOKEN_MARGIN
from jobs.sandbox import (
    API_SOCKET,
    JobsAccount,
    Sandbox,
    SandboxUnavailable,
    job_environment,
    jobs_account,
    sandbox_argv,
)
from jobs.spec import SpecError, parse_batch
from nifti_archive import accounts
from nifti_archive.archive import get_project
from nifti_archive.models import ApiToken, Role
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from testbed.portal import Portal, start_portal
from testbed.slurm import SlurmCluster, start_slurm
from tests.conftest import NORA
from tests.polling import wait_until
from tests.portal_site import Site, SiteTemplate, copy_site
from tests.test_portal_api import token_for

JOBS_USER = "northanc-jobs"
ACCOUNT = JobsAccount(JOBS_USER, 990, 991)


@pytest.fixture(scope="session", autouse=True)
def jobs_user() -> None:
    """The account ./setup.sh creates, created here where the machine lacks it."""
    try:
        pwd.getpwnam(JOBS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", JOBS_USER],
                       check=True)


# --- the sandbox's command line and environment, without servers ---------------------------------

def sandbox(**changes: Any) -> Sandbox:
    values: dict[str, Any] = {
        "account": ACCOUNT,
        "software": (Path("/opt/northanc/.venv"), Path("/opt/northanc/nifti_archive"), Path("/opt/northanc/jobs")),
        "project_dir": Path("/srv/var/archive/alpha"),
        "staging": Path("/srv/var/jobs/run-7/staging"),
        "api_socket": Path("/srv/var/run/portal.sock"),
        **changes,
    }
    return Sandbox(**values)


def binds(argv: list[str], kind: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == kind]


def test_the_sandbox_shows_the_project_read_only_the_staging_writable_and_nothing_of_var() -> None:
    argv = sandbox_argv(sandbox(), ["bash", "-c", "true"])
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == ["bash", "-c", "true"]
    assert binds(argv, "--ro-bind") == ["/usr", "/opt/northanc/.venv", "/opt/northanc/nifti_archive", "/opt/northanc/jobs",
                                        "/srv/var/archive/alpha"]
    assert binds(argv, "--bind") == ["/srv/var/jobs/run-7/staging"]
    assert not any(path.startswith("/srv") for path in binds(argv, "--ro-bind-try")[:-1])  # /etc files, then the socket
    assert argv[argv.index("/srv/var/run/portal.sock") + 1] == str(API_SOCKET)
    # Folders leading to the binds are made traversable, never the checkout or var/ themselves.
    assert binds(argv, "--dir") == ["/etc", "/opt", "/run", "/srv", "/opt/northanc", "/run/northanc", "/srv/var",
                                    "/srv/var/archive", "/srv/var/jobs", "/srv/var/jobs/run-7"]
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent"):
        assert flag in argv
    assert "--unshare-user" not in argv and "--uid" not in argv  # a mapped uid would be root outside
    drop = argv[argv.index("/usr/bin/setpriv"):]
    assert drop[:8] == ["/usr/bin/setpriv", "--reuid=990", "--regid=991", "--clear-groups", "--no-new-privs",
                        "--bounding-set=-all", "--inh-caps=-all", "--"]


def test_network_only_when_asked_and_allowed() -> None:
    assert "--unshare-net" not in sandbox_argv(sandbox(network=True), ["true"])


def test_a_job_environment_holds_no_secret_and_no_database() -> None:
    environment = job_environment({"f1": "/srv/var/archive/alpha/P1/S1/t1.nii"}, "alpha", Path("/opt/northanc/.venv/bin"),
                                  Path("/srv/var/archive"), "nrt_secret")
    assert environment["f1"] == "/srv/var/archive/alpha/P1/S1/t1.nii" and environment["NORA_PROJECT"] == "alpha"
    assert environment["PATH"].startswith("/opt/northanc/.venv/bin:")
    assert environment["NORTHANC_API_SOCKET"] == str(API_SOCKET) and environment["NORTHANC_API_TOKEN"] == "nrt_secret"
    assert not {"NORTHANC_DATABASE_URL", "NORTHANC_VAR", "NORTHANC_ORTHANC_PASSWORD"} & set(environment)


def test_a_missing_jobs_account_is_a_clear_error_and_the_real_one_is_unprivileged() -> None:
    with pytest.raises(SandboxUnavailable, match="the jobs account 'no-such-account' does not exist"):
        jobs_account("no-such-account")
    with pytest.raises(SandboxUnavailable, match="is root"):
        jobs_account("root")
    assert jobs_account(JOBS_USER).uid == pwd.getpwnam(JOBS_USER).pw_uid != 0


def test_the_network_flag_of_a_batch_is_a_boolean() -> None:
    job = {"job": "bash", "script": "true"}
    assert parse_batch({"jobs": [job], "resources": {"network": True}}).resources.network
    assert not parse_batch({"jobs": [job]}).resources.network
    with pytest.raises(SpecError, match="resources.network: must be bool"):
        parse_batch({"jobs": [job], "resources": {"network": "yes"}})


# --- an editor's job against the real stack -------------------------------------------------------

@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_slurm()
    yield cluster
    cluster.stop()


@pytest.fixture
def site(tmp_path: Path, portal_site: SiteTemplate) -> Iterator[Site]:
    built = copy_site(portal_site, tmp_path / "var", orthanc_url="http://127.0.0.1:9", orthanc_password="unused")
    archive = built.archive
    var = archive.settings.var_dir
    # What an installation keeps in var/ besides the secrets, the database and the logs.
    for path, content in ((var / "orthanc" / "storage" / "00" / "instance.dcm", "DICM"), (var / "uploads" / "upload.zip", "PK")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    yield built
    archive.close()


@pytest.fixture
def orthanc_port() -> Iterator[int]:
    """A listening TCP port standing in for Orthanc's REST port: the job must not reach it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def api(portal: Portal, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        portal.url + "/api/v1" + path, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode(),
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def admin_nora(settings: Settings, *args: str) -> str:
    result = subprocess.run([str(NORA), "--admin", *args], env=child_environment(settings),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_run(portal: Portal, token: str, run_id: int) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        runs = api(portal, "GET", "/projects/alpha/runs", token)[1]["runs"]
        run = next(r for r in runs if r["id"] == run_id)
        return run if run["state"] in ("done", "error") else None

    return wait_until(finished, 180, f"run {run_id} to finish", interval=0.3)


def launch(portal: Portal, token: str, batch: dict[str, Any], study: int, executor: str) -> tuple[dict[str, Any], str]:
    status, answer = api(portal, "POST", "/projects/alpha/launches", token, {"batch": batch, "studies": [study], "executor": executor})
    assert status == 201 and answer["executor"] == executor, answer
    [run_id] = answer["runs"]
    run = wait_for_run(portal, token, run_id)
    assert run["executor"] == executor, run
    return run, api(portal, "GET", f"/projects/alpha/runs/{run_id}/log", token)[1]["log"]


def attack_script(settings: Settings, portal: Portal, orthanc_port: int) -> str:
    var = settings.var_dir
    reads = {
        "secrets": var / "secrets" / "orthanc_password",
        "database": var / "archive.sqlite",
        "orthanc-storage": var / "orthanc" / "storage" / "00" / "instance.dcm",
        "other-project": settings.archive_root / "beta" / "Q01" / "S1" / "001_ax" / "ax_asc_35sl_6.nii",
        "uploads": var / "uploads" / "upload.zip",
        "logs": var / "log" / "portal-access.log",
    }
    lines = ['probe() { if cat "$2" > /dev/null 2>&1; then echo "LEAK $1"; else echo "DENIED $1"; fi; }']
    lines += [f"probe {name} {shlex.quote(str(path))}" for name, path in reads.items()]
    connect = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 3)"
    for name, port in (("orthanc-rest", orthanc_port), ("portal-tcp", portal.settings.portal_port)):
        lines.append(f"if python -c {shlex.quote(connect)} {port} 2>/dev/null; then echo 'LEAK {name}'; else echo 'DENIED {name}'; fi")
    # The run's own token over the API socket, asking for more runs: a job must not start jobs.
    relaunch = (
        "import http.client, json, os, socket\n"
        "class Unix(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock = socket.socket(socket.AF_UNIX)\n"
        "        self.sock.connect(os.environ['NORTHANC_API_SOCKET'])\n"
        "for method, path in (('POST', 'launches'), ('POST', 'runs/rerun'), ('PUT', 'batches/worm')):\n"
        "    connection = Unix('localhost')\n"
        "    connection.request(method, '/api/v1/projects/alpha/' + path, body=json.dumps({}), headers={\n"
        "        'Authorization': 'Bearer ' + os.environ['NORTHANC_API_TOKEN'], 'Content-Type': 'application/json'})\n"
        "    print('RELAUNCH', path, connection.getresponse().status)\n"
    )
    lines.append(f"python -c {shlex.quote(relaunch)}")
    planted = settings.archive_root / "alpha" / "P01" / "S1" / "planted.txt"
    lines += [
        f"if touch {shlex.quote(str(planted))} 2>/dev/null; then echo 'LEAK write-project'; else echo 'DENIED write-project'; fi",
        'echo "UID $(id -u)"',
        'echo "TOKEN $NORTHANC_API_TOKEN"',
        'cp "$f1" "$o1"',
        "nora -s '001_ax/*' > \"$o2\"",
        "nora -s '002_sag/*' --json > \"$o3\"",
        "nora --addtag seen -s '002_sag/*'",
        "nora -p beta -s '*' || echo 'REFUSED other-project-api'",
        "nora -a \"$f1\" || echo 'REFUSED register'",
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_an_editors_job_sees_only_its_project_and_reaches_the_archive_through_its_token(
    executor: str, site: Site, orthanc_port: int, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if executor == "slurm":
        # The portal's launch calls sbatch, which finds the test cluster through SLURM_CONF.
        monkeypatch.setenv("SLURM_CONF", str(request.getfixturevalue("slurm").conf))
    settings = site.archive.settings
    with site.archive.unit_of_work() as (session, _journal):
        # The editor may read beta; the run's token still may not: it is scoped to alpha.
        accounts.grant_role(session, accounts.get_user(session, "editor"), get_project(session, "beta"), Role.EDITOR)
    portal = start_portal(settings)
    try:
        token = token_for(site.archive, "editor")
        batch = {
            "name": "probe",
            "jobs": [{"job": "bash", "script": attack_script(portal.settings, portal, orthanc_port), "args": {
                "f1": {"type": "FILE", "value": "001_ax/*.nii"},
                "o1": {"type": "OUT", "value": "copy/ax.nii TAG(copied)"},
                "o2": {"type": "OUT", "value": "copy/listing.txt"},
                "o3": {"type": "OUT", "value": "copy/listing.json"},
            }}],
            "resources": {"time_minutes": 5, "memory_mb": 500},
        }
        run, log = launch(portal, token, batch, site.studies["P01"], executor)
        assert run["state"] == "done", log
        denied = {line.split()[1] for line in log.splitlines() if line.startswith("DENIED ")}
        assert denied == {"secrets", "database", "orthanc-storage", "other-project", "uploads", "logs", "orthanc-rest",
                          "portal-tcp", "write-project"}, log
        assert "LEAK" not in log
        assert f"UID {pwd.getpwnam(JOBS_USER).pw_uid}" in log
        assert "REFUSED other-project-api" in log and "REFUSED register" in log
        assert "-a is not available inside a job" in log
        relaunched = [line for line in log.splitlines() if line.startswith("RELAUNCH ")]
        assert relaunched == ["RELAUNCH launches 403", "RELAUNCH runs/rerun 403", "RELAUNCH batches/worm 403"], log
        assert not (settings.archive_root / "alpha" / "P01" / "S1" / "planted.txt").exists()

        study = api(portal, "GET", f"/projects/alpha/studies/{site.studies['P01']}", token)[1]
        files = {f["path"]: f for f in study["files"]}
        assert files["copy/ax.nii"]["tags"] == ["copied"] and files["copy/ax.nii"]["size"] == files["001_ax/ax_asc_35sl_6.nii"]["size"]
        assert "seen" in files["002_sag/sag_asc_36sl_19.nii"]["tags"]
        copies = settings.archive_root / "alpha" / "P01" / "S1" / "copy"
        listing = (copies / "listing.txt").read_text().splitlines()
        assert listing == [str(settings.archive_root / "alpha" / p / "S1" / "001_ax" / "ax_asc_35sl_6.nii") for p in ("P01", "P02", "P03")]
        grouped = json.loads((copies / "listing.json").read_text())
        assert [(g["psid"], g["files"]) for g in grouped][:1] == [
            ("P01#S1", [str(settings.archive_root / "alpha" / "P01" / "S1" / "002_sag" / "sag_asc_36sl_19.nii")])]

        [run_token] = [line.split()[1] for line in log.splitlines() if line.startswith("TOKEN ")]
        status, answer = api(portal, "GET", "/projects/alpha/studies", run_token)
        assert status == 401, answer  # revoked when the run ended
        with site.archive.sessions() as session:
            issued = session.scalars(select(ApiToken).where(ApiToken.job_run_id == run["id"])).one()
            assert issued.project_id == get_project(session, "alpha").id and issued.revoked_at is not None
            # It would have expired with the run's time limit (5 minutes) and the runner's margin.
            lifetime = issued.expires_at - issued.created_at
            assert timedelta(minutes=5) < lifetime < timedelta(minutes=5) + TOKEN_MARGIN + timedelta(seconds=5)
    finally:
        portal.stop()


def test_generic_jobs_kept_to_admins_predefined_jobs_run_and_the_network_needs_the_projects_consent(site: Site) -> None:
    settings = site.archive.settings
    portal = start_portal(settings)
    try:
        editor, admin = token_for(site.archive, "editor"), token_for(site.archive, "admin")
        assert "generic_jobs_role\tadmin" in admin_nora(settings, "project", "set", "alpha", "--generic-jobs", "admin")
        connect = f"python -c \"import socket; socket.create_connection(('127.0.0.1', {portal.settings.portal_port}), 3)\""
        online = {"jobs": [{"job": "bash", "script": f"if {connect}; then echo ONLINE; else echo OFFLINE; fi"}],
                  "resources": {"network": True}}
        status, answer = api(portal, "POST", "/projects/alpha/launches", editor,
                             {"batch": online, "studies": [site.studies["P02"]], "executor": "local"})
        assert status == 403 and "generic_jobs_role" in answer["error"] and "admin role" in answer["error"]
        assert api(portal, "GET", "/projects/alpha/runs", editor)[1]["total"] == 1  # only the site's old run

        stats = {"jobs": [{"job": "stats", "args": {"f1": {"type": "FILE", "value": "001_ax/*.nii"},
                                                    "o1": {"type": "OUT", "value": "stats/ax.json TAG(stats)"}}}]}
        run, log = launch(portal, editor, stats, site.studies["P02"], "local")
        assert run["state"] == "done", log
        result = json.loads((settings.archive_root / "alpha" / "P02" / "S1" / "stats" / "ax.json").read_text())
        assert result["voxels"] > 0

        # Asked for, but the project does not give it: refused at launch rather than run offline.
        status, answer = api(portal, "POST", "/projects/alpha/launches", admin,
                             {"batch": online, "studies": [site.studies["P02"]], "executor": "local"})
        assert status == 403 and "--job-network yes" in answer["error"], answer
        assert api(portal, "GET", "/projects/alpha/runs", editor)[1]["total"] == 2  # the old run and the stats run
        assert "job_network\tyes" in admin_nora(settings, "project", "set", "alpha", "--job-network", "yes")
        run, log = launch(portal, admin, online, site.studies["P02"], "local")
        assert run["state"] == "done" and "ONLINE" in log, log
    finally:
        portal.stop()


def test_a_job_whose_outputs_are_links_publishes_nothing(site: Site) -> None:
    settings = site.archive.settings
    portal = start_portal(settings)
    try:
        editor = token_for(site.archive, "editor")
        secret = settings.var_dir / "secrets" / "orthanc_password"
        batch = {"jobs": [{"job": "bash", "script": f"ln -s {shlex.quote(str(secret))} \"$o1\"",
                           "args": {"o1": {"type": "OUT", "value": "leak.txt"}}}]}
        run, log = launch(portal, editor, batch, site.studies["P03"], "local")
        assert run["state"] == "error" and "leak.txt" in run["message"] and "not a plain file" in run["message"], log
        assert not (settings.archive_root / "alpha" / "P03" / "S1" / "leak.txt").exists()
        assert secret.stat().st_uid == 0 and secret.read_text()  # the runner followed no link: still root's
    finally:
        portal.stop()


def test_a_rerun_of_errored_generic_jobs_is_held_to_the_rule_a_launch_is(site: Site) -> None:
    settings = site.archive.settings
    portal = start_portal(settings)
    try:
        editor, admin = token_for(site.archive, "editor"), token_for(site.archive, "admin")
        run, log = launch(portal, editor, {"jobs": [{"job": "bash", "script": "exit 3"}]}, site.studies["P02"], "local")
        assert run["state"] == "error", log
        assert "generic_jobs_role\tadmin" in admin_nora(settings, "project", "set", "alpha", "--generic-jobs", "admin")
        status, answer = api(portal, "POST", "/projects/alpha/runs/rerun", editor, {})
        assert status == 403 and "generic_jobs_role" in answer["error"], answer
        runs = api(portal, "GET", "/projects/alpha/runs", editor)[1]["runs"]
        assert [r["state"] for r in runs if r["id"] == run["id"]] == ["error"]
        status, answer = api(portal, "POST", "/projects/alpha/runs/rerun", admin, {})
        assert status == 200 and answer["queued"] == [run["id"]], answer
    finally:
        portal.stop()
