"""Unread notification and highlight counts: push-rule evaluation per member, reset by receipts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_rooms import create, q, send
from tests.test_sync import sync

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=30) as client:
        yield client


async def message(client: httpx.AsyncClient, user: LoggedIn, room: str, body: str,
                  **content: Any) -> str:
    txn = f"t{trio.current_time()}"
    r = await client.put(f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                         json={"msgtype": "m.text", "body": body, **content},
                         headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


async def unread(client: httpx.AsyncClient, user: LoggedIn, room: str) -> tuple[int, int]:
    counts = (await sync(client, user, set_presence="offline"))["rooms"]["join"][room][
        "unread_notifications"]
    return counts["notification_count"], counts["highlight_count"]


async def receipt(client: httpx.AsyncClient, user: LoggedIn, room: str, event_id: str,
                  receipt_type: str = "m.read", **body: Any) -> None:
    r = await client.post(f"{V3}/rooms/{q(room)}/receipt/{receipt_type}/{q(event_id)}",
                          json=body, headers=user.headers)
    assert r.status_code == 200, r.text


async def trio_room(client: httpx.AsyncClient, server: Server) -> tuple[LoggedIn, LoggedIn,
                                                                        LoggedIn, str]:
    """Alice (creator, power 100), Bob and Carol in a three-member room."""
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    carol = await make_user(server, "carol")
    room = await create(client, alice, preset="public_chat")
    for user in (bob, carol):
        r = await client.post(f"{V3}/join/{room}", json={}, headers=user.headers)
        assert r.status_code == 200
    return alice, bob, carol, room


async def test_messages_count_for_others_not_the_sender(client: httpx.AsyncClient,
                                                        server: Server) -> None:
    alice, bob, _carol, room = await trio_room(client, server)
    since = (await sync(client, bob))["next_batch"]
    await message(client, alice, room, "hello")
    await message(client, alice, room, "again")
    body = await sync(client, bob, since=since)
    joined = body["rooms"]["join"][room]
    # The counts arrive in the same response as the events that caused them.
    assert [e["content"]["body"] for e in joined["timeline"]["events"]] == ["hello", "again"]
    assert joined["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}
    assert await unread(client, alice, room) == (0, 0)
    await message(client, alice, room, "a notice", msgtype="m.notice")
    assert await unread(client, bob, room) == (2, 0)  # notices are silent


async def test_mentions_highlight(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, carol, room = await trio_room(client, server)
    await message(client, alice, room, "hey bob, look")
    assert await unread(client, bob, room) == (1, 1)
    assert await unread(client, carol, room) == (1, 0)
    await message(client, alice, room, f"ping {bob.user_id}")
    assert await unread(client, bob, room) == (2, 2)
    await message(client, alice, room, "no name", **{"m.mentions": {"user_ids": [bob.user_id]}})
    assert await unread(client, bob, room) == (3, 3)
    # Bob's display name in the room counts too.
    r = await client.put(f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}",
                         json={"membership": "join", "displayname": "Robert Paulson"},
                         headers=bob.headers)
    assert r.status_code == 200, r.text
    await message(client, alice, room, "his name is robert paulson")
    assert await unread(client, bob, room) == (1, 1)  # bob's own event read the room
    assert await unread(client, carol, room) == (4, 0)


async def test_room_mentions_need_power(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, carol, room = await trio_room(client, server)
    await message(client, alice, room, "@room lunch!")
    assert await unread(client, bob, room) == (1, 1)
    await message(client, bob, room, "@room me too")  # bob has power 0 < 50
    assert await unread(client, carol, room) == (2, 1)
    await message(client, alice, room, "all", **{"m.mentions": {"room": True}})
    assert await unread(client, carol, room) == (3, 2)


async def test_read_receipts_reset_the_counts(client: httpx.AsyncClient,
                                              server: Server) -> None:
    alice, bob, carol, room = await trio_room(client, server)
    first = await message(client, alice, room, "one")
    await message(client, alice, room, "bob two")
    third = await message(client, alice, room, "three")
    await receipt(client, bob, room, first)
    assert await unread(client, bob, room) == (2, 1)  # read up to and including the first
    await receipt(client, bob, room, third)
    assert await unread(client, bob, room) == (0, 0)
    # Private receipts clear notifications too; so does /read_markers.
    await receipt(client, carol, room, third, "m.read.private")
    assert await unread(client, carol, room) == (0, 0)
    latest = await message(client, alice, room, "four")
    assert await unread(client, bob, room) == (1, 0)
    r = await client.post(f"{V3}/rooms/{room}/read_markers", json={"m.read": latest},
                          headers=bob.headers)
    assert r.status_code == 200
    assert await unread(client, bob, room) == (0, 0)
    # The fully-read marker alone is not a receipt.
    latest = await message(client, alice, room, "five")
    r = await client.post(f"{V3}/rooms/{room}/read_markers", json={"m.fully_read": latest},
                          headers=carol.headers)
    assert await unread(client, carol, room) == (2, 0)


async def test_sending_reads_the_room(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob, _carol, room = await trio_room(client, server)
    await message(client, alice, room, "one")
    await message(client, alice, room, "two")
    assert await unread(client, bob, room) == (2, 0)
    await message(client, bob, room, "reply")
    assert await unread(client, bob, room) == (0, 0)


async def test_threaded_receipts_clear_their_thread(client: httpx.AsyncClient,
                                                    server: Server) -> None:
    alice, bob, _carol, room = await trio_room(client, server)
    root = await message(client, alice, room, "root")
    reply = await message(client, alice, room, "reply",
                          **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    main = await message(client, alice, room, "main again")
    assert await unread(client, bob, room) == (3, 0)
    await receipt(client, bob, room, main, thread_id="main")
    assert await unread(client, bob, room) == (1, 0)  # the thread reply is still unread
    await receipt(client, bob, room, reply, thread_id=root)
    assert await unread(client, bob, room) == (0, 0)


async def test_counts_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice, bob, _carol, room = await trio_room(client, server)
        await message(client, alice, room, "bob, are you there?")
        await message(client, alice, room, "hello?")
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        assert await unread(client, bob, room) == (2, 1)


async def test_a_hundred_members_stay_cheap(client: httpx.AsyncClient, server: Server) -> None:
    alice = await make_user(server, "alice")
    room = await create(client, alice, preset="public_chat")
    assert server.services is not None
    services = server.services
    members = [f"@member{i}:test.local" for i in range(100)]
    for user_id in members:
        services.users.create(user_id, "")
        await services.rooms.actions.join(room, user_id)
    began = trio.current_time()
    for i in range(10):
        await send(client, alice, room, f"hello member7 #{i}", f"t{i}")
    per_event = (trio.current_time() - began) / 10
    assert per_event < 0.25, per_event  # typically a few ms
    assert services.unread.counts(room, "@member3:test.local") == {
        "notification_count": 10, "highlight_count": 0}
    assert services.unread.counts(room, "@member7:test.local") == {
        "notification_count": 10, "highlight_count": 10}
    assert services.unread.counts(room, alice.user_id) == {
        "notification_count": 0, "highlight_count": 0}


@settings(max_examples=200, deadline=None)
@given(body=st.text(alphabet=st.sampled_from(list("abo b@:.xyzROBERT!")), max_size=30),
       mention=st.booleans(), name=st.sampled_from([None, "Robert", "bob"]))
def test_the_shared_evaluation_is_exact(body: str, mention: bool, name: str | None) -> None:
    """Whenever a reader is not singled out, their actions equal the nobody's."""
    from conduwuit.protocol import push_rules
    from conduwuit.protocol.events import Event
    from conduwuit.protocol.room_versions import ROOM_VERSIONS
    from conduwuit.services.unread import _NOBODY, _may_concern

    user = "@bob:test.local"
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if mention:
        content["m.mentions"] = {"user_ids": []}
    pdu = {"type": "m.room.message", "sender": "@alice:test.local", "room_id": "!r:test.local",
           "content": content}
    event = Event("$e:test.local", pdu, ROOM_VERSIONS["11"])

    def actions(user_id: str, display_name: str | None) -> list[Any]:
        rules = push_rules.compile_ruleset(push_rules.default_ruleset(user_id))
        context = push_rules.PushContext(user_id=user_id, display_name=display_name,
                                         member_count=3, sender_power_level=100,
                                         notification_levels={})
        return rules.evaluate(pdu, context)

    if not _may_concern(event, user, name):
        assert actions(user, name) == actions(_NOBODY, None)
