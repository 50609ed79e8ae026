"""A notebook request as the hub's user options: every value checked before a spawner uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nifti_archive.errors import InvalidValue
from nifti_archive.models import Executor
from nifti_archive.notebooks.servers import NotebookRequest, parse_request, workdir
from nifti_archive.settings import Settings


def test_a_request_reads_back_from_its_options() -> None:
    request = NotebookRequest("alpha", Executor.SLURM, time_minutes=30, cpus=2, memory_mb=1000, partition="DPXproc")
    assert parse_request(request.options()) == request
    assert parse_request({"project": "alpha"}) == NotebookRequest("alpha")


@pytest.mark.parametrize(("options", "named"), [
    ({}, "project"),
    ({"project": "alpha", "cmd": "sh"}, "unknown notebook options: cmd"),
    ({"project": "alpha", "executor": "docker"}, "executor"),
    ({"project": "alpha", "partition": "a b"}, "partition"),
    ({"project": "alpha", "partition": "$(id)"}, "partition"),
    ({"project": "alpha", "cpus": 0}, "cpus"),
    ({"project": "alpha", "cpus": True}, "cpus"),
    ({"project": "alpha", "memory_mb": "2G"}, "memory_mb"),
    ({"project": "alpha", "time_minutes": 1.5}, "time_minutes"),
])
def test_malformed_options_are_refused_by_name(options: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidValue, match=named.replace("(", r"\(").replace("$", r"\$")):
        parse_request(options)


def test_a_notebook_folder_is_named_by_plain_names_only(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, database_url="sqlite://", archive_root=tmp_path / "a", log_dir=tmp_path / "l")
    assert workdir(settings, "editor", "alpha") == tmp_path / "notebooks" / "work" / "editor" / "alpha"
    assert workdir(settings, "editor", "").name == "default"
    for user, server in (("..", "alpha"), ("editor", ".."), ("a/b", "x"), ("editor", ".hidden")):
        with pytest.raises(InvalidValue):
            workdir(settings, user, server)
