"""The admin room: created for the first admin, kept closed, commands picked up from the
timeline and answered by the bot as replies; non-admins get nothing run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conduwuit.admin.render import MAX_REPLY_BYTES, command_input, render, to_html
from conduwuit.protocol.events import Event
from conduwuit.server import Server
from conduwuit.services.admin_room import QUEUE_SIZE
from conduwuit.services.rooms.state import HISTORY_VISIBILITY, JOIN_RULES, POWER_LEVELS
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_register import register
from tests.test_rooms import q

V3 = "/_matrix/client/v3"
TOKEN = "admin-room-token-1"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, allow_registration=True, registration_token=TOKEN)
    async with running_server(config) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


async def register_user(client: httpx.AsyncClient, name: str) -> LoggedIn:
    r = await register(client, TOKEN, username=name, password="correct horse")
    assert r.status_code == 200, r.text
    body = r.json()
    return LoggedIn(body["user_id"], body["device_id"], body["access_token"], "correct horse")


async def say(client: httpx.AsyncClient, user: LoggedIn, room: str, text: str,
              txn: str) -> str:
    r = await client.put(f"{V3}/rooms/{q(room)}/send/m.room.message/{txn}",
                         json={"msgtype": "m.text", "body": text}, headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


async def bot_reply(server: Server, room: str, event_id: str, timeout: float = 10) -> Event:
    """The bot's answer to ``event_id`` (a reply to it) once the admin job sent it."""
    svc = server.services
    assert svc is not None
    with trio.fail_after(timeout):
        while True:
            for seen, (_count, event) in enumerate(svc.rooms.events.timeline(room,
                                                                             reverse=True)):
                relates = event.content.get("m.relates_to") or {}
                if event.sender == svc.admin_room.bot_id and \
                        relates.get("m.in_reply_to", {}).get("event_id") == event_id:
                    return event
                if seen > 50:
                    break
            await trio.sleep(0.02)


async def command(server: Server, client: httpx.AsyncClient, user: LoggedIn, text: str,
                  txn: str) -> dict[str, Any]:
    room = server.services.admin_room.room_id() if server.services else None
    assert room is not None
    event_id = await say(client, user, room, text, txn)
    return dict((await bot_reply(server, room, event_id)).content)


async def test_first_registered_user_gets_the_admin_room(server: Server,
                                                         client: httpx.AsyncClient) -> None:
    svc = server.services
    assert svc is not None
    assert svc.admin_room.room_id() is None, "no room before the first admin"
    alice = await register_user(client, "alice")
    room = svc.admin_room.room_id()
    assert room is not None
    bot = svc.admin_room.bot_id
    assert bot == "@conduit:test.local"
    assert svc.users.exists(bot) and svc.users.password_hash(bot) == ""
    assert svc.profile.displayname(bot) == "conduwuit"
    assert svc.rooms.aliases.resolve("#admins:test.local") == room
    assert svc.rooms.state.content(room, JOIN_RULES)["join_rule"] == "invite"
    assert svc.rooms.state.content(room, HISTORY_VISIBILITY)["history_visibility"] == "shared"
    assert not svc.rooms.directory.is_public(room)
    assert svc.users.is_admin(alice.user_id)
    assert svc.rooms.membership.is_joined(room, alice.user_id)
    assert svc.rooms.state.content(room, POWER_LEVELS)["users"][alice.user_id] == 100
    assert "m.server_notice" in svc.account_data.tags(alice.user_id, room)
    # The second user is no admin and is not let in.
    bob = await register_user(client, "bob")
    assert not svc.users.is_admin(bob.user_id)
    assert svc.rooms.membership.membership(room, bob.user_id) is None
    # Alice sees the room in /joined_rooms.
    r = await client.get(f"{V3}/joined_rooms", headers=alice.headers)
    assert room in r.json()["joined_rooms"]


async def test_the_admin_room_stays_closed(server: Server, client: httpx.AsyncClient) -> None:
    alice = await register_user(client, "alice")
    assert server.services is not None
    room = server.services.admin_room.room_id()
    assert room is not None
    for event_type, content in (("m.room.join_rules", {"join_rule": "public"}),
                                ("m.room.history_visibility",
                                 {"history_visibility": "world_readable"}),
                                ("m.room.guest_access", {"guest_access": "can_join"}),
                                ("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})):
        r = await client.put(f"{V3}/rooms/{q(room)}/state/{event_type}", json=content,
                             headers=alice.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), event_type
    # Nor does it enter a room directory, ours or an appservice network's.
    r = await client.put(f"{V3}/directory/list/room/{q(room)}", json={"visibility": "public"},
                         headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await client.put(f"{V3}/directory/list/appservice/net/{q(room)}",
                         json={"visibility": "public"}, headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await client.get(f"{V3}/directory/list/room/{q(room)}")
    assert r.json() == {"visibility": "private"}
    # Harmless state is still fine.
    r = await client.put(f"{V3}/rooms/{q(room)}/state/m.room.topic", json={"topic": "ops"},
                         headers=alice.headers)
    assert r.status_code == 200, r.text
    assert server.services.rooms.state.content(room, JOIN_RULES)["join_rule"] == "invite"
    # The same state in another room is not refused.
    r = await client.post(f"{V3}/createRoom", json={}, headers=alice.headers)
    other = r.json()["room_id"]
    r = await client.put(f"{V3}/rooms/{q(other)}/state/m.room.join_rules",
                         json={"join_rule": "public"}, headers=alice.headers)
    assert r.status_code == 200, r.text


async def test_commands_are_answered_as_replies(server: Server,
                                                client: httpx.AsyncClient) -> None:
    alice = await register_user(client, "alice")
    answer = await command(server, client, alice, "!admin users list-users", "t1")
    assert answer["msgtype"] == "m.notice"
    assert answer["format"] == "org.matrix.custom.html"
    assert "@alice:test.local" in answer["body"]
    assert "<code>@alice:test.local</code>" in answer["formatted_body"]
    # Addressed to the bot by its id or its display name.
    answer = await command(server, client, alice, "@conduit:test.local: server uptime", "t2")
    assert answer["body"].startswith("Up for ")
    answer = await command(server, client, alice, "conduwuit: debug echo hello there", "t3")
    assert answer["body"] == "hello there"
    # Help at every level.
    answer = await command(server, client, alice, "!admin", "t4")
    assert "`users` (group)" in answer["body"]
    answer = await command(server, client, alice, "!admin rooms moderation --help", "t5")
    assert "ban-room" in answer["body"]
    answer = await command(server, client, alice, "!admin users create-user -h", "t6")
    assert "Usage: `!admin users create-user <username> [password]`" in answer["body"]
    # Failures answer with a clear message and the job keeps going.
    answer = await command(server, client, alice, "!admin users frobnicate", "t7")
    assert answer["body"].startswith("**Error**: Unknown command `frobnicate` in `users`")
    answer = await command(server, client, alice, "!admin users deactivate", "t8")
    assert "Missing argument `<user_id>`" in answer["body"]
    answer = await command(server, client, alice, "!admin users deactivate @nobody:test.local",
                           "t9")
    assert "does not exist" in answer["body"]
    answer = await command(server, client, alice, '!admin debug echo "unbalanced', "t10")
    assert "Cannot read the command line" in answer["body"]
    answer = await command(server, client, alice, "!admin server uptime", "t11")
    assert answer["body"].startswith("Up for ")
    # Messages that are not commands get no answer.
    room = server.services.admin_room.room_id() if server.services else None
    assert room is not None
    plain = await say(client, alice, room, "!administrator is not a command", "t12")
    with pytest.raises(trio.TooSlowError):
        await bot_reply(server, room, plain, timeout=0.3)


async def test_non_admins_get_nothing_run(server: Server, client: httpx.AsyncClient) -> None:
    alice = await register_user(client, "alice")
    bob = await register_user(client, "bob")
    svc = server.services
    assert svc is not None
    room = svc.admin_room.room_id()
    assert room is not None
    r = await client.post(f"{V3}/rooms/{q(room)}/invite", json={"user_id": bob.user_id},
                          headers=alice.headers)
    assert r.status_code == 200, r.text
    r = await client.post(f"{V3}/rooms/{q(room)}/join", json={}, headers=bob.headers)
    assert r.status_code == 200, r.text
    answer = await command(server, client, bob, "!admin users create-user mallory", "b1")
    assert answer["body"] == "Only server admins may run admin commands."
    assert not svc.users.exists("@mallory:test.local")
    answer = await command(server, client, bob, "!admin users make-user-admin bob", "b2")
    assert not svc.users.is_admin(bob.user_id)
    # Commands outside the admin room are not picked up at all.
    r = await client.post(f"{V3}/createRoom", json={}, headers=alice.headers)
    other = r.json()["room_id"]
    event_id = await say(client, alice, other, "!admin users create-user eve", "a1")
    with pytest.raises(trio.TooSlowError):
        await bot_reply(server, other, event_id, timeout=0.3)
    assert not svc.users.exists("@eve:test.local")


async def test_startup_creates_the_room_for_existing_admins(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(make_config(tmp_path)) as server:
        assert server.services is not None
        await make_user(server, "root", admin=True)
        alice = await make_user(server, "alice")
        room = await server.services.rooms.creation.create(alice.user_id, {})
        server.services.rooms.aliases.create("#badname:test.local", room, alice.user_id)
        assert server.services.admin_room.room_id() is None
    # Restarted with a rule the existing alias breaks: a warning, and the room is made.
    async with running_server(make_config(tmp_path, forbidden_alias_names=["^bad"])) as server:
        svc = server.services
        assert svc is not None
        admin_room = svc.admin_room.room_id()
        assert admin_room is not None
        assert svc.rooms.membership.is_joined(admin_room, "@root:test.local")
        assert svc.rooms.aliases.violating() == ["#badname:test.local"]
    assert "existing room alias #badname:test.local matches forbidden_alias_names" \
        in caplog.text


def test_rendering_escapes_and_trims() -> None:
    html = to_html("**bold** <b>x</b> `a<b`\n\n- one\n- two\n\n```json\n{\"a\": \"<\"}\n```")
    assert "<strong>bold</strong> &lt;b&gt;x&lt;/b&gt; <code>a&lt;b</code>" in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert '<pre><code class="language-json">{"a": "&lt;"}\n</code></pre>' in html
    huge = "```\n" + "\n".join(f"<line {i}>" for i in range(20000)) + "\n```"
    body, formatted = render(huge)
    assert len(body.encode()) + len(formatted.encode()) <= MAX_REPLY_BYTES
    assert "**Reply trimmed**" in body and body.count("```") % 2 == 0
    assert command_input(["```", "@a:x", "@b:x", "```", "trailing"]) == "@a:x\n@b:x"
    assert command_input(["@a:x", "@b:x"]) == "@a:x\n@b:x"


async def test_a_flood_of_commands_is_bounded(server: Server,
                                              client: httpx.AsyncClient) -> None:
    alice = await register_user(client, "alice")
    svc = server.services
    assert svc is not None
    room = svc.admin_room.room_id()
    assert room is not None
    # More commands than the queue holds: the extra ones are dropped, nothing blocks,
    # and the job answers the ones it kept.
    async with trio.open_nursery() as nursery:
        for i in range(QUEUE_SIZE + 10):
            nursery.start_soon(say, client, alice, room, "!admin debug echo x", f"f{i}")
    answer = await command(server, client, alice, "!admin debug echo still here", "last")
    assert answer["body"] == "still here"
    replies = [e for _, e in svc.rooms.events.timeline(room)
               if e.sender == svc.admin_room.bot_id and e.content.get("body") == "x"]
    assert 0 < len(replies) <= QUEUE_SIZE + 10
