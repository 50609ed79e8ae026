"""The index database written to one file and read back, each kind with its own engine's tool.

SQLite: the online backup API copies the pages of one moment while others keep writing.
PostgreSQL: ``pg_dump`` in custom format from Debian's client packages, in a snapshot this
process exported, so that what the caller reads inside ``snapshot`` (the file manifest) is of
the same moment as the dump; ``pg_restore`` brings it back in one transaction.
"""

from __future__ import annotations

import enum
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text

from nifti_archive.errors import ArchiveError, ConfigError

# Debian's postgresql-client-<major> packages install here, side by side.
PG_LIB = Path("/usr/lib/postgresql")
SQLITE_BUSY_SECONDS = 30.0
TOOL_TIMEOUT_SECONDS = 6 * 3600


class DumpFailed(ArchiveError):
    pass


class DatabaseKind(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"

    @classmethod
    def of(cls, engine: Engine) -> DatabaseKind:
        return cls(engine.dialect.name)

    @property
    def dump_file(self) -> str:
        return {DatabaseKind.SQLITE: "database.sqlite", DatabaseKind.POSTGRESQL: "database.pgdump"}[self]


class DumpMethod(enum.Enum):
    SQLITE_BACKUP = "sqlite3-backup-api"
    PG_DUMP = "pg_dump-custom"


@dataclass(frozen=True)
class Dump:
    kind: DatabaseKind
    method: DumpMethod
    # The tool's own account of its version (pg_dump's), or SQLite's library version.
    tool_version: str


@contextmanager
def snapshot(engine: Engine, target: Path) -> Iterator[tuple[Connection, Dump]]:
    """Dump the database into ``target``; yields a connection that reads the moment of the dump."""
    if DatabaseKind.of(engine) is DatabaseKind.SQLITE:
        with _sqlite_snapshot(engine, target) as taken:
            yield taken
    else:
        with _postgres_snapshot(engine, target) as taken:
            yield taken


def restore(engine: Engine, source: Path, kind: DatabaseKind) -> None:
    """Replace the database's contents by the dump at ``source``, all at once or not at all."""
    engine.dispose()
    if kind is DatabaseKind.SQLITE:
        _restore_sqlite(engine, source)
    else:
        _restore_postgres(engine, source)
    # Pooled connections (and psycopg's prepared statements) knew the tables that were replaced.
    engine.dispose()


def _sqlite_file(engine: Engine) -> Path:
    name = engine.url.database
    if not name or name == ":memory:":
        raise ConfigError("an in-memory SQLite database cannot be backed up or restored")
    return Path(name)


@contextmanager
def _sqlite_snapshot(engine: Engine, target: Path) -> Iterator[tuple[Connection, Dump]]:
    with closing(sqlite3.connect(_sqlite_file(engine), timeout=SQLITE_BUSY_SECONDS)) as live, \
            closing(sqlite3.connect(target)) as copy:
        # All pages in one step: one read transaction, so one moment, however busy the archive is.
        live.backup(copy)
        # The copy is a file of its own, not a WAL database needing its -wal beside it.
        copy.execute("PRAGMA journal_mode=DELETE")
    reader = create_engine(f"sqlite:///{target}")
    try:
        with reader.connect() as connection:
            yield connection, Dump(DatabaseKind.SQLITE, DumpMethod.SQLITE_BACKUP, f"SQLite {sqlite3.sqlite_version}")
    finally:
        reader.dispose()


def _restore_sqlite(engine: Engine, source: Path) -> None:
    _sqlite_file(engine).parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)) as dump, \
            closing(sqlite3.connect(_sqlite_file(engine), timeout=SQLITE_BUSY_SECONDS)) as live:
        dump.backup(live)


def _libpq_environment(engine: Engine) -> dict[str, str]:
    """The connection as libpq's variables: a password never shows in a process listing."""
    url = engine.url
    host = url.query.get("host")
    values = {
        "PGHOST": host if isinstance(host, str) else url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password if isinstance(url.password, str) else None,
        "PGDATABASE": url.database,
    }
    return {**os.environ, **{name: value for name, value in values.items() if value}}


def _pg_tool(name: str, server_major: int) -> Path:
    """The server's own major version of the tool, else the newest (pg_dump reads older servers)."""
    found = {
        int(folder.name): folder / "bin" / name
        for folder in PG_LIB.glob("*")
        if folder.name.isdigit() and (folder / "bin" / name).is_file()
    }
    usable = [major for major in found if major >= server_major]
    if not usable:
        raise ConfigError(
            f"no {name} for PostgreSQL {server_major} in {PG_LIB}/*/bin: install postgresql-client-{server_major}"
        )
    return found[server_major if server_major in usable else max(usable)]


def _run_tool(command: list[str], environment: dict[str, str], what: str) -> str:
    try:
        result = subprocess.run(command, env=environment, capture_output=True, text=True,
                                timeout=TOOL_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DumpFailed(f"{what} failed: {exc}") from exc
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise DumpFailed(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout


def _server_major(connection: Connection) -> int:
    version = connection.dialect.server_version_info
    if not version:
        raise DumpFailed("the PostgreSQL server did not say its version")
    return int(version[0])


@contextmanager
def _postgres_snapshot(engine: Engine, target: Path) -> Iterator[tuple[Connection, Dump]]:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            # Exported as the transaction's first statement, the snapshot is the one every later
            # read here sees; pg_dump adopts it, so dump and manifest agree row for row.
            exported = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            pg_dump = _pg_tool("pg_dump", _server_major(connection))
            environment = _libpq_environment(engine)
            _run_tool([str(pg_dump), "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={exported}",
                       f"--file={target}"], environment, "pg_dump")
            version = _run_tool([str(pg_dump), "--version"], environment, "pg_dump --version").strip()
            yield connection, Dump(DatabaseKind.POSTGRESQL, DumpMethod.PG_DUMP, version)


def _restore_postgres(engine: Engine, source: Path) -> None:
    with engine.connect() as connection:
        pg_restore = _pg_tool("pg_restore", _server_major(connection))
    database = engine.url.database or ""
    if not re.fullmatch(r"[\w$-]+", database):
        raise ConfigError(f"cannot restore into the database named {database!r}")
    _run_tool([str(pg_restore), "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
               "--exit-on-error", f"--dbname={database}", str(source)], _libpq_environment(engine), "pg_restore")
