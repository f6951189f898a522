"""History visibility over every read path: /messages, /event, /state, /members; guests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, q, send

V3 = "/_matrix/client/v3"


async def make_guest(server: Server, localpart: str) -> LoggedIn:
    services = server.services
    assert services is not None
    user_id = f"@{localpart}:{server.config.server_name}"
    services.users.create(user_id, "", guest=True)
    device_id = services.devices.create(user_id, None, "guest device")
    tokens = services.devices.issue(user_id, device_id)
    return LoggedIn(user_id, device_id, tokens.access_token, "")


async def say(client: httpx.AsyncClient, user: LoggedIn, room: str, body: str) -> str:
    r = await send(client, user, room, body, f"t-{body}")
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


async def history(client: httpx.AsyncClient, user: LoggedIn, room: str,
                  **params: Any) -> list[str]:
    """Every message body the user can page back through, oldest first."""
    bodies: list[str] = []
    token = None
    for _ in range(50):
        query = {"dir": "b", "limit": "5", **params, **({"from": token} if token else {})}
        r = await client.get(f"{V3}/rooms/{room}/messages", params=query, headers=user.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        bodies += [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page:
            break
        token = page["end"]
    return list(reversed(bodies))


async def set_visibility(client: httpx.AsyncClient, user: LoggedIn, room: str,
                         value: str) -> str:
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.history_visibility",
                         json={"history_visibility": value}, headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


async def join(client: httpx.AsyncClient, user: LoggedIn, room: str) -> None:
    r = await client.post(f"{V3}/rooms/{room}/join", json={}, headers=user.headers)
    assert r.status_code == 200, r.text


async def leave(client: httpx.AsyncClient, user: LoggedIn, room: str) -> None:
    r = await client.post(f"{V3}/rooms/{room}/leave", json={}, headers=user.headers)
    assert r.status_code == 200, r.text


async def event_status(client: httpx.AsyncClient, user: LoggedIn, room: str,
                       event_id: str) -> int:
    r = await client.get(f"{V3}/rooms/{room}/event/{q(event_id)}", headers=user.headers)
    return r.status_code


async def test_shared_history_and_leaving(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat", name="Before")
    early = await say(client, alice, room, "before bob")
    await join(client, bob, room)
    await say(client, alice, room, "with bob")
    # shared: the history from before bob joined is his to read.
    assert await history(client, bob, room) == ["before bob", "with bob"]
    assert await event_status(client, bob, room, early) == 200
    await leave(client, bob, room)
    late = await say(client, alice, room, "after bob")
    await client.put(f"{V3}/rooms/{room}/state/m.room.name", json={"name": "After"},
                     headers=alice.headers)
    # After leaving: everything up to the leave, nothing after it.
    assert await history(client, bob, room) == ["before bob", "with bob"]
    assert await event_status(client, bob, room, early) == 200
    assert await event_status(client, bob, room, late) == 404
    r = await client.get(f"{V3}/rooms/{room}/messages", params={"dir": "f", "limit": "100"},
                         headers=bob.headers)
    assert "after bob" not in [e["content"].get("body") for e in r.json()["chunk"]]
    # State as it was when he left.
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.name", headers=bob.headers)
    assert r.json() == {"name": "Before"}
    r = await client.get(f"{V3}/rooms/{room}/state", headers=bob.headers)
    names = [e["content"]["name"] for e in r.json() if e["type"] == "m.room.name"]
    assert names == ["Before"]
    r = await client.get(f"{V3}/rooms/{room}/members", headers=bob.headers)
    bob_member = [e for e in r.json()["chunk"] if e["state_key"] == bob.user_id]
    assert bob_member[0]["content"]["membership"] == "leave"
    # alice (joined) sees the current state.
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.name", headers=alice.headers)
    assert r.json() == {"name": "After"}
    # Once forgotten, the room is closed to him.
    assert (await client.post(f"{V3}/rooms/{room}/forget", json={},
                              headers=bob.headers)).status_code == 200
    r = await client.get(f"{V3}/rooms/{room}/messages", headers=bob.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")


async def test_joined_visibility_hides_earlier_history(client: httpx.AsyncClient,
                                                       server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    await set_visibility(client, alice, room, "joined")
    hidden = await say(client, alice, room, "private past")
    await join(client, bob, room)
    seen = await say(client, alice, room, "hello bob")
    assert await history(client, bob, room) == ["hello bob"]
    assert await event_status(client, bob, room, hidden) == 404
    assert await event_status(client, bob, room, seen) == 200
    # His own join is visible to him.
    r = await client.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"},
                         headers=bob.headers)
    members = [e for e in r.json()["chunk"] if e["type"] == "m.room.member"
               and e["state_key"] == bob.user_id]
    assert [m["content"]["membership"] for m in members] == ["join"]
    assert await history(client, alice, room) == ["private past", "hello bob"]


async def test_invited_visibility(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice)
    await set_visibility(client, alice, room, "invited")
    await say(client, alice, room, "before invite")
    r = await client.post(f"{V3}/rooms/{room}/invite", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status_code == 200
    await say(client, alice, room, "while invited")
    await join(client, bob, room)
    await say(client, alice, room, "joined")
    assert await history(client, bob, room) == ["while invited", "joined"]


async def test_world_readable_rooms_are_open_to_all(client: httpx.AsyncClient,
                                                    server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    room = await create(client, alice, name="Open book")
    before = await say(client, alice, room, "shared era")
    change = await set_visibility(client, alice, room, "world_readable")
    after = await say(client, alice, room, "readable era")
    # eve never joined: world-readable events only, and the change itself.
    assert await history(client, eve, room) == ["readable era"]
    assert await event_status(client, eve, room, after) == 200
    assert await event_status(client, eve, room, change) == 200
    assert await event_status(client, eve, room, before) == 404
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.name", headers=eve.headers)
    assert r.json() == {"name": "Open book"}
    assert (await client.get(f"{V3}/rooms/{room}/members", headers=eve.headers)).is_success
    # Closing it again: the closing event is visible too, what follows is not.
    closing = await set_visibility(client, alice, room, "joined")
    later = await say(client, alice, room, "closed era")
    assert await event_status(client, eve, room, later) == 403  # no longer readable at all
    assert closing


async def test_history_visibility_change_event_seen_from_either_side(
        client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    await set_visibility(client, alice, room, "world_readable")
    closing = await set_visibility(client, alice, room, "joined")
    await join(client, bob, room)
    # Visible because the visibility before it (world_readable) allows it.
    assert await event_status(client, bob, room, closing) == 200


async def test_strangers_are_refused(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    room = await create(client, alice)
    event_id = await say(client, alice, room, "secret")
    for path in ("messages", "state", "state/m.room.create", "members", "joined_members",
                 f"event/{q(event_id)}"):
        r = await client.get(f"{V3}/rooms/{room}/{path}", headers=eve.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), path
    r = await client.get(f"{V3}/rooms/!unknown:test.local/messages", headers=eve.headers)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # An invitee is not a member yet.
    r = await client.post(f"{V3}/rooms/{room}/invite", json={"user_id": eve.user_id},
                          headers=alice.headers)
    r = await client.get(f"{V3}/rooms/{room}/messages", headers=eve.headers)
    assert r.status_code == 403
    # An event of another room through this room's path.
    other = await create(client, alice)
    other_event = await say(client, alice, other, "elsewhere")
    assert await event_status(client, alice, room, other_event) == 404


async def test_a_page_of_invisible_events_still_has_an_end(client: httpx.AsyncClient,
                                                           server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    await set_visibility(client, alice, room, "joined")
    for i in range(8):
        await say(client, alice, room, f"old {i}")
    await join(client, bob, room)
    services = server.services
    assert services is not None
    import conduwuit.handlers.client.rooms as rooms_handlers

    budget = rooms_handlers.SCAN_BUDGET
    rooms_handlers.SCAN_BUDGET = 2
    try:
        r = await client.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "1"},
                             headers=bob.headers)
        first = r.json()
        assert [e["type"] for e in first["chunk"]] == ["m.room.member"]
        r = await client.get(f"{V3}/rooms/{room}/messages",
                             params={"dir": "b", "limit": "1", "from": first["end"]},
                             headers=bob.headers)
        page = r.json()
        assert page["chunk"] == [] and "end" in page  # budget spent: come back for more
    finally:
        rooms_handlers.SCAN_BUDGET = budget


# --- guests -------------------------------------------------------------------------

async def test_guests_join_only_where_allowed(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    guest = await make_guest(server, "guest1")
    closed = await create(client, alice, preset="public_chat")  # no guest access
    r = await client.post(f"{V3}/rooms/{closed}/join", json={}, headers=guest.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    # /join/{roomIdOrAlias} is not a guest endpoint.
    r = await client.post(f"{V3}/join/{closed}", json={}, headers=guest.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    room = await create(client, alice, preset="public_chat",
                        initial_state=[{"type": "m.room.guest_access",
                                        "content": {"guest_access": "can_join"}}])
    await join(client, guest, room)
    await say(client, guest, room, "guest here")
    # Taking guest access away makes local guests leave.
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.guest_access",
                         json={"guest_access": "forbidden"}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.get(f"{V3}/rooms/{room}/joined_members", headers=alice.headers)
    assert set(r.json()["joined"]) == {alice.user_id}


async def test_guests_peek_world_readable_rooms(client: httpx.AsyncClient,
                                                server: Server) -> None:
    alice = await make_user(server, "alice")
    guest = await make_guest(server, "guest2")
    room = await create(client, alice, preset="public_chat",
                        initial_state=[{"type": "m.room.history_visibility",
                                        "content": {"history_visibility": "world_readable"}}])
    await say(client, alice, room, "for everyone")
    assert await history(client, guest, room) == ["for everyone"]
    private = await create(client, alice)
    r = await client.get(f"{V3}/rooms/{private}/messages", headers=guest.headers)
    assert r.status_code == 403


async def test_visibility_survives_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        bob = await make_user(server, "bob")
        room = await create(client, alice, preset="public_chat")
        await set_visibility(client, alice, room, "joined")
        hidden = await say(client, alice, room, "hidden")
        await join(client, bob, room)
        await leave(client, bob, room)
        after = await say(client, alice, room, "after")
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        assert await event_status(client, bob, room, hidden) == 404
        assert await event_status(client, bob, room, after) == 404
        assert await history(client, bob, room) == []


async def test_search_relations_threads_and_sync_hide_earlier_history(
        client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.history_visibility/",
                         json={"history_visibility": "joined"}, headers=alice.headers)
    assert r.status_code == 200
    root = await say(client, alice, room, "secret root")
    r = await client.put(f"{V3}/rooms/{room}/send/m.room.message/thr", headers=alice.headers,
                         json={"msgtype": "m.text", "body": "secret reply",
                               "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    assert r.status_code == 200
    await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    await say(client, alice, room, "public words after the join")
    r = await client.post(f"{V3}/search", headers=bob.headers, json={
        "search_categories": {"room_events": {"search_term": "secret"}}})
    assert r.json()["search_categories"]["room_events"]["results"] == []
    r = await client.post(f"{V3}/search", headers=bob.headers, json={
        "search_categories": {"room_events": {"search_term": "public"}}})
    assert len(r.json()["search_categories"]["room_events"]["results"]) == 1
    r = await client.get(f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(root)}",
                         headers=bob.headers)
    assert r.json()["chunk"] == []
    r = await client.get(f"/_matrix/client/v1/rooms/{q(room)}/threads", headers=bob.headers)
    assert r.json()["chunk"] == []
    r = await client.get(f"{V3}/sync", headers=bob.headers)
    bodies = [e["content"].get("body") for e in
              r.json()["rooms"]["join"][room]["timeline"]["events"]]
    assert "secret root" not in bodies and "public words after the join" in bodies
