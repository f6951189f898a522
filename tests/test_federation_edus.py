"""EDUs from other servers reach local clients: typing, receipts, presence, to-device,
device-list changes; refused when their switch is off, when the user is not of the
sending server, or when the user is not in the room."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.users import LoggedIn, make_user
from tests.test_federation_inbound import (
    F1,
    V3,
    Env,
    environment,
    q,
    remote_join,
    remote_message,
)
from tests.test_sync import sync

_txn = iter(range(1_000_000))


async def send_edus(env: Env, *edus: dict[str, Any], pdus: list[Any] | None = None,
                    fake: Any = None) -> dict[str, Any]:
    r = await env.fed("PUT", f"{F1}/send/edu{next(_txn)}", fake=fake,
                      body={"pdus": pdus or [], "edus": list(edus)})
    assert r.status_code == 200, r.text
    return dict(r.json())


@asynccontextmanager
async def shared_room(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Env, LoggedIn,
                                                                            str, str]]:
    """Alice (ours) and bob (the fake server's) joined to one public room."""
    async with environment(tmp_path, **options) as env:
        alice = await make_user(env.server, "alice")
        r = await env.client.post(f"{V3}/createRoom", json={"preset": "public_chat"},
                                  headers=alice.headers)
        room = str(r.json()["room_id"])
        bob = env.remote("bob")
        await remote_join(env, room, bob)
        yield env, alice, room, bob


def typing_in(body: dict[str, Any], room: str) -> list[str] | None:
    joined = body["rooms"]["join"].get(room)
    for event in (joined or {}).get("ephemeral", {}).get("events", []):
        if event["type"] == "m.typing":
            return list(event["content"]["user_ids"])
    return None


def receipts_in(body: dict[str, Any], room: str) -> dict[str, Any]:
    joined = body["rooms"]["join"].get(room)
    for event in (joined or {}).get("ephemeral", {}).get("events", []):
        if event["type"] == "m.receipt":
            return dict(event["content"])
    return {}


def presence_in(body: dict[str, Any], user_id: str) -> dict[str, Any] | None:
    found = [e["content"] for e in body["presence"]["events"] if e["sender"] == user_id]
    return found[-1] if found else None


def typing(room: str, user_id: str, on: bool = True) -> dict[str, Any]:
    return {"edu_type": "m.typing", "content": {"room_id": room, "user_id": user_id,
                                                "typing": on}}


def receipt(room: str, user_id: str, event_id: str) -> dict[str, Any]:
    return {"edu_type": "m.receipt", "content": {room: {"m.read": {user_id: {
        "event_ids": [event_id], "data": {"ts": 1234}}}}}}


def presence(user_id: str, state: str = "online", msg: str = "Hi") -> dict[str, Any]:
    return {"edu_type": "m.presence", "content": {"push": [{
        "user_id": user_id, "presence": state, "status_msg": msg, "last_active_ago": 5000,
        "currently_active": True}]}}


async def test_typing_receipts_presence_reach_sync(tmp_path: Path) -> None:
    async with shared_room(tmp_path) as (env, alice, room, bob):
        since = (await sync(env.client, alice))["next_batch"]
        await send_edus(env, typing(room, bob))
        body = await sync(env.client, alice, since=since)
        assert typing_in(body, room) == [bob]
        since = body["next_batch"]
        await send_edus(env, typing(room, bob, on=False))
        body = await sync(env.client, alice, since=since)
        assert typing_in(body, room) == []

        r = await env.client.put(f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                                 json={"msgtype": "m.text", "body": "hi"},
                                 headers=alice.headers)
        event_id = r.json()["event_id"]
        since = (await sync(env.client, alice))["next_batch"]
        await send_edus(env, receipt(room, bob, event_id), presence(bob))
        body = await sync(env.client, alice, since=since)
        assert receipts_in(body, room) == {event_id: {"m.read": {bob: {"ts": 1234}}}}
        seen = presence_in(body, bob)
        assert seen is not None and seen["presence"] == "online" and seen["status_msg"] == "Hi"
        assert seen["currently_active"] is True and seen["last_active_ago"] >= 5000
        r = await env.client.get(f"{V3}/presence/{q(bob)}/status", headers=alice.headers)
        assert r.status_code == 200 and r.json()["presence"] == "online", r.text

        # A receipt for an event we do not have is dropped, nothing else breaks.
        since = body["next_batch"]
        await send_edus(env, receipt(room, bob, "$unknown"))
        assert receipts_in(await sync(env.client, alice, since=since), room) == {}


async def test_edus_about_others_are_ignored(tmp_path: Path) -> None:
    async with shared_room(tmp_path) as (env, alice, room, bob):
        r = await env.client.put(f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                                 json={"msgtype": "m.text", "body": "hi"},
                                 headers=alice.headers)
        event_id = r.json()["event_id"]
        since = (await sync(env.client, alice))["next_batch"]
        stranger = env.remote("eve", env.other)  # a user of another server
        outsider = env.remote("dave")  # the fake's user, but not in the room
        await send_edus(env, typing(room, stranger), typing(room, outsider),
                        typing(room, alice.user_id), receipt(room, stranger, event_id),
                        receipt(room, outsider, event_id), presence(stranger),
                        presence(alice.user_id, "offline"),
                        {"edu_type": "m.typing", "content": "junk"}, {"no": "type"},
                        {"edu_type": "m.unknown", "content": {}})
        body = await sync(env.client, alice, since=since)
        assert typing_in(body, room) is None
        assert receipts_in(body, room) == {}
        assert presence_in(body, stranger) is None and presence_in(body, alice.user_id) is None

        # A server denied by the room's ACL has its room EDUs dropped.
        r = await env.client.put(f"{V3}/rooms/{q(room)}/state/m.room.server_acl/",
                                 headers=alice.headers,
                                 json={"allow": ["*"], "deny": ["127.0.0.1"]})
        assert r.status_code == 200, r.text
        since = (await sync(env.client, alice))["next_batch"]
        await send_edus(env, typing(room, bob), receipt(room, bob, event_id))
        body = await sync(env.client, alice, since=since)
        assert typing_in(body, room) is None and receipts_in(body, room) == {}


async def test_switches_off(tmp_path: Path) -> None:
    async with shared_room(tmp_path, allow_incoming_typing=False,
                           allow_incoming_read_receipts=False,
                           allow_incoming_presence=False) as (env, alice, room, bob):
        event_id, pdu = remote_message(env, room, bob, "hello")
        since = (await sync(env.client, alice))["next_batch"]
        answer = await send_edus(env, typing(room, bob), receipt(room, bob, event_id),
                                 presence(bob), pdus=[pdu])
        assert answer["pdus"] == {event_id: {}}
        body = await sync(env.client, alice, since=since)
        assert typing_in(body, room) is None
        assert receipts_in(body, room) == {}
        assert presence_in(body, bob) is None


async def test_to_device_and_device_lists(tmp_path: Path) -> None:
    async with shared_room(tmp_path) as (env, alice, _room, bob):
        assert env.server.services is not None
        second = env.server.services.devices.create(alice.user_id, "SECOND", None)
        since = (await sync(env.client, alice))["next_batch"]

        def to_device(message_id: str, device: str, sender: str = bob) -> dict[str, Any]:
            return {"edu_type": "m.direct_to_device", "content": {
                "sender": sender, "type": "m.room_key_request", "message_id": message_id,
                "messages": {alice.user_id: {device: {"n": message_id}},
                             env.remote("zed", env.other): {"*": {"n": "relay?"}}}}}

        await send_edus(env, to_device("m1", alice.device_id), to_device("m1", alice.device_id),
                        to_device("m2", "*"), to_device("m3", "*", sender=alice.user_id))
        body = await sync(env.client, alice, since=since)
        got = [(e["sender"], e["content"]["n"]) for e in body["to_device"]["events"]]
        assert got == [(bob, "m1"), (bob, "m2")], "once each; never from a forged sender"
        assert env.server.services.e2ee.to_device.pending(alice.user_id, second) == 1

        since = body["next_batch"]
        await send_edus(env, {"edu_type": "m.device_list_update", "content": {
            "user_id": bob, "device_id": "BOBDEV", "stream_id": 1, "deleted": False}})
        body = await sync(env.client, alice, since=since)
        assert bob in body["device_lists"]["changed"]
        r = await env.client.get(f"{V3}/keys/changes", headers=alice.headers,
                                 params={"from": since, "to": body["next_batch"]})
        assert r.status_code == 200 and bob in r.json()["changed"], r.text

        since = body["next_batch"]
        await send_edus(env, {"edu_type": "m.signing_key_update", "content": {"user_id": bob}},
                        {"edu_type": "m.device_list_update",
                         "content": {"user_id": env.remote("eve", env.other)}})
        body = await sync(env.client, alice, since=since)
        assert body["device_lists"]["changed"] == [bob]
