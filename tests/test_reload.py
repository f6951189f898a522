"""Config reload (SIGUSR1, Server.reload_config) and the admin command hooks."""

from __future__ import annotations

import functools
import logging
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conduwuit.config import Config, load_config
from conduwuit.log import log_control
from conduwuit.reload import RELOADABLE, LiveConfig, ReloadRefused, plan
from conduwuit.server import Server
from conduwuit.systemd import Notifier
from tests.support.config import free_port, write_config
from tests.support.inprocess import running_server
from tests.support.process import ServerProcess
from tests.test_systemd import NotifySocket, _flatten

AVAILABLE = "/_matrix/client/v3/register/available?username="


@pytest.fixture(autouse=True)
def keep_log_filter() -> Iterator[None]:
    """A reload changes the process-wide log filter; put it back for the other tests."""
    before, root_level = log_control.current, logging.getLogger().level
    yield
    log_control.set_filter(before)
    logging.getLogger().setLevel(root_level)


class ConfigFile:
    """One config file rewritten between reloads, keeping the port and database."""

    def __init__(self, directory: Path, **options: Any) -> None:
        self.directory = directory
        self.base: dict[str, Any] = {"port": free_port(), **options}
        self.path = write_config(directory, **self.base)

    def config(self) -> Config:
        return load_config(str(self.path), env={}).config

    def rewrite(self, **changes: Any) -> None:
        write_config(self.directory, **{**self.base, **changes})

    def loader(self) -> functools.partial[Any]:
        return functools.partial(load_config, str(self.path), env={})


@pytest.fixture
def config_file(tmp_path: Path) -> ConfigFile:
    return ConfigFile(tmp_path, allow_local_presence=False, allow_outgoing_presence=False)


async def test_live_options_apply_without_rebuilding_services(config_file: ConfigFile) -> None:
    async with running_server(config_file.config()) as server:
        server.config_loader = config_file.loader()
        services = server.services
        assert services is not None
        turn_before, client_before = services.turn, services.federation.client
        async with httpx.AsyncClient(base_url=server.bound[0]) as http:
            assert (await http.get(AVAILABLE + "evil1")).status_code == 200
            assert (await http.get("/.well-known/matrix/client")).status_code == 404
            config_file.rewrite(
                log="warn,conduwuit.reload=debug",
                forbidden_usernames=["^evil"],
                forbidden_remote_server_names=["bad\\.example$"],
                forbidden_alias_names=["^spam"],
                prevent_media_downloads_from=["media\\.example$"],
                typing_client_timeout_max_s=7,
                allow_registration=True, registration_token="tok-123",
                turn_uris=["turn:turn.example.com?transport=udp"], turn_secret="s3cret",
                url_preview_domain_explicit_allowlist=["example.org"],
                well_known={"client": "https://matrix.example.com"},
            )
            result = await server.reload_config()
            # Same services, same connection pool: only what they read changed.
            assert services.federation.client is client_before
            r = await http.get(AVAILABLE + "evil1")
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
            r = await http.get("/.well-known/matrix/client")
            assert r.json() == {"m.homeserver": {"base_url": "https://matrix.example.com"}}
        assert set(result.applied) >= {"log", "forbidden_usernames", "well_known", "turn_uris",
                                       "forbidden_remote_server_names", "allow_registration"}
        assert result.needs_restart == ()
        assert log_control.current == "warn,conduwuit.reload=debug"
        assert logging.getLogger().level == logging.WARNING
        assert services.federation.client.is_forbidden("bad.example")
        assert services.media.is_blocked("media.example")
        assert services.media.is_blocked("bad.example")
        assert services.rooms.aliases.forbidden_names == ["^spam"]
        assert services.typing.max_timeout_s == 7
        assert services.first_run.allow_registration
        assert services.config.registration_token == "tok-123"
        assert services.turn is not turn_before and services.turn.secret == "s3cret"
        assert services.media.previews.policy.domain_explicit == ("example.org",)
        assert server.config.forbidden_usernames == ["^evil"]


async def test_presence_switched_on_starts_its_job(config_file: ConfigFile) -> None:
    async with running_server(config_file.config()) as server:
        server.config_loader = config_file.loader()
        names = {s.full_name for s in server.supervisor.statuses()}
        assert "presence/timers" not in names
        config_file.rewrite(allow_local_presence=True, allow_outgoing_presence=True,
                            presence_idle_timeout_s=60)
        await server.reload_config()
        assert server.services is not None and server.services.presence.enabled
        assert server.services.presence.idle_timeout_s == 60
        assert server.supervisor.status("presence/timers").state.value == "running"
        # Off again: the service refuses, the job may idle on.
        config_file.rewrite(allow_local_presence=False)
        await server.reload_config()
        assert not server.services.presence.enabled


async def test_restart_only_options_keep_their_old_value(
        config_file: ConfigFile, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(config_file.config()) as server:
        server.config_loader = config_file.loader()
        old_port, old_db = server.config.port, server.config.database_path
        config_file.rewrite(port=free_port(), database_path=str(tmp_path / "elsewhere"),
                            max_request_size=30_000_000, forbidden_usernames=["^x"])
        with caplog.at_level(logging.WARNING, logger="conduwuit.server"):
            result = await server.reload_config()
        assert set(result.needs_restart) == {"port", "database_path", "max_request_size"}
        assert result.applied == ("forbidden_usernames",)
        assert server.config.port == old_port and server.config.database_path == old_db
        assert server.services is not None
        assert server.services.config.max_request_size != 30_000_000
        assert "database_path changed but needs a restart" in caplog.text
        assert "kept until a restart: " in result.summary()


async def test_changed_server_name_refuses_the_whole_reload(config_file: ConfigFile) -> None:
    async with running_server(config_file.config()) as server:
        server.config_loader = config_file.loader()
        config_file.rewrite(server_name="other.example", forbidden_usernames=["^evil"])
        with pytest.raises(ReloadRefused, match="server_name cannot change"):
            await server.reload_config()
        assert server.config.server_name == "test.local"
        assert server.services is not None
        assert server.services.config.forbidden_usernames == []


@pytest.mark.parametrize("bad", [
    "this is not toml = = =",
    '[global]\nserver_name = "test.local"\nport = "not a port"\n',
])
async def test_unreadable_or_invalid_config_is_refused(config_file: ConfigFile, bad: str) -> None:
    async with running_server(config_file.config()) as server:
        server.config_loader = config_file.loader()
        config_file.path.write_text(bad)
        with pytest.raises(ReloadRefused, match="nothing was reloaded"):
            await server.reload_config()
        assert server.config.port == [config_file.base["port"]]


async def test_bad_log_filter_is_refused(config_file: ConfigFile) -> None:
    async with running_server(config_file.config()) as server:
        server.config_loader = config_file.loader()
        config_file.rewrite(log="loud", forbidden_usernames=["^evil"])
        with pytest.raises(ReloadRefused, match="unknown level 'loud'"):
            await server.reload_config()
        assert server.config.log == "info"


async def test_reload_without_a_config_source_is_refused(tmp_path: Path) -> None:
    async with running_server(ConfigFile(tmp_path).config()) as server:
        with pytest.raises(ReloadRefused, match="not started from a config file"):
            await server.reload_config()


async def test_notify_socket_sees_reloading_then_ready(config_file: ConfigFile,
                                                      tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    async with NotifySocket(address) as notify:
        notifier = Notifier({"NOTIFY_SOCKET": address})
        async with running_server(config_file.config(), notifier=notifier) as server:
            server.config_loader = config_file.loader()
            notify.drain()
            config_file.rewrite(forbidden_usernames=["^evil"])
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            await server.reload_config()
            lines = _flatten(notify.drain())
    assert lines[0] == "RELOADING=1"
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines.index("READY=1") > 0
    assert lines[lines.index("READY=1") + 1].startswith("STATUS=Listening on")


def test_plan_lists_changes_and_every_reloadable_name_is_an_option(tmp_path: Path) -> None:
    old = ConfigFile(tmp_path).config()
    fields = {a.name for a in Config.__attrs_attrs__}
    assert fields >= RELOADABLE
    assert plan(old, old).applied == ()
    live = LiveConfig(old)
    assert live.as_config().server_name == "test.local"
    with pytest.raises(AttributeError):
        live.server_name = "x"  # type: ignore[misc]


async def test_admin_commands_need_an_executor(config_file: ConfigFile,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(config_file.config()) as server:
        server.admin_executor = None
        with caplog.at_level(logging.WARNING, logger="conduwuit.server"):
            assert not await server.run_admin_commands(["server uptime"], "admin_signal_execute")
        assert "admin commands are unavailable" in caplog.text
        ran: list[str] = []

        async def executor(command: str) -> str:
            ran.append(command)
            if command == "boom":
                raise RuntimeError("no such command")
            return "**Error**: refused" if command == "refused" else "ok"

        server.admin_executor = executor
        assert await server.run_admin_commands(["a", "b"], "admin_signal_execute")
        assert not await server.run_admin_commands(["boom", "c"], "admin_signal_execute")
        assert not await server.run_admin_commands(["refused"], "admin_signal_execute")
        assert ran == ["a", "b", "boom", "c", "refused"]


async def test_admin_execute_runs_at_startup_and_a_failure_stops_the_server(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = ConfigFile(tmp_path, admin_execute=["server uptime", "no-such-command"]).config()
    server = Server(config, notifier=Notifier({}))
    with caplog.at_level(logging.INFO, logger="conduwuit.server"), trio.fail_after(10):
        await server.run()  # returns by itself: the failed command shut it down
    assert "admin_execute: server uptime" in caplog.text
    assert "admin_execute: 'no-such-command' failed" in caplog.text
    assert server.stopping.is_set()


async def test_admin_execute_errors_can_be_ignored(tmp_path: Path) -> None:
    config = ConfigFile(tmp_path, admin_execute=["no-such-command"],
                        admin_execute_errors_ignore=True).config()
    async with running_server(config) as server:
        await trio.sleep(0.2)
        assert not server.stopping.is_set()


# --- a real process and real signals ----------------------------------------------------


def _http(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an open keep-alive connection."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    assert b"connection: close" not in head.lower()
    return int(head.split()[1]), body


def _wait_after(server: ServerProcess, first: str, then: str, timeout: float = 20.0) -> None:
    """Wait until ``then`` arrives after a ``first`` that arrives after what was seen."""
    seen = len(server.collect())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = server.collect()[seen:]
        if first in lines and then in lines[lines.index(first):]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {first} then {then}; log:\n{server.log()}")


def _wait_log(server: ServerProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged; log:\n{server.log()}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigusr1_reloads_a_running_process(tmp_path: Path) -> None:
    file = ConfigFile(tmp_path, log="info", keep_alive_timeout=60,
                      admin_signal_execute=["server uptime"])
    server = ServerProcess(tmp_path, ["-c", str(file.path)], module="conduwuit")
    try:
        server.wait_for("READY=1")
        port = file.base["port"]
        with socket.create_connection(("127.0.0.1", port)) as conn:
            assert _http(conn, AVAILABLE + "evil1")[0] == 200
            assert "GET /_matrix/client/v3/register/available" not in server.log()

            file.rewrite(log="debug", forbidden_usernames=["^evil"])
            server.signal(signal.SIGUSR1)
            _wait_after(server, "RELOADING=1", "READY=1")
            _wait_log(server, "config reloaded from")

            # Same connection, new rules; debug lines now show each request.
            status, body = _http(conn, AVAILABLE + "evil1")
            assert status == 403 and b"M_FORBIDDEN" in body
            _wait_log(server, "GET /_matrix/client/v3/register/available -> 403 in")

            file.rewrite(log="debug", forbidden_usernames=["^evil"], server_name="other.example")
            server.signal(signal.SIGUSR1)
            _wait_after(server, "RELOADING=1", "READY=1")
            _wait_log(server, "Config reload refused: server_name cannot change")
            status, body = _http(conn, "/_matrix/client/versions")
            assert status == 200

            server.signal(signal.SIGUSR2)
            _wait_log(server, "admin_signal_execute: server uptime")
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.close()


@pytest.mark.slow
def test_admin_restart_starts_the_process_again(tmp_path: Path) -> None:
    """`server restart` (here through SIGUSR2): a graceful stop, then the same PID serves
    again on the same database."""
    file = ConfigFile(tmp_path, log="info", admin_signal_execute=["server restart"])
    server = ServerProcess(tmp_path, ["-c", str(file.path)], module="conduwuit")
    try:
        server.wait_for("READY=1")
        pid = server.proc.pid
        server.signal(signal.SIGUSR2)
        _wait_after(server, "STOPPING=1", "READY=1", timeout=40)
        _wait_log(server, "conduwuit restarting")
        assert server.proc.pid == pid and server.proc.poll() is None
        port = file.base["port"]
        r = httpx.get(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=10)
        assert r.status_code == 200
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.close()
