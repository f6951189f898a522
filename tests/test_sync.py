"""/sync: initial and incremental syncs, long-poll wake-ups, gaps, lazy loading, tokens."""

from __future__ import annotations

import json
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
from tests.test_rooms import create, send

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=60) as client:
        yield client


async def sync(client: httpx.AsyncClient, user: LoggedIn, **params: Any) -> dict[str, Any]:
    r = await client.get(f"{V3}/sync", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"]["body"] for e in room["timeline"]["events"]
            if e["type"] == "m.room.message"]


async def test_initial_then_incremental(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, name="Chat", invite=[bob.user_id])
    first = await sync(client, bob)
    assert room in first["rooms"]["invite"]
    invite_types = {e["type"] for e in first["rooms"]["invite"][room]["invite_state"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= invite_types
    await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    await send(client, alice, room, "hello", "t1")
    second = await sync(client, bob, since=first["next_batch"])
    joined = second["rooms"]["join"][room]
    assert bodies(joined) == ["hello"]
    state_types = {e["type"] for e in joined["state"]["events"]}
    assert "m.room.create" in state_types  # newly joined: the full state
    assert joined["summary"]["m.joined_member_count"] == 2
    third = await sync(client, bob, since=second["next_batch"])
    assert third["rooms"]["join"] == {}


async def test_transaction_id_echoed_to_the_sending_device(client: httpx.AsyncClient,
                                                           server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    await send(client, alice, room, "mine", "my-txn")
    body = await sync(client, alice)
    [message] = [e for e in body["rooms"]["join"][room]["timeline"]["events"]
                 if e["type"] == "m.room.message"]
    assert message["unsigned"]["transaction_id"] == "my-txn"


async def test_long_poll_wakes_quickly(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    since = (await sync(client, bob))["next_batch"]
    result: dict[str, Any] = {}

    async def wait() -> None:
        began = trio.current_time()
        result["body"] = await sync(client, bob, since=since, timeout="30000")
        result["returned"] = trio.current_time()
        result["began"] = began

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.3)
        sent = trio.current_time()
        await send(client, alice, room, "wake up", "t")
    assert bodies(result["body"]["rooms"]["join"][room]) == ["wake up"]
    latency = result["returned"] - sent
    assert latency < 1.0, latency  # typically a few ms; far below the 30 s timeout
    assert result["returned"] - result["began"] > 0.25  # it really waited


async def test_long_poll_times_out_empty(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    since = (await sync(client, alice))["next_batch"]
    body = await sync(client, alice, since=since, timeout="200")
    assert body["rooms"]["join"] == {} and body["next_batch"] == since


async def test_limited_timeline_gap_is_filled_by_messages(client: httpx.AsyncClient,
                                                          server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    since = (await sync(client, alice))["next_batch"]
    for i in range(12):
        await send(client, alice, room, f"m{i}", f"t{i}")
    body = await sync(client, alice, since=since,
                      filter=json.dumps({"room": {"timeline": {"limit": 5}}}))
    timeline = body["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True
    assert bodies(body["rooms"]["join"][room]) == [f"m{i}" for i in range(7, 12)]
    r = await client.get(f"{V3}/rooms/{room}/messages", headers=alice.headers,
                         params={"dir": "b", "from": timeline["prev_batch"], "to": since,
                                 "limit": "100"})
    gap = [e["content"]["body"] for e in r.json()["chunk"] if e["type"] == "m.room.message"]
    assert gap == [f"m{i}" for i in reversed(range(7))]


async def test_lazy_loading_members(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, preset="public_chat")
    others = [await make_user(server, f"user{i}") for i in range(4)]
    for other in others:
        await client.post(f"{V3}/join/{room}", json={}, headers=other.headers)
    await send(client, others[0], room, "only user0 speaks", "t")
    lazy = json.dumps({"room": {"state": {"lazy_load_members": True},
                                "timeline": {"limit": 1}}})
    body = await sync(client, alice, filter=lazy)
    members = {e["state_key"] for e in body["rooms"]["join"][room]["state"]["events"]
               if e["type"] == "m.room.member"}
    assert members == {alice.user_id, others[0].user_id}


async def test_account_data_and_bad_params(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    since = (await sync(client, alice))["next_batch"]
    await client.put(f"{V3}/user/{alice.user_id}/account_data/org.example", json={"a": 1},
                     headers=alice.headers)
    body = await sync(client, alice, since=since, timeout="10000")
    assert {"type": "org.example", "content": {"a": 1}} in body["account_data"]["events"]
    for params in ({"since": "garbage"}, {"timeout": "soon"}, {"filter": "{bad json"},
                   {"filter": "no-such-filter"}, {"full_state": "maybe"}):
        r = await client.get(f"{V3}/sync", params=params, headers=alice.headers)
        assert r.status_code == 400, params


async def test_token_survives_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await create(client, alice)
        since = (await sync(client, alice))["next_batch"]
        await send(client, alice, room, "while away", "t")
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        body = await sync(client, alice, since=since)
        assert bodies(body["rooms"]["join"][room]) == ["while away"]


async def test_no_event_missed_or_repeated_across_the_token_chain(
        client: httpx.AsyncClient, server: Server) -> None:
    """Writers and a syncing reader interleave at random; the chain sees each event once."""
    alice = await make_user(server, "alice")
    rooms = [await create(client, alice) for _ in range(3)]
    token = (await sync(client, alice))["next_batch"]
    seen: list[str] = []
    sent: list[str] = []
    done = trio.Event()

    async def writer(index: int) -> None:
        for i in range(15):
            r = await send(client, alice, rooms[(index + i) % 3], f"w{index}-{i}", f"{index}-{i}")
            sent.append(r.json()["event_id"])
            await trio.sleep(0.003 * ((index * 7 + i) % 4))

    async def reader() -> None:
        nonlocal token
        while not (done.is_set() and len(seen) >= len(sent)):
            body = await sync(client, alice, since=token, timeout="500")
            token = body["next_batch"]
            for room in body["rooms"]["join"].values():
                seen.extend(e["event_id"] for e in room["timeline"]["events"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        async with trio.open_nursery() as writers:
            for index in range(3):
                writers.start_soon(writer, index)
        done.set()
    assert sorted(seen) == sorted(sent)
    assert len(seen) == len(set(seen))


async def test_deprecated_events_and_initial_sync(client: httpx.AsyncClient,
                                                  server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, name="Old API")
    await send(client, alice, room, "first", "t1")
    r = await client.get(f"{V3}/initialSync", params={"limit": "5"}, headers=alice.headers)
    snapshot = r.json()
    [entry] = snapshot["rooms"]
    assert entry["room_id"] == room and entry["membership"] == "join"
    assert "first" in [e["content"].get("body") for e in entry["messages"]["chunk"]]
    assert any(e["type"] == "m.room.name" for e in entry["state"])
    result: dict[str, Any] = {}

    async def stream() -> None:
        r = await client.get(f"{V3}/events", headers=alice.headers,
                             params={"from": snapshot["end"], "timeout": "10000"})
        result.update(r.json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream)
        await trio.sleep(0.2)
        await send(client, alice, room, "second", "t2")
    assert [e["content"]["body"] for e in result["chunk"]] == ["second"]
    assert result["chunk"][0]["room_id"] == room and result["start"] == snapshot["end"]
    r = await client.get(f"{V3}/events", params={"timeout": "soon", "from": "s1"},
                         headers=alice.headers)
    assert r.status_code == 400
