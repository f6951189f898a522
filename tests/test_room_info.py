"""/context, /timestamp_to_event, room summaries, space hierarchies, reports, mutual
rooms and conduwuit's refusal of call invites in public rooms."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, q, send

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
UNSTABLE = "/_matrix/client/unstable"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        assert server.services is not None
        server.services.reports.delay = (0.0, 0.0)
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")


async def say(client: httpx.AsyncClient, user: LoggedIn, room: str, body: str) -> str:
    r = await send(client, user, room, body, f"t-{body}")
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


async def join(client: httpx.AsyncClient, user: LoggedIn, room: str) -> None:
    r = await client.post(f"{V3}/join/{room}", json={}, headers=user.headers)
    assert r.status_code == 200, r.text


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


# --- /context -----------------------------------------------------------------------

async def test_context_around_an_event(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat", name="Ctx")
    await join(client, bob, room)
    ids = [await say(client, alice if i % 2 else bob, room, f"m{i}") for i in range(10)]
    r = await client.get(f"{V3}/rooms/{room}/context/{q(ids[5])}", params={"limit": "4"},
                         headers=alice.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["event"]["event_id"] == ids[5]
    assert bodies(body["events_before"]) == ["m4", "m3"]  # newest first
    assert bodies(body["events_after"]) == ["m6", "m7"]
    assert {"m.room.create", "m.room.name", "m.room.member"} <= {e["type"]
                                                                  for e in body["state"]}
    # The tokens continue with /messages.
    r = await client.get(f"{V3}/rooms/{room}/messages",
                         params={"dir": "b", "from": body["start"], "limit": "2"},
                         headers=alice.headers)
    assert bodies(r.json()["chunk"]) == ["m2", "m1"]
    r = await client.get(f"{V3}/rooms/{room}/messages",
                         params={"dir": "f", "from": body["end"], "limit": "2"},
                         headers=alice.headers)
    assert bodies(r.json()["chunk"]) == ["m8", "m9"]
    # limit=0 still returns the event; a filter applies to the context and state.
    r = await client.get(f"{V3}/rooms/{room}/context/{q(ids[5])}", params={"limit": "0"},
                         headers=alice.headers)
    assert r.json()["events_before"] == [] and r.json()["event"]["event_id"] == ids[5]
    event_filter = {"senders": [bob.user_id], "lazy_load_members": True}
    r = await client.get(f"{V3}/rooms/{room}/context/{q(ids[5])}",
                         params={"limit": "4", "filter": json.dumps(event_filter)},
                         headers=alice.headers)
    body = r.json()
    assert bodies(body["events_before"]) == ["m4", "m2"]
    members = {e["state_key"] for e in body["state"] if e["type"] == "m.room.member"}
    assert members <= {bob.user_id, alice.user_id}


async def test_context_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    eve = await make_user(server, "eve")
    room = await create(client, alice, preset="public_chat")
    await client.put(f"{V3}/rooms/{room}/state/m.room.history_visibility",
                     json={"history_visibility": "joined"}, headers=alice.headers)
    hidden = await say(client, alice, room, "before bob")
    await join(client, bob, room)
    url = f"{V3}/rooms/{room}/context/"
    assert error(await client.get(url + q(hidden), headers=bob.headers)) == (404, "M_NOT_FOUND")
    assert error(await client.get(url + q(hidden), headers=eve.headers)) == (403, "M_FORBIDDEN")
    assert error(await client.get(url + q("$missing"), headers=alice.headers)) \
        == (404, "M_NOT_FOUND")
    r = await client.get(url + q(hidden), params={"limit": "x"}, headers=alice.headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.get(url + q(hidden), params={"filter": "{nope"}, headers=alice.headers)
    assert error(r) == (400, "M_NOT_JSON")
    r = await client.get(url + q(hidden), params={"filter": '{"limit": "x"}'},
                         headers=alice.headers)
    assert error(r) == (400, "M_BAD_JSON")
    # Seen by bob, the context of a later event skips what he may not see.
    later = await say(client, alice, room, "for bob")
    r = await client.get(url + q(later), headers=bob.headers)
    assert "before bob" not in bodies(r.json()["events_before"])


# --- /timestamp_to_event ------------------------------------------------------------

async def test_timestamp_to_event(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    room = await create(client, alice)
    first = await say(client, alice, room, "first")
    r = await client.get(f"{V3}/rooms/{room}/event/{q(first)}", headers=alice.headers)
    ts = r.json()["origin_server_ts"]
    url = f"{V1}/rooms/{room}/timestamp_to_event"
    r = await client.get(url, params={"ts": str(ts), "dir": "b"}, headers=alice.headers)
    assert r.json() == {"event_id": first, "origin_server_ts": ts}
    r = await client.get(url, params={"ts": "0", "dir": "f"}, headers=alice.headers)
    assert r.status_code == 200  # the create event
    future = str(int(time.time() * 1000) + 3_600_000)
    r = await client.get(url, params={"ts": future, "dir": "f"}, headers=alice.headers)
    assert error(r) == (404, "M_NOT_FOUND")
    r = await client.get(url, params={"ts": future, "dir": "b"}, headers=alice.headers)
    assert r.json()["event_id"] == first
    r = await client.get(f"{UNSTABLE}/org.matrix.msc3030/rooms/{room}/timestamp_to_event",
                         params={"ts": "0", "dir": "b"}, headers=alice.headers)
    assert error(r) == (404, "M_NOT_FOUND")
    for params, expected in (({"dir": "f"}, (400, "M_MISSING_PARAM")),
                             ({"ts": "soon", "dir": "f"}, (400, "M_INVALID_PARAM")),
                             ({"ts": "1"}, (400, "M_MISSING_PARAM")),
                             ({"ts": "1", "dir": "x"}, (400, "M_INVALID_PARAM"))):
        assert error(await client.get(url, params=params, headers=alice.headers)) == expected
    r = await client.get(url, params={"ts": "0", "dir": "f"}, headers=eve.headers)
    assert error(r) == (403, "M_FORBIDDEN")


# --- room summaries -----------------------------------------------------------------

async def test_room_summary(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    room = await create(client, alice, preset="public_chat", name="Summit",
                        room_alias_name="summit", room_version="11",
                        initial_state=[{"type": "m.room.encryption",
                                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    expected = {"room_id": room, "name": "Summit", "canonical_alias": "#summit:test.local",
                "num_joined_members": 1, "world_readable": False, "guest_can_join": False,
                "join_rule": "public", "room_version": "11",
                "encryption": "m.megolm.v1.aes-sha2"}
    for path in (f"{V1}/room_summary/{room}", f"{V1}/room_summary/{q('#summit:test.local')}",
                 f"{UNSTABLE}/im.nheko.summary/rooms/{room}/summary",
                 f"{UNSTABLE}/im.nheko.summary/summary/{room}"):
        r = await client.get(path, headers=alice.headers)
        assert r.json() == {**expected, "membership": "join"}, path
    r = await client.get(f"{V1}/room_summary/{room}", headers=eve.headers)
    assert r.json()["membership"] == "leave"
    r = await client.get(f"{V1}/room_summary/{room}")  # public: no token needed
    assert r.json() == expected


async def test_room_summary_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    private = await create(client, alice)
    for who in (eve.headers, {}):
        r = await client.get(f"{V1}/room_summary/{private}", headers=who)
        assert error(r) == (404, "M_NOT_FOUND")
    r = await client.get(f"{V1}/room_summary/!unknown:test.local", headers=alice.headers)
    assert error(r) == (404, "M_NOT_FOUND")
    r = await client.get(f"{V1}/room_summary/{q('#unknown:test.local')}", headers=alice.headers)
    assert error(r) == (404, "M_NOT_FOUND")
    r = await client.get(f"{V1}/room_summary/nonsense", headers=alice.headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.get(f"{V1}/room_summary/{private}",
                         headers={"Authorization": "Bearer wrong"})
    assert error(r) == (401, "M_UNKNOWN_TOKEN")
    # Invitees may look before they join.
    await client.post(f"{V3}/rooms/{private}/invite", json={"user_id": eve.user_id},
                      headers=alice.headers)
    r = await client.get(f"{V1}/room_summary/{private}", headers=eve.headers)
    assert r.json()["membership"] == "invite"


# --- spaces -------------------------------------------------------------------------

async def add_child(client: httpx.AsyncClient, user: LoggedIn, space: str, child: str,
                    **content: Any) -> None:
    r = await client.put(f"{V3}/rooms/{space}/state/m.space.child/{q(child)}",
                         json={"via": ["test.local"], **content}, headers=user.headers)
    assert r.status_code == 200, r.text


async def make_space(client: httpx.AsyncClient, user: LoggedIn, name: str) -> str:
    return await create(client, user, preset="public_chat", name=name,
                        creation_content={"type": "m.space"})


async def test_hierarchy(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    root = await make_space(client, alice, "Root")
    sub = await make_space(client, alice, "Sub")
    a = await create(client, alice, preset="public_chat", name="A")
    b = await create(client, alice, preset="public_chat", name="B")
    deep = await create(client, alice, preset="public_chat", name="Deep")
    secret = await create(client, alice, name="Secret")  # invite only
    await add_child(client, alice, root, b, order="2")
    await add_child(client, alice, root, a, order="1", suggested=True)
    await add_child(client, alice, root, sub)  # no order: after the ordered ones
    await add_child(client, alice, root, secret)
    await add_child(client, alice, root, "!remote:other.example")
    await add_child(client, alice, sub, deep)
    await add_child(client, alice, sub, root)  # a loop
    r = await client.put(f"{V3}/rooms/{root}/state/m.space.child/{q('!gone:test.local')}",
                         json={}, headers=alice.headers)  # removed child: no via
    url = f"{V1}/rooms/{root}/hierarchy"
    r = await client.get(url, headers=bob.headers)
    assert r.status_code == 200, r.text
    rooms = r.json()["rooms"]
    names = [room.get("name") for room in rooms]
    assert names == ["Root", "A", "B", "Sub", "Deep"]  # depth first, secret and remote left out
    assert rooms[0]["room_type"] == "m.space"
    children = rooms[0]["children_state"]
    assert [c["state_key"] for c in children][:3] == [a, b, sub]
    assert all("origin_server_ts" in c and c["type"] == "m.space.child" for c in children)
    assert rooms[1]["children_state"] == []
    # alice may see the invite-only room.
    r = await client.get(url, headers=alice.headers)
    assert "Secret" in [room.get("name") for room in r.json()["rooms"]]
    # suggested_only, max_depth, pages.
    r = await client.get(url, params={"suggested_only": "true"}, headers=bob.headers)
    assert [room.get("name") for room in r.json()["rooms"]] == ["Root", "A"]
    r = await client.get(url, params={"max_depth": "1"}, headers=bob.headers)
    assert [room.get("name") for room in r.json()["rooms"]] == ["Root", "A", "B", "Sub"]
    r = await client.get(url, params={"max_depth": "0"}, headers=bob.headers)
    assert [room.get("name") for room in r.json()["rooms"]] == ["Root"]
    seen: list[str] = []
    token = None
    while True:
        params = {"limit": "2", **({"from": token} if token else {})}
        page = (await client.get(url, params=params, headers=bob.headers)).json()
        seen += [room["name"] for room in page["rooms"]]
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == names
    r = await client.get(f"{UNSTABLE}/org.matrix.msc2946/rooms/{root}/hierarchy",
                         headers=bob.headers)
    assert len(r.json()["rooms"]) == 5


async def test_hierarchy_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    space = await make_space(client, alice, "Space")
    child = await create(client, alice, preset="public_chat")
    await add_child(client, alice, space, child)
    private = await create(client, alice, creation_content={"type": "m.space"})
    url = f"{V1}/rooms/{space}/hierarchy"
    page = (await client.get(url, params={"limit": "1"}, headers=eve.headers)).json()
    token = page["next_batch"]
    for params, expected in (
            ({"limit": "0"}, (400, "M_INVALID_PARAM")),
            ({"limit": "x"}, (400, "M_INVALID_PARAM")),
            ({"max_depth": "-1"}, (400, "M_INVALID_PARAM")),
            ({"suggested_only": "maybe"}, (400, "M_INVALID_PARAM")),
            ({"from": "garbage"}, (400, "M_INVALID_PARAM")),
            ({"from": token, "max_depth": "1"}, (400, "M_INVALID_PARAM")),
            ({"from": token, "suggested_only": "true"}, (400, "M_INVALID_PARAM")),
            ({"from": "h99_3_0"}, (400, "M_INVALID_PARAM")),
    ):
        assert error(await client.get(url, params=params, headers=eve.headers)) == expected
    r = await client.get(f"{V1}/rooms/{private}/hierarchy", headers=eve.headers)
    assert error(r) == (403, "M_FORBIDDEN")
    r = await client.get(f"{V1}/rooms/!unknown:test.local/hierarchy", headers=eve.headers)
    assert error(r) == (403, "M_FORBIDDEN")
    # Banned users see nothing even of a public space.
    await client.post(f"{V3}/rooms/{space}/ban", json={"user_id": eve.user_id},
                      headers=alice.headers)
    assert error(await client.get(url, headers=eve.headers)) == (403, "M_FORBIDDEN")


# --- reports ------------------------------------------------------------------------

async def test_reports(client: httpx.AsyncClient, server: Server,
                       caplog: pytest.LogCaptureFixture) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    eve = await make_user(server, "eve")
    room = await create(client, alice, preset="public_chat")
    await join(client, bob, room)
    event_id = await say(client, bob, room, "rude")
    assert server.services is not None
    received: list[str] = []
    server.services.reports.on_report.append(received.append)
    with caplog.at_level(logging.WARNING, logger="conduwuit.services.reports"):
        r = await client.post(f"{V3}/rooms/{room}/report/{q(event_id)}",
                              json={"reason": "rude", "score": -50}, headers=alice.headers)
        assert r.status_code == 200, r.text
    assert "rude" in received[0] and event_id in received[0] and bob.user_id in received[0]
    assert any("Event report" in m for m in caplog.messages)
    assert (await client.post(f"{V3}/rooms/{room}/report", json={"reason": "bad room"},
                              headers=eve.headers)).status_code == 200
    assert (await client.post(f"{UNSTABLE}/org.matrix.msc4151/rooms/{room}/report",
                              json={"reason": ""}, headers=eve.headers)).status_code == 200
    assert (await client.post(f"{V3}/users/{q(bob.user_id)}/report", json={"reason": "spam"},
                              headers=alice.headers)).status_code == 200
    assert len(received) == 4

    event_url = f"{V3}/rooms/{room}/report/{q(event_id)}"
    other = await create(client, alice)
    for url, user, body, expected in (
            (event_url, eve, {"reason": "x"}, (404, "M_NOT_FOUND")),  # reporter not in room
            (f"{V3}/rooms/{other}/report/{q(event_id)}", alice, {}, (404, "M_NOT_FOUND")),
            (f"{V3}/rooms/{room}/report/{q('$nope')}", alice, {}, (404, "M_NOT_FOUND")),
            (event_url, alice, {"reason": "x" * 751}, (400, "M_INVALID_PARAM")),
            (event_url, alice, {"reason": 5}, (400, "M_BAD_JSON")),
            (event_url, alice, {"score": 10}, (400, "M_INVALID_PARAM")),
            (f"{V3}/rooms/!nope:test.local/report", alice, {"reason": "x"},
             (404, "M_NOT_FOUND")),
            (f"{V3}/rooms/{room}/report", alice, {"reason": "x" * 751}, (400, "M_INVALID_PARAM")),
            (f"{V3}/users/{q('@ghost:test.local')}/report", alice, {"reason": "x"},
             (404, "M_NOT_FOUND")),
            (f"{V3}/users/{q('ghost')}/report", alice, {"reason": "x"},
             (400, "M_INVALID_PARAM")),
    ):
        r = await client.post(url, json=body, headers=user.headers)
        assert error(r) == expected, (url, body)
    assert len(received) == 4
    r = await client.post(event_url, json={"reason": "x"})
    assert r.status_code == 401


async def test_reports_wait_a_little(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    assert server.services is not None
    server.services.reports.delay = (0.2, 0.3)
    started = time.monotonic()
    r = await client.post(f"{V3}/rooms/!nope:test.local/report", json={"reason": "x"},
                          headers=alice.headers)
    assert r.status_code == 404
    assert 0.2 <= time.monotonic() - started < 2


# --- mutual rooms -------------------------------------------------------------------

async def test_mutual_rooms(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    shared = sorted([await create(client, alice, preset="public_chat") for _ in range(3)])
    await create(client, alice, preset="public_chat")  # alice alone
    for room in shared:
        await join(client, bob, room)
    r = await client.get(f"{V1}/mutual_rooms", params={"user_id": bob.user_id},
                         headers=alice.headers)
    assert r.json() == {"joined": shared, "count": 3}
    r = await client.get(f"{UNSTABLE}/uk.half-shot.msc2666/user/mutual_rooms",
                         params={"user_id": alice.user_id}, headers=bob.headers)
    assert r.json() == {"joined": shared}
    r = await client.get(f"{V1}/mutual_rooms", params={"user_id": "@ghost:test.local"},
                         headers=alice.headers)
    assert r.json() == {"joined": [], "count": 0}
    for params, expected in (({}, (400, "M_MISSING_PARAM")),
                             ({"user_id": "bob"}, (400, "M_INVALID_PARAM")),
                             ({"user_id": alice.user_id}, (400, "M_INVALID_PARAM")),
                             ({"user_id": bob.user_id, "from": "zz"}, (400, "M_INVALID_PARAM"))):
        r = await client.get(f"{V1}/mutual_rooms", params=params, headers=alice.headers)
        assert error(r) == expected, params
    r = await client.get(f"{V1}/mutual_rooms", params={"user_id": bob.user_id})
    assert r.status_code == 401


# --- conduwuit: no call invites in public rooms ---------------------------------------

async def test_call_invites_refused_in_public_rooms(client: httpx.AsyncClient,
                                                    server: Server) -> None:
    alice = await make_user(server, "alice")
    invite = {"call_id": "c1", "lifetime": 60000, "version": "1",
              "offer": {"type": "offer", "sdp": "v=0"}}
    for body in ({"preset": "public_chat"}, {"visibility": "public", "preset": "private_chat"}):
        room = await create(client, alice, **body)
        r = await client.put(f"{V3}/rooms/{room}/send/m.call.invite/c1", json=invite,
                             headers=alice.headers)
        assert error(r) == (403, "M_FORBIDDEN"), body
    private = await create(client, alice)
    r = await client.put(f"{V3}/rooms/{private}/send/m.call.invite/c1", json=invite,
                         headers=alice.headers)
    assert r.status_code == 200
