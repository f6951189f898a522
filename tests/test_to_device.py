"""Send-to-device: delivery through /sync, acknowledgement, idempotency, wake-ups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_login import uia

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=60) as client:
        yield client


async def second_device(server: Server, user: LoggedIn) -> LoggedIn:
    services = server.services
    assert services is not None
    device_id = services.devices.create(user.user_id, None, "second")
    token = services.devices.issue(user.user_id, device_id).access_token
    return LoggedIn(user.user_id, device_id, token, user.password)


async def send(client: httpx.AsyncClient, sender: LoggedIn, txn: str,
               messages: dict[str, Any], event_type: str = "m.test") -> httpx.Response:
    return await client.put(f"{V3}/sendToDevice/{event_type}/{txn}",
                            json={"messages": messages}, headers=sender.headers)


async def sync(client: httpx.AsyncClient, user: LoggedIn, **params: Any) -> dict[str, Any]:
    r = await client.get(f"{V3}/sync", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def inbox(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["to_device"]["events"])


async def test_delivered_once_then_acknowledged(client: httpx.AsyncClient,
                                                server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    bob_phone = await second_device(server, bob)
    r = await send(client, alice, "t1", {bob.user_id: {bob.device_id: {"n": 1}}})
    assert r.status_code == 200 and r.json() == {}
    first = await sync(client, bob)
    assert inbox(first) == [{"sender": alice.user_id, "type": "m.test", "content": {"n": 1}}]
    assert inbox(await sync(client, bob_phone)) == []
    # A response that got lost: the same since delivers the message again.
    assert inbox(await sync(client, bob)) == inbox(first)
    # Syncing past it acknowledges it.
    await send(client, alice, "t2", {bob.user_id: {bob.device_id: {"n": 2}}})
    second = await sync(client, bob, since=first["next_batch"])
    assert [e["content"] for e in inbox(second)] == [{"n": 2}]
    third = await sync(client, bob, since=second["next_batch"])
    assert inbox(third) == []
    services = server.services
    assert services is not None
    assert services.e2ee.to_device.pending(bob.user_id, bob.device_id) == 0


async def test_star_reaches_every_device_and_txn_ids_are_idempotent(
        client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    bob_phone = await second_device(server, bob)
    messages = {bob.user_id: {"*": {"hello": "all"}}, alice.user_id: {"NOSUCHDEVICE": {}}}
    for _ in range(2):  # a retried request is sent once
        assert (await send(client, alice, "same", messages)).status_code == 200
    for device in (bob, bob_phone):
        assert [e["content"] for e in inbox(await sync(client, device))] == [{"hello": "all"}]
    # The same txn id from another device of the sender is a new request.
    alice_phone = await second_device(server, alice)
    await send(client, alice_phone, "same", messages)
    assert len(inbox(await sync(client, bob))) == 2


async def test_waiting_sync_is_woken(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    since = (await sync(client, bob))["next_batch"]
    result: dict[str, Any] = {}

    async def wait() -> None:
        result["body"] = await sync(client, bob, since=since, timeout="20000")
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.3)
        sent = trio.current_time()
        await send(client, alice, "wake", {bob.user_id: {bob.device_id: {"ping": True}}})
    assert [e["content"] for e in inbox(result["body"])] == [{"ping": True}]
    assert result["at"] - sent < 2


async def test_remote_users_and_bad_bodies(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    r = await send(client, alice, "remote", {"@bob:elsewhere.example": {"DEV": {"x": 1}}})
    assert r.status_code == 200
    for messages in ("nope", {"@bob:test.local": "nope"}, {"@bob:test.local": {"D": 5}}):
        r = await client.put(f"{V3}/sendToDevice/m.test/bad",
                             json={"messages": messages}, headers=alice.headers)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")


async def test_deleted_device_loses_its_inbox(client: httpx.AsyncClient,
                                              server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    bob_phone = await second_device(server, bob)
    await send(client, alice, "t", {bob.user_id: {bob_phone.device_id: {"n": 1}}})
    services = server.services
    assert services is not None
    assert services.e2ee.to_device.pending(bob.user_id, bob_phone.device_id) == 1
    r = await uia(client, f"{V3}/devices/{bob_phone.device_id}", bob, {}, method="DELETE")
    assert r.status_code == 200, r.text
    assert services.e2ee.to_device.pending(bob.user_id, bob_phone.device_id) == 0
