"""The one settings object: defaults, then a TOML config file, then the environment.

The config file is ``$NORTHANC_CONFIG`` or ``<var>/northanc.toml`` where ``<var>`` is
``$NORTHANC_VAR`` (default ``./var``). Its keys sit in a ``[northanc]`` table. Unknown keys
are an error rather than silently ignored: a misspelt key would otherwise leave a
deployment on a default nobody chose.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

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

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_CONFIGURABLE = {f.name for f in fields(Settings)} - {"var_dir"}


def _coerce(name: str, raw: object) -> object:
    if name in {"archive_root", "log_dir"}:
        return Path(str(raw)).expanduser().resolve()
    if name == "trash_retention_days":
        try:
            value = int(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{name} must be a whole number of days, not {raw!r}") from exc
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
        return value
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{name} must be a non-empty string")
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
    section = document.get("northanc", {})
    unknown = set(section) - _CONFIGURABLE
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
    return replace(settings, **{name: _coerce(name, raw) for name, raw in overrides.items()})
