"""Application services: registrations, identity assertion, exclusive namespaces,
transactions (persisted, retried, after restarts), queries, ping, network directories.

A fake application service runs on loopback (a plain ASGI app under Hypercorn) and
records every request the server makes to it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs
import httpx
import orjson
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from conduwuit.config import Config
from conduwuit.server import Server
from conduwuit.services.appservices import RegistrationError, parse_registration
from tests.support.config import free_port, make_config
from tests.support.inprocess import base_url, running_server
from tests.support.json_app import headers_of, json_app
from tests.support.users import make_user

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
AS_TOKEN = "as-secret-token"
HS_TOKEN = "hs-secret-token"


def registration(port: int | None, *, reg_id: str = "bridge", as_token: str = AS_TOKEN,
                 ephemeral: bool = False, extra: str = "") -> str:
    url = f"http://127.0.0.1:{port}" if port is not None else "null"
    return f"""
id: {reg_id}
url: {url}
as_token: {as_token}
hs_token: {HS_TOKEN}
sender_localpart: {reg_id}bot
rate_limited: false
receive_ephemeral: {"true" if ephemeral else "false"}
namespaces:
  users:
    - exclusive: true
      regex: "@_{reg_id}_.*:test\\\\.local"
  aliases:
    - exclusive: true
      regex: "#_{reg_id}_.*:test\\\\.local"
  rooms: []
{extra}"""


@attrs.define
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Handler = Callable[[Seen], Awaitable[tuple[int, Any] | None]]


@attrs.define
class FakeAppservice:
    port: int
    requests: list[Seen] = attrs.field(factory=list)
    handler: Handler | None = None
    transaction_status: int = 200
    arrived: trio.Event = attrs.field(factory=trio.Event)

    def transactions(self) -> list[Seen]:
        return [r for r in self.requests if r.path.startswith("/_matrix/app/v1/transactions/")]

    def events(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for txn in self.transactions():
            for event in txn.body["events"]:
                seen[event["event_id"]] = event
        return list(seen.values())

    def ephemeral(self) -> list[dict[str, Any]]:
        return [e for t in self.transactions() for e in t.body.get("ephemeral", [])]

    async def wait_for(self, check: Callable[[], bool], timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while not check():
                self.arrived = trio.Event()
                await self.arrived.wait()

    async def handle(self, seen: Seen) -> tuple[int, Any]:
        self.requests.append(seen)
        self.arrived.set()
        if self.handler is not None:
            answer = await self.handler(seen)
            if answer is not None:
                return answer
        if seen.path.startswith("/_matrix/app/v1/transactions/"):
            return self.transaction_status, {}
        if seen.path.startswith(("/_matrix/app/v1/users/", "/_matrix/app/v1/rooms/")):
            return 404, {"errcode": "M_NOT_FOUND"}
        return 200, {}


@asynccontextmanager
async def fake_appservice(port: int | None = None,
                          fake: FakeAppservice | None = None) -> AsyncIterator[FakeAppservice]:
    """A fake AS on 127.0.0.1 (``port`` reused to bring one back after downtime)."""
    fake = fake or FakeAppservice(port or free_port())

    async def handle(scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        query = scope.get("query_string", b"").decode()
        path = unquote(scope["raw_path"].decode()) + (f"?{query}" if query else "")
        return await fake.handle(Seen(scope["method"], path, headers_of(scope),
                                      orjson.loads(body) if body else None))

    app = json_app(handle)

    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{fake.port}"]
    config.accesslog = None
    config.graceful_timeout = 0.2
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve, app, config,  # type: ignore[arg-type]
                                              shutdown_trigger=stop.wait))
        try:
            yield fake
        finally:
            stop.set()


def as_headers(token: str = AS_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path, appservice_timeout=2)


@asynccontextmanager
async def server_and_client(config: Config) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=base_url(server), timeout=20) as client:
        yield server, client


def services(server: Server) -> Any:
    assert server.services is not None
    return server.services


async def as_register(client: httpx.AsyncClient, localpart: str,
                      token: str = AS_TOKEN) -> httpx.Response:
    return await client.post(f"{V3}/register", headers=as_headers(token), json={
        "type": "m.login.application_service", "username": localpart, "inhibit_login": True})


# --- registrations -----------------------------------------------------------------------

def test_registration_parsing_and_its_errors() -> None:
    reg = parse_registration(registration(1234, ephemeral=True))
    assert (reg.id, reg.url, reg.sender_localpart) == ("bridge", "http://127.0.0.1:1234",
                                                      "bridgebot")
    assert reg.receive_ephemeral and not reg.rate_limited
    assert reg.is_user("@_bridge_x:test.local", "test.local")
    assert reg.is_user("@bridgebot:test.local", "test.local")
    assert not reg.is_user("@alice:test.local", "test.local")
    assert reg.exclusive_alias("#_bridge_room:test.local")
    assert parse_registration(registration(None)).url is None
    legacy = registration(1, extra="de.sorunome.msc2409.push_ephemeral: true")
    assert parse_registration(legacy).receive_ephemeral
    bad = {
        "not: [valid": "not valid YAML",
        "- a list": "must be a YAML mapping",
        "url: null\nas_token: a\nhs_token: b\nsender_localpart: c\nnamespaces: {}": "'id'",
        registration(1).replace("url: http://127.0.0.1:1\n", ""): "'url' is required",
        registration(1).replace("http://127.0.0.1:1", "ftp://x"): "http(s)",
        registration(1).replace("sender_localpart: bridgebot", "sender_localpart: 'Bad Bot'"):
            "not a valid user localpart",
        registration(1).replace('regex: "@_bridge_.*:test\\\\.local"', 'regex: "(["'):
            "does not compile",
        registration(1).replace("exclusive: true", "exclusive: maybe", 1): "true or false",
        registration(1).replace("rooms: []", "rooms: {}"): "namespaces.rooms must be a list",
        registration(1).replace("rooms: []", "things: []"): "unknown namespace kind",
    }
    for text, message in bad.items():
        with pytest.raises(RegistrationError, match=re.escape(message)):
            parse_registration(text)


async def test_register_list_show_unregister(config: Config) -> None:
    async with server_and_client(config) as (server, client):
        appservices = services(server).appservices
        text = registration(free_port())
        assert appservices.register(text) == "bridge"
        assert appservices.list() == ["bridge"]
        assert appservices.show("bridge") == text
        with pytest.raises(ValueError, match="already exists"):
            appservices.register(text)
        with pytest.raises(ValueError, match="as_token already used"):
            appservices.register(registration(1, reg_id="other"))
        with pytest.raises(ValueError, match="not valid YAML"):
            appservices.register("a: [")
        with pytest.raises(ValueError, match="no application service"):
            appservices.show("nope")
        with pytest.raises(ValueError, match="no application service"):
            appservices.unregister("nope")
        r = await client.get(f"{V3}/account/whoami", headers=as_headers())
        assert r.json()["user_id"] == "@bridgebot:test.local"
        appservices.unregister("bridge")
        assert appservices.list() == []
        r = await client.get(f"{V3}/account/whoami", headers=as_headers())
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # Stored registrations survive a restart.
    async with server_and_client(config) as (server, client):
        assert services(server).appservices.list() == []
        services(server).appservices.register(registration(None, reg_id="kept",
                                                           as_token="t2"))
    async with server_and_client(config) as (server, client):
        assert services(server).appservices.list() == ["kept"]


async def test_registration_files_from_the_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(registration(None, reg_id="filed", as_token="file-token"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [")
    config = make_config(tmp_path, appservice_registration_files=[
        str(good), str(broken), str(tmp_path / "missing.yaml")])
    async with server_and_client(config) as (server, client):
        appservices = services(server).appservices
        assert appservices.list() == ["filed"]  # the broken and missing files are skipped
        r = await client.get(f"{V3}/account/whoami", headers=as_headers("file-token"))
        assert r.json()["user_id"] == "@filedbot:test.local"
        with pytest.raises(ValueError, match="registration file"):
            appservices.unregister("filed")
        with pytest.raises(ValueError, match="already exists"):
            appservices.register(registration(None, reg_id="filed", as_token="x"))


# --- authentication, registration, login -------------------------------------------------

async def test_identity_assertion(config: Config) -> None:
    async with server_and_client(config) as (server, client):
        alice = await make_user(server, "alice")
        services(server).appservices.register(registration(None))
        r = await client.get(f"{V3}/account/whoami", headers=as_headers())
        assert r.json() == {"user_id": "@bridgebot:test.local", "is_guest": False}
        # In the namespace, but not registered yet.
        r = await client.get(f"{V3}/account/whoami", headers=as_headers(),
                             params={"user_id": "@_bridge_a:test.local"})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        assert (await as_register(client, "_bridge_a")).status_code == 200
        r = await client.get(f"{V3}/account/whoami", headers=as_headers(),
                             params={"user_id": "@_bridge_a:test.local"})
        assert r.json()["user_id"] == "@_bridge_a:test.local"
        # Outside its namespaces.
        r = await client.get(f"{V3}/account/whoami", headers=as_headers(),
                             params={"user_id": alice.user_id})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_EXCLUSIVE")
        r = await client.get(f"{V3}/account/whoami", headers=as_headers(),
                             params={"user_id": "not a user id"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
        # Device masquerading (MSC4326): the device must exist.
        r = await client.get(f"{V3}/account/whoami", headers=as_headers(),
                             params={"user_id": "@_bridge_a:test.local", "device_id": "NOPE"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_UNKNOWN_DEVICE")
        login = await client.post(f"{V3}/login", headers=as_headers(), json={
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "_bridge_a"}})
        assert login.status_code == 200, login.text
        device = login.json()["device_id"]
        r = await client.get(f"{V3}/account/whoami", headers=as_headers(),
                             params={"user_id": "@_bridge_a:test.local",
                                     "org.matrix.msc3202.device_id": device})
        assert r.json()["device_id"] == device
        # A user's own token ignores user_id.
        r = await client.get(f"{V3}/account/whoami", headers=alice.headers,
                             params={"user_id": "@_bridge_a:test.local"})
        assert r.json()["user_id"] == alice.user_id


async def test_appservice_registration_and_login(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_registration=True, **{
        "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse": True})
    async with server_and_client(config) as (server, client):
        services(server).appservices.register(registration(None))
        await make_user(server, "alice")
        r = await as_register(client, "_bridge_one")
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "@_bridge_one:test.local"
        assert "access_token" not in r.json()  # inhibit_login
        assert not services(server).users.is_admin("@_bridge_one:test.local")
        r = await as_register(client, "_bridge_one")
        assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")
        r = await as_register(client, "outsider")
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = await as_register(client, "_bridge_x", token="wrong")
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        r = await client.post(f"{V3}/register", json={
            "type": "m.login.application_service", "username": "_bridge_y"})
        assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
        r = await client.post(f"{V3}/register", headers=as_headers(),
                              json={"type": "m.login.application_service"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")
        # Normal users cannot take names in an exclusive namespace.
        r = await client.post(f"{V3}/register", json={
            "username": "_bridge_mine", "password": "a long password 123",
            "auth": {"type": "m.login.dummy"}})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = await client.get(f"{V3}/register/available", params={"username": "_bridge_z"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = await client.get(f"{V3}/register/available", params={"username": "bridgebot"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        # Login as a namespace user; not as anyone else.
        flows = (await client.get(f"{V3}/login")).json()["flows"]
        assert {"type": "m.login.application_service"} in flows
        r = await client.post(f"{V3}/login", headers=as_headers(), json={
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": "alice"}})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        alice_login = await client.post(f"{V3}/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "password"})
        r = await client.post(
            f"{V3}/login", headers=as_headers(alice_login.json()["access_token"]),
            json={"type": "m.login.application_service",
                  "identifier": {"type": "m.id.user", "user": "_bridge_one"}})
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_exclusive_alias_namespace(config: Config) -> None:
    async with server_and_client(config) as (server, client):
        alice = await make_user(server, "alice")
        services(server).appservices.register(registration(None))
        room = (await client.post(f"{V3}/createRoom", headers=alice.headers, json={})).json()
        r = await client.put(f"{V3}/directory/room/%23_bridge_x:test.local",
                             headers=alice.headers, json={"room_id": room["room_id"]})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = await client.post(f"{V3}/createRoom", headers=alice.headers,
                              json={"room_alias_name": "_bridge_y"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
        r = await client.put(f"{V3}/directory/room/%23free:test.local",
                             headers=alice.headers, json={"room_id": room["room_id"]})
        assert r.status_code == 200
        # The AS's own users may.
        r = await client.post(f"{V3}/createRoom", headers=as_headers(),
                              json={"room_alias_name": "_bridge_y"})
        assert r.status_code == 200, r.text


# --- transactions ------------------------------------------------------------------------

async def test_transactions_carry_events_of_interest(config: Config) -> None:
    async with fake_appservice() as fake, server_and_client(config) as (server, client):
        alice = await make_user(server, "alice")
        services(server).appservices.register(registration(fake.port, ephemeral=True))
        bob = await make_user(server, "bob")
        # A room without AS users: nothing is sent.
        quiet = (await client.post(f"{V3}/createRoom", headers=bob.headers, json={})).json()
        await client.put(f"{V3}/rooms/{quiet['room_id']}/send/m.room.message/q1",
                         headers=bob.headers, json={"msgtype": "m.text", "body": "private"})
        room = (await client.post(f"{V3}/createRoom", headers=alice.headers,
                                  json={"preset": "public_chat"})).json()["room_id"]
        # An invite of an AS user interests the AS (state_key in its namespace).
        r = await client.post(f"{V3}/rooms/{room}/invite", headers=alice.headers,
                              json={"user_id": "@bridgebot:test.local"})
        assert r.status_code == 200, r.text
        await fake.wait_for(lambda: any(e["type"] == "m.room.member" for e in fake.events()))
        txn = fake.transactions()[0]
        assert txn.method == "PUT"
        assert txn.headers["authorization"] == f"Bearer {HS_TOKEN}"
        assert "access_token" not in txn.path  # the legacy query parameter is off
        r = await client.post(f"{V3}/join/{room}", headers=as_headers())
        assert r.status_code == 200, r.text
        # Now the AS has a member in the room: every event there is of interest.
        r = await client.put(f"{V3}/rooms/{room}/send/m.room.message/t1", headers=alice.headers,
                             json={"msgtype": "m.text", "body": "hello bridge"})
        message_id = r.json()["event_id"]
        await fake.wait_for(lambda: any(e["event_id"] == message_id for e in fake.events()))
        event = next(e for e in fake.events() if e["event_id"] == message_id)
        assert event["room_id"] == room and event["content"]["body"] == "hello bridge"
        assert "hashes" not in event and "signatures" not in event  # client format
        assert not any(e["room_id"] == quiet["room_id"] for e in fake.events())
        # Ephemeral: typing in a room the AS is in (receive_ephemeral).
        r = await client.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", headers=alice.headers,
                             json={"typing": True, "timeout": 10000})
        assert r.status_code == 200
        await fake.wait_for(lambda: any(e["type"] == "m.typing" for e in fake.ephemeral()))
        typing = next(e for e in fake.ephemeral() if e["type"] == "m.typing")
        assert typing == {"type": "m.typing", "room_id": room,
                          "content": {"user_ids": [alice.user_id]}}
        r = await client.post(f"{V3}/rooms/{room}/receipt/m.read/{message_id}",
                              headers=alice.headers, json={})
        await fake.wait_for(lambda: any(e["type"] == "m.receipt" for e in fake.ephemeral()))
        receipt = next(e for e in fake.ephemeral() if e["type"] == "m.receipt")
        assert receipt["content"][message_id]["m.read"][alice.user_id]["ts"] > 0
        # The queue is empty once everything was accepted.
        sender = services(server).appservices.sender
        with trio.fail_after(5):
            while sender.status("bridge").queued:
                await trio.sleep(0.05)


async def test_room_namespace_and_no_url(config: Config) -> None:
    rooms_ns = "bridge"
    async with fake_appservice() as fake, server_and_client(config) as (server, client):
        alice = await make_user(server, "alice")
        room = (await client.post(f"{V3}/createRoom", headers=alice.headers, json={})).json()
        text = registration(fake.port).replace(
            "rooms: []", f'rooms:\n    - exclusive: false\n      regex: "{room["room_id"]}"')
        appservices = services(server).appservices
        assert appservices.register(text) == rooms_ns
        appservices.register(registration(None, reg_id="mute", as_token="mute-token"))
        r = await client.put(f"{V3}/rooms/{room['room_id']}/send/m.room.message/x",
                             headers=alice.headers, json={"msgtype": "m.text", "body": "hi"})
        await fake.wait_for(lambda: any(e["event_id"] == r.json()["event_id"]
                                        for e in fake.events()))
        # An AS without a URL gets no traffic and queues nothing.
        assert appservices.sender.status("mute").queued == 0


async def test_failures_back_off_and_retry_the_same_transaction(config: Config) -> None:
    async with fake_appservice() as fake, server_and_client(config) as (server, client):
        fake.transaction_status = 500
        appservices = services(server).appservices
        alice = await make_user(server, "alice")
        appservices.register(registration(fake.port))
        appservices.sender.backoff_base = 0.2
        r = await client.post(f"{V3}/createRoom", headers=alice.headers,
                              json={"invite": ["@bridgebot:test.local"]})
        assert r.status_code == 200
        await fake.wait_for(lambda: len(fake.transactions()) >= 3)
        paths = {t.path for t in fake.transactions()}
        assert len(paths) == 1  # retries keep the transaction id ...
        ids = [[e["event_id"] for e in t.body["events"]] for t in fake.transactions()]
        assert ids[0] and all(i == ids[0] for i in ids)  # ... and its events
        status = appservices.sender.status("bridge")
        assert status.failures >= 2 and status.last_error == "answered 500"
        fake.transaction_status = 200
        with trio.fail_after(10):
            while appservices.sender.status("bridge").queued:
                await trio.sleep(0.05)
        assert appservices.sender.status("bridge").failures == 0


async def test_queued_transactions_survive_a_restart(config: Config) -> None:
    port = free_port()
    async with server_and_client(config) as (server, client):
        alice = await make_user(server, "alice")
        services(server).appservices.register(registration(port))
        room = (await client.post(f"{V3}/createRoom", headers=alice.headers,
                                  json={"invite": ["@bridgebot:test.local"]})).json()["room_id"]
        with trio.fail_after(5):  # the AS is down: the invite waits in the queue
            while not services(server).appservices.sender.status("bridge").failures:
                await trio.sleep(0.05)
    async with server_and_client(config) as (server, client):
        assert services(server).appservices.sender.status("bridge").queued >= 1
        async with fake_appservice(port) as fake:
            services(server).appservices.sender.retry_now()
            await fake.wait_for(lambda: any(
                e["type"] == "m.room.member" and e["room_id"] == room for e in fake.events()))


# --- queries -----------------------------------------------------------------------------

async def test_user_and_alias_queries(config: Config) -> None:
    async with fake_appservice() as fake, server_and_client(config) as (server, client):
        services(server).appservices.register(registration(fake.port))

        async def answer(seen: Seen) -> tuple[int, Any] | None:
            if seen.path == "/_matrix/app/v1/users/@_bridge_new:test.local":
                r = await as_register(client, "_bridge_new")
                assert r.status_code == 200, r.text
                return 200, {}
            if seen.path == "/_matrix/app/v1/rooms/#_bridge_chan:test.local":
                r = await client.post(f"{V3}/createRoom", headers=as_headers(), json={
                    "room_alias_name": "_bridge_chan", "preset": "public_chat"})
                assert r.status_code == 200, r.text
                return 200, {}
            return None

        fake.handler = answer
        alice = await make_user(server, "alice")
        r = await client.get(f"{V3}/profile/@_bridge_new:test.local")
        assert r.status_code == 200, r.text
        assert r.json()["displayname"].startswith("_bridge_new")
        r = await client.get(f"{V3}/profile/@_bridge_ghost:test.local")
        assert r.status_code == 404  # asked, not created
        assert any(s.path.endswith("/users/@_bridge_ghost:test.local") for s in fake.requests)
        r = await client.get(f"{V3}/profile/@nobody:test.local")
        assert r.status_code == 404
        assert not any(s.path.endswith("@nobody:test.local") for s in fake.requests)
        r = await client.get(f"{V3}/directory/room/%23_bridge_chan:test.local")
        assert r.status_code == 200, r.text
        room_id = r.json()["room_id"]
        query = next(s for s in fake.requests if "/rooms/" in s.path)
        assert query.headers["authorization"] == f"Bearer {HS_TOKEN}"
        r = await client.get(f"{V3}/directory/room/%23_bridge_none:test.local")
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
        # Joining by an alias the AS creates on demand.
        fake.handler = None
        r = await client.post(f"{V3}/join/%23_bridge_chan:test.local", headers=alice.headers)
        assert r.json()["room_id"] == room_id


# --- ping and network directories --------------------------------------------------------

async def test_ping(tmp_path: Path) -> None:
    config = make_config(tmp_path, appservice_timeout=1)
    async with fake_appservice() as fake, server_and_client(config) as (server, client):
        appservices = services(server).appservices
        appservices.register(registration(fake.port))
        alice = await make_user(server, "alice")
        appservices.register(registration(None, reg_id="nourl", as_token="nourl-token"))
        r = await client.post(f"{V1}/appservice/bridge/ping", headers=as_headers(),
                              json={"transaction_id": "meow"})
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["duration_ms"], int)
        ping = next(s for s in fake.requests if s.path == "/_matrix/app/v1/ping")
        assert ping.method == "POST" and ping.body == {"transaction_id": "meow"}
        assert ping.headers["authorization"] == f"Bearer {HS_TOKEN}"
        r = await client.post(f"{V1}/appservice/nourl/ping", headers=as_headers(), json={})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        r = await client.post(f"{V1}/appservice/bridge/ping", headers=alice.headers, json={})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        r = await client.post(f"{V1}/appservice/nourl/ping", headers=as_headers("nourl-token"),
                              json={})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_URL_NOT_SET")
        r = await client.post(f"{V1}/appservice/bridge/ping", headers=as_headers(),
                              json={"transaction_id": 5})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")

        async def refuse(seen: Seen) -> tuple[int, Any] | None:
            return 403, {"errcode": "M_FORBIDDEN"}

        fake.handler = refuse
        r = await client.post(f"{V1}/appservice/bridge/ping", headers=as_headers(), json={})
        assert r.status_code == 502
        assert r.json()["errcode"] == "M_BAD_STATUS" and r.json()["status"] == 403
        assert "M_FORBIDDEN" in r.json()["body"]

        async def hang(seen: Seen) -> tuple[int, Any] | None:
            await trio.sleep(5)
            return 200, {}

        fake.handler = hang
        r = await client.post(f"{V1}/appservice/bridge/ping", headers=as_headers(), json={})
        assert (r.status_code, r.json()["errcode"]) == (504, "M_CONNECTION_TIMEOUT")
    # The AS is gone now.
    async with server_and_client(config) as (server, client):
        r = await client.post(f"{V1}/appservice/bridge/ping", headers=as_headers(), json={})
        assert (r.status_code, r.json()["errcode"]) == (502, "M_CONNECTION_FAILED")


async def test_appservice_room_directory(config: Config) -> None:
    async with server_and_client(config) as (server, client):
        alice = await make_user(server, "alice")
        services(server).appservices.register(registration(None))
        room = (await client.post(f"{V3}/createRoom", headers=alice.headers,
                                  json={"name": "Bridged"})).json()["room_id"]
        path = f"{V3}/directory/list/appservice/irc/{room}"
        r = await client.put(path, headers=alice.headers, json={"visibility": "public"})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        r = await client.put(path, headers=as_headers(), json={"visibility": "sideways"})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
        r = await client.put(f"{V3}/directory/list/appservice/irc/!nope:test.local",
                             headers=as_headers(), json={"visibility": "public"})
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
        r = await client.put(path, headers=as_headers(), json={"visibility": "public"})
        assert r.status_code == 200, r.text

        async def listed(**body: Any) -> list[str]:
            r = await client.post(f"{V3}/publicRooms", headers=alice.headers, json=body)
            assert r.status_code == 200, r.text
            return [c["room_id"] for c in r.json()["chunk"]]

        assert await listed() == []
        assert await listed(third_party_instance_id="irc") == [room]
        assert await listed(third_party_instance_id="bridge|irc") == [room]
        assert await listed(third_party_instance_id="other") == []
        assert await listed(include_all_networks=True) == [room]
        r = await client.post(f"{V3}/publicRooms", headers=alice.headers,
                              json={"third_party_instance_id": "irc",
                                    "include_all_networks": True})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
        r = await client.put(path, headers=as_headers(), json={"visibility": "private"})
        assert await listed(third_party_instance_id="irc") == []
