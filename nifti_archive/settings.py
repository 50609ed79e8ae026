"""The one settings object: defaults, then a TOML config file, then the environment.

The config file is ``$NORTHANC_CONFIG`` or ``<var>/northanc.toml`` where ``<var>`` is
``$NORTHANC_VAR`` (default ``./var``). Its keys sit in a ``[northanc]`` table. Unknown keys
are an error rather than silently ignored: a misspelt key would otherwise leave a
deployment on a default nobody chose.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nifti_archive.errors import ConfigError
from nifti_archive.identity.config import IdentityProviders, parse_providers

ENV_PREFIX = "NORTHANC_"


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    archive_root: Path
    log_dir: Path
    log_level: str = "INFO"
    # Days a deleted item stays recoverable before `--purge` without --older-than removes it.
    trash_retention_days: int = 30
    # Orthanc, as the plugin's host and as the import path's target.
    orthanc_url: str = "http://127.0.0.1:8042"
    orthanc_username: str = "northanc"
    # Empty means: read it from <var>/secrets/orthanc_password, which `nora --admin init` writes.
    orthanc_password: str = ""
    orthanc_aet: str = "NORTHANC"
    orthanc_dicom_port: int = 4242
    orthanc_http_port: int = 8042
    # Whether Orthanc's REST API (behind its credentials) answers other hosts than this one: on only
    # where the portal or conversion workers run elsewhere (docker-compose.yml, nora worker on other machines).
    orthanc_remote_access: bool = False
    # Orthanc's own index in PostgreSQL (Debian's orthanc-postgresql), as
    # postgresql://user:password@host:port/database; empty: Orthanc's SQLite index under <var>.
    orthanc_database_url: str = ""
    # Seconds without a new instance before Orthanc calls a series stable.
    stable_age: int = 2
    # Conversions run in parallel up to the cores: each is one dcm2niix process at a time. 0: the
    # plugin only enqueues, and `nora worker` processes (other hosts, a Slurm array) convert.
    conversion_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    # Seconds a conversion worker's claim lasts unless renewed (a third of it, in the background):
    # a killed worker's request is taken up by another once this has passed.
    conversion_lease_seconds: int = 60
    # Runs the local executor starts at once.
    local_job_slots: int = 2
    # The unprivileged account batch jobs run as (inside their sandbox); `setup.sh` creates it.
    jobs_user: str = "northanc-jobs"
    # Whether C-STORE from an AET that is no registered sender (nora --admin sender add) is taken.
    # On for the embedded default so that a scanner works out of the box; off in production.
    accept_unregistered_senders: bool = True
    # Largest uncompressed size of an archive given to `nora --import`, in bytes.
    import_max_bytes: int = 20 * 1024**3
    # Cohort pulls from a PACS: retrieves at once, attempts per study, seconds before the first
    # retry (doubling with each further one).
    pull_concurrency: int = 2
    pull_attempts: int = 3
    pull_retry_seconds: int = 30
    # The portal: where it listens, how many worker processes serve it, the largest upload it
    # takes (bytes), how long a log-in lasts, and whether its cookies are sent over HTTPS only
    # (switch off only to serve plain HTTP to other hosts; browsers treat localhost as secure).
    portal_host: str = "127.0.0.1"
    portal_port: int = 5000
    portal_workers: int = 4
    # Reverse proxies in front of the portal whose X-Forwarded-For it believes (0: none). Behind
    # a TLS front, without it every client would have the proxy's address, and log-in throttling
    # by address would lock all of them out together.
    proxy_hops: int = 0
    upload_max_bytes: int = 4 * 1024**3
    # The largest STOW-RS request (DICOM SEG and SR into Orthanc) the portal takes, in bytes: it is
    # checked in memory before anything is stored.
    stow_max_bytes: int = 256 * 1024**2
    session_hours: int = 12
    secure_cookies: bool = True
    # Argon2id work per password hash: "standard"; "cheap" only for test suites.
    password_cost: str = "standard"
    # The segmentation assistant (a MONAI Label server on localhost, reached through the portal):
    # its port, and the virtual environment it runs in (torch and MONAI Label pin their own
    # pydicom, so it is not the portal's; `setup.sh` links it here, built once per lock file).
    assistant_port: int = 8000
    assistant_venv: Path = Path(__file__).resolve().parent.parent / ".assistant-venv"
    # Project notebooks through JupyterHub: where browsers reach the hub, the ports of its own API
    # and of its proxy's API (localhost), and the portal's address as browsers and the hub reach
    # it for the hub's OAuth log-in (empty: http://portal_host:portal_port).
    notebook_hub_url: str = "http://127.0.0.1:8001/"
    notebook_hub_api_port: int = 8081
    notebook_proxy_api_port: int = 8002
    portal_url: str = ""
    # The log-in page's own user name and password form; off where every account is institutional.
    local_login: bool = True
    # OpenID Connect providers and LDAP directories ([northanc.oidc.<name>], [northanc.ldap.<name>]):
    # structured, so read from the config file only, never from the environment.
    identity: IdentityProviders = IdentityProviders()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def secrets_dir(self) -> Path:
        return self.var_dir / "secrets"

    @property
    def portal_socket(self) -> Path:
        """The portal's Unix socket, beside its TCP port: batch jobs (no network) reach the API there."""
        return self.var_dir / "run" / "portal.sock"

    @property
    def assistant_python(self) -> Path:
        return self.assistant_venv / "bin" / "python"

    @property
    def models_dir(self) -> Path:
        """Segmentation models (trained or registered): ``<models>/<project>/<name>/v<version>/``."""
        return self.var_dir / "models"

    def read_secret(self, name: str) -> str:
        path = self.secrets_dir / name
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret {path}: {exc.strerror} (run `nora --admin init`)") from exc

    def as_environment(self) -> dict[str, str]:
        """The environment that makes ``load_settings`` in another process give these settings."""
        environment = {ENV_PREFIX + "VAR": str(self.var_dir)}
        for item in fields(self):
            if item.name not in {"var_dir", "identity"}:
                value = getattr(self, item.name)
                environment[ENV_PREFIX + item.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return environment

    def orthanc_credentials(self) -> tuple[str, str]:
        return self.orthanc_username, self.orthanc_password or self.read_secret("orthanc_password")


_CONFIGURABLE = {f.name for f in fields(Settings)} - {"var_dir", "identity"}
_PROVIDER_TABLES = ("oidc", "ldap")


_WHOLE_NUMBERS = {
    "trash_retention_days",
    "orthanc_dicom_port",
    "orthanc_http_port",
    "stable_age",
    "conversion_workers",
    "conversion_lease_seconds",
    "local_job_slots",
    "import_max_bytes",
    "portal_port",
    "portal_workers",
    "proxy_hops",
    "upload_max_bytes",
    "stow_max_bytes",
    "session_hours",
    "pull_concurrency",
    "pull_attempts",
    "pull_retry_seconds",
    "assistant_port",
    "notebook_hub_api_port",
    "notebook_proxy_api_port",
}
# A lease renewed every third of itself: under a few seconds, the renewals would be most of a worker's queries.
_LEAST = {"conversion_lease_seconds": 3}
_FLAGS = {"secure_cookies", "accept_unregistered_senders", "local_login", "orthanc_remote_access"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_MAY_BE_EMPTY = {"orthanc_password", "orthanc_database_url", "portal_url"}
_CHOICES = {"password_cost": ("standard", "cheap")}


def _coerce(name: str, raw: object) -> object:
    if name in {"archive_root", "log_dir"}:
        return Path(str(raw)).expanduser().resolve()
    if name == "assistant_venv":
        # Absolute, but still the link setup.sh points at the venv of the current lock.
        return Path(os.path.abspath(Path(str(raw)).expanduser()))
    if name in _FLAGS:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in _TRUE | _FALSE:
            return str(raw).lower() in _TRUE
        raise ConfigError(f"{name} must be true or false, not {raw!r}")
    if name in _WHOLE_NUMBERS:
        try:
            value = int(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from exc
        least = _LEAST.get(name, 0)
        if value < least:
            raise ConfigError(f"{name} must be at least {least}" if least else f"{name} must not be negative")
        return value
    if not isinstance(raw, str) or (not raw and name not in _MAY_BE_EMPTY):
        raise ConfigError(f"{name} must be a non-empty string")
    if name in _CHOICES and raw not in _CHOICES[name]:
        raise ConfigError(f"{name} must be one of {', '.join(_CHOICES[name])}, not {raw!r}")
    return raw


def _read_config_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    unexpected_tables = set(document) - {"northanc"}
    if unexpected_tables:
        raise ConfigError(f"config file {path}: unknown table(s) {sorted(unexpected_tables)}; use [northanc]")
    section = dict(document.get("northanc", {}))
    try:
        section["identity"] = parse_providers(*(section.pop(kind, None) for kind in _PROVIDER_TABLES))
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    unknown = set(section) - _CONFIGURABLE - {"identity"}
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {sorted(unknown)}; known keys are {sorted(_CONFIGURABLE)}"
        )
    return dict(section)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    var_dir = Path(env.get(ENV_PREFIX + "VAR", "var")).expanduser().resolve()
    settings = Settings(
        var_dir=var_dir,
        database_url=f"sqlite:///{var_dir / 'archive.sqlite'}",
        archive_root=var_dir / "archive",
        log_dir=var_dir / "log",
    )
    config_path = Path(env.get(ENV_PREFIX + "CONFIG", str(var_dir / "northanc.toml"))).expanduser()
    overrides: dict[str, object] = {}
    if config_path.is_file():
        overrides.update(_read_config_file(config_path))
    elif ENV_PREFIX + "CONFIG" in env:
        raise ConfigError(f"config file {config_path} does not exist")
    for name in _CONFIGURABLE:
        if ENV_PREFIX + name.upper() in env:
            overrides[name] = env[ENV_PREFIX + name.upper()]
    # Each value was checked and converted to its field's type by _coerce.
    coerced: dict[str, Any] = {name: raw if name == "identity" else _coerce(name, raw) for name, raw in overrides.items()}
    return replace(settings, **coerced)
