"""Relays that give a notebook server without network exactly the two connections it needs.

A notebook server runs in the job sandbox, and like a batch job it has no network: its own
network namespace holds only a loopback. Yet the hub's proxy must reach the server, and the
server must reach the hub's API (log-in of its users, activity). Two relays carry just these,
through Unix sockets in a folder of the notebook's working tree that both sides see:

    outside (root, host network)                     inside (jobs account, loopback only)
    server's address ─────────► server.sock ───────► 127.0.0.1:server's port
    hub's API        ◄───────── hub.sock    ◄─────── 127.0.0.1:hub API's port

The outside side starts the sandbox as its child and the inside side the server as its own;
each ends with its child and passes on the signals that end it. Both read the addresses from
the hub's environment variables, which pass through the sandbox unchanged, except that inside
the hub's API is named on the loopback. Nothing here imports more than the standard library:
it runs before the server, in the sandbox too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import logging
import os
import signal
import sys
import urllib.request
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

SERVER_SOCKET = "server.sock"
HUB_SOCKET = "hub.sock"
SERVICE_URL = "JUPYTERHUB_SERVICE_URL"
API_URL = "JUPYTERHUB_API_URL"
API_TOKEN = "JUPYTERHUB_API_TOKEN"
LOOPBACK = "127.0.0.1"
CHUNK = 1 << 16
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Its name when run as a program is __main__.
MODULE = "jobs.notebook_bridge"


class Side(enum.Enum):
    """Which end of the relays a process is: the host's, or the sandbox's."""

    OUTSIDE = "outside"
    INSIDE = "inside"


@dataclass(frozen=True)
class Tcp:
    host: str
    port: int


@dataclass(frozen=True)
class Unix:
    path: Path


Endpoint = Tcp | Unix


@dataclass(frozen=True)
class Forward:
    """Every connection accepted at ``listen`` is joined to a new one to ``connect``."""

    listen: Endpoint
    connect: Endpoint


@dataclass(frozen=True)
class Plan:
    forwards: tuple[Forward, ...]
    child_environment: dict[str, str]


def _address(url: str, what: str) -> Tcp:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.port is None:
        raise ValueError(f"{what} {url!r} is not an http URL with a port")
    # An empty or wildcard host is the server listening on every address of the host.
    return Tcp(parts.hostname or "0.0.0.0", parts.port)


def relay_plan(side: Side, environment: Mapping[str, str], relay_dir: Path) -> Plan:
    """The relays of ``side`` and the environment its child gets, from the hub's variables."""
    server = _address(environment.get(SERVICE_URL, ""), SERVICE_URL)
    hub = _address(environment.get(API_URL, ""), API_URL)
    server_socket, hub_socket = Unix(relay_dir / SERVER_SOCKET), Unix(relay_dir / HUB_SOCKET)
    if side is Side.INSIDE:
        forwards = (Forward(server_socket, Tcp(LOOPBACK, server.port)), Forward(Tcp(LOOPBACK, hub.port), hub_socket))
        return Plan(forwards, dict(environment))
    # Every variable naming the hub's API (its URL, the activity URL) names the inside relay.
    origin = f"http://{urlsplit(environment[API_URL]).netloc}"
    inside_origin = f"http://{LOOPBACK}:{hub.port}"
    child = {key: (inside_origin + value[len(origin):] if value.startswith(origin) else value)
             for key, value in environment.items()}
    return Plan((Forward(server, server_socket), Forward(hub_socket, hub)), child)


async def _open(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(endpoint, Tcp):
        return await asyncio.open_connection(endpoint.host, endpoint.port)
    return await asyncio.open_unix_connection(str(endpoint.path))


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()


async def _ask(reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter) -> None:
    await _splice(reader, upstream_writer)
    # A client that has sent all it will send (a half-closed connection) still gets its answer.
    if upstream_writer.can_write_eof() and not upstream_writer.is_closing():
        with contextlib.suppress(OSError):
            upstream_writer.write_eof()


async def _join(connect: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await _open(connect)
    except OSError as error:
        # The far end is not there yet (a server still starting): the caller sees a closed
        # connection and tries again, as it would for a server not yet listening.
        log.info("cannot reach %s: %s", connect, error)
        writer.close()
        return
    asking = asyncio.create_task(_ask(reader, upstream_writer))
    await _splice(upstream_reader, writer)
    # The far end has answered and closed: so does this connection, whatever the client would
    # still send (a client waiting for an answer must see the close, not a half-closed socket).
    asking.cancel()
    for end in (writer, upstream_writer):
        end.close()


async def _listen(forward: Forward) -> asyncio.Server:
    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Awaitable[None]:
        return _join(forward.connect, reader, writer)

    if isinstance(forward.listen, Tcp):
        return await asyncio.start_server(accepted, forward.listen.host, forward.listen.port)
    path = forward.listen.path
    path.unlink(missing_ok=True)  # left by a server that ran in this folder before
    server = await asyncio.start_unix_server(accepted, str(path))
    owner = path.parent.stat()
    # The folder's owner (the jobs account) is the one who must connect to the socket.
    os.chown(path, owner.st_uid, owner.st_gid)
    path.chmod(0o600)
    return server


def _report_port(environment: Mapping[str, str], port: int) -> None:
    """Tell the hub the port chosen on this node (batchspawner's call, with its token)."""
    request = urllib.request.Request(
        environment[API_URL].rstrip("/") + "/batchspawner", method="POST", data=json.dumps({"port": port}).encode(),
        headers={"Authorization": f"token {environment[API_TOKEN]}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass


def _with_port(environment: dict[str, str], port: int) -> None:
    parts = urlsplit(environment[SERVICE_URL])
    environment[SERVICE_URL] = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


async def run(side: Side, relay_dir: Path, command: list[str], report_port: bool = False,
              environment: Mapping[str, str] | None = None) -> int:
    """Run ``command`` with ``side``'s relays open; its exit status."""
    plan = relay_plan(side, environment if environment is not None else os.environ, relay_dir)
    child_environment = plan.child_environment
    servers = []
    for forward in plan.forwards:
        if report_port and isinstance(forward.listen, Tcp):
            # The port is chosen here, where the server's address is: Slurm picked the node.
            forward = Forward(Tcp(forward.listen.host, 0), forward.connect)
        server = await _listen(forward)
        servers.append(server)
        if report_port and isinstance(forward.listen, Tcp):
            port = int(server.sockets[0].getsockname()[1])
            await asyncio.to_thread(_report_port, child_environment, port)
            _with_port(child_environment, port)
    child = await asyncio.create_subprocess_exec(*command, env=child_environment)
    loop = asyncio.get_running_loop()

    def pass_on(number: int) -> None:
        if child.returncode is None:
            child.send_signal(number)

    for number in SIGNALS:
        loop.add_signal_handler(number, pass_on, number)
    status = await child.wait()
    for server in servers:
        server.close()
    return status


@dataclass(frozen=True)
class Invocation:
    side: Side
    relay_dir: Path
    report_port: bool
    command: list[str]


def parse_arguments(argv: list[str]) -> Invocation:
    parser = argparse.ArgumentParser(prog="python -m jobs.notebook_bridge", description=__doc__.split("\n")[0])
    # Options before the positionals: everything after them is the command, options included.
    parser.add_argument("--report-port", action="store_true", help="choose the server's port here and tell the hub")
    parser.add_argument("side", type=Side, choices=list(Side))
    parser.add_argument("relay_dir", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("a command to run is needed after --")
    return Invocation(options.side, options.relay_dir, options.report_port, command)


def main(argv: list[str] | None = None) -> int:
    invocation = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="notebook relay: %(message)s")
    try:
        return asyncio.run(run(invocation.side, invocation.relay_dir, invocation.command, invocation.report_port))
    except (ValueError, KeyError, OSError) as error:
        log.error("cannot relay the notebook server's connections: %s", error)
        return 2


def outside_command(relay_dir: Path, sandboxed: list[str], report_port: bool) -> list[str]:
    """The command that starts the sandbox (``sandboxed``) behind the host's relays."""
    return [sys.executable, "-m", MODULE, *(["--report-port"] if report_port else []), Side.OUTSIDE.value,
            str(relay_dir), "--", *sandboxed]


def inside_command(relay_dir: Path, server: list[str]) -> list[str]:
    """The command, in the sandbox, that starts the server behind the sandbox's relays."""
    return [sys.executable, "-m", MODULE, Side.INSIDE.value, str(relay_dir), "--", *server]


if __name__ == "__main__":
    sys.exit(main())
