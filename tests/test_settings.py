"""The settings object: defaults, config file, environment, and refusal of unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from nifti_archive.errors import ConfigError
from nifti_archive.settings import load_settings


def test_defaults_put_everything_under_var(tmp_path: Path) -> None:
    settings = load_settings({"NORTHANC_VAR": str(tmp_path / "var")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'archive.sqlite'}"
    assert settings.archive_root == tmp_path / "var" / "archive"
    assert settings.is_sqlite
    # Passwords are hashed at full cost unless a test suite asks otherwise.
    assert settings.password_cost == "standard"


def test_config_file_then_environment(tmp_path: Path) -> None:
    (tmp_path / "northanc.toml").write_text(
        '[northanc]\ndatabase_url = "postgresql+psycopg://db/archive"\narchive_root = "/data/archive"\n'
        "trash_retention_days = 7\n"
    )
    settings = load_settings({"NORTHANC_VAR": str(tmp_path)})
    assert settings.database_url == "postgresql+psycopg://db/archive"
    assert settings.archive_root == Path("/data/archive")
    assert settings.trash_retention_days == 7
    assert not settings.is_sqlite
    overridden = load_settings({"NORTHANC_VAR": str(tmp_path), "NORTHANC_TRASH_RETENTION_DAYS": "3"})
    assert overridden.trash_retention_days == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[northanc]\ndatabse_url = "x"\n', "unknown key"),
        ('[other]\nx = 1\n', "unknown table"),
        ("[northanc]\ntrash_retention_days = -1\n", "must not be negative"),
        ("[northanc]\nconversion_lease_seconds = 1\n", "conversion_lease_seconds must be at least 3"),
        ('[northanc]\ntrash_retention_days = "soon"\n', "whole number"),
        ("[northanc\n", "config file"),
        ('[northanc]\npassword_cost = "none"\n', "password_cost must be one of standard, cheap"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "northanc.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings({"NORTHANC_VAR": str(tmp_path)})


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"NORTHANC_CONFIG": str(tmp_path / "missing.toml")})
