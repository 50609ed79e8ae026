"""Shared fixtures: an archive on SQLite and on a real PostgreSQL server, and the `nora` command."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from nifti_archive import db
from nifti_archive.archive import Archive
from nifti_archive.cli import main as cli_main
from nifti_archive.permissions import secure_archive_root
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from testbed import TEST_PASSWORD_COST
from testbed.northanc import NORA, Northanc, northanc_settings
from testbed.portal import Portal, chromium
from testbed.postgres import PostgresServer, start_postgres
from tests.browser_pages import ARTIFACTS, TIMEOUT_MS
from tests.portal_site import SiteTemplate, site_template


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, one per browser test module."""
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser: Browser, served: tuple[Portal, object]) -> Iterator[Page]:
    """A fresh browser context on the portal of the module's ``served`` fixture."""
    portal, _site = served
    context = browser.new_context(base_url=portal.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresServer) -> str:
    """A migrated database that each test clones (CREATE DATABASE ... TEMPLATE) in milliseconds."""
    url = postgres.create_database("northanc_template")
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return "northanc_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "archive.sqlite"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


def postgresql_everywhere(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that put both the archive's index and Orthanc's in fresh PostgreSQL databases."""
    server: PostgresServer = request.getfixturevalue("postgres")
    name = uuid.uuid4().hex[:12]
    archive_url = server.create_database(f"t_{name}", template=request.getfixturevalue("postgres_template"))
    server.create_database(f"o_{name}")
    return {"database_url": archive_url, "orthanc_database_url": server.libpq_url(f"o_{name}")}


# Runs a test that takes the ``northanc`` fixture on the embedded default and again with Orthanc's
# index and the archive's in PostgreSQL, as a deployment grown out of one machine has them.
ON_BOTH_INDEXES = pytest.mark.parametrize(
    "northanc", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def northanc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Northanc]:
    """Orthanc with the plugin on free ports, for one test (see ON_BOTH_INDEXES)."""
    databases = postgresql_everywhere(request) if getattr(request, "param", "sqlite") == "postgresql" else {}
    running = Northanc.start(northanc_settings(tmp_path / "var", **databases))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def portal_site(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> SiteTemplate:
    """The portal's test site, built once; tests that change it take a copy (copy_site)."""
    return site_template(tmp_path_factory.mktemp("portal-site") / "var", sqlite_template)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "archive.sqlite"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    server: PostgresServer = request.getfixturevalue("postgres")
    template = request.getfixturevalue("postgres_template")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}", template=template)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    var = tmp_path / "var"
    return Settings(var_dir=var, database_url=database_url, archive_root=var / "archive", log_dir=var / "log",
                    password_cost=TEST_PASSWORD_COST)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    # As `nora --admin init` leaves it: the tree belongs to the jobs group, so sandboxed jobs read it.
    secure_archive_root(settings)
    handle = Archive(settings)
    yield handle
    handle.close()


Nora = Callable[..., subprocess.CompletedProcess[str]]


def _nora_environment(settings: Settings, extra_env: dict[str, str] | None) -> dict[str, str]:
    """What `nora` sees: this process's environment with the test's settings, no project preset."""
    env = child_environment(settings)
    env.pop("NORA_PROJECT", None)
    return {**env, **(extra_env or {})}


@pytest.fixture
def nora(settings: Settings) -> Nora:
    """Runs the installed `nora` entry point against the test's archive."""

    def run(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NORA), *args], env=_nora_environment(settings, extra_env), capture_output=True, text=True, timeout=120,
            check=False)

    return run


@pytest.fixture
def nora_in_process(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Nora:
    """`nora` run in this process (``nifti_archive.cli.main.run``) in the environment the `nora`
    fixture gives the installed command: the same result without a second of interpreter start-up."""

    def run(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = _nora_environment(settings, extra_env)
        stdout, stderr = io.StringIO(), io.StringIO()
        with monkeypatch.context() as patch:
            for name in set(os.environ) - set(env):
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            returncode = cli_main.run(args, stdout, stderr)
        return subprocess.CompletedProcess([str(NORA), *args], returncode, stdout.getvalue(), stderr.getvalue())

    return run
