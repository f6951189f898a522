"""Presence: the endpoints, set_presence on /sync, delivery to users sharing a room,
idle/offline moves by the presence job, the startup reset and the off switch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conduwuit.nursery.jobs import JobState
from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, send
from tests.test_sync import sync

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, presence_idle_timeout_s=1, presence_offline_timeout_s=2)
    async with running_server(config) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


async def put_presence(client: httpx.AsyncClient, user: LoggedIn, body: dict[str, Any],
                       target: str | None = None) -> httpx.Response:
    return await client.put(f"{V3}/presence/{target or user.user_id}/status", json=body,
                            headers=user.headers)


async def get_presence(client: httpx.AsyncClient, user: LoggedIn,
                       target: str) -> httpx.Response:
    return await client.get(f"{V3}/presence/{target}/status", headers=user.headers)


def presence_of(body: dict[str, Any], user_id: str) -> dict[str, Any] | None:
    found = [e for e in body["presence"]["events"] if e["sender"] == user_id]
    assert all(e["type"] == "m.presence" for e in found)
    return dict(found[-1]["content"]) if found else None


async def sharing(client: httpx.AsyncClient, server: Server) -> tuple[LoggedIn, LoggedIn,
                                                                      LoggedIn, str]:
    """Alice and Bob share a room; Carol shares none with them."""
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    carol = await make_user(server, "carol")
    room = await create(client, alice, preset="public_chat")
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert r.status_code == 200
    return alice, bob, carol, room


async def test_set_and_get(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, _carol, _room = await sharing(client, server)
    r = await put_presence(client, alice, {"presence": "online", "status_msg": "Lunch"})
    assert r.status_code == 200 and r.json() == {}
    own = (await get_presence(client, alice, alice.user_id)).json()
    assert own["presence"] == "online" and own["status_msg"] == "Lunch"
    assert own["currently_active"] is True and 0 <= own["last_active_ago"] < 5000
    seen = (await get_presence(client, bob, alice.user_id)).json()
    assert seen["presence"] == "online" and seen["status_msg"] == "Lunch"
    await put_presence(client, alice, {"presence": "unavailable"})
    seen = (await get_presence(client, bob, alice.user_id)).json()
    assert seen["presence"] == "unavailable" and "status_msg" not in seen
    assert seen["currently_active"] is False
    # A local user who was never active is offline.
    dave = await make_user(server, "dave")
    assert (await get_presence(client, dave, dave.user_id)).json() == {"presence": "offline"}


async def test_presence_errors(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, carol, _room = await sharing(client, server)
    await put_presence(client, alice, {"presence": "online"})
    cases = [
        (await get_presence(client, carol, alice.user_id), 403, "M_FORBIDDEN"),
        (await get_presence(client, alice, "@nobody:test.local"), 404, "M_NOT_FOUND"),
        (await get_presence(client, alice, "@someone:elsewhere.example"), 403, "M_FORBIDDEN"),
        (await get_presence(client, alice, "not-a-user"), 400, "M_INVALID_PARAM"),
        (await put_presence(client, alice, {"presence": "online"}, target=bob.user_id), 403,
         "M_FORBIDDEN"),
        (await put_presence(client, alice, {}), 400, "M_MISSING_PARAM"),
        (await put_presence(client, alice, {"presence": "busy"}), 400, "M_INVALID_PARAM"),
        (await put_presence(client, alice, {"presence": 1}), 400, "M_INVALID_PARAM"),
        (await put_presence(client, alice, {"presence": "online", "status_msg": 5}), 400,
         "M_BAD_JSON"),
        (await put_presence(client, alice, {"presence": "online", "status_msg": "x" * 1025}),
         400, "M_INVALID_PARAM"),
    ]
    for response, status, errcode in cases:
        assert (response.status_code, response.json()["errcode"]) == (status, errcode), \
            response.text
    r = await client.get(f"{V3}/presence/{alice.user_id}/status")
    assert r.status_code == 401
    assert (await get_presence(client, alice, alice.user_id)).json()["presence"] == "online"


async def test_sync_delivers_presence_to_users_sharing_a_room(client: httpx.AsyncClient,
                                                              server: Server) -> None:
    alice, bob, carol, _room = await sharing(client, server)
    bob_since = (await sync(client, bob, set_presence="offline"))["next_batch"]
    carol_since = (await sync(client, carol, set_presence="offline"))["next_batch"]
    await put_presence(client, alice, {"presence": "online", "status_msg": "here"})
    body = await sync(client, bob, since=bob_since, set_presence="offline")
    content = presence_of(body, alice.user_id)
    assert content is not None
    assert content["presence"] == "online" and content["status_msg"] == "here"
    assert content["currently_active"] is True and "last_active_ago" in content
    # Not repeated once delivered; never shown to a user sharing no room.
    again = await sync(client, bob, since=body["next_batch"], set_presence="offline")
    assert presence_of(again, alice.user_id) is None
    assert presence_of(await sync(client, carol, since=carol_since, set_presence="offline"),
                       alice.user_id) is None
    assert presence_of(await sync(client, carol, set_presence="offline"), alice.user_id) is None
    # An initial sync has the current presence of everyone sharing a room, and one's own.
    initial = await sync(client, bob, set_presence="offline")
    assert presence_of(initial, alice.user_id) is not None
    own = await sync(client, alice)
    assert presence_of(own, alice.user_id) is not None


async def test_long_poll_wakes_on_presence(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, _carol, _room = await sharing(client, server)
    since = (await sync(client, bob, set_presence="offline"))["next_batch"]
    result: dict[str, Any] = {}

    async def wait() -> None:
        result["body"] = await sync(client, bob, since=since, timeout="20000",
                                    set_presence="offline")
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.3)
        sent = trio.current_time()
        await put_presence(client, alice, {"presence": "online"})
    assert presence_of(result["body"], alice.user_id) is not None
    assert result["at"] - sent < 1.0


async def test_set_presence_on_sync(client: httpx.AsyncClient, server: Server) -> None:
    alice, _bob, _carol, _room = await sharing(client, server)

    async def state() -> str:
        return str((await get_presence(client, alice, alice.user_id)).json()["presence"])

    await put_presence(client, alice, {"presence": "offline"})
    await sync(client, alice, set_presence="offline")
    assert await state() == "offline"  # offline: polling does not mark the user online
    await sync(client, alice, set_presence="unavailable")
    assert await state() == "unavailable"
    await sync(client, alice)  # the default is online
    assert await state() == "online"
    await sync(client, alice, set_presence="offline")
    assert await state() == "online"  # ... and offline leaves it as it is
    r = await client.get(f"{V3}/sync", params={"set_presence": "away"}, headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"


async def test_activity_marks_users_online(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, _carol, room = await sharing(client, server)
    await put_presence(client, alice, {"presence": "offline"})
    await send(client, alice, room, "hi", "t1")
    assert (await get_presence(client, bob, alice.user_id)).json()["presence"] == "online"
    await put_presence(client, alice, {"presence": "offline"})
    r = await client.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", json={"typing": True},
                         headers=alice.headers)
    assert r.status_code == 200
    assert (await get_presence(client, bob, alice.user_id)).json()["presence"] == "online"


async def test_the_presence_job_moves_idle_users_on(client: httpx.AsyncClient,
                                                    server: Server) -> None:
    statuses = {s.full_name: s.state for s in server.supervisor.statuses()}
    assert statuses["presence/timers"] is JobState.RUNNING
    alice, bob, _carol, _room = await sharing(client, server)
    since = (await sync(client, bob, set_presence="offline"))["next_batch"]
    await put_presence(client, alice, {"presence": "online"})
    began = trio.current_time()
    seen: list[tuple[str, float]] = []
    while len(seen) < 3 and trio.current_time() - began < 10:
        # No request touches alice: only the job can change her presence.
        body = await sync(client, bob, since=since, timeout="5000", set_presence="offline")
        since = body["next_batch"]
        content = presence_of(body, alice.user_id)
        if content is not None:
            seen.append((content["presence"], trio.current_time() - began))
    states = [s for s, _ in seen]
    assert states == ["online", "unavailable", "offline"], seen
    assert 0.5 < seen[1][1] < 3, seen  # idle after 1 s
    assert 1.5 < seen[2][1] < 4, seen  # offline after 2 s
    final = (await get_presence(client, bob, alice.user_id)).json()
    assert final["presence"] == "offline" and final["currently_active"] is False
    assert server.services is not None and server.services.presence.timers == 0


async def test_activity_postpones_idling(client: httpx.AsyncClient, server: Server) -> None:
    alice, _bob, _carol, _room = await sharing(client, server)
    await put_presence(client, alice, {"presence": "online"})
    for _ in range(4):  # active every 0.5 s for 2 s: never idle
        await trio.sleep(0.5)
        await sync(client, alice)
        assert (await get_presence(client, alice, alice.user_id)).json()["presence"] == "online"
    await trio.sleep(1.6)
    assert (await get_presence(client, alice, alice.user_id)).json()["presence"] \
        == "unavailable"


async def test_startup_resets_local_presence_to_offline(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        await put_presence(client, alice, {"presence": "online", "status_msg": "back soon"})
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        body = (await get_presence(client, alice, alice.user_id)).json()
        assert body["presence"] == "offline" and body["status_msg"] == "back soon"


async def test_presence_can_be_turned_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_local_presence=False, allow_outgoing_presence=False)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        assert "presence/timers" not in {s.full_name for s in server.supervisor.statuses()}
        alice, bob, _carol, room = await sharing(client, server)
        for response in (await put_presence(client, alice, {"presence": "online"}),
                         await get_presence(client, bob, alice.user_id)):
            assert response.status_code == 403
            assert response.json()["errcode"] == "M_FORBIDDEN"
        await send(client, alice, room, "hi", "t")
        await client.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", json={"typing": True},
                         headers=alice.headers)
        await sync(client, alice)
        assert (await sync(client, bob))["presence"]["events"] == []
        assert server.services is not None
        assert server.services.presence.current(alice.user_id) is None
