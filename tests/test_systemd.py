"""sd_notify: the messages a service manager receives, in order."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import trio

from conduwuit.systemd import Notifier
from tests.support.config import make_config
from tests.support.inprocess import running_server


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.address = address

    async def __aenter__(self) -> NotifySocket:
        bind_to = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        self.sock.bind(bind_to)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    def drain(self) -> list[list[str]]:
        messages = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return messages
            messages.append(data.decode().split("\n"))


def _flatten(messages: list[list[str]]) -> list[str]:
    return [line for message in messages for line in message]


async def test_notify_sequence_on_a_path_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    async with NotifySocket(address) as notify:
        config = make_config(tmp_path)
        notifier = Notifier({"NOTIFY_SOCKET": address})
        async with running_server(config, notifier=notifier) as server:
            lines = _flatten(notify.drain())
            ready = lines.index("READY=1")
            assert lines[0].startswith("STATUS=Opening the database")
            assert f"MAINPID={os.getpid()}" in lines
            status_after_ready = lines[ready + 1]
            assert status_after_ready.startswith("STATUS=Listening on")
            # READY comes only once the listener really accepts connections.
            async with httpx.AsyncClient() as client:
                r = await client.get(server.bound[0] + "/_conduwuit/server_version")
                assert r.status_code == 200
        lines = _flatten(notify.drain())
        assert lines[0] == "STOPPING=1"
        assert lines[-1] == "STATUS=Closing the database"


async def test_abstract_socket_and_watchdog(tmp_path: Path) -> None:
    address = f"@conduwuit-test-{os.getpid()}-{id(tmp_path)}"
    async with NotifySocket(address) as notify:
        notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
        assert notifier.watchdog_interval == 0.1
        async with running_server(make_config(tmp_path), notifier=notifier) as server:
            await trio.sleep(0.3)
            lines = _flatten(notify.drain())
            assert "READY=1" in lines
            assert lines.count("WATCHDOG=1") >= 3
            assert server.supervisor.status("systemd/watchdog").state.value == "running"


def test_watchdog_for_another_pid_is_ignored() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval is None


def test_no_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("ok")  # must not raise
