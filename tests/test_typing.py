"""Typing notifications: the endpoint, /sync delivery, and expiry by the typing job."""

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
from tests.test_rooms import create
from tests.test_sync import sync

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # Every typing period is clamped to 1..2 s, so expiry is observable in a test.
    config = make_config(tmp_path, typing_client_timeout_min_s=1, typing_client_timeout_max_s=2)
    async with running_server(config) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


async def typing(client: httpx.AsyncClient, user: LoggedIn, room: str, body: dict[str, Any],
                 target: str | None = None) -> httpx.Response:
    return await client.put(f"{V3}/rooms/{room}/typing/{target or user.user_id}", json=body,
                            headers=user.headers)


def typing_event(body: dict[str, Any], room: str) -> list[str] | None:
    """The user_ids of the room's m.typing event in a sync response, None if absent."""
    joined = body["rooms"]["join"].get(room)
    if joined is None:
        return None
    for event in joined["ephemeral"]["events"]:
        if event["type"] == "m.typing":
            return list(event["content"]["user_ids"])
    return None


async def two_members(client: httpx.AsyncClient, server: Server) -> tuple[LoggedIn, LoggedIn,
                                                                          str]:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert r.status_code == 200, r.text
    return alice, bob, room


async def test_jobs_run_in_their_named_nurseries(server: Server) -> None:
    statuses = {s.full_name: s.state for s in server.supervisor.statuses()}
    assert statuses["typing/expiry"] is JobState.RUNNING
    assert statuses["presence/timers"] is JobState.RUNNING


async def test_typing_reaches_other_members_through_sync(client: httpx.AsyncClient,
                                                         server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    since = (await sync(client, bob))["next_batch"]
    r = await typing(client, alice, room, {"typing": True, "timeout": 30000})
    assert r.status_code == 200 and r.json() == {}
    body = await sync(client, bob, since=since)
    assert typing_event(body, room) == [alice.user_id]
    assert typing_event(await sync(client, bob), room) == [alice.user_id]  # initial sync too
    # Unchanged since the last token: not repeated.
    again = await sync(client, bob, since=body["next_batch"])
    assert typing_event(again, room) is None
    # Typing again while typing only extends the period: no change to report.
    await typing(client, alice, room, {"typing": True, "timeout": 30000})
    assert typing_event(await sync(client, bob, since=body["next_batch"]), room) is None
    r = await typing(client, alice, room, {"typing": False})
    assert r.status_code == 200
    stopped = await sync(client, bob, since=body["next_batch"])
    assert typing_event(stopped, room) == []
    assert typing_event(await sync(client, bob), room) is None  # nobody types: nothing


async def test_long_poll_wakes_on_typing(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    since = (await sync(client, bob))["next_batch"]
    result: dict[str, Any] = {}

    async def wait() -> None:
        result["body"] = await sync(client, bob, since=since, timeout="20000")
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.3)
        sent = trio.current_time()
        await typing(client, alice, room, {"typing": True, "timeout": 5000})
    assert typing_event(result["body"], room) == [alice.user_id]
    assert result["at"] - sent < 1.0


async def test_the_typing_job_expires_and_wakes_waiting_syncs(client: httpx.AsyncClient,
                                                              server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    # Asks for 60 s; the server allows at most 2 s.
    await typing(client, alice, room, {"typing": True, "timeout": 60000})
    began = trio.current_time()
    body = await sync(client, bob)
    assert typing_event(body, room) == [alice.user_id]
    assert server.services is not None
    assert server.services.typing.pending >= 1
    # Nothing else happens in the room: only the job can end this long-poll early.
    later = await sync(client, bob, since=body["next_batch"], timeout="20000")
    took = trio.current_time() - began
    assert typing_event(later, room) == []
    assert 1.5 < took < 5, took
    assert server.services.typing.typing_users(room) == []


async def test_short_timeouts_are_raised_to_the_minimum(client: httpx.AsyncClient,
                                                        server: Server) -> None:
    alice, _bob, room = await two_members(client, server)
    await typing(client, alice, room, {"typing": True, "timeout": 1})
    await trio.sleep(0.5)
    assert server.services is not None
    assert server.services.typing.typing_users(room) == [alice.user_id]
    assert server.services.typing.clamp(None) == 2  # no timeout: 30 s, clamped
    assert server.services.typing.clamp(-5) == 1


async def test_leaving_stops_typing(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    await typing(client, bob, room, {"typing": True, "timeout": 2000})
    since = (await sync(client, alice))["next_batch"]
    r = await client.post(f"{V3}/rooms/{room}/leave", json={}, headers=bob.headers)
    assert r.status_code == 200
    assert typing_event(await sync(client, alice, since=since), room) == []


async def test_typing_errors(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, room = await two_members(client, server)
    carol = await make_user(server, "carol")
    cases = [
        (await typing(client, alice, room, {"typing": True}, target=bob.user_id),
         403, "M_FORBIDDEN"),
        (await typing(client, carol, room, {"typing": True}), 403, "M_FORBIDDEN"),
        (await typing(client, carol, "!nowhere:test.local", {"typing": True}), 403,
         "M_FORBIDDEN"),
        (await typing(client, alice, room, {}), 400, "M_BAD_JSON"),
        (await typing(client, alice, room, {"typing": "yes"}), 400, "M_BAD_JSON"),
        (await typing(client, alice, room, {"typing": True, "timeout": "30s"}), 400,
         "M_BAD_JSON"),
        (await typing(client, alice, room, {"typing": True, "timeout": True}), 400,
         "M_BAD_JSON"),
    ]
    for response, status, errcode in cases:
        assert (response.status_code, response.json()["errcode"]) == (status, errcode), \
            response.text
    r = await client.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", json={"typing": True})
    assert r.status_code == 401
    assert server.services is not None
    assert server.services.typing.typing_users(room) == []
