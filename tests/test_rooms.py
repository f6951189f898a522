"""Rooms over the client API: creation in every version, sending, state, refusals, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from conduwuit.protocol.room_versions import ROOM_VERSIONS
from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"


def q(identifier: str) -> str:
    """Percent-encode an id for a path, '/' included (v3 event ids may contain it)."""
    return quote(identifier, safe="")


async def create(client: httpx.AsyncClient, user: LoggedIn, **body: Any) -> str:
    r = await client.post(f"{V3}/createRoom", json=body, headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


async def send(client: httpx.AsyncClient, user: LoggedIn, room: str, body: str,
               txn: str) -> httpx.Response:
    return await client.put(f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                            json={"msgtype": "m.text", "body": body}, headers=user.headers)


@pytest.mark.parametrize("version", sorted(ROOM_VERSIONS, key=int))
async def test_each_room_version(client: httpx.AsyncClient, server: Server,
                                 version: str) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, room_version=version, name="Room", topic="About",
                        invite=[bob.user_id])
    if version == "12":
        assert ":" not in room  # the room id is the create event's hash
    r = await client.post(f"{V3}/rooms/{room}/join", json={}, headers=bob.headers)
    assert r.status_code == 200
    r = await send(client, bob, room, "hello", "t1")
    event_id = r.json()["event_id"]
    r = await client.get(f"{V3}/rooms/{q(room)}/event/{q(event_id)}",
                         headers=alice.headers)
    event = r.json()
    assert (event["sender"], event["content"]["body"]) == (bob.user_id, "hello")
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.create", headers=alice.headers)
    assert r.json()["room_version"] == version
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.topic", headers=bob.headers)
    assert r.json() == {"topic": "About"}
    r = await client.get(f"{V3}/rooms/{room}/joined_members", headers=bob.headers)
    assert set(r.json()["joined"]) == {alice.user_id, bob.user_id}


async def test_transaction_ids_make_sends_idempotent(client: httpx.AsyncClient,
                                                     server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    first = (await send(client, alice, room, "once", "txn-1")).json()["event_id"]
    again = (await send(client, alice, room, "once", "txn-1")).json()["event_id"]
    other = (await send(client, alice, room, "twice", "txn-2")).json()["event_id"]
    assert first == again != other
    room2 = await create(client, alice)
    elsewhere = (await send(client, alice, room2, "once", "txn-1")).json()["event_id"]
    assert elsewhere != first


async def test_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    room = await create(client, alice, room_alias_name="lobby", preset="public_chat")
    # Not a member.
    r = await send(client, eve, room, "hi", "t")
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    # Unknown room.
    r = await send(client, alice, "!nope:test.local", "hi", "t")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # Power level too low for state.
    await client.post(f"{V3}/join/{room}", json={}, headers=eve.headers)
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.name/", json={"name": "mine"},
                         headers=eve.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    # Bad content for state the auth rules read.
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.power_levels/",
                         json={"users": {alice.user_id: "lots"}, "ban": "x"},
                         headers=alice.headers)
    assert r.status_code in (400, 403)
    # Alias taken; unsupported version; floats in content.
    r = await client.post(f"{V3}/createRoom", json={"room_alias_name": "lobby"},
                          headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_ROOM_IN_USE")
    r = await client.post(f"{V3}/createRoom", json={"room_version": "99"}, headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    r = await client.put(f"{V3}/rooms/{room}/send/m.room.message/f",
                         json={"body": "x", "value": 1.5}, headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")


async def test_kick_ban_unban_leave_forget(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    assert (await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)).is_success
    r = await client.post(f"{V3}/rooms/{room}/kick", json={"user_id": alice.user_id},
                          headers=bob.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await client.post(f"{V3}/rooms/{room}/ban",
                          json={"user_id": bob.user_id, "reason": "spam"}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert r.status_code == 403
    r = await client.post(f"{V3}/rooms/{room}/unban", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status_code == 200
    assert (await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)).is_success
    r = await client.post(f"{V3}/rooms/{room}/forget", json={}, headers=bob.headers)
    assert r.status_code == 400
    assert (await client.post(f"{V3}/rooms/{room}/leave", json={},
                              headers=bob.headers)).is_success
    assert (await client.post(f"{V3}/rooms/{room}/forget", json={},
                              headers=bob.headers)).is_success
    r = await client.get(f"{V3}/joined_rooms", headers=bob.headers)
    assert r.json() == {"joined_rooms": []}


async def test_invite_only_room(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice)
    r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await client.post(f"{V3}/rooms/{room}/invite", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status_code == 200
    r = await client.get(f"{V3}/rooms/{room}/members?membership=invite", headers=alice.headers)
    assert [e["state_key"] for e in r.json()["chunk"]] == [bob.user_id]
    assert (await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)).is_success


async def test_history_pagination(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    for i in range(25):
        await send(client, alice, room, f"m{i}", f"t{i}")
    bodies: list[str] = []
    token = None
    while True:
        params = {"dir": "b", "limit": "10", **({"from": token} if token else {})}
        r = await client.get(f"{V3}/rooms/{room}/messages", params=params, headers=alice.headers)
        page = r.json()
        bodies += [e["content"]["body"] for e in page["chunk"]
                   if e["type"] == "m.room.message"]
        if "end" not in page:
            break
        token = page["end"]
    assert bodies == [f"m{i}" for i in reversed(range(25))]


async def test_rooms_survive_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await create(client, alice, name="Kept", room_alias_name="kept")
        event_id = (await send(client, alice, room, "persisted", "t")).json()["event_id"]
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        r = await client.get(f"{V3}/rooms/{room}/event/{q(event_id)}",
                             headers=alice.headers)
        assert r.json()["content"]["body"] == "persisted"
        r = await client.get(f"{V3}/rooms/{room}/state/m.room.name/", headers=alice.headers)
        assert r.json() == {"name": "Kept"}
        r = await send(client, alice, room, "after restart", "t2")
        assert r.status_code == 200
        r = await client.get(f"{V3}/directory/room/%23kept:test.local")
        assert r.status_code in (200, 404)  # the alias endpoint lands with the directory work
