"""Room aliases, canonical alias checks, the published room directory and /publicRooms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, q

V3 = "/_matrix/client/v3"


def alias_url(alias: str) -> str:
    return f"{V3}/directory/room/{q(alias)}"


def error(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")


async def join(client: httpx.AsyncClient, user: LoggedIn, room: str) -> None:
    r = await client.post(f"{V3}/join/{room}", json={}, headers=user.headers)
    assert r.status_code == 200, r.text


# --- aliases --------------------------------------------------------------------------

async def test_alias_lifecycle(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, preset="public_chat")
    r = await client.put(alias_url("#lobby:test.local"), json={"room_id": room},
                         headers=alice.headers)
    assert r.status_code == 200, r.text
    # Resolving needs no token and lists our server first.
    r = await client.get(alias_url("#lobby:test.local"))
    assert r.json() == {"room_id": room, "servers": ["test.local"]}
    r = await client.get(f"{V3}/rooms/{room}/aliases", headers=alice.headers)
    assert r.json() == {"aliases": ["#lobby:test.local"]}
    r = await client.get(f"/_matrix/client/unstable/org.matrix.msc2432/rooms/{room}/aliases",
                         headers=alice.headers)
    assert r.json() == {"aliases": ["#lobby:test.local"]}
    r = await client.delete(alias_url("#lobby:test.local"), headers=alice.headers)
    assert r.status_code == 200
    r = await client.get(alias_url("#lobby:test.local"))
    assert error(r) == (404, "M_NOT_FOUND")
    r = await client.get(f"{V3}/rooms/{room}/aliases", headers=alice.headers)
    assert r.json() == {"aliases": []}


async def test_alias_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice)
    headers = alice.headers
    # Not an alias; another server's alias; missing or mistyped room id; unknown room.
    r = await client.put(alias_url("lobby"), json={"room_id": room}, headers=headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.put(alias_url("#lobby:other.example"), json={"room_id": room},
                         headers=headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.put(alias_url("#lobby:test.local"), json={}, headers=headers)
    assert error(r) == (400, "M_MISSING_PARAM")
    r = await client.put(alias_url("#lobby:test.local"), json={"room_id": 5}, headers=headers)
    assert error(r) == (400, "M_BAD_JSON")
    r = await client.put(alias_url("#lobby:test.local"), json={"room_id": "!nope:test.local"},
                         headers=headers)
    assert error(r) == (404, "M_NOT_FOUND")
    # Taken.
    assert (await client.put(alias_url("#lobby:test.local"), json={"room_id": room},
                             headers=headers)).status_code == 200
    r = await client.put(alias_url("#lobby:test.local"), json={"room_id": room},
                         headers=headers)
    assert error(r) == (409, "M_ROOM_IN_USE")
    # No token.
    r = await client.put(alias_url("#other:test.local"), json={"room_id": room})
    assert error(r) == (401, "M_MISSING_TOKEN")
    # Resolving an invalid alias, or one of another server.
    r = await client.get(alias_url("lobby"))
    assert error(r) == (400, "M_INVALID_PARAM")
    # Another server's alias is asked of that server; this one cannot be reached.
    r = await client.get(alias_url("#lobby:other.example"))
    assert error(r) == (502, "M_UNKNOWN")
    # Deleting an unknown alias.
    r = await client.delete(alias_url("#gone:test.local"), headers=headers)
    assert error(r) == (404, "M_NOT_FOUND")


async def test_forbidden_alias_names(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, forbidden_alias_names=["^bad"])) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await create(client, alice)
        r = await client.put(alias_url("#badname:test.local"), json={"room_id": room},
                             headers=alice.headers)
        assert error(r) == (403, "M_FORBIDDEN")


async def test_who_may_delete_an_alias(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    carol = await make_user(server, "carol")
    admin = await make_user(server, "root", admin=True)
    room = await create(client, alice, preset="public_chat")
    await join(client, bob, room)
    for name in ("one", "two", "three"):
        r = await client.put(alias_url(f"#{name}:test.local"), json={"room_id": room},
                             headers=carol.headers)  # any user may create an alias
        assert r.status_code == 200
    # bob is neither the creator nor a moderator.
    r = await client.delete(alias_url("#one:test.local"), headers=bob.headers)
    assert error(r) == (403, "M_FORBIDDEN")
    # The creator, a room moderator (canonical alias power) and a server admin may.
    assert (await client.delete(alias_url("#one:test.local"),
                                headers=carol.headers)).status_code == 200
    assert (await client.delete(alias_url("#two:test.local"),
                                headers=alice.headers)).status_code == 200
    assert (await client.delete(alias_url("#three:test.local"),
                                headers=admin.headers)).status_code == 200


async def test_deleting_the_canonical_alias_updates_the_room(client: httpx.AsyncClient,
                                                             server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, room_alias_name="main")
    await client.put(alias_url("#alt:test.local"), json={"room_id": room}, headers=alice.headers)
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.canonical_alias",
                         json={"alias": "#main:test.local", "alt_aliases": ["#alt:test.local"]},
                         headers=alice.headers)
    assert r.status_code == 200, r.text
    await client.delete(alias_url("#alt:test.local"), headers=alice.headers)
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.canonical_alias",
                         headers=alice.headers)
    assert r.json() == {"alias": "#main:test.local", "alt_aliases": []}
    await client.delete(alias_url("#main:test.local"), headers=alice.headers)
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.canonical_alias",
                         headers=alice.headers)
    assert r.json() == {"alt_aliases": []}


async def test_room_aliases_need_membership(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    eve = await make_user(server, "eve")
    room = await create(client, alice, room_alias_name="secret")
    r = await client.get(f"{V3}/rooms/{room}/aliases", headers=eve.headers)
    assert error(r) == (403, "M_FORBIDDEN")
    r = await client.get(f"{V3}/rooms/!nope:test.local/aliases", headers=eve.headers)
    assert error(r) == (404, "M_NOT_FOUND")
    # World-readable rooms show them to anyone.
    await client.put(f"{V3}/rooms/{room}/state/m.room.history_visibility",
                     json={"history_visibility": "world_readable"}, headers=alice.headers)
    r = await client.get(f"{V3}/rooms/{room}/aliases", headers=eve.headers)
    assert r.json() == {"aliases": ["#secret:test.local"]}


async def test_canonical_alias_validation(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, room_alias_name="here")
    other = await create(client, alice, room_alias_name="there")
    url = f"{V3}/rooms/{room}/state/m.room.canonical_alias"
    ok = await client.put(url, json={"alias": "#here:test.local"}, headers=alice.headers)
    assert ok.status_code == 200
    for content, expected in (
            ({"alias": "#missing:test.local"}, (400, "M_BAD_ALIAS")),
            ({"alias": "#there:test.local"}, (400, "M_BAD_ALIAS")),
            ({"alt_aliases": ["#there:test.local"]}, (400, "M_BAD_ALIAS")),
            ({"alias": "#remote:other.example"}, (400, "M_BAD_ALIAS")),
            ({"alias": "not-an-alias"}, (400, "M_INVALID_PARAM")),
            ({"alias": 5}, (400, "M_BAD_JSON")),
            ({"alt_aliases": "#here:test.local"}, (400, "M_BAD_JSON")),
    ):
        r = await client.put(url, json=content, headers=alice.headers)
        assert error(r) == expected, content
    assert other
    # Clearing the canonical alias is always fine.
    assert (await client.put(url, json={}, headers=alice.headers)).status_code == 200


# --- directory visibility -------------------------------------------------------------

async def test_directory_visibility(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    url = f"{V3}/directory/list/room/{room}"
    assert (await client.get(url)).json() == {"visibility": "private"}  # no token needed
    r = await client.put(url, json={"visibility": "public"}, headers=alice.headers)
    assert r.status_code == 200
    assert (await client.get(url)).json() == {"visibility": "public"}
    # Not in the room; in it without the power.
    r = await client.put(url, json={"visibility": "private"}, headers=bob.headers)
    assert error(r) == (403, "M_FORBIDDEN")
    await join(client, bob, room)
    r = await client.put(url, json={"visibility": "private"}, headers=bob.headers)
    assert error(r) == (403, "M_FORBIDDEN")
    r = await client.put(url, json={"visibility": "secret"}, headers=alice.headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.get(f"{V3}/directory/list/room/!nope:test.local")
    assert error(r) == (404, "M_NOT_FOUND")
    r = await client.put(f"{V3}/directory/list/room/!nope:test.local",
                         json={"visibility": "public"}, headers=alice.headers)
    assert error(r) == (404, "M_NOT_FOUND")
    r = await client.put(url, json={"visibility": "private"}, headers=alice.headers)
    assert (await client.get(url)).json() == {"visibility": "private"}
    # The spec's default is public; admins may change any room.
    admin = await make_user(server, "root", admin=True)
    assert (await client.put(url, json={}, headers=admin.headers)).status_code == 200
    assert (await client.get(url)).json() == {"visibility": "public"}


async def test_lockdown_lets_only_admins_publish(tmp_path: Path) -> None:
    config = make_config(tmp_path, lockdown_public_room_directory=True)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        admin = await make_user(server, "root", admin=True)
        room = await create(client, alice, preset="public_chat")
        url = f"{V3}/directory/list/room/{room}"
        r = await client.put(url, json={"visibility": "public"}, headers=alice.headers)
        assert error(r) == (403, "M_FORBIDDEN")
        r = await client.put(url, json={"visibility": "public"}, headers=admin.headers)
        assert r.status_code == 200
        # Unpublishing stays open to room moderators.
        r = await client.put(url, json={"visibility": "private"}, headers=alice.headers)
        assert r.status_code == 200


# --- /publicRooms ---------------------------------------------------------------------

async def published(client: httpx.AsyncClient, user: LoggedIn, **body: Any) -> str:
    return await create(client, user, visibility="public", preset="public_chat", **body)


async def test_public_rooms_chunks_and_order(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    small = await published(client, alice, name="Small", topic="Quiet corner")
    big = await published(client, alice, name="Big", room_alias_name="big",
                          creation_content={"type": "m.space"},
                          initial_state=[{"type": "m.room.avatar",
                                          "content": {"url": "mxc://test.local/abc"}},
                                         {"type": "m.room.history_visibility",
                                          "content": {"history_visibility": "world_readable"}}])
    await create(client, alice, name="Hidden")  # not published
    await join(client, bob, big)
    r = await client.get(f"{V3}/publicRooms", headers=alice.headers)
    body = r.json()
    assert body["total_room_count_estimate"] == 2
    assert [c["room_id"] for c in body["chunk"]] == [big, small]  # most members first
    first, second = body["chunk"]
    assert first == {"room_id": big, "name": "Big", "canonical_alias": "#big:test.local",
                     "avatar_url": "mxc://test.local/abc", "num_joined_members": 2,
                     "world_readable": True, "guest_can_join": False, "join_rule": "public",
                     "room_type": "m.space"}
    assert second["topic"] == "Quiet corner" and "room_type" not in second
    assert "next_batch" not in body and "prev_batch" not in body


async def test_public_rooms_filters_and_pages(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    rooms = [await published(client, alice, name=f"Room {i}", topic="Cats" if i % 2 else "Dogs")
             for i in range(5)]
    space = await published(client, alice, name="Space", creation_content={"type": "m.space"})
    url = f"{V3}/publicRooms"
    r = await client.post(url, json={"filter": {"generic_search_term": "cATs"}},
                          headers=alice.headers)
    assert {c["room_id"] for c in r.json()["chunk"]} == {rooms[1], rooms[3]}
    r = await client.post(url, json={"filter": {"room_types": ["m.space"]}},
                          headers=alice.headers)
    assert [c["room_id"] for c in r.json()["chunk"]] == [space]
    r = await client.post(url, json={"filter": {"room_types": [None]}}, headers=alice.headers)
    assert len(r.json()["chunk"]) == 5
    # Pages of two, forwards then back.
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        r = await client.post(url, json={"limit": 2, **({"since": token} if token else {})},
                              headers=alice.headers)
        page = r.json()
        seen += [c["room_id"] for c in page["chunk"]]
        pages += 1
        if "next_batch" not in page:
            break
        token = page["next_batch"]
    assert pages == 3 and sorted(seen) == sorted([*rooms, space])
    r = await client.get(url, params={"limit": "2", "since": page["prev_batch"]},
                         headers=alice.headers)
    assert [c["room_id"] for c in r.json()["chunk"]] == seen[2:4]


async def test_public_rooms_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    url = f"{V3}/publicRooms"
    assert error(await client.get(url)) == (401, "M_MISSING_TOKEN")
    assert error(await client.post(url, json={})) == (401, "M_MISSING_TOKEN")
    r = await client.get(url, params={"since": "x1"}, headers=alice.headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.get(url, params={"limit": "many"}, headers=alice.headers)
    assert error(r) == (400, "M_INVALID_PARAM")
    r = await client.post(url, json={"limit": "2"}, headers=alice.headers)
    assert error(r) == (400, "M_BAD_JSON")
    r = await client.post(url, json={"since": 3}, headers=alice.headers)
    assert error(r) == (400, "M_BAD_JSON")
    r = await client.post(url, json={"filter": []}, headers=alice.headers)
    assert error(r) == (400, "M_BAD_JSON")
    r = await client.post(url, json={"filter": {"generic_search_term": 1}}, headers=alice.headers)
    assert error(r) == (400, "M_BAD_JSON")
    r = await client.post(url, json={"filter": {"room_types": "m.space"}}, headers=alice.headers)
    assert error(r) == (400, "M_BAD_JSON")
    # Our own name is fine; another server needs federation; a bad name is refused.
    r = await client.get(url, params={"server": "test.local"}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.get(url, params={"server": "other.example"}, headers=alice.headers)
    assert r.status_code == 502 and "room directory of" in r.json()["error"]
    r = await client.post(url, params={"server": "bad name!"}, json={}, headers=alice.headers)
    assert error(r) == (400, "M_INVALID_PARAM")


async def test_public_rooms_banned_server(tmp_path: Path) -> None:
    config = make_config(tmp_path, forbidden_remote_room_directory_server_names=["evil"])
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        r = await client.get(f"{V3}/publicRooms", params={"server": "evil.example"},
                             headers=alice.headers)
        assert error(r) == (403, "M_FORBIDDEN")


async def test_public_rooms_without_auth_when_allowed(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_public_room_directory_without_auth=True)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await published(client, alice, name="Open")
        r = await client.get(f"{V3}/publicRooms")
        assert [c["room_id"] for c in r.json()["chunk"]] == [room]
        r = await client.post(f"{V3}/publicRooms", json={})
        assert r.status_code == 200
        # A token that is given is still checked.
        r = await client.get(f"{V3}/publicRooms", headers={"Authorization": "Bearer nope"})
        assert error(r) == (401, "M_UNKNOWN_TOKEN")
