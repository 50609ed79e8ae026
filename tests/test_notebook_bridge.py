"""The relays between a notebook server without network and the hub: which addresses each
side serves and names, and bytes carried both ways through a real pair of relays."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from jobs.notebook_bridge import (
    Forward,
    Side,
    Tcp,
    Unix,
    inside_command,
    outside_command,
    parse_arguments,
    relay_plan,
    run,
)

HUB = {
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:41000/user/editor/alpha/",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_ACTIVITY_URL": "http://127.0.0.1:8081/hub/api/users/editor/activity",
    "JUPYTERHUB_API_TOKEN": "t",
    "NORA_PROJECT": "alpha",
}


def test_outside_serves_the_servers_address_and_reaches_the_hub(tmp_path: Path) -> None:
    plan = relay_plan(Side.OUTSIDE, HUB, tmp_path)
    assert plan.forwards == (Forward(Tcp("127.0.0.1", 41000), Unix(tmp_path / "server.sock")),
                             Forward(Unix(tmp_path / "hub.sock"), Tcp("127.0.0.1", 8081)))
    assert plan.child_environment == HUB


def test_inside_names_the_hub_on_its_own_loopback(tmp_path: Path) -> None:
    remote = {**HUB, "JUPYTERHUB_API_URL": "http://hub.example:8081/hub/api",
              "JUPYTERHUB_ACTIVITY_URL": "http://hub.example:8081/hub/api/users/editor/activity",
              "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:41000/user/editor/alpha/"}
    outside = relay_plan(Side.OUTSIDE, remote, tmp_path)
    assert outside.forwards[0].listen == Tcp("0.0.0.0", 41000)
    assert outside.forwards[1].connect == Tcp("hub.example", 8081)
    inside_environment = outside.child_environment
    assert inside_environment["JUPYTERHUB_API_URL"] == "http://127.0.0.1:8081/hub/api"
    assert inside_environment["JUPYTERHUB_ACTIVITY_URL"] == "http://127.0.0.1:8081/hub/api/users/editor/activity"
    inside = relay_plan(Side.INSIDE, inside_environment, tmp_path)
    assert inside.forwards == (Forward(Unix(tmp_path / "server.sock"), Tcp("127.0.0.1", 41000)),
                               Forward(Tcp("127.0.0.1", 8081), Unix(tmp_path / "hub.sock")))


@pytest.mark.parametrize("report_port", [False, True])
def test_the_commands_nest_the_sandbox_and_the_server_whole(tmp_path: Path, report_port: bool) -> None:
    server = ["timeout", "120m", "jupyterhub-singleuser", "--debug"]
    sandboxed = ["bwrap", "--unshare-net", "--", "setpriv", "--", *inside_command(tmp_path, server)]
    outside = parse_arguments(outside_command(tmp_path, sandboxed, report_port)[3:])
    assert (outside.side, outside.relay_dir, outside.report_port, outside.command) == (
        Side.OUTSIDE, tmp_path, report_port, sandboxed)
    inside = parse_arguments(outside.command[outside.command.index("jobs.notebook_bridge") + 1:])
    assert (inside.side, inside.report_port, inside.command) == (Side.INSIDE, False, server)


@pytest.mark.parametrize("variable", ["JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_API_URL"])
def test_an_address_without_a_port_is_refused(tmp_path: Path, variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        relay_plan(Side.OUTSIDE, {**HUB, variable: "http://127.0.0.1/hub/api"}, tmp_path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


ECHO_SERVER = """
import socket, sys
with socket.create_server(("127.0.0.1", int(sys.argv[1]))) as server:
    connection, _ = server.accept()
    with connection:
        data = b""
        while chunk := connection.recv(4096):
            data += chunk
        connection.sendall(data.upper())
"""


def test_both_relays_carry_a_request_and_its_answer_after_a_half_close(tmp_path: Path) -> None:
    """Outside and inside relays in one place (no sandbox): a client's bytes reach the server
    through both, and the answer, sent after the client closed its side, comes back whole."""
    server_port, hub_port = _free_port(), _free_port()
    outside_port = _free_port()
    environment = {**HUB, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{outside_port}/",
                   "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api"}
    inside_environment = {**environment, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{server_port}/"}
    outside_dir, inside_dir = tmp_path / "out", tmp_path / "in"
    outside_dir.mkdir()
    inside_dir.mkdir()
    # The inside relay listens on its server socket where the outside one connects.
    (outside_dir / "server.sock").symlink_to(inside_dir / "server.sock")

    async def scenario() -> bytes:
        inside = asyncio.create_task(run(Side.INSIDE, inside_dir, [sys.executable, "-c", ECHO_SERVER, str(server_port)],
                                         environment=inside_environment))
        outside = asyncio.create_task(run(Side.OUTSIDE, outside_dir, [sys.executable, "-c", "import time; time.sleep(60)"],
                                          environment=environment))
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", outside_port)
                writer.write(b"hello through the relays")
                writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                if answer:
                    break
            except OSError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "the relays never carried the request"
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(inside, 30) == 0
        # The hub ends a server by signalling the outside relay: its child ends with it.
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(outside, 30) == -signal.SIGTERM
        return answer

    assert asyncio.run(scenario()) == b"HELLO THROUGH THE RELAYS"


CLOSING_SERVER = """
import socket, sys
with socket.create_server(("127.0.0.1", int(sys.argv[1]))) as server:
    connection, _ = server.accept()
    connection.recv(4096)
    connection.close()
"""


def test_a_server_that_closes_without_answering_closes_the_clients_connection(tmp_path: Path) -> None:
    """A client waiting for an answer (the hub checking whether a server is up) is not left
    hanging when the server closes: it sees the end and asks again."""
    server_port = _free_port()
    environment = {**HUB, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{server_port}/",
                   "JUPYTERHUB_API_URL": f"http://127.0.0.1:{_free_port()}/hub/api"}

    async def scenario() -> list[bytes]:
        inside = asyncio.create_task(run(Side.INSIDE, tmp_path, [sys.executable, "-c", CLOSING_SERVER, str(server_port)],
                                         environment=environment))
        deadline = asyncio.get_running_loop().time() + 30
        answers = []
        while not inside.done():
            try:
                reader, writer = await asyncio.open_unix_connection(str(tmp_path / "server.sock"))
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                # Without the end passed on, this would wait for ever.
                answers.append(await asyncio.wait_for(reader.read(), 30))
                writer.close()
            except OSError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "the server never took the request"
            await asyncio.sleep(0.1)
        # The server exits once it has taken a request and closed it.
        assert inside.result() == 0
        return answers

    answers = asyncio.run(scenario())
    assert answers and set(answers) == {b""}
