"""The real process: start, serve, SIGTERM with requests in flight, restart, refusals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.config import free_port, write_config
from tests.support.process import REPO, ServerProcess

pytestmark = pytest.mark.slow

TOKEN = re.compile(r"one-time registration token: (\S+)")


def _get_in_thread(url: str, results: dict[str, object], key: str) -> threading.Thread:
    def run() -> None:
        try:
            r = httpx.get(url, timeout=30)
            results[key] = (r.status_code, r.json(), time.monotonic())
        except Exception as exc:  # the assertion below reports it
            results[key] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _idle_keep_alive(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while b"v1.1" not in data:
        data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200")
    return sock


def test_sigterm_drains_in_flight_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    grace = 10
    config = write_config(tmp_path, port=port, client_request_timeout=grace,
                          keep_alive_timeout=60)
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(tmp_path, ["-c", str(config)])
    try:
        server.wait_for("READY=1")
        token = TOKEN.search(server.log())
        assert token, server.log()
        idle = _idle_keep_alive(port)
        results: dict[str, object] = {}
        threads = [_get_in_thread(f"{base}/_test/slow?seconds=2", results, "slow"),
                   _get_in_thread(f"{base}/_test/longpoll", results, "longpoll")]
        time.sleep(0.7)  # both requests are now being handled
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        status, body, when = results["longpoll"]  # type: ignore[misc]
        assert (status, body) == (200, {"woken": True})
        assert when - sent < 1.0, "long-poll was not woken promptly"
        status, body, _ = results["slow"]  # type: ignore[misc]
        assert (status, body) == (200, {"done": True})
        assert server.wait(grace) == 0
        assert time.monotonic() - sent < grace
        lines = server.collect()
        assert lines.index("STOPPING=1") > lines.index("READY=1")
        idle.settimeout(1)
        assert idle.recv(1) == b""  # the idle keep-alive connection was closed
        assert "Database closed" in server.log()
    finally:
        server.close()

    # What the first run wrote is there on restart: the same first-run token.
    again = ServerProcess(tmp_path, ["-c", str(config)])
    try:
        again.wait_for("READY=1")
        assert TOKEN.search(again.log()).group(1) == token.group(1)  # type: ignore[union-attr]
        again.signal(signal.SIGINT)
        assert again.wait() == 0
    finally:
        again.close()


def test_second_signal_forces_a_fast_exit_that_closes_the_store(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port, client_request_timeout=60)
    server = ServerProcess(tmp_path, ["-c", str(config)])
    try:
        server.wait_for("READY=1")
        results: dict[str, object] = {}
        thread = _get_in_thread(f"http://127.0.0.1:{port}/_test/slow?seconds=50", results, "r")
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        time.sleep(0.5)
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 0
        assert time.monotonic() - sent < 5
        assert "Database closed" in server.log()
        thread.join(5)
    finally:
        server.close()
    again = ServerProcess(tmp_path, ["-c", str(config)])
    try:
        again.wait_for("READY=1")  # the lock was released and the database is sound
        again.signal()
        assert again.wait() == 0
    finally:
        again.close()


def test_database_in_use_by_another_process(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = ServerProcess(tmp_path, ["-c", str(config)])
    try:
        first.wait_for("READY=1")
        (tmp_path / "second").mkdir()
        other = write_config(tmp_path / "second", database_path=str(tmp_path / "db"))
        second = ServerProcess(tmp_path, ["-c", str(other)])
        try:
            assert second.wait() == 1
            log = second.log()
            assert "is in use by another conduwuit process" in log
            assert "Traceback" not in log
        finally:
            second.close()
        first.signal()
        assert first.wait() == 0
    finally:
        first.close()


def _run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conduwuit", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})})


def test_invalid_value_exits_1_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, port="abc")
    result = _run_cli(tmp_path, "-c", str(config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "port" in lines[0] and "abc" in lines[0]


def test_open_registration_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, allow_registration=True)
    result = _run_cli(tmp_path, "-c", str(config))
    assert result.returncode == 1
    assert "allow_registration" in result.stderr and "Traceback" not in result.stderr


def test_embedded_default_first_run(tmp_path: Path) -> None:
    """No config at all: server_name localhost, ./conduwuit-db, a first-run token."""
    port = free_port()
    server = ServerProcess(tmp_path, [], module="conduwuit",
                           env={"CONDUWUIT_PORT": str(port)})
    try:
        server.wait_for("READY=1")
        r = httpx.get(f"http://127.0.0.1:{port}/_conduwuit/server_version")
        assert r.status_code == 200 and r.json()["name"] == "conduwuit"
        r = httpx.get(f"http://[::1]:{port}/_matrix/client/versions")
        assert r.status_code == 200
        log = server.log()
        assert f"listening on http://127.0.0.1:{port}, http://[::1]:{port}" in log
        assert "embedded default" in log
        assert TOKEN.search(log)
        assert (tmp_path / "conduwuit-db").is_dir()
        server.signal()
        assert server.wait() == 0
    finally:
        server.close()
