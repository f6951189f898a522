"""Read receipts and read markers: endpoints, /sync delivery, privacy, threads, restarts."""

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
from tests.test_rooms import create, q, send
from tests.test_sync import sync

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


async def receipt(client: httpx.AsyncClient, user: LoggedIn, room: str, event_id: str,
                  receipt_type: str = "m.read", body: Any = None) -> httpx.Response:
    return await client.post(f"{V3}/rooms/{q(room)}/receipt/{receipt_type}/{q(event_id)}",
                             json={} if body is None else body, headers=user.headers)


async def markers(client: httpx.AsyncClient, user: LoggedIn, room: str,
                  body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"{V3}/rooms/{q(room)}/read_markers", json=body,
                             headers=user.headers)


def receipts_in(body: dict[str, Any], room: str) -> dict[str, Any] | None:
    joined = body["rooms"]["join"].get(room)
    if joined is None:
        return None
    found = [e for e in joined["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert len(found) <= 1
    return dict(found[0]["content"]) if found else None


def room_account_data(body: dict[str, Any], room: str) -> dict[str, Any]:
    joined = body["rooms"]["join"].get(room, {})
    return {e["type"]: e["content"] for e in joined.get("account_data", {}).get("events", [])}


async def setup(client: httpx.AsyncClient, server: Server) -> tuple[LoggedIn, LoggedIn, str,
                                                                    list[str]]:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert r.status_code == 200
    events = [(await send(client, alice, room, f"m{i}", f"t{i}")).json()["event_id"]
              for i in range(3)]
    return alice, bob, room, events


async def test_public_receipts_reach_members(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room, events = await setup(client, server)
    since = (await sync(client, alice))["next_batch"]
    r = await receipt(client, bob, room, events[1])
    assert r.status_code == 200 and r.json() == {}
    body = await sync(client, alice, since=since)
    content = receipts_in(body, room)
    assert content is not None
    assert list(content) == [events[1]]
    entry = content[events[1]]["m.read"][bob.user_id]
    assert isinstance(entry["ts"], int) and "thread_id" not in entry
    assert receipts_in(await sync(client, alice, since=body["next_batch"]), room) is None
    # Initial syncs carry the latest receipt of everyone.
    await receipt(client, bob, room, events[2])
    initial = receipts_in(await sync(client, alice), room)
    assert initial is not None and bob.user_id in initial[events[2]]["m.read"]
    assert events[1] not in initial  # replaced, not accumulated


async def test_private_receipts_are_seen_by_their_owner_only(client: httpx.AsyncClient,
                                                             server: Server) -> None:
    alice, bob, room, events = await setup(client, server)
    alice_since = (await sync(client, alice))["next_batch"]
    bob_since = (await sync(client, bob))["next_batch"]
    r = await receipt(client, bob, room, events[2], "m.read.private")
    assert r.status_code == 200
    own = receipts_in(await sync(client, bob, since=bob_since), room)
    assert own is not None and list(own) == [events[2]]
    assert list(own[events[2]]) == ["m.read.private"]
    assert list(own[events[2]]["m.read.private"]) == [bob.user_id]
    assert receipts_in(await sync(client, alice, since=alice_since), room) is None
    assert receipts_in(await sync(client, alice), room) is None
    initial = receipts_in(await sync(client, bob), room)
    assert initial is not None and "m.read.private" in initial[events[2]]


async def test_long_poll_wakes_on_a_receipt(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room, events = await setup(client, server)
    since = (await sync(client, alice))["next_batch"]
    result: dict[str, Any] = {}

    async def wait() -> None:
        result["body"] = await sync(client, alice, since=since, timeout="20000")
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.3)
        sent = trio.current_time()
        await receipt(client, bob, room, events[2])
    assert receipts_in(result["body"], room) is not None
    assert result["at"] - sent < 1.0


async def test_receipts_only_move_forward(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room, events = await setup(client, server)
    await receipt(client, bob, room, events[2])
    since = (await sync(client, alice))["next_batch"]
    r = await receipt(client, bob, room, events[0])  # accepted, and ignored
    assert r.status_code == 200
    assert receipts_in(await sync(client, alice, since=since), room) is None
    assert server.services is not None
    assert server.services.receipts.latest(room, bob.user_id, "m.read") == events[2]


async def test_threaded_receipts_are_kept_per_thread(client: httpx.AsyncClient,
                                                     server: Server) -> None:
    alice, bob, room, events = await setup(client, server)
    reply = await client.put(
        f"{V3}/rooms/{room}/send/m.room.message/thr",
        json={"msgtype": "m.text", "body": "in thread",
              "m.relates_to": {"rel_type": "m.thread", "event_id": events[0]}},
        headers=alice.headers)
    reply_id = reply.json()["event_id"]
    assert (await receipt(client, bob, room, events[2], body={"thread_id": "main"})) \
        .status_code == 200
    assert (await receipt(client, bob, room, reply_id, body={"thread_id": events[0]})) \
        .status_code == 200
    assert (await receipt(client, bob, room, events[1])).status_code == 200  # unthreaded
    content = receipts_in(await sync(client, alice), room)
    assert content is not None
    assert content[events[2]]["m.read"][bob.user_id]["thread_id"] == "main"
    assert content[reply_id]["m.read"][bob.user_id]["thread_id"] == events[0]
    assert "thread_id" not in content[events[1]]["m.read"][bob.user_id]


async def test_fully_read_marker_is_room_account_data(client: httpx.AsyncClient,
                                                      server: Server) -> None:
    _alice, bob, room, events = await setup(client, server)
    since = (await sync(client, bob))["next_batch"]
    r = await markers(client, bob, room, {"m.fully_read": events[1], "m.read": events[1],
                                          "m.read.private": events[2]})
    assert r.status_code == 200 and r.json() == {}
    body = await sync(client, bob, since=since)
    assert room_account_data(body, room)["m.fully_read"] == {"event_id": events[1]}
    content = receipts_in(body, room)
    assert content is not None
    assert bob.user_id in content[events[1]]["m.read"]
    assert bob.user_id in content[events[2]]["m.read.private"]
    r = await client.get(f"{V3}/user/{bob.user_id}/rooms/{room}/account_data/m.fully_read",
                         headers=bob.headers)
    assert r.json() == {"event_id": events[1]}
    # The receipt endpoint accepts m.fully_read too; it never shows up as a receipt.
    since = body["next_batch"]
    r = await receipt(client, bob, room, events[2], "m.fully_read")
    assert r.status_code == 200
    body = await sync(client, bob, since=since)
    assert room_account_data(body, room)["m.fully_read"] == {"event_id": events[2]}
    assert receipts_in(body, room) is None
    # An empty body changes nothing.
    assert (await markers(client, bob, room, {})).status_code == 200


async def test_receipt_errors(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room, events = await setup(client, server)
    carol = await make_user(server, "carol")
    other_room = await create(client, carol)
    elsewhere = (await send(client, carol, other_room, "x", "t")).json()["event_id"]
    cases = [
        (await receipt(client, bob, room, events[0], "m.unknown"), 400, "M_INVALID_PARAM"),
        (await receipt(client, bob, room, events[0], body={"thread_id": ""}), 400,
         "M_INVALID_PARAM"),
        (await receipt(client, bob, room, events[0], body={"thread_id": 5}), 400,
         "M_INVALID_PARAM"),
        (await receipt(client, bob, room, events[0], body={"thread_id": None}), 400,
         "M_INVALID_PARAM"),
        (await receipt(client, bob, room, events[0], "m.fully_read",
                       body={"thread_id": "main"}), 400, "M_INVALID_PARAM"),
        (await receipt(client, bob, room, "$unknown:test.local"), 404, "M_NOT_FOUND"),
        (await receipt(client, bob, room, elsewhere), 404, "M_NOT_FOUND"),
        (await receipt(client, carol, room, events[0]), 403, "M_FORBIDDEN"),
        (await receipt(client, carol, "!nowhere:test.local", events[0]), 403, "M_FORBIDDEN"),
        (await markers(client, carol, room, {"m.fully_read": events[0]}), 403, "M_FORBIDDEN"),
        (await markers(client, bob, room, {"m.fully_read": 5}), 400, "M_BAD_JSON"),
        (await markers(client, bob, room, {"m.read": "not-an-event"}), 400, "M_BAD_JSON"),
        (await markers(client, bob, room, {"m.read": "$unknown:test.local"}), 404,
         "M_NOT_FOUND"),
        (await markers(client, bob, room, {"m.fully_read": elsewhere}), 404, "M_NOT_FOUND"),
    ]
    for response, status, errcode in cases:
        assert (response.status_code, response.json()["errcode"]) == (status, errcode), \
            response.text
    r = await client.post(f"{V3}/rooms/{room}/receipt/m.read/{q(events[0])}", json={})
    assert r.status_code == 401
    # Nothing was stored by the refused requests.
    assert server.services is not None
    assert server.services.receipts.latest(room, bob.user_id, "m.read") is None
    assert receipts_in(await sync(client, alice), room) is None


async def test_receipts_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice, bob, room, events = await setup(client, server)
        await receipt(client, bob, room, events[1])
        await receipt(client, alice, room, events[2], "m.read.private")
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        content = receipts_in(await sync(client, alice), room)
        assert content is not None
        assert bob.user_id in content[events[1]]["m.read"]
        assert alice.user_id in content[events[2]]["m.read.private"]
