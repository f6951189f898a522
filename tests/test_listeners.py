"""Listeners under a real Hypercorn: several at once, TLS, keep-alive and 413 regressions."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from tests.support.config import free_port, make_config
from tests.support.inprocess import running_server


async def test_two_ports_and_unix_socket_answer_at_once(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    sock_path = tmp_path / "conduwuit.sock"
    config = make_config(tmp_path, port=ports, unix_socket_path=str(sock_path),
                         unix_socket_perms=660)
    async with running_server(config) as server:
        assert len(server.bound) == 3
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
        results: dict[str, int] = {}

        async def fetch(label: str, client: httpx.AsyncClient) -> None:
            async with client:
                r = await client.get("/_conduwuit/server_version")
                results[label] = r.status_code

        async with trio.open_nursery() as nursery:
            for port in ports:
                nursery.start_soon(fetch, str(port),
                                   httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}"))
            unix = httpx.AsyncHTTPTransport(uds=str(sock_path))
            nursery.start_soon(fetch, "unix",
                               httpx.AsyncClient(base_url="http://localhost", transport=unix))
        assert results == {str(ports[0]): 200, str(ports[1]): 200, "unix": 200}


async def test_tls_listener(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    config = make_config(tmp_path, tls={"certs": str(cert_path), "key": str(key_path)})
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with running_server(config) as server:
        assert server.bound[0].startswith("https://")
        async with httpx.AsyncClient(verify=client_ctx) as client:
            r = await client.get(f"{server.bound[0]}/_matrix/client/versions")
            assert r.status_code == 200 and "versions" in r.json()


async def _read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head


async def test_idle_keep_alive_closes_after_timeout(tmp_path: Path) -> None:
    config = make_config(tmp_path, keep_alive_timeout=1)
    async with running_server(config) as server:
        port = int(server.bound[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await _read_response(stream)
        assert head.startswith(b"HTTP/1.1 200")
        began = trio.current_time()
        with trio.fail_after(5):
            assert await stream.receive_some(1) == b""  # the server closed the idle connection
        assert trio.current_time() - began >= 0.8
        await stream.aclose()


async def test_413_then_reuse_of_the_connection(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_request_size=1024)
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=server.bound[0], limits=httpx.Limits(max_connections=1)
    ) as client:
        for _ in range(3):
            with trio.fail_after(5):
                r = await client.post("/_matrix/client/v3/login", content=b"x" * 200_000)
                assert (r.status_code, r.json()["errcode"]) == (413, "M_TOO_LARGE")
                r = await client.get("/_matrix/client/versions")
                assert r.status_code == 200


async def test_busy_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    from conduwuit.server import Server, StartupError

    with trio.socket.socket() as blocker:
        await blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = make_config(tmp_path, port=port)
        server = Server(config)
        with pytest.raises(StartupError) as refused:
            await server.run()
        assert f"127.0.0.1:{port}" in str(refused.value)
        assert "Address already in use" in str(refused.value)
        assert server.store is not None and server.store.closed
