"""POST /rooms/{roomId}/upgrade: the new room, copied state, tombstone, aliases, refusals."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, q

V3 = "/_matrix/client/v3"


async def upgrade(client: httpx.AsyncClient, user: LoggedIn, room: str,
                  **body: Any) -> httpx.Response:
    return await client.post(f"{V3}/rooms/{room}/upgrade", json=body, headers=user.headers)


async def state(client: httpx.AsyncClient, user: LoggedIn, room: str,
                event_type: str, state_key: str = "") -> dict[str, Any]:
    r = await client.get(f"{V3}/rooms/{room}/state/{event_type}/{q(state_key)}",
                         headers=user.headers)
    assert r.status_code == 200, (event_type, r.text)
    return dict(r.json())


@pytest.mark.parametrize("new_version", ["11", "12"])
async def test_upgrade_copies_state_and_retires_the_old_room(
        client: httpx.AsyncClient, server: Server, new_version: str) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    old = await create(
        client, alice, room_version="10", preset="public_chat", visibility="public",
        name="Lounge", topic="Chat", room_alias_name="lounge",
        creation_content={"type": "org.example.kind"},
        power_level_content_override={"users": {bob.user_id: 50}},
        initial_state=[
            {"type": "m.room.avatar", "content": {"url": "mxc://test.local/pic"}},
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.server_acl", "content": {"allow": ["*"], "deny": []}},
            {"type": "m.room.history_visibility",
             "content": {"history_visibility": "joined"}},
            {"type": "org.example.private", "content": {"secret": True}},
        ])
    assert (await client.post(f"{V3}/join/{old}", json={}, headers=bob.headers)).is_success
    r = await upgrade(client, alice, old, new_version=new_version)
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    assert new != old

    create_content = await state(client, alice, new, "m.room.create")
    assert create_content["room_version"] == new_version
    assert create_content["type"] == "org.example.kind"
    assert create_content["predecessor"]["room_id"] == old
    assert create_content["predecessor"]["event_id"].startswith("$")
    assert await state(client, alice, new, "m.room.name") == {"name": "Lounge"}
    assert await state(client, alice, new, "m.room.topic") == {"topic": "Chat"}
    assert await state(client, alice, new, "m.room.avatar") == {"url": "mxc://test.local/pic"}
    assert (await state(client, alice, new, "m.room.encryption"))["algorithm"] \
        == "m.megolm.v1.aes-sha2"
    assert (await state(client, alice, new, "m.room.server_acl"))["allow"] == ["*"]
    assert await state(client, alice, new, "m.room.join_rules") == {"join_rule": "public"}
    assert await state(client, alice, new, "m.room.history_visibility") \
        == {"history_visibility": "joined"}
    r = await client.get(f"{V3}/rooms/{new}/state/org.example.private", headers=alice.headers)
    assert r.status_code == 404  # only the transferable state moves
    levels = await state(client, alice, new, "m.room.power_levels")
    assert levels["users"].get(bob.user_id) == 50
    if new_version == "12":
        assert alice.user_id not in levels["users"]  # the upgrader is the creator
    else:
        assert levels["users"][alice.user_id] == 100

    # The alias, canonical alias and directory listing moved.
    r = await client.get(f"{V3}/directory/room/{q('#lounge:test.local')}")
    assert r.json()["room_id"] == new
    assert await state(client, alice, new, "m.room.canonical_alias") \
        == {"alias": "#lounge:test.local"}
    old_alias = await state(client, alice, old, "m.room.canonical_alias")
    assert "alias" not in old_alias
    assert (await client.get(f"{V3}/directory/list/room/{new}")).json()["visibility"] == "public"
    assert (await client.get(f"{V3}/directory/list/room/{old}")).json()["visibility"] \
        == "private"

    # The old room: tombstone, and only moderators may speak or invite.
    tombstone = await state(client, alice, old, "m.room.tombstone")
    assert tombstone["replacement_room"] == new
    old_levels = await state(client, alice, old, "m.room.power_levels")
    assert old_levels["events_default"] == 50 and old_levels["invite"] == 50
    r = await client.put(f"{V3}/rooms/{old}/send/m.room.message/t",
                         json={"msgtype": "m.text", "body": "hi"}, headers=bob.headers)
    assert r.status_code == 200  # bob has 50
    carol = await make_user(server, "carol")
    assert (await client.post(f"{V3}/join/{old}", json={}, headers=carol.headers)).is_success
    r = await client.put(f"{V3}/rooms/{old}/send/m.room.message/t",
                         json={"msgtype": "m.text", "body": "hi"}, headers=carol.headers)
    assert r.status_code == 403
    # Members follow by joining the new room.
    assert (await client.post(f"{V3}/join/{new}", json={}, headers=bob.headers)).is_success


async def test_upgrade_refusals(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    eve = await make_user(server, "eve")
    room = await create(client, alice, preset="public_chat")
    assert (await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)).is_success
    cases = [
        (alice, room, {"new_version": "99"}, (400, "M_UNSUPPORTED_ROOM_VERSION")),
        (alice, room, {}, (400, "M_MISSING_PARAM")),
        (alice, room, {"new_version": 11}, (400, "M_BAD_JSON")),
        (alice, room, {"new_version": "12", "additional_creators": "@bob:test.local"},
         (400, "M_BAD_JSON")),
        (alice, room, {"new_version": "12", "additional_creators": ["bob"]},
         (400, "M_INVALID_PARAM")),
        (alice, "!nope:test.local", {"new_version": "11"}, (404, "M_NOT_FOUND")),
        (eve, room, {"new_version": "11"}, (403, "M_FORBIDDEN")),  # not in the room
        (bob, room, {"new_version": "11"}, (403, "M_FORBIDDEN")),  # no tombstone power
    ]
    for user, target, body, expected in cases:
        r = await upgrade(client, user, target, **body)
        assert (r.status_code, r.json()["errcode"]) == expected, body
    r = await client.post(f"{V3}/rooms/{room}/upgrade", json={"new_version": "11"})
    assert r.status_code == 401
    # Nothing was created or retired by the refusals.
    r = await client.get(f"{V3}/rooms/{room}/state/m.room.tombstone", headers=alice.headers)
    assert r.status_code == 404


async def test_additional_creators_in_v12(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, room_version="11", preset="public_chat",
                        power_level_content_override={"users": {bob.user_id: 100}})
    r = await upgrade(client, alice, room, new_version="12",
                      additional_creators=[bob.user_id, alice.user_id])
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    create_content = await state(client, alice, new, "m.room.create")
    assert create_content["additional_creators"] == [bob.user_id]
    assert "event_id" in create_content["predecessor"]
    levels = await state(client, alice, new, "m.room.power_levels")
    assert bob.user_id not in levels["users"] and alice.user_id not in levels["users"]


async def test_string_levels_are_normalised(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, room_version="1", preset="public_chat",
                        power_level_content_override={"users": {bob.user_id: "40"},
                                                      "state_default": "60"})
    r = await upgrade(client, alice, room, new_version="11")
    assert r.status_code == 200, r.text
    levels = await state(client, alice, r.json()["replacement_room"], "m.room.power_levels")
    assert levels["users"][bob.user_id] == 40 and levels["state_default"] == 60


async def test_moderator_upgrade_lifts_then_restores_levels(client: httpx.AsyncClient,
                                                            server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, room_version="10", preset="public_chat", topic="T",
                        power_level_content_override={
                            "users": {bob.user_id: 50},
                            "events": {"m.room.tombstone": 50}})
    assert (await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)).is_success
    r = await upgrade(client, bob, room, new_version="11")
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    # The history visibility (level 100) was copied thanks to the lift...
    assert await state(client, bob, new, "m.room.history_visibility") \
        == {"history_visibility": "shared"}
    # ...and bob is back to the level he had.
    levels = await state(client, bob, new, "m.room.power_levels")
    assert levels["users"][bob.user_id] == 50 and levels["users"][alice.user_id] == 100


async def test_space_children_move_with_a_space(client: httpx.AsyncClient,
                                                server: Server) -> None:
    alice = await make_user(server, "alice")
    child = await create(client, alice, preset="public_chat")
    space = await create(client, alice, preset="public_chat",
                         creation_content={"type": "m.space"},
                         initial_state=[{"type": "m.space.child", "state_key": child,
                                         "content": {"via": ["test.local"]}}])
    r = await upgrade(client, alice, space, new_version="12")
    assert r.status_code == 200, r.text
    new = r.json()["replacement_room"]
    assert (await state(client, alice, new, "m.room.create"))["type"] == "m.space"
    assert await state(client, alice, new, "m.space.child", child) == {"via": ["test.local"]}
