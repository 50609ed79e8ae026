"""docker-compose.yml: the native stack's services in containers of one image.

Generated, never edited by hand (``nora --admin compose > docker-compose.yml``; a site's own
changes go into docker-compose.override.yml, which Compose merges). Every service of ours runs
the entry point that ``setup.sh run`` starts (``python -m <module> start``), in the foreground,
with the settings of a deployment under /var/lib/northanc given as the environment that
``load_settings`` reads. So the commands, Orthanc's configuration and the ports inside each
container are the native ones by construction; what differs in production is ``PRODUCTION``
and nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from nifti_archive.installation import SECRETS
from nifti_archive.settings import ENV_PREFIX, Settings

# The image's checkout (the Dockerfile's WORKDIR) and the deployment's var, as in orthanc.json.
CHECKOUT = Path("/srv/northanc")
VAR = Path("/var/lib/northanc")
PYTHON = str(CHECKOUT / ".venv" / "bin" / "python")
NORA = str(CHECKOUT / ".venv" / "bin" / "nora")
IMAGE = "northanc:latest"
# PostgreSQL 15 on Debian 12, as Debian 12's own (testbed/postgres.py): a dump of one restores into the other.
POSTGRES_IMAGE = "postgres:15-bookworm"
DATABASE = "northanc"
# Orthanc's index in a database of its own: its tables never meet the archive's, and each is
# dumped and restored on its own.
ORTHANC_DATABASE = "orthanc"
DATABASE_PASSWORD = "database_password"
TLS_CERTIFICATE = "tls_certificate"
TLS_KEY = "tls_key"
HTTPS_PORT = 443
HTTP_PORT = 80
# As long as the portal's gunicorn lets a request take (portal/serve.py: uploads and downloads).
REQUEST_SECONDS = 600
# The native stack's run folder holds pid files and the portal's socket: per container, so that a
# restarted container never takes a pid of its previous life for a running service.
RUN_DIR = VAR / "run"
NGINX_CONF = "/etc/northanc/nginx.conf"


class Service(enum.Enum):
    POSTGRES = "postgres"
    INIT = "init"
    ORTHANC = "orthanc"
    WORKER = "worker"
    PORTAL = "portal"
    PROXY = "proxy"
    ASSISTANT = "assistant"
    DROPFOLDERS = "dropfolders"


# The servers `setup.sh run` starts, by the module each runs as `python -m <module> start`.
NATIVE_SERVICES = {
    Service.ORTHANC: "orthanc_plugin.serve",
    Service.PORTAL: "portal.serve",
    Service.ASSISTANT: "segmentation.assistant_service",
    Service.DROPFOLDERS: "nifti_archive.dropfolders.service",
}

# Servers `setup.sh run` starts that the Compose file does not (yet) have, and why.
NATIVE_ONLY = {
    # Browsers reach the hub at its own address, which its OAuth redirect at the portal names:
    # a deployment's public host name, which this file cannot know.
    "jobs.notebook_service": "the notebook hub needs the deployment's public address",
}

# The native defaults of a deployment under VAR.
NATIVE = Settings(var_dir=VAR, database_url=f"sqlite:///{VAR / 'archive.sqlite'}", archive_root=VAR / "archive",
                  log_dir=VAR / "log")
# libpq (psycopg, Orthanc's PostgreSQL plugin) reads the database password from here: it is in no URL.
PGPASSFILE = NATIVE.secrets_dir / "pgpass"

# The production differences from the native defaults, all of them.
PRODUCTION: dict[str, Any] = {
    # The archive's index in the postgres service; the password comes from PGPASSFILE.
    "database_url": f"postgresql+psycopg://{DATABASE}@{Service.POSTGRES.value}:5432/{DATABASE}",
    # Orthanc's index there too (orthanc-postgresql).
    "orthanc_database_url": f"postgresql://{DATABASE}@{Service.POSTGRES.value}:5432/{ORTHANC_DATABASE}",
    # The portal and the workers reach Orthanc's REST API by its name on the Compose network
    # (the port is published nowhere).
    "orthanc_url": f"http://{Service.ORTHANC.value}:{NATIVE.orthanc_http_port}",
    "orthanc_remote_access": True,
    # The proxy reaches the portal over the Compose network; the port is published nowhere.
    "portal_host": "0.0.0.0",
    # The proxy is the portal's one client: the address log-in throttling keys on is the one it forwards.
    "proxy_hops": 1,
    # Only senders a site admin registered may C-STORE (nora --admin sender add).
    "accept_unregistered_senders": False,
    # Orthanc only enqueues; the worker service converts (docker compose up --scale worker=N).
    "conversion_workers": 0,
    "assistant_venv": CHECKOUT / ".assistant-venv",
}



def production_settings() -> Settings:
    return replace(NATIVE, **PRODUCTION)


def environment(settings: Settings) -> dict[str, str]:
    """What makes ``load_settings`` in a container give ``settings``: the var folder and the production differences."""
    everything = settings.as_environment()
    return {
        ENV_PREFIX + "VAR": str(settings.var_dir),
        **{ENV_PREFIX + name.upper(): everything[ENV_PREFIX + name.upper()] for name in PRODUCTION},
        "PGPASSFILE": str(PGPASSFILE),
    }


def native_command(service: Service, action: str) -> list[str]:
    return [PYTHON, "-m", NATIVE_SERVICES[service], action]


def secret_names() -> list[str]:
    """The Compose secrets: the installation's own (installation.SECRETS), the database's password and TLS."""
    return [*SECRETS, DATABASE_PASSWORD, TLS_CERTIFICATE, TLS_KEY]


def init_command() -> list[str]:
    """Installs the Compose secrets where the native stack reads them (<var>/secrets, which
    ``nora --admin init`` makes private), then ``nora --admin init`` as ``setup.sh run`` does."""
    secrets_dir = NATIVE.secrets_dir
    installed = " ".join(f"/run/secrets/{name}" for name in SECRETS)
    script = "; ".join([
        "set -e",
        "umask 077",
        f"mkdir -p {secrets_dir}",
        f"install -m 0600 -t {secrets_dir} {installed}",
        f"sed 's/^/*:*:*:*:/' /run/secrets/{DATABASE_PASSWORD} > {PGPASSFILE}",
        f"exec {NORA} --admin init",
    ])
    return ["sh", "-c", script]


@dataclass(frozen=True)
class Front:
    """Where the TLS proxy listens, what it proxies to, and its files."""

    upstream: str
    https_port: int
    http_port: int
    certificate: str
    key: str
    pid_file: str


def nginx_conf(settings: Settings, front: Front) -> str:
    """The TLS front of the portal: HTTP/1.1 to gunicorn, which trusts its X-Forwarded-Proto."""
    return f"""\
daemon off;
user www-data;
worker_processes auto;
pid {front.pid_file};
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    # The portal logs every request itself, with API tokens in query strings redacted
    # (portal/access_log.py); nginx would log them as they came.
    access_log off;
    server_tokens off;
    # Uploads go to the portal as they arrive, downloads (zip streams) to the browser: the
    # portal checks sizes itself (upload_max_bytes, stow_max_bytes).
    client_max_body_size {settings.upload_max_bytes};
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout {REQUEST_SECONDS}s;
    proxy_send_timeout {REQUEST_SECONDS}s;
    server {{
        listen {front.http_port};
        return 301 https://$host$request_uri;
    }}
    server {{
        listen {front.https_port} ssl http2;
        ssl_certificate {front.certificate};
        ssl_certificate_key {front.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # Browsers that once came over TLS never try plain HTTP again.
        add_header Strict-Transport-Security "max-age=31536000" always;
        location / {{
            proxy_pass http://{front.upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def production_front(settings: Settings) -> Front:
    return Front(f"{Service.PORTAL.value}:{settings.portal_port}", HTTPS_PORT, HTTP_PORT,
                 f"/run/secrets/{TLS_CERTIFICATE}", f"/run/secrets/{TLS_KEY}", "/run/nginx.pid")


def _ours(settings: Settings, command: list[str], healthcheck: list[str] | None, **more: Any) -> dict[str, Any]:
    """A service of our image with the deployment's settings and the var volume, started after init."""
    service: dict[str, Any] = {
        "image": IMAGE,
        # An init that reaps what the services' children leave (the job dispatcher's, say).
        "init": True,
        "command": command,
        "environment": environment(settings),
        "volumes": [f"var:{VAR}"],
        "restart": "unless-stopped",
        "depends_on": {Service.INIT.value: {"condition": "service_completed_successfully"}},
    }
    if healthcheck is not None:
        service["healthcheck"] = {"test": ["CMD", *healthcheck], "interval": "30s", "timeout": "10s", "retries": 3,
                                  "start_period": "3m"}
    service["depends_on"].update(more.pop("depends_on", {}))
    return {**service, **more}


def _native(settings: Settings, which: Service, **more: Any) -> dict[str, Any]:
    """A server of `setup.sh run`, in the foreground; its health is its own ``status``."""
    # `docker stop` reaches the server's children (Orthanc, gunicorn) through its process group,
    # as `python -m ... stop` does natively.
    more["environment"] = {**more.pop("environment", environment(settings)), "TINI_KILL_PROCESS_GROUP": "1"}
    return _ours(settings, native_command(which, "foreground"), native_command(which, "status"), **more)


# Batch jobs and the segmentation assistant run in bubblewrap sandboxes (jobs/sandbox.py), which
# need namespaces and mounts that Docker's default seccomp and AppArmor profiles refuse.
SANDBOXING = {"cap_add": ["SYS_ADMIN"], "security_opt": ["seccomp=unconfined", "apparmor=unconfined"]}


def compose(settings: Settings) -> dict[str, Any]:
    """The Compose document for ``settings`` (``production_settings()`` for docker-compose.yml)."""
    postgres_healthy = {Service.POSTGRES.value: {"condition": "service_healthy"}}
    orthanc_started = {Service.ORTHANC.value: {"condition": "service_started"}}
    services: dict[Service, dict[str, Any]] = {
        Service.POSTGRES: {
            "image": POSTGRES_IMAGE,
            "environment": {"POSTGRES_USER": DATABASE, "POSTGRES_DB": DATABASE,
                            "POSTGRES_PASSWORD_FILE": f"/run/secrets/{DATABASE_PASSWORD}"},
            "secrets": [DATABASE_PASSWORD],
            "volumes": ["postgres:/var/lib/postgresql/data"],
            # Run by the image once, when it creates the cluster.
            "configs": [{"source": "postgres-init", "target": "/docker-entrypoint-initdb.d/orthanc.sql"}],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", DATABASE, "-d", DATABASE], "interval": "10s",
                            "timeout": "5s", "retries": 5},
            "restart": "unless-stopped",
        },
        Service.INIT: {
            **_ours(settings, init_command(), None, secrets=[*SECRETS, DATABASE_PASSWORD]),
            "restart": "no",
            "depends_on": postgres_healthy,
        },
        # Orthanc's plugin calls Orthanc on the loopback, as natively; the others by its name.
        Service.ORTHANC: _native(
            replace(settings, orthanc_url=NATIVE.orthanc_url), Service.ORTHANC, depends_on=postgres_healthy,
            volumes=[f"var:{VAR}", f"orthanc-storage:{VAR / 'orthanc' / 'storage'}"],
            ports=[f"{settings.orthanc_dicom_port}:{settings.orthanc_dicom_port}"],
            # The plugin empties <var>/scratch when it starts (conversion.scratch_cleanup): its own,
            # not the one the workers are converting in. It converts nothing itself here.
            tmpfs=[str(VAR / "scratch")],
            stop_grace_period="60s",
        ),
        Service.WORKER: _ours(settings, [NORA, "worker"], None, depends_on={**postgres_healthy, **orthanc_started},
                              # A stopped worker finishes the conversion under way first.
                              stop_grace_period="2m"),
        Service.PORTAL: _native(
            settings, Service.PORTAL, depends_on={**postgres_healthy, **orthanc_started}, tmpfs=[str(RUN_DIR)],
            # The proxy's address is not known in advance; the portal's port is reachable only
            # on the Compose network, so gunicorn may trust X-Forwarded-Proto from anyone there.
            environment={**environment(settings), "FORWARDED_ALLOW_IPS": "*"},
            **SANDBOXING,
        ),
        Service.PROXY: {
            "image": IMAGE,
            "init": True,
            "command": ["nginx", "-c", NGINX_CONF],
            "ports": [f"{HTTPS_PORT}:{HTTPS_PORT}", f"{HTTP_PORT}:{HTTP_PORT}"],
            "secrets": [TLS_CERTIFICATE, TLS_KEY],
            "configs": [{"source": "nginx", "target": NGINX_CONF}],
            "depends_on": {Service.PORTAL.value: {"condition": "service_started"}},
            "restart": "unless-stopped",
        },
        # It answers the portal on the loopback only (segmentation/assistant/serve.py), so it shares
        # the portal's network; Compose restarts it after the portal.
        Service.ASSISTANT: _native(
            settings, Service.ASSISTANT, network_mode=f"service:{Service.PORTAL.value}", tmpfs=[str(RUN_DIR)],
            depends_on={Service.PORTAL.value: {"condition": "service_started", "restart": True}},
            **SANDBOXING,
        ),
        # The instruments' folders are bind-mounted into it by docker-compose.override.yml.
        Service.DROPFOLDERS: _native(settings, Service.DROPFOLDERS, depends_on=postgres_healthy, tmpfs=[str(RUN_DIR)]),
    }
    return {
        "name": "northanc",
        "services": {which.value: definition for which, definition in services.items()},
        # The NIfTI archive stays in var (<var>/archive), as natively: a conversion publishes by
        # renaming out of <var>/scratch, which works within one filesystem only.
        "volumes": {"postgres": {}, "var": {}, "orthanc-storage": {}},
        "secrets": {name: {"file": f"./secrets/{name}"} for name in secret_names()},
        # Compose interpolates $NAME in the whole file: nginx's own variables are written $$name.
        "configs": {
            "nginx": {"content": nginx_conf(settings, production_front(settings)).replace("$", "$$")},
            "postgres-init": {"content": f"CREATE DATABASE {ORTHANC_DATABASE} OWNER {DATABASE};\n"},
        },
    }


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no type information
    """Multi-line strings (the proxy's configuration) as literal blocks, readable as written;
    a value used twice written twice, not as an anchor and its alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, text: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _string)

HEADER = """\
# Generated by `nora --admin compose > docker-compose.yml` from the settings and the native
# services (nifti_archive/compose.py); tests/test_compose.py keeps it so. Do not edit: put a
# site's changes (bind mounts, GPUs, ports) into docker-compose.override.yml.
"""


def render(settings: Settings) -> str:
    return HEADER + str(yaml.dump(compose(settings), Dumper=_Dumper, sort_keys=False, width=120))
