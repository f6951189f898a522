"""Simplified sliding sync (MSC4186): an Element X style session, deltas, filters,
required state, extensions, idempotent retries and every error path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
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
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

# What Element X (matrix-rust-sdk) asks for in its room list.
ROOM_LIST_STATE = [
    ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
    ["m.room.name", ""], ["m.room.topic", ""], ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["m.room.create", ""],
    ["m.room.join_rules", ""], ["m.room.history_visibility", ""],
]
EXTENSIONS = {
    "to_device": {"enabled": True}, "e2ee": {"enabled": True},
    "account_data": {"enabled": True}, "receipts": {"enabled": True, "rooms": ["*"]},
    "typing": {"enabled": True},
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=60) as client:
        yield client


async def ss(client: httpx.AsyncClient, user: LoggedIn, body: dict[str, Any],
             pos: str | None = None, timeout: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if pos is not None:
        params["pos"] = pos
    if timeout is not None:
        params["timeout"] = timeout
    r = await client.post(SS, json=body, params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def ss_error(client: httpx.AsyncClient, user: LoggedIn, body: Any, status: int,
                   errcode: str, **params: Any) -> None:
    r = await client.post(SS, json=body, params=params, headers=user.headers)
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode, r.text


def room_list(limit: int = 1, end: int = 19, **extra: Any) -> dict[str, Any]:
    return {"all_rooms": {"ranges": [[0, end]], "timeline_limit": limit,
                          "required_state": ROOM_LIST_STATE, **extra}}


def window(body: dict[str, Any], key: str = "all_rooms") -> list[str]:
    return [room for op in body["lists"][key]["ops"] for room in op["room_ids"]]


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"]["body"] for e in room.get("timeline", [])
            if e["type"] == "m.room.message"]


async def during_poll(request: Callable[[], Awaitable[dict[str, Any]]],
                      action: Callable[[], Awaitable[Any]]) -> tuple[dict[str, Any], float]:
    """Start a long-poll, do ``action`` while it waits; the answer and how long it took."""
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await request())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.3)
        await action()
    return result, trio.current_time() - start


async def test_element_x_session(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    carol = await make_user(server, "carol")
    rooms = []
    for i in range(25):
        room = await create(client, alice, name=f"Room {i}",
                            invite=[bob.user_id] if i in (2, 24) else [])
        if i in (2, 24):
            r = await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
            assert r.status_code == 200, r.text
        assert (await send(client, alice, room, f"hello {i}", f"t{i}")).status_code == 200
        rooms.append(room)
    newest_first = rooms[::-1]

    # 1. The first request: the 20 most recent rooms, one timeline event each.
    first = await ss(client, alice, {"conn_id": "room-list", "lists": room_list(),
                                     "extensions": EXTENSIONS})
    assert first["lists"]["all_rooms"]["count"] == 25
    assert window(first) == newest_first[:20]
    assert set(first["rooms"]) == set(newest_first[:20])
    top = first["rooms"][rooms[24]]
    assert top["initial"] is True and top["name"] == "Room 24"
    assert bodies(top) == ["hello 24"] and len(top["timeline"]) == 1
    assert top["limited"] is True and top["num_live"] == 0
    assert top["joined_count"] == 2 and top["invited_count"] == 0
    assert top["membership"] == "join" and top["bump_stamp"] > \
        first["rooms"][rooms[23]]["bump_stamp"]
    state_types = {(e["type"], e["state_key"]) for e in top["required_state"]}
    assert ("m.room.create", "") in state_types and ("m.room.name", "") in state_types
    # $ME and $LAZY (the sender of the one timeline event is alice): alice, not bob.
    assert ("m.room.member", alice.user_id) in state_types
    assert ("m.room.member", bob.user_id) not in state_types
    assert "device_one_time_keys_count" in first["extensions"]["e2ee"]
    assert "device_lists" not in first["extensions"]["e2ee"]
    to_device_batch = first["extensions"]["to_device"]["next_batch"]
    pos = first["pos"]

    # 2. Follow-up with a room subscription to an older room: only that room comes.
    sub_body = {"conn_id": "room-list", "lists": room_list(),
                "room_subscriptions": {rooms[0]: {"timeline_limit": 20,
                                                  "required_state": [["*", "*"]]}},
                "extensions": {**EXTENSIONS, "to_device": {"enabled": True,
                                                           "since": to_device_batch}}}
    second = await ss(client, alice, sub_body, pos=pos, timeout=0)
    assert set(second["rooms"]) == {rooms[0]}
    sub = second["rooms"][rooms[0]]
    assert sub["initial"] is True and "lists" not in sub
    assert bodies(sub) == ["hello 0"] and sub["limited"] is False
    assert {e["type"] for e in sub["timeline"]} >= {"m.room.create", "m.room.message"}
    pos = second["pos"]

    def body(since: str) -> dict[str, Any]:
        return {**sub_body, "extensions": {**EXTENSIONS, "to_device": {"enabled": True,
                                                                      "since": since}}}

    # 3. Long-polling. A message in a room outside the window moves it to the top.
    async def poll() -> dict[str, Any]:
        return await ss(client, alice, body(to_device_batch), pos=pos, timeout=10_000)

    got, took = await during_poll(poll, lambda: send(client, bob, rooms[2], "news", "b1"))
    assert took < 5
    assert window(got)[0] == rooms[2]
    assert set(got["rooms"]) == {rooms[2]}  # unchanged rooms are not resent
    news = got["rooms"][rooms[2]]
    assert news["initial"] is True  # never sent on this connection before
    assert bodies(news) == ["news"] and news["num_live"] == 1
    assert news["notification_count"] == 1
    pos = got["pos"]

    # A message in a room already sent: a delta, not initial, with the sender's member.
    got, _ = await during_poll(poll_with(client, alice, body, lambda: pos, to_device_batch),
                               lambda: send(client, bob, rooms[24], "again", "b2"))
    assert set(got["rooms"]) == {rooms[24]}
    delta = got["rooms"][rooms[24]]
    assert "initial" not in delta and "name" not in delta
    assert bodies(delta) == ["again"] and delta["limited"] is False and delta["num_live"] == 1
    assert ("m.room.member", bob.user_id) in {(e["type"], e["state_key"])
                                               for e in delta.get("required_state", [])}
    assert window(got)[0] == rooms[24]
    pos = got["pos"]

    # Typing: in the typing extension, no room resent.
    got, _ = await during_poll(
        poll_with(client, alice, body, lambda: pos, to_device_batch),
        lambda: client.put(f"{V3}/rooms/{rooms[24]}/typing/{bob.user_id}",
                           json={"typing": True, "timeout": 30000}, headers=bob.headers))
    assert got["rooms"] == {}
    assert got["extensions"]["typing"]["rooms"][rooms[24]]["content"]["user_ids"] == \
        [bob.user_id]
    pos = got["pos"]

    # A read receipt: in the receipts extension.
    event_id = delta["timeline"][-1]["event_id"]
    got, _ = await during_poll(
        poll_with(client, alice, body, lambda: pos, to_device_batch),
        lambda: client.post(f"{V3}/rooms/{rooms[24]}/receipt/m.read/{event_id}", json={},
                            headers=bob.headers))
    receipt = got["extensions"]["receipts"]["rooms"][rooms[24]]
    assert receipt["content"][event_id]["m.read"][bob.user_id]["ts"] > 0
    assert got["rooms"] == {}
    pos = got["pos"]

    # To-device: delivered, then acknowledged by the next ``since``.
    got, _ = await during_poll(
        poll_with(client, alice, body, lambda: pos, to_device_batch),
        lambda: client.put(f"{V3}/sendToDevice/m.test/td1", headers=bob.headers, json={
            "messages": {alice.user_id: {alice.device_id: {"hello": "alice"}}}}))
    [message] = got["extensions"]["to_device"]["events"]
    assert message["sender"] == bob.user_id and message["content"] == {"hello": "alice"}
    to_device_batch = got["extensions"]["to_device"]["next_batch"]
    pos = got["pos"]
    quiet = await ss(client, alice, body(to_device_batch), pos=pos, timeout=0)
    assert quiet["extensions"]["to_device"]["events"] == []
    assert quiet["rooms"] == {}
    pos = quiet["pos"]

    # A device-list change: carol joins a room alice is in.
    await client.put(f"{V3}/rooms/{rooms[1]}/state/m.room.join_rules/",
                     json={"join_rule": "public"}, headers=alice.headers)
    got, _ = await during_poll(
        poll_with(client, alice, body, lambda: pos, to_device_batch),
        lambda: client.post(f"{V3}/join/{rooms[1]}", json={}, headers=carol.headers))
    pos = got["pos"]
    changed = set(got["extensions"]["e2ee"]["device_lists"]["changed"])
    for _ in range(5):  # the join_rules change may have come first
        if carol.user_id in changed:
            break
        got = await ss(client, alice, body(to_device_batch), pos=pos, timeout=5000)
        pos = got["pos"]
        changed |= set(got["extensions"]["e2ee"]["device_lists"]["changed"])
    assert carol.user_id in changed

    # An invite: the new room tops the list with its invite state.
    invited: dict[str, str] = {}

    async def invite() -> None:
        invited["room"] = await create(client, carol, name="Carol's", invite=[alice.user_id])

    got = await poll_until(client, alice, body, pos, to_device_batch, invite,
                           lambda b: bool(invited) and invited["room"] in b["rooms"])
    invite_room = got["rooms"][invited["room"]]
    assert invite_room["membership"] == "invite" and invite_room["initial"] is True
    assert {e["type"] for e in invite_room["invite_state"]} >= {"m.room.create", "m.room.name"}
    assert window(got)[0] == invited["room"]
    assert got["lists"]["all_rooms"]["count"] == 26
    pos = got["pos"]

    # Leaving a room: it comes once more with the leave, then drops out of the list.
    got = await poll_until(
        client, alice, body, pos, to_device_batch,
        lambda: client.post(f"{V3}/rooms/{rooms[24]}/leave", json={}, headers=alice.headers),
        lambda b: rooms[24] in b["rooms"])
    left = got["rooms"][rooms[24]]
    assert left["membership"] == "leave"
    assert left["timeline"][-1]["type"] == "m.room.member"
    assert left["timeline"][-1]["content"]["membership"] == "leave"
    pos = got["pos"]
    after = await ss(client, alice, body(to_device_batch), pos=pos, timeout=0)
    assert rooms[24] not in window(after)
    assert after["lists"]["all_rooms"]["count"] == 25
    assert after["rooms"] == {}


def poll_with(client: httpx.AsyncClient, user: LoggedIn,
              body: Callable[[str], dict[str, Any]], pos: Callable[[], str],
              since: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def poll() -> dict[str, Any]:
        return await ss(client, user, body(since), pos=pos(), timeout=10_000)
    return poll


async def poll_until(client: httpx.AsyncClient, user: LoggedIn,
                     body: Callable[[str], dict[str, Any]], pos: str, since: str,
                     action: Callable[[], Awaitable[Any]],
                     done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Long-poll around ``action`` until a response satisfies ``done`` (an action may
    cause several responses, e.g. a room creation's events)."""
    got, _ = await during_poll(poll_with(client, user, body, lambda: pos, since), action)
    for _ in range(10):
        if done(got):
            return got
        got = await ss(client, user, body(since), pos=got["pos"], timeout=5000)
    raise AssertionError(f"never got it: {got}")


async def test_same_pos_is_idempotent(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, name="R")
    body = {"lists": room_list(limit=5), "extensions": EXTENSIONS}
    first = await ss(client, alice, body)
    await send(client, alice, room, "one", "t1")
    second = await ss(client, alice, body, pos=first["pos"], timeout=0)
    assert bodies(second["rooms"][room]) == ["one"]
    # A retry of the same request (the client lost the answer) gets the very same answer,
    # even though more happened since.
    await send(client, alice, room, "two", "t2")
    again = await ss(client, alice, body, pos=first["pos"], timeout=0)
    assert again == second
    # A changed body with the same pos (a cancelled request re-sent with new
    # parameters) is computed afresh from the same state.
    changed = {**body, "lists": room_list(limit=10)}
    recomputed = await ss(client, alice, changed, pos=first["pos"], timeout=0)
    assert bodies(recomputed["rooms"][room])[-2:] == ["one", "two"]
    # The next position carries on from there.
    third = await ss(client, alice, body, pos=second["pos"], timeout=0)
    assert bodies(third["rooms"][room]) == ["two"]
    # With nothing new, a repeated request answers the same (empty) rooms.
    quiet = await ss(client, alice, body, pos=third["pos"], timeout=0)
    quiet_again = await ss(client, alice, body, pos=third["pos"], timeout=0)
    assert quiet["rooms"] == quiet_again["rooms"] == {}
    assert quiet["lists"] == quiet_again["lists"]


async def test_expired_and_unknown_pos(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    body = {"lists": room_list()}
    first = await ss(client, alice, body)
    second = await ss(client, alice, body, pos=first["pos"], timeout=0)
    await ss(client, alice, body, pos=second["pos"], timeout=0)
    # The client moved past the first position: it is gone.
    await ss_error(client, alice, body, 400, "M_UNKNOWN_POS", pos=first["pos"])
    await ss_error(client, alice, body, 400, "M_UNKNOWN_POS", pos="s58_224_0_13")
    await ss_error(client, alice, body, 400, "M_UNKNOWN_POS", pos="999_1")
    # Another conn_id has no such position either.
    await ss_error(client, alice, {**body, "conn_id": "other"}, 400, "M_UNKNOWN_POS",
                   pos=second["pos"])
    # The stream half must match the recorded position.
    number, stream = second["pos"].split("_")
    await ss_error(client, alice, body, 400, "M_UNKNOWN_POS",
                   pos=f"{number}_{int(stream) + 7}")


async def test_bad_requests(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    r = await client.post(SS, json={})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.post(SS, content=b"{nope", headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    bad = "M_BAD_JSON"
    await ss_error(client, alice, [], 400, bad)
    await ss_error(client, alice, {"lists": []}, 400, bad)
    await ss_error(client, alice, {"conn_id": 5}, 400, bad)
    await ss_error(client, alice, {"lists": {"a": 1}}, 400, bad)
    await ss_error(client, alice, {"lists": {"x" * 65: {"timeline_limit": 1}}}, 400, bad)
    await ss_error(client, alice, {"lists": {str(i): {} for i in range(101)}}, 400, bad)
    for ranges in ([[5, 1]], [[0]], [[-1, 2]], "x", [["a", "b"]]):
        await ss_error(client, alice, {"lists": {"a": {"ranges": ranges}}}, 400, bad)
    await ss_error(client, alice, {"lists": {"a": {"range": [3, 1]}}}, 400, bad)
    for limit in (-1, 1001, "5", True):
        await ss_error(client, alice, {"lists": {"a": {"timeline_limit": limit}}}, 400, bad)
    for required in ("x", [["a"]], [[1, 2]], {"include": "x"}, {"include": [1]},
                     {"include": [{"type": 1}]}, {"lazy_members": "yes"}):
        await ss_error(client, alice, {"lists": {"a": {"required_state": required}}}, 400,
                       bad)
    for filters in ("x", {"is_dm": "yes"}, {"spaces": "x"}, {"room_types": [1]},
                    {"room_name_like": 3}, {"is_invite": 1}):
        await ss_error(client, alice, {"lists": {"a": {"filters": filters}}}, 400, bad)
    await ss_error(client, alice, {"room_subscriptions": {"!a:b": "x"}}, 400, bad)
    await ss_error(client, alice, {"room_subscriptions": []}, 400, bad)
    await ss_error(client, alice, {"extensions": []}, 400, bad)
    await ss_error(client, alice, {"extensions": {"typing": []}}, 400, bad)
    await ss_error(client, alice, {"extensions": {"typing": {"enabled": "yes"}}}, 400, bad)
    await ss_error(client, alice, {"extensions": {"receipts": {"lists": "x"}}}, 400, bad)
    await ss_error(client, alice, {"extensions": {"to_device": {"since": "abc"}}}, 400, bad)
    await ss_error(client, alice, {"extensions": {"to_device": {"since": 5}}}, 400, bad)
    await ss_error(client, alice, {"extensions": {"to_device": {"limit": -1}}}, 400, bad)
    await ss_error(client, alice, {}, 400, "M_INVALID_PARAM", timeout="soon")
    await ss_error(client, alice, {"timeout": True}, 400, "M_INVALID_PARAM")
    await ss_error(client, alice, {}, 400, "M_INVALID_PARAM", set_presence="away")
    await ss_error(client, alice, {"pos": 5}, 400, "M_INVALID_PARAM")
    # Unknown extensions and fields are ignored.
    body = await ss(client, alice, {"extensions": {"future": {"enabled": True}}, "x": 1})
    assert body["extensions"] == {}


async def test_versions_advertise_it(client: httpx.AsyncClient) -> None:
    r = await client.get("/_matrix/client/versions")
    assert r.json()["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_filters(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    plain = await create(client, alice, name="plain")
    dm = await create(client, alice, is_direct=True, invite=[bob.user_id])
    encrypted = await create(client, alice, name="secret", initial_state=[
        {"type": "m.room.encryption", "state_key": "",
         "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    space = await create(client, alice, name="space",
                         creation_content={"type": "m.space"})
    child = await create(client, alice, name="child")
    r = await client.put(f"{V3}/rooms/{space}/state/m.space.child/{child}",
                         json={"via": ["test.local"]}, headers=alice.headers)
    assert r.status_code == 200, r.text
    invite = await create(client, bob, name="for alice", invite=[alice.user_id])
    r = await client.put(f"{V3}/user/{alice.user_id}/account_data/m.direct",
                         json={bob.user_id: [dm]}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.put(f"{V3}/user/{alice.user_id}/rooms/{plain}/tags/m.favourite",
                         json={}, headers=alice.headers)
    assert r.status_code == 200

    def one(filters: dict[str, Any]) -> dict[str, Any]:
        return {"ranges": [[0, 99]], "timeline_limit": 0, "required_state": [],
                "filters": filters}

    lists = {
        "dms": one({"is_dm": True}), "not_dms": one({"is_dm": False}),
        "invites": one({"is_invite": True}), "no_invites": one({"is_invited": False}),
        "encrypted": one({"is_encrypted": True}),
        "spaces": one({"room_types": ["m.space"]}),
        "not_spaces": one({"not_room_types": ["m.space"]}),
        "untyped": one({"room_types": [None]}),
        "in_space": one({"spaces": [space]}),
        "named": one({"room_name_like": "SEC"}),
        "favourites": one({"tags": ["m.favourite"]}),
        "not_favourites": one({"not_tags": ["m.favourite"]}),
        "encrypted_invites": one({"is_encrypted": True, "is_invite": True}),
    }
    body = await ss(client, alice, {"lists": lists})
    every = {plain, dm, encrypted, space, child, invite}

    def rooms_of(key: str) -> set[str]:
        return set(window(body, key))

    assert rooms_of("dms") == {dm}
    assert rooms_of("not_dms") == every - {dm}
    assert rooms_of("invites") == {invite}
    assert rooms_of("no_invites") == every - {invite}
    assert rooms_of("encrypted") == {encrypted}
    assert rooms_of("spaces") == {space}
    assert rooms_of("not_spaces") == every - {space}
    assert rooms_of("untyped") == every - {space}
    assert rooms_of("in_space") == {child}
    assert rooms_of("named") == {encrypted}
    assert rooms_of("favourites") == {plain}
    assert rooms_of("not_favourites") == every - {plain}
    assert rooms_of("encrypted_invites") == set()
    assert body["lists"]["dms"]["count"] == 1
    assert body["rooms"][dm]["is_dm"] is True and "is_dm" not in body["rooms"][plain]
    assert body["rooms"][invite]["membership"] == "invite"
    assert set(body["rooms"][dm]["lists"]) >= {"dms", "no_invites"}
    # No name: heroes stand in.
    assert [h["user_id"] for h in body["rooms"][dm]["heroes"]] == [bob.user_id]
    assert "name" not in body["rooms"][dm]


async def test_required_state_forms(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    carol = await make_user(server, "carol")
    room = await create(client, alice, name="R", topic="T", preset="public_chat")
    for user in (bob, carol):
        await client.post(f"{V3}/join/{room}", json={}, headers=user.headers)
    await send(client, bob, room, "from bob", "t1")

    async def required(state: Any, limit: int = 1) -> set[tuple[str, str]]:
        body = await ss(client, alice, {"room_subscriptions": {
            room: {"timeline_limit": limit, "required_state": state}}})
        return {(e["type"], e["state_key"]) for e in body["rooms"][room].get(
            "required_state", [])}

    everything = await required([["*", "*"]])
    assert ("m.room.member", carol.user_id) in everything and ("m.room.topic", "") in everything
    assert await required([["m.room.member", "$ME"]]) == {("m.room.member", alice.user_id)}
    members = await required([["m.room.member", "*"]])
    assert members == {("m.room.member", u.user_id) for u in (alice, bob, carol)}
    # $LAZY: only the senders of the timeline; with ["*", "*"] all other state too.
    assert await required([["m.room.member", "$LAZY"]]) == {("m.room.member", bob.user_id)}
    lazy_all = await required([["m.room.member", "$LAZY"], ["*", "*"]])
    assert ("m.room.topic", "") in lazy_all and ("m.room.member", bob.user_id) in lazy_all
    assert ("m.room.member", carol.user_id) not in lazy_all
    assert await required([["*", ""]]) >= {("m.room.name", ""), ("m.room.topic", "")}
    assert ("m.room.member", alice.user_id) not in await required([["*", ""]])
    # The MSC's newest shape: include / exclude / lazy_members.
    shaped = await required({"include": [{}], "exclude": [{"type": "m.room.member"}],
                             "lazy_members": True})
    assert ("m.room.topic", "") in shaped and ("m.room.member", bob.user_id) in shaped
    assert ("m.room.member", carol.user_id) not in shaped
    assert await required({"include": [{"state_key": alice.user_id}]}) == \
        {("m.room.member", alice.user_id)}
    assert await required([]) == set()


async def test_deltas_expansion_and_prev_batch(client: httpx.AsyncClient,
                                               server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, name="R", preset="private_chat")
    for i in range(6):
        await send(client, alice, room, f"m{i}", f"t{i}")
    body = {"lists": room_list(limit=2)}
    first = await ss(client, alice, body)
    result = first["rooms"][room]
    assert bodies(result) == ["m4", "m5"] and result["limited"] is True
    # prev_batch works with /messages.
    r = await client.get(f"{V3}/rooms/{room}/messages", headers=alice.headers,
                         params={"from": result["prev_batch"], "dir": "b", "limit": 2})
    assert [e["content"]["body"] for e in r.json()["chunk"]] == ["m3", "m2"]
    # A state change reaches a delta through required_state, and a new name is sent.
    await client.put(f"{V3}/rooms/{room}/state/m.room.name/", json={"name": "New"},
                     headers=alice.headers)
    second = await ss(client, alice, body, pos=first["pos"], timeout=0)
    delta = second["rooms"][room]
    assert delta["name"] == "New" and "initial" not in delta
    assert [e["content"]["name"] for e in delta["required_state"]
            if e["type"] == "m.room.name"] == ["New"]
    # A larger timeline_limit sends the older events at once (expanded timeline).
    third = await ss(client, alice, {"lists": room_list(limit=5)}, pos=second["pos"],
                     timeout=0)
    expanded = third["rooms"][room]
    assert expanded["expanded_timeline"] is True and len(expanded["timeline"]) == 5
    # Widening required_state sends the newly wanted state.
    wider = room_list(limit=5)
    wider["all_rooms"]["required_state"] = [*ROOM_LIST_STATE, ["m.room.guest_access", ""]]
    fourth = await ss(client, alice, {"lists": wider}, pos=third["pos"], timeout=0)
    assert {(e["type"], e["state_key"]) for e in fourth["rooms"][room]["required_state"]} \
        == {("m.room.guest_access", "")}
    # Then nothing more: an unchanged room is not resent.
    fifth = await ss(client, alice, {"lists": wider}, pos=fourth["pos"], timeout=0)
    assert fifth["rooms"] == {}


async def test_window_scrolls_and_rooms_return_as_deltas(client: httpx.AsyncClient,
                                                         server: Server) -> None:
    alice = await make_user(server, "alice")
    rooms = [await create(client, alice, name=f"R{i}") for i in range(4)]
    body = {"lists": room_list(limit=1, end=1)}
    first = await ss(client, alice, body)
    assert window(first) == [rooms[3], rooms[2]]
    # Growing the range sends only the rooms not sent yet.
    grown = await ss(client, alice, {"lists": room_list(limit=1, end=3)}, pos=first["pos"],
                     timeout=0)
    assert set(grown["rooms"]) == {rooms[1], rooms[0]}
    # Back to two; a message to room 3 while room 0 is outside the window...
    small = await ss(client, alice, body, pos=grown["pos"], timeout=0)
    assert small["rooms"] == {}
    await send(client, alice, rooms[0], "late", "t1")
    moved = await ss(client, alice, body, pos=small["pos"], timeout=0)
    # ... room 0 moves to the top and comes as a delta (it was sent before).
    assert window(moved)[0] == rooms[0]
    assert "initial" not in moved["rooms"][rooms[0]]
    assert bodies(moved["rooms"][rooms[0]]) == ["late"]


async def test_kick_and_account_data_extension(client: httpx.AsyncClient,
                                               server: Server) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    room = await create(client, alice, name="R", preset="public_chat")
    await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    await client.put(f"{V3}/user/{bob.user_id}/rooms/{room}/account_data/x.room",
                     json={"a": 1}, headers=bob.headers)
    await client.put(f"{V3}/user/{bob.user_id}/account_data/x.global", json={"g": 1},
                     headers=bob.headers)
    body = {"lists": room_list(), "extensions": {"account_data": {"enabled": True}}}
    first = await ss(client, bob, body)
    account = first["extensions"]["account_data"]
    assert {"type": "x.global", "content": {"g": 1}} in account["global"]
    assert account["rooms"][room] == [{"type": "x.room", "content": {"a": 1}}]
    # Only changes afterwards.
    await client.put(f"{V3}/user/{bob.user_id}/rooms/{room}/account_data/x.room",
                     json={"a": 2}, headers=bob.headers)
    second = await ss(client, bob, body, pos=first["pos"], timeout=0)
    assert second["extensions"]["account_data"] == {
        "global": [], "rooms": {room: [{"type": "x.room", "content": {"a": 2}}]}}
    # Scoped to no lists: no room account data at all.
    await client.put(f"{V3}/user/{bob.user_id}/rooms/{room}/account_data/x.room",
                     json={"a": 3}, headers=bob.headers)
    scoped = {**body, "extensions": {"account_data": {"enabled": True, "lists": []}}}
    third = await ss(client, bob, scoped, pos=second["pos"], timeout=0)
    assert third["extensions"]["account_data"]["rooms"] == {}
    # Kicked: the room stays in the list with the kick.
    r = await client.post(f"{V3}/rooms/{room}/kick", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status_code == 200, r.text
    fourth = await ss(client, bob, body, pos=third["pos"], timeout=0)
    assert fourth["rooms"][room]["membership"] == "leave"
    fifth = await ss(client, bob, body, pos=fourth["pos"], timeout=0)
    assert room in window(fifth) and fifth["rooms"] == {}
    # A kicked user's later lists still show the room on a new connection too.
    fresh = await ss(client, bob, body)
    assert room in window(fresh)


async def test_long_poll_times_out_and_stops_at_shutdown(client: httpx.AsyncClient,
                                                         server: Server) -> None:
    alice = await make_user(server, "alice")
    await create(client, alice, name="R")
    body = {"lists": room_list()}
    first = await ss(client, alice, body)
    start = trio.current_time()
    quiet = await ss(client, alice, body, pos=first["pos"], timeout=300)
    assert 0.25 < trio.current_time() - start < 5
    assert quiet["rooms"] == {}
    start = trio.current_time()

    async def stop() -> None:
        services = server.services
        assert services is not None
        services.stopping.set()
        services.notifier.wake_all()

    got, _ = await during_poll(
        lambda: ss(client, alice, body, pos=quiet["pos"], timeout=60_000), stop)
    assert trio.current_time() - start < 5 and got["rooms"] == {}


# --- matrix-js-sdk -------------------------------------------------------------------------

JS_SDK_VERSION = "37"
JS_SCENARIO = r"""
import * as sdk from "matrix-js-sdk";
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";

const [baseUrl, aliceJson, bobJson, roomId] = process.argv.slice(2);
const alice = JSON.parse(aliceJson), bob = JSON.parse(bobJson);
const out = (o) => console.log(JSON.stringify(o));
const until = async (what, test, ms = 20000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = test(); if (v) return v;
    await new Promise(r => setTimeout(r, 50));
  }
  throw new Error("timed out waiting for " + what);
};
const client = sdk.createClient({ baseUrl, accessToken: alice.access_token,
  userId: alice.user_id, deviceId: alice.device_id });
const lists = new Map([["all", { ranges: [[0, 19]], timeline_limit: 1,
  required_state: [["m.room.name", ""], ["m.room.member", "$ME"], ["m.room.member", "$LAZY"]] }]]);
const ss = new SlidingSync(baseUrl, lists, { timeline_limit: 10,
  required_state: [["*", "*"]] }, client, 5000);
let responses = 0, lastError = null;
ss.on("SlidingSync.Lifecycle", (state, resp, err) => {
  if (err) lastError = String(err);
  if (state === "COMPLETE") responses += 1;
});
await client.startClient({ slidingSync: ss });
const room = await until("the room", () => {
  const r = client.getRoom(roomId); return r && r.name === "JS room" ? r : null; });
out({ step: "room", name: room.name, count: ss.getListData("all")?.joinedCount });
const room_path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}`;
await fetch(`${baseUrl}${room_path}/send/m.room.message/js1`, { method: "PUT",
  headers: { Authorization: `Bearer ${bob.access_token}`, "Content-Type": "application/json" },
  body: JSON.stringify({ msgtype: "m.text", body: "from bob" }) });
const ev = await until("bob's message", () => room.getLiveTimeline().getEvents().find(
  e => e.getType() === "m.room.message" && e.getContent().body === "from bob"));
out({ step: "message", sender: ev.getSender(), responses, lastError });
ss.modifyRoomSubscriptions(new Set([roomId]));
await until("the subscription", () => room.getLiveTimeline().getEvents().some(
  e => e.getType() === "m.room.create"));
out({ step: "subscribed", events: room.getLiveTimeline().getEvents().length, lastError });
client.stopClient(); ss.stop();
process.exit(0);
"""


def _js_sdk_dir() -> Path | None:
    """A directory with matrix-js-sdk 37 installed (npm, once per machine), or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    cache = Path(os.environ.get("CONDUWUIT_JS_SDK_DIR",
                                Path.home() / ".cache" / "conduwuit-tests" / "js-sdk"))
    if not (cache / "node_modules" / "matrix-js-sdk").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"private": true, "type": "module"}')
        done = subprocess.run(["npm", "install", f"matrix-js-sdk@{JS_SDK_VERSION}",
                               "--no-audit", "--no-fund"], cwd=cache, capture_output=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            return None
    return cache


@pytest.mark.slow
async def test_matrix_js_sdk_drives_a_list(client: httpx.AsyncClient, server: Server) -> None:
    directory = await trio.to_thread.run_sync(_js_sdk_dir)
    if directory is None:
        pytest.skip("node/npm or matrix-js-sdk 37 not available")
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    for i in range(3):
        await create(client, alice, name=f"Other {i}")
    room = await create(client, alice, name="JS room", preset="public_chat")
    await client.post(f"{V3}/join/{room}", json={}, headers=bob.headers)
    script = directory / "scenario.mjs"
    script.write_text(JS_SCENARIO)

    def who(user: LoggedIn) -> str:
        return json.dumps({"user_id": user.user_id, "device_id": user.device_id,
                           "access_token": user.access_token})

    with trio.fail_after(90):
        done = await trio.run_process(["node", str(script), server.bound[0], who(alice),
                                       who(bob), room], cwd=directory, capture_stdout=True,
                                      capture_stderr=True, check=False)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()
             if line.startswith("{")]
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    steps = {line["step"]: line for line in lines}
    assert steps["room"]["name"] == "JS room" and steps["room"]["count"] == 4
    assert steps["message"]["sender"] == bob.user_id and steps["message"]["lastError"] is None
    assert steps["subscribed"]["events"] > 2 and steps["subscribed"]["lastError"] is None
