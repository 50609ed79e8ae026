"""The notebook hub: JupyterHub's configuration and its two spawners, run inside JupyterHub.

Users log in to the hub through the portal (``GenericOAuthenticator``, the portal being the
OAuth2 provider: no password reaches the hub). A server is started for one project, locally
(``LocalProcessSpawner``) or as a Slurm job (batchspawner's ``SlurmSpawner``); either way the
single-user server runs in the job sandbox (``jobs.sandbox``) as the jobs account: it sees
its project's tree read-only and its own notebook folder, never var/, with ``nora`` on PATH
and a token for that user and project (``nifti_archive.notebooks.servers``). Like a job it has
no network: relays (``jobs.notebook_bridge``) carry only the proxy's connections to the server
and the server's to the hub's API.

JupyterHub loads this through ``notebooks/jupyterhub_config.py`` (``configure(c)``); the hub
runs as root, like the job runner, because bubblewrap must start as root to drop to the
jobs account.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import AsyncIterator, Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from batchspawner import SlurmSpawner  # type: ignore[import-untyped]  # no type information shipped
from batchspawner.api import BatchSpawnerAPIHandler  # type: ignore[import-untyped]
from batchspawner.batchspawner import JobStatus  # type: ignore[import-untyped]
from jupyterhub.apihandlers import default_handlers  # type: ignore[import-untyped]
from jupyterhub.spawner import LocalProcessSpawner, Spawner  # type: ignore[import-untyped]
from oauthenticator.generic import GenericOAuthenticator  # type: ignore[import-untyped]
from tornado import web
from traitlets import directional_link

from jobs.notebook_bridge import inside_command, outside_command
from jobs.notebook_debug import write_debug_notebook
from jobs.runner import software
from jobs.sandbox import Sandbox, SandboxUnavailable, job_environment, jobs_account, sandbox_argv
from nifti_archive.archive import Archive
from nifti_archive.errors import ArchiveError, Forbidden, InvalidValue, NotFound
from nifti_archive.models import Executor
from nifti_archive.notebooks import servers
from nifti_archive.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = "/usr/bin/timeout"
PROXY = ROOT / "notebooks" / "node_modules" / ".bin" / "configurable-http-proxy"
# In a server's notebook folder: the relays' sockets (hidden from the notebook's file browser).
RELAY_FOLDER = ".relay"
# The portal's service account at the hub: it creates users and starts and stops their servers.
PORTAL_SERVICE = "northanc-portal"
PORTAL_SCOPES = ["admin:users", "admin:servers", "list:users", "read:users", "read:servers"]
# Slurm's reasons for a pending job that it will never start (the request exceeds a limit).
NEVER_RUNS = frozenset({"PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidQOS",
                        "InvalidAccount", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "QOSMaxWallDurationPerJobLimit"})
# Slurm's batch script: fixed but for checked values; the sandbox's command line is quoted.
SLURM_SCRIPT = """#!/bin/bash
#SBATCH --output={{homedir}}/slurm-%j.log
#SBATCH --job-name=northanc-notebook
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --cpus-per-task={{nprocs}}
#SBATCH --mem={{memory}}
#SBATCH --time={{runtime}}
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}
set -euo pipefail
{{cmd}}
"""


@cache
def archive() -> Archive:
    return Archive(load_settings())


def portal_url(settings: Settings) -> str:
    return (settings.portal_url or f"http://{settings.portal_host}:{settings.portal_port}").rstrip("/")


class SandboxedServer:
    """What both spawners share (a mixin before JupyterHub's spawner class): the request
    checked, the token issued, the sandbox built."""

    # Set by JupyterHub's Spawner, which this mixin is combined with.
    user: Any
    user_options: dict[str, Any] | None
    name: str
    notebook_dir: str
    default_url: str
    request: servers.NotebookRequest | None = None
    token_id: int = 0
    job_env: Mapping[str, str] = MappingProxyType({})  # the instance's own, from prepare()

    def prepare(self) -> list[str]:
        """Check the request and the user's role; returns the sandboxed single-user command."""
        settings = archive().settings
        try:
            request = servers.parse_request(self.user_options or {})
            work = servers.workdir(settings, self.user.name, self.name)
        except InvalidValue as error:
            raise web.HTTPError(400, str(error)) from None
        try:
            account = jobs_account(settings.jobs_user)
        except SandboxUnavailable as error:
            raise web.HTTPError(503, str(error)) from None
        try:
            with archive().unit_of_work() as (session, _journal):
                grant = servers.grant_server(session, self.user.name, request, self.name)
        except Forbidden as error:
            raise web.HTTPError(403, str(error)) from None
        self.request, self.token_id = request, grant.token_id
        work.mkdir(parents=True, exist_ok=True)
        os.chown(work, account.uid, account.gid)
        if request.debug_run:
            try:
                notebook = write_debug_notebook(archive(), request.project, request.debug_run, work)
            except ArchiveError as error:
                raise web.HTTPError(404 if isinstance(error, NotFound) else 400, str(error)) from None
            os.chown(notebook, account.uid, account.gid)
            self.default_url = f"/lab/tree/{notebook.name}"
        self.notebook_dir = str(work)
        relays = work / RELAY_FOLDER
        relays.mkdir(mode=0o700, exist_ok=True)
        os.chown(relays, account.uid, account.gid)
        sandbox = Sandbox(account=account, software=software(), project_dir=archive().layout.project_dir(request.project),
                          staging=work, api_socket=settings.portal_socket)
        self.job_env = job_environment({}, request.project, Path(sys.executable).parent, settings.archive_root, grant.token)
        sandboxed = sandbox_argv(sandbox, inside_command(relays, self.singleuser_command()))
        return outside_command(relays, sandboxed, report_port=self.reports_port)

    # Whether the server's port is chosen where it runs (a Slurm node) rather than by the hub.
    reports_port = False

    def singleuser_command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "jupyterhub-singleuser")]

    def get_env(self) -> dict[str, str]:
        # Only the hub's own variables (its API, this server's token at the hub) join the job's
        # environment: nothing of the hub process's environment reaches user code.
        hub = {key: value for key, value in Spawner.get_env(self).items() if key.startswith("JUPYTERHUB_")}
        return {**hub, **self.job_env}

    def make_preexec_fn(self, name: str) -> None:
        """None: the sandbox drops to the jobs account, not to a system account named as the user."""

    def release(self) -> None:
        if self.token_id:
            with archive().unit_of_work() as (session, _journal):
                servers.revoke_server_token(session, self.token_id)
            self.token_id = 0

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()  # type: ignore[misc]  # the spawner's, after this mixin
        if self.token_id:
            state["northanc_token_id"] = self.token_id
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]  # the spawner's, after this mixin
        self.token_id = int(state.get("northanc_token_id", 0))


class LocalNotebookSpawner(SandboxedServer, LocalProcessSpawner):  # type: ignore[misc]
    def singleuser_command(self) -> list[str]:
        # The time asked for is a limit, as Slurm's is for the other spawner: when the server
        # exits the hub notices, stops it and its token is revoked.
        assert self.request is not None
        return [TIMEOUT, f"{self.request.time_minutes}m", *super().singleuser_command()]

    async def start(self) -> Any:
        # Whatever fails once the token is issued gives it back.
        try:
            self.cmd = self.prepare()
            return await super().start()
        except BaseException:
            self.release()
            raise

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self.release()


class SlurmNotebookSpawner(SandboxedServer, SlurmSpawner):  # type: ignore[misc]
    batch_script = SLURM_SCRIPT
    # The batch script runs the command itself: no job step, no sudo (the hub is root and the
    # sandbox drops privileges).
    req_srun = ""
    exec_prefix = ""
    # Slurm's reason for a pending job between its state and its node (which stays last, where
    # batchspawner reads it).
    batch_query_cmd = "squeue -h -j {job_id} -o '%T %r %B'"
    starting = False
    # The host's relay picks the port on the node and tells the hub, as batchspawner's wrapper
    # would from inside, where the node's network is not.
    reports_port = True

    async def query_job_status(self) -> JobStatus:
        status: JobStatus = await super().query_job_status()
        fields = str(self.job_status).split()
        reason = fields[1] if len(fields) == 3 else ""
        if self.starting and status is JobStatus.PENDING and reason in NEVER_RUNS:
            # A job that waits for what the partition will never give: say so now, not at the timeout.
            await self.cancel_batch_job()
            raise web.HTTPError(400, f"Slurm will not run the notebook job as asked: pending for {reason}")
        return status

    async def start(self) -> Any:
        # Whatever fails once the token is issued gives it back.
        try:
            self.sandboxed = self.prepare()
            assert self.request is not None
            request = self.request
            self.req_homedir = self.notebook_dir
            self.req_nprocs, self.req_memory = str(request.cpus), f"{request.memory_mb}M"
            self.req_runtime, self.req_partition = str(request.time_minutes), request.partition or ""
            self.req_keepvars = ",".join(self.get_env())
            # batchspawner adds the user's options to the script's variables: only checked values.
            self.user_options = request.options()
            self.starting = True
            return await super().start()
        except BaseException:
            self.release()
            raise
        finally:
            self.starting = False

    async def submit_batch_script(self) -> str:
        try:
            return str(await super().submit_batch_script())
        except RuntimeError as error:
            # sbatch's own words (a partition's limits, an unknown partition) are the answer.
            raise web.HTTPError(400, f"Slurm refused the notebook job: {error}") from None

    def cmd_formatted_for_batch(self) -> str:
        return shlex.join([*self.sandboxed, *self.get_args()])

    async def run_command(self, cmd: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        # sbatch needs the hub's Slurm configuration, which the job's environment leaves out.
        if env is not None and "SLURM_CONF" in os.environ:
            env = {**env, "SLURM_CONF": os.environ["SLURM_CONF"]}
        return str(await super().run_command(cmd, input=input, env=env))

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self.release()


class NotebookSpawner(Spawner):  # type: ignore[misc]
    """Local or Slurm, as each server's request says (the hub has one spawner class): the
    chosen spawner is made per start, as wrapspawner does, and is given this spawner's traits
    (the hub sets the server's token, port and options here)."""

    child: Spawner | None = None
    executor: Executor | None = None

    def _make_child(self, executor: Executor) -> Spawner:
        kind = SlurmNotebookSpawner if executor is Executor.SLURM else LocalNotebookSpawner
        child = kind(user=self.user, db=self.db, hub=self.hub, authenticator=self.authenticator,
                     oauth_client_id=self.oauth_client_id, cookie_options=self.cookie_options,
                     orm_spawner=self.orm_spawner, server=self._server, config=self.config)
        child.clear_state()
        for trait in set(self.trait_names()) & set(child.trait_names()):
            directional_link((self, trait), (child, trait))
        self.child, self.executor = child, executor
        return child

    async def start(self) -> Any:
        try:
            executor = servers.parse_request(self.user_options or {}).executor
        except InvalidValue as error:
            raise web.HTTPError(400, str(error)) from None
        return await self._make_child(executor).start()

    async def stop(self, now: bool = False) -> None:
        if self.child is not None:
            await self.child.stop(now=now)

    async def poll(self) -> int | None:
        if self.child is None:
            return 0
        status: int | None = await self.child.poll()
        return status

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        if self.child is not None:
            async for event in self.child.progress():
                yield event

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.child is not None and self.executor is not None:
            state["executor"], state["child_state"] = self.executor.value, self.child.get_state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if "executor" in state:
            self._make_child(Executor(state["executor"])).load_state(state.get("child_state", {}))

    def clear_state(self) -> None:
        super().clear_state()
        if self.child is not None:
            self.child.clear_state()
        self.child = self.executor = None


class PortOnlyHandler(BatchSpawnerAPIHandler):  # type: ignore[misc]
    """batchspawner's call from the node, limited to what it is for: the server's port. Its own
    handler sets any attribute the JSON names, and the server's token is in user code's hands."""

    @web.authenticated
    def post(self) -> None:
        body = self.get_json_body() or {}
        port = body.get("port")
        if set(body) != {"port"} or isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise web.HTTPError(400, "only the server's port may be reported")
        token = self.get_auth_token()
        for spawner in self.current_user.spawners.values():
            if spawner.api_token == token:
                spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


default_handlers[:] = [(path, PortOnlyHandler if handler is BatchSpawnerAPIHandler else handler)
                       for path, handler in default_handlers]


def configure(c: Any, settings: Settings | None = None) -> None:
    """Fill JupyterHub's configuration object from Northanc's settings and secrets."""
    settings = settings or archive().settings
    state = settings.var_dir / "notebooks" / "hub"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    hub_url, portal = settings.notebook_hub_url.rstrip("/") + "/", portal_url(settings)
    c.JupyterHub.bind_url = hub_url
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.notebook_hub_api_port}"
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.JupyterHub.cookie_secret = bytes.fromhex(settings.read_secret(servers.HUB_COOKIE_SECRET))
    c.ConfigurableHTTPProxy.command = [str(PROXY)]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.notebook_proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
    c.JupyterHub.allow_named_servers = True
    # A server is always for a project, started from the portal: the hub's home lists them, and
    # logging in never starts a default one (which would name no project).
    c.JupyterHub.default_url = "/hub/home"
    # The portal starts a user's server for them (the user may never have opened the hub).
    c.JupyterHub.services = [{"name": PORTAL_SERVICE, "api_token": settings.read_secret(servers.HUB_API_TOKEN)}]
    c.JupyterHub.load_roles = [{"name": PORTAL_SERVICE, "scopes": PORTAL_SCOPES, "services": [PORTAL_SERVICE]}]
    c.JupyterHub.authenticator_class = GenericOAuthenticator
    c.GenericOAuthenticator.client_id = servers.HUB_CLIENT_ID
    c.GenericOAuthenticator.client_secret = settings.read_secret(servers.HUB_CLIENT_SECRET)
    c.GenericOAuthenticator.oauth_callback_url = hub_url + "hub/oauth_callback"
    c.GenericOAuthenticator.authorize_url = portal + "/oauth/authorize"
    c.GenericOAuthenticator.token_url = portal + "/oauth/token"
    c.GenericOAuthenticator.userdata_url = portal + "/oauth/userinfo"
    c.GenericOAuthenticator.username_claim = "name"
    c.GenericOAuthenticator.basic_auth = True
    # The portal is the only way in: the hub's log-in page would be a button to it.
    c.GenericOAuthenticator.auto_login = True
    c.GenericOAuthenticator.scope = []
    # Every portal user may log in; what they may start is decided per project at spawn time.
    c.GenericOAuthenticator.allow_all = True
    c.JupyterHub.spawner_class = NotebookSpawner
    c.Spawner.default_url = "/lab"
    # The project's files and a Python that imports them take a while on a busy node.
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60
