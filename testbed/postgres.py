"""A throw-away PostgreSQL server from Debian's packages, in a temp dir, on a free port.

``initdb`` refuses to run as root, so the data directory belongs to the ``postgres`` user
and the server runs as that user; it listens on 127.0.0.1 and a socket in its own folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*command: str) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


@dataclass
class PostgresServer:
    data_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def libpq_url(self, database: str) -> str:
        """The database as libpq (Orthanc's PostgreSQL plugin) takes it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return result.stdout

    def create_database(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {template}" if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"),
                       check=False, capture_output=True)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres() -> PostgresServer:
    base = Path(tempfile.mkdtemp(prefix="northanc-pg-"))
    data_dir = base / "data"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    subprocess.run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres",
                                "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"),
                   check=True, capture_output=True)
    port = free_port()
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l",
                                str(data_dir / "server.log"), "-w", "start"),
                   check=True, capture_output=True)
    return PostgresServer(data_dir, port)
