"""The push gateway job: a fake gateway on loopback receives the spec's notify payloads."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from conduwuit.nursery.jobs import JobState
from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.json_app import json_app
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create
from tests.test_unread import message

V3 = "/_matrix/client/v3"
NOTIFY = "/_matrix/push/v1/notify"


@attrs.define(eq=False)
class FakeGateway:
    """A push gateway on 127.0.0.1: records notify bodies, answers as told."""

    url: str = ""
    received: list[dict[str, Any]] = attrs.field(factory=list)
    rejected: set[str] = attrs.field(factory=set)  # pushkeys to answer as rejected
    failures: int = 0  # answer 500 this many times first
    arrived: trio.Event = attrs.field(factory=trio.Event)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while len(self.received) < count:
                await self.arrived.wait()
                self.arrived = trio.Event()

    async def handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        status, answer = 404, {}
        if scope["method"] == "POST" and scope["path"] == NOTIFY:
            if self.failures > 0:
                self.failures -= 1
                status, answer = 500, {"error": "try later"}
            else:
                payload = orjson.loads(body)
                self.received.append(payload)
                self.arrived.set()
                keys = [d["pushkey"] for d in payload["notification"]["devices"]]
                status, answer = 200, {"rejected": [k for k in keys if k in self.rejected]}
        return status, answer


@asynccontextmanager
async def fake_gateway() -> AsyncIterator[FakeGateway]:
    gateway = FakeGateway()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            functools.partial(serve, json_app(gateway.handle), config,  # type: ignore[arg-type]
                              shutdown_trigger=stop.wait))
        gateway.url = urls[0] + NOTIFY
        try:
            yield gateway
        finally:
            stop.set()


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    async with fake_gateway() as gateway:
        yield gateway


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # The gateway is on loopback, which the default ip_range_denylist refuses.
    async with running_server(make_config(tmp_path, ip_range_denylist=[])) as server:
        assert server.services is not None
        server.services.push.gateway.backoff_base = 0.05
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


async def set_pusher(client: httpx.AsyncClient, user: LoggedIn, url: str, pushkey: str = "key1",
                     **data: Any) -> None:
    r = await client.post(f"{V3}/pushers/set", headers=user.headers, json={
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url, **data}})
    assert r.status_code == 200, r.text


async def pushers(client: httpx.AsyncClient, user: LoggedIn) -> list[dict[str, Any]]:
    r = await client.get(f"{V3}/pushers", headers=user.headers)
    assert r.status_code == 200
    return list(r.json()["pushers"])


async def two_in_a_room(client: httpx.AsyncClient, server: Server) -> tuple[LoggedIn, LoggedIn,
                                                                            str]:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat", name="Mission Control")
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert r.status_code == 200
    r = await client.put(f"{V3}/profile/{alice.user_id}/displayname",
                         json={"displayname": "Major Tom"}, headers=alice.headers)
    assert r.status_code == 200
    return alice, bob, room


async def test_a_message_reaches_the_gateway(client: httpx.AsyncClient, server: Server,
                                             gateway: FakeGateway) -> None:
    statuses = {s.full_name: s.state for s in server.supervisor.statuses()}
    assert statuses["push/gateway"] is JobState.RUNNING
    alice, bob, room = await two_in_a_room(client, server)
    await set_pusher(client, bob, gateway.url, custom="kept")
    event_id = await message(client, alice, room, "floating in a most peculiar way")
    await gateway.wait_for(1)
    notification = gateway.received[0]["notification"]
    assert notification["event_id"] == event_id
    assert notification["room_id"] == room
    assert notification["type"] == "m.room.message"
    assert notification["sender"] == alice.user_id
    assert notification["sender_display_name"] == "Major Tom"
    assert notification["room_name"] == "Mission Control"
    assert notification["content"] == {"msgtype": "m.text",
                                       "body": "floating in a most peculiar way"}
    assert notification["counts"] == {"unread": 1}
    assert notification["prio"] == "high"  # a one-to-one room: the default sound
    [device] = notification["devices"]
    assert device["app_id"] == "org.example.app" and device["pushkey"] == "key1"
    assert isinstance(device["pushkey_ts"], int)
    assert device["data"] == {"custom": "kept"}  # everything but the url
    assert device["tweaks"] == {"sound": "default"}
    # The sender is not pushed their own messages; a second one bumps the badge.
    await message(client, alice, room, "again")
    await gateway.wait_for(2)
    assert gateway.received[1]["notification"]["counts"] == {"unread": 2}
    assert len(gateway.received) == 2


async def test_event_id_only_format(client: httpx.AsyncClient, server: Server,
                                    gateway: FakeGateway) -> None:
    alice, bob, room = await two_in_a_room(client, server)
    await set_pusher(client, bob, gateway.url, format="event_id_only")
    event_id = await message(client, alice, room, f"hello {bob.user_id}")
    await gateway.wait_for(1)
    notification = gateway.received[0]["notification"]
    assert set(notification) == {"event_id", "room_id", "counts", "devices", "prio"}
    assert notification["event_id"] == event_id
    assert notification["devices"][0]["data"] == {"format": "event_id_only"}
    assert notification["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}


async def test_rejected_pushkey_removes_the_pusher(client: httpx.AsyncClient, server: Server,
                                                   gateway: FakeGateway) -> None:
    alice, bob, room = await two_in_a_room(client, server)
    await set_pusher(client, bob, gateway.url, pushkey="stale")
    await set_pusher(client, bob, gateway.url, pushkey="fresh")
    gateway.rejected.add("stale")
    await message(client, alice, room, "hi")
    await gateway.wait_for(2)  # one request per pusher
    with trio.fail_after(5):
        while len(await pushers(client, bob)) != 1:
            await trio.sleep(0.02)
    assert [p["pushkey"] for p in await pushers(client, bob)] == ["fresh"]
    await message(client, alice, room, "still there?")
    await gateway.wait_for(3)
    assert gateway.received[2]["notification"]["devices"][0]["pushkey"] == "fresh"


async def test_a_failing_gateway_is_retried_with_backoff(client: httpx.AsyncClient,
                                                         server: Server,
                                                         gateway: FakeGateway) -> None:
    alice, bob, room = await two_in_a_room(client, server)
    await set_pusher(client, bob, gateway.url)
    gateway.failures = 2
    event_id = await message(client, alice, room, "are you there")
    await gateway.wait_for(1)
    assert gateway.received[0]["notification"]["event_id"] == event_id
    assert gateway.failures == 0


async def test_no_push_without_notify_or_pusher(client: httpx.AsyncClient, server: Server,
                                                gateway: FakeGateway) -> None:
    alice, bob, room = await two_in_a_room(client, server)
    carol = await make_user(server, "carol")
    await set_pusher(client, bob, gateway.url)
    await message(client, alice, room, "a bot speaks", msgtype="m.notice")  # suppressed
    await message(client, bob, room, "to carol, who has no pusher")
    shown = await message(client, alice, room, "this one")
    await gateway.wait_for(1)
    await trio.sleep(0.2)
    assert [p["notification"]["event_id"] for p in gateway.received] == [shown]
    assert carol.user_id  # carol is not in the room: nothing for her either
    # Removing the pusher (kind null) stops the pushes.
    r = await client.post(f"{V3}/pushers/set", headers=bob.headers, json={
        "kind": None, "app_id": "org.example.app", "pushkey": "key1"})
    assert r.status_code == 200
    assert await pushers(client, bob) == []
    await message(client, alice, room, "gone")
    await trio.sleep(0.2)
    assert len(gateway.received) == 1


async def test_denied_addresses_are_never_contacted(tmp_path: Path) -> None:
    async with fake_gateway() as gateway, running_server(make_config(tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        assert server.services is not None
        server.services.push.gateway.backoff_base = 0.01
        server.services.push.gateway.backoff_max = 0.05
        alice, bob, room = await two_in_a_room(client, server)
        await set_pusher(client, bob, gateway.url)  # 127.0.0.1 is in the default denylist
        await message(client, alice, room, "hi")
        await trio.sleep(0.5)
        assert gateway.received == []
