"""Fake Matrix servers on loopback for federation tests: keys, a notary, any route.

One Hypercorn ``serve()`` listens on one TLS port per fake server; a server's name is
``127.0.0.1:<its port>``, an IP literal, so reaching it needs no DNS. Each fake keeps
the requests it got and how many of them ran at once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import trio
import trustme
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from conduwuit.protocol import hashes, signing
from conduwuit.protocol.room_versions import RoomVersion
from conduwuit.services.federation.auth import authorization_header
from tests.support.json_app import headers_of, json_app

Handler = Callable[["FakeServer", "FakeRequest"], Awaitable[tuple[int, Any]]]


@attrs.frozen
class FakeRequest:
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@attrs.define(eq=False)
class FakeServer:
    name: str
    key: signing.SigningKey
    delay: float = 0.0
    valid_until_ts: int | None = None  # None: a day from now
    routes: dict[tuple[str, str], Handler] = attrs.field(factory=dict)
    # (method, path prefix) -> handler, for paths ending in an id (``/send/{txnId}``)
    prefix_routes: dict[tuple[str, str], Handler] = attrs.field(factory=dict)
    requests: list[FakeRequest] = attrs.field(factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # Servers whose keys this one answers for when used as a notary.
    notary_of: dict[str, FakeServer] = attrs.field(factory=dict)
    notary_key: signing.SigningKey | None = None  # sign notary answers with another key

    @property
    def key_id(self) -> str:
        return signing.key_id(self.key)

    def key_response(self) -> dict[str, Any]:
        valid = self.valid_until_ts
        body = {
            "server_name": self.name,
            "verify_keys": {self.key_id: {"key": signing.verify_key_base64(self.key)}},
            "old_verify_keys": {},
            "valid_until_ts": valid if valid is not None else int(time.time() * 1000) + 86400_000,
        }
        return signing.sign_json(body, self.name, self.key)

    def sign_pdu(self, pdu: dict[str, Any], version: RoomVersion) -> tuple[str, dict[str, Any]]:
        """Hash and sign a PDU as this server; returns (event id, signed PDU)."""
        signed = signing.sign_event(hashes.with_content_hash(pdu), self.name, self.key, version)
        return hashes.event_id_for(signed, version), signed

    def auth_header(self, destination: str, method: str, uri: str, content: Any = None) -> str:
        return authorization_header(self.name, destination, self.key, method, uri, content)

    def requests_to(self, path: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.uri.split("?")[0] == path]

    async def handle(self, request: FakeRequest) -> tuple[int, Any]:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await trio.sleep(self.delay)
            path = request.uri.split("?")[0]
            route = self.routes.get((request.method, path)) or next(
                (h for (m, p), h in self.prefix_routes.items()
                 if m == request.method and path.startswith(p)), None)
            if route is not None:
                return await route(self, request)
            if (request.method, path) == ("GET", "/_matrix/key/v2/server"):
                return 200, self.key_response()
            if (request.method, path) == ("POST", "/_matrix/key/v2/query") and self.notary_of:
                return 200, self._notary_answer(request.json() or {})
            return 404, {"errcode": "M_UNRECOGNIZED", "error": "no such fake route"}
        finally:
            self.in_flight -= 1

    def _notary_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        answers = []
        for server in body.get("server_keys", {}):
            known = self.notary_of.get(server)
            if known is not None:
                answers.append(signing.sign_json(known.key_response(), self.name,
                                                 self.notary_key or self.key))
        return {"server_keys": answers}


@attrs.define
class FakeFederation:
    servers: list[FakeServer]
    ca: trustme.CA

    def __getitem__(self, index: int) -> FakeServer:
        return self.servers[index]


def _tls_files(directory: Path, ca: trustme.CA) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = directory / "fake-cert.pem", directory / "fake-key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


@asynccontextmanager
async def fake_servers(directory: Path, count: int, *,
                       ca: trustme.CA | None = None) -> AsyncIterator[FakeFederation]:
    """``count`` fake servers, each on its own TLS port of 127.0.0.1."""
    ca = ca or trustme.CA()
    by_port: dict[int, FakeServer] = {}

    async def handle(scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        query = scope.get("query_string") or b""
        uri = scope["raw_path"].decode() + ("?" + query.decode() if query else "")
        server = by_port[scope["server"][1]]
        return await server.handle(FakeRequest(scope["method"], uri, headers_of(scope), body))

    app = json_app(handle)

    config = HypercornConfig()
    config.certfile, config.keyfile = _tls_files(directory, ca)
    config.bind = ["127.0.0.1:0"] * count
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        servers = []
        for index, url in enumerate(urls):
            port = int(url.rsplit(":", 1)[1])
            server = FakeServer(f"127.0.0.1:{port}", signing.generate_signing_key(f"fake{index}"))
            by_port[port] = server
            servers.append(server)
        try:
            yield FakeFederation(servers, ca)
        finally:
            stop.set()


INSECURE_TLS = (
    "allow_invalid_tls_certificates_yes_i_know_what_the_fuck_i_am_doing_with_this_"
    "and_i_know_this_is_insecure"
)


def federation_options(**overrides: Any) -> dict[str, Any]:
    """Config options for a server federating with fakes on loopback (self-signed TLS).

    ``trusted_servers`` is emptied: the default (matrix.org) must never be asked.
    """
    return {"ip_range_denylist": [], INSECURE_TLS: True, "trusted_servers": [], **overrides}


async def signed_request(client: httpx.AsyncClient, fake: FakeServer, method: str, path: str,
                         *, destination: str, params: dict[str, Any] | None = None,
                         body: Any = None) -> httpx.Response:
    """A request from ``fake`` to our server, signed (X-Matrix) over the exact path and
    query httpx puts on the wire."""
    request = client.build_request(method, path, params=params,
                                   json=body if body is not None else None)
    uri = request.url.raw_path.decode()
    request.headers["Authorization"] = fake.auth_header(destination, method, uri, body)
    return await client.send(request)


def sign_pdu(fake: FakeServer, pdu: dict[str, Any], version: Any) -> tuple[str, dict[str, Any]]:
    """``pdu`` hashed and signed by ``fake`` for its room version: (event id, signed PDU)."""
    return fake.sign_pdu(pdu, version)
