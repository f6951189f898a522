"""Every group of admin commands, run through the server's admin executor (the same path
as the admin room's job, without the room): users, rooms and their moderation,
federation, media, server, debug, appservices."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from conduwuit.errors import MatrixError
from conduwuit.nursery.jobs import JobState
from conduwuit.protocol.room_versions import ROOM_VERSIONS
from conduwuit.server import Server
from conduwuit.services.media import MediaInfo, media_key
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.fakefed import FakeRequest, FakeServer, sign_pdu
from tests.support.inprocess import running_server
from tests.support.users import make_user
from tests.test_federation_inbound import F1, F2, STRIPPED, environment, invite_pdu, q

V3 = "/_matrix/client/v3"
SECRET = "very-secret-registration-token-42"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, registration_token=SECRET,
                         database_backup_path=str(tmp_path / "backups"))
    async with running_server(config) as server:
        yield server


async def run(server: Server, text: str) -> str:
    assert server.admin_executor is not None
    return await server.admin_executor(text)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_users_commands(server: Server) -> None:
    svc = server.services
    assert svc is not None
    answer = await run(server, "users create-user carol")
    match = re.search(r"Created user `@carol:test.local` with password: `([A-Za-z0-9]+)`", answer)
    assert match is not None and len(match.group(1)) == 25, answer
    await svc.login.check_password("@carol:test.local", match.group(1))
    answer = await run(server, "users reset-password carol hunter22")
    assert "reset to: `hunter22`" in answer
    await svc.login.check_password("@carol:test.local", "hunter22")
    assert "@carol:test.local" in await run(server, "users list-users")
    assert "taken" in await run(server, "users create-user carol")

    alice = await make_user(server, "alice")
    room = await svc.rooms.creation.create(alice.user_id, {"preset": "public_chat",
                                                           "name": "Lobby"})
    assert "joined" in await run(server, f"users force-join-room carol {room}")
    assert svc.rooms.membership.is_joined(room, "@carol:test.local")
    listed = await run(server, "users list-joined-rooms @carol:test.local")
    assert f"`{room}` (Lobby): 2 joined" in listed
    assert "put on" in await run(server, f"users put-room-tag carol {room} m.favourite")
    assert "m.favourite" in await run(server, f"users get-room-tags carol {room}")
    assert "deleted" in await run(server, f"users delete-room-tag carol {room} m.favourite")
    assert "has no tag" in await run(server, f"users delete-room-tag carol {room} m.favourite")
    assert "left" in await run(server, f"users force-leave-room carol {room}")
    assert not svc.rooms.membership.is_joined(room, "@carol:test.local")

    # Admin rights come with the admin room; revoking takes both away.
    assert "now a server admin" in await run(server, "users make-user-admin alice")
    admin_room = svc.admin_room.room_id()
    assert admin_room is not None and svc.rooms.membership.is_joined(admin_room, alice.user_id)
    assert "no longer" in await run(server, "users revoke-user-admin alice")
    assert not svc.users.is_admin(alice.user_id)
    assert not svc.rooms.membership.is_joined(admin_room, alice.user_id)

    # Redactions, one event or the latest of a user.
    first = await svc.rooms.timeline.send(room, Draft(alice.user_id, "m.room.message",
                                                      {"msgtype": "m.text", "body": "one"}))
    await svc.rooms.timeline.send(room, Draft(alice.user_id, "m.room.message",
                                              {"msgtype": "m.text", "body": "two"}))
    assert "Redacted" in await run(server, f"users redact-event {first.event_id}")
    assert svc.rooms.events.get(first.event_id).content == {}  # type: ignore[union-attr]
    assert "Redacted 1 event(s)" in await run(server, "users redact-user-events alice")

    # Deactivation: with leaving rooms, without, and a list from a code block.
    await svc.rooms.actions.join(room, "@carol:test.local")
    assert "deactivated" in await run(server, "users deactivate --no-leave-rooms carol")
    assert svc.users.is_deactivated("@carol:test.local")
    assert svc.rooms.membership.is_joined(room, "@carol:test.local")
    assert "already deactivated" in await run(server, "users deactivate carol")
    dave = await make_user(server, "dave")
    await make_user(server, "erin", admin=True)
    await svc.rooms.actions.join(room, dave.user_id)
    answer = await run(server, "users deactivate-all\n```\ndave\n@erin:test.local\nnobody\n```")
    assert "Deactivated 1 of 3 users" in answer and "is an admin (use --force)" in answer
    assert svc.users.is_deactivated(dave.user_id)
    assert not svc.rooms.membership.is_joined(room, dave.user_id)
    assert "cannot be deactivated" in await run(server, "users deactivate conduit")


async def test_rooms_commands(server: Server) -> None:
    svc = server.services
    assert svc is not None
    alice = await make_user(server, "alice")
    room = await svc.rooms.creation.create(alice.user_id, {"preset": "public_chat",
                                                           "name": "Lobby", "topic": "hi"})
    assert f"`{room}` (Lobby): 1 joined member(s)" in await run(server, "rooms list")
    info = await run(server, f"rooms info {room}")
    assert "- topic: hi" in info and "`@alice:test.local`" in info
    dump = await run(server, f"rooms state {room}")
    assert '"m.room.create"' in dump and dump.rstrip().endswith("```")
    assert "is known" in await run(server, f"rooms exists {room}")

    # Aliases: set, which, list, remove; forbidden names and taken aliases refused.
    assert "now points to" in await run(server, f"rooms alias set {room} lobby")
    assert f"points to `{room}`" in await run(server, "rooms alias which lobby")
    assert "#lobby:test.local" in await run(server, f"rooms alias list {room}")
    assert "#lobby:test.local" in await run(server, "rooms alias list")
    assert "--force" in await run(server, f"rooms alias set {room} lobby")
    assert "Removed" in await run(server, "rooms alias remove lobby")
    assert "does not exist" in await run(server, "rooms alias which lobby")

    # Directory.
    assert "is published" in await run(server, f"rooms directory publish {room}")
    assert room in await run(server, "rooms directory list")
    assert "no longer" in await run(server, f"rooms directory unpublish {room}")
    await svc.admin_room.ensure_room()
    admin_room = svc.admin_room.room_id()
    assert "never published" in await run(server, f"rooms directory publish {admin_room}")
    assert "cannot be banned" in await run(server, f"rooms moderation ban-room {admin_room}")


async def test_forbidden_alias_names_apply_to_admin_commands(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, forbidden_alias_names=["^bad"])) as server:
        assert server.services is not None
        alice = await make_user(server, "alice")
        room = await server.services.rooms.creation.create(alice.user_id, {})
        answer = await run(server, f"rooms alias set {room} badword")
        assert answer.startswith("**Error**") and "not allowed" in answer
        assert server.services.rooms.aliases.resolve("#badword:test.local") is None


async def test_ban_room_evicts_and_blocks_joins_and_invites(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        svc = env.server.services
        assert svc is not None
        alice = await make_user(env.server, "alice")
        bob = await make_user(env.server, "bob")
        carol = await make_user(env.server, "carol")
        room = await svc.rooms.creation.create(alice.user_id, {"preset": "public_chat"})
        await svc.rooms.actions.join(room, bob.user_id)
        await svc.rooms.actions.invite(room, alice.user_id, carol.user_id)
        answer = await run(env.server, f"rooms moderation ban-room {room}")
        assert "3 local user(s) made to leave" in answer, answer
        assert svc.rooms.membership.joined_members(room) == []
        assert svc.rooms.membership.membership(room, carol.user_id) == "leave"
        assert room in await run(env.server, "rooms moderation list-banned-rooms")
        # Joins and invites are refused, and so are invites from other servers.
        r = await env.client.post(f"{V3}/join/{q(room)}", json={}, headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        with pytest.raises(MatrixError) as refused:
            await svc.rooms.actions.invite(room, alice.user_id, bob.user_id)
        assert refused.value.status == 403
        remote_room, event_id, pdu = invite_pdu(env.fake, alice.user_id)
        assert "1 room" not in await run(env.server, "rooms moderation ban-list-of-rooms\n"
                                                     f"```\n{remote_room}\n#nope:test.local\n```")
        r = await env.fed("PUT", f"{F2}/invite/{q(remote_room)}/{q(event_id)}",
                          body={"event": pdu, "room_version": "10",
                                "invite_room_state": STRIPPED})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text
        # Incoming federation of a banned room is off too.
        assert room in await run(env.server, "federation incoming-federation")
        # Unbanning lets people in again.
        assert "unbanned" in await run(env.server, f"rooms moderation unban-room {room}")
        r = await env.client.post(f"{V3}/join/{q(room)}", json={}, headers=bob.headers)
        assert r.status_code == 200, r.text


async def test_banned_room_attempts_deactivate_when_configured(tmp_path: Path) -> None:
    config = make_config(tmp_path, auto_deactivate_banned_room_attempts=True)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        svc = server.services
        assert svc is not None
        alice = await make_user(server, "alice")
        mallory = await make_user(server, "mallory")
        await svc.admin_room.ensure_room()
        room = await svc.rooms.creation.create(alice.user_id, {"preset": "public_chat"})
        await run(server, f"rooms moderation ban-room {room}")
        # Admins are never deactivated this way.
        await run(server, "users make-user-admin alice")
        r = await client.post(f"{V3}/rooms/{q(room)}/join", json={}, headers=alice.headers)
        assert r.status_code == 403 and not svc.users.is_deactivated(alice.user_id)
        r = await client.post(f"{V3}/rooms/{q(room)}/join", json={}, headers=mallory.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        assert svc.users.is_deactivated(mallory.user_id)
        admin_room = svc.admin_room.room_id()
        assert admin_room is not None
        notices = [e.content.get("body") for _, e in svc.rooms.events.timeline(admin_room)]
        assert any("deactivated @mallory:test.local" in str(n) for n in notices)


async def test_federation_commands(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        svc = env.server.services
        assert svc is not None
        fake = env.fake

        async def support(_server: FakeServer, _request: FakeRequest) -> tuple[int, object]:
            return 200, {"contacts": [{"matrix_id": "@ops:x", "role": "m.role.admin"}]}

        async def version(_server: FakeServer, _request: FakeRequest) -> tuple[int, object]:
            return 200, {"server": {"name": "fake", "version": "1"}}

        fake.routes[("GET", "/.well-known/matrix/support")] = support
        fake.routes[("GET", f"{F1}/version")] = version
        answer = await run(env.server, f"federation fetch-support-well-known {fake.name}")
        assert '"matrix_id": "@ops:x"' in answer, answer
        missing = await run(env.server, f"federation fetch-support-well-known {env.other.name}")
        assert "answered HTTP 404" in missing
        answer = await run(env.server, f"debug ping {fake.name}")
        assert f"Got a response from `{fake.name}` in" in answer and '"fake"' in answer
        assert "did not answer" in await run(env.server, "debug ping 127.0.0.1:1")
        resolved = await run(env.server, f"debug resolve-true-destination {fake.name}")
        assert "- addresses: `127.0.0.1`" in resolved

        # Disabled incoming federation: PDUs of the room are refused.
        alice = await make_user(env.server, "alice")
        room = await svc.rooms.creation.create(alice.user_id, {"preset": "public_chat"})
        assert "disabled" in await run(env.server, f"federation disable-room {room}")
        version10 = ROOM_VERSIONS["10"]
        event_id, pdu = sign_pdu(fake, {
            "type": "m.room.message", "sender": f"@carol:{fake.name}", "room_id": room,
            "content": {"body": "hi"}, "origin_server_ts": int(time.time() * 1000),
            "depth": 9, "prev_events": svc.rooms.timeline.leaves(room), "auth_events": []},
            version10)
        r = await env.fed("PUT", f"{F1}/send/txn1", body={"origin": fake.name, "pdus": [pdu],
                                                          "origin_server_ts": 1})
        assert r.status_code == 200, r.text
        assert "disabled" in r.json()["pdus"][event_id]["error"]
        assert "enabled" in await run(env.server, f"federation enable-room {room}")
        assert room not in await run(env.server, "federation incoming-federation")
        # Remote users and destinations.
        answer = await run(env.server, f"federation remote-user-in-rooms @carol:{fake.name}")
        assert "joined to 0 room(s)" in answer
        assert "is a local user" in await run(env.server,
                                              "federation remote-user-in-rooms @alice:test.local")
        svc.federation.sender.enqueue_edu([fake.name], {"edu_type": "m.typing", "content": {}})
        assert "destination(s)" in await run(env.server, "federation destinations")


async def test_media_commands(server: Server) -> None:
    svc = server.services
    assert svc is not None
    alice = await make_user(server, "alice")

    async def upload(data: bytes) -> MediaInfo:
        return await svc.media.upload(chunks(data), user_id=alice.user_id,
                                      content_type="text/plain", filename="a.txt")

    def path_of(info: MediaInfo) -> Path:
        return svc.media.files.path(media_key(info.server_name, info.media_id))

    one, two, three, four = [await upload(b"file %d" % i) for i in range(4)]
    assert all(path_of(i).exists() for i in (one, two, three, four))
    assert "local: 4 file(s)" in await run(server, "media stats")
    assert "Deleted 1 file(s)" in await run(server, f"media delete {one.mxc}")
    assert not path_of(one).exists() and svc.media.info("test.local", one.media_id) is None
    assert "No such media" in await run(server, f"media delete {one.mxc}")
    assert "not an mxc" in await run(server, "media delete http://x/y")
    answer = await run(server, f"media delete-list\n```\n{two.mxc}\nmxc://bad\n```")
    assert answer == "Deleted 1 of 2 file(s)" and not path_of(two).exists()
    room = await svc.rooms.creation.create(alice.user_id, {})
    event = await svc.rooms.timeline.send(room, Draft(alice.user_id, "m.room.message", {
        "msgtype": "m.file", "body": "a.txt", "url": three.mxc}))
    assert "Deleted 1 file(s)" in await run(server, f"media delete {event.event_id}")
    assert not path_of(three).exists()
    assert "Deleted 0 remote file(s)" in await run(server, "media delete-past-remote-media 1d")
    assert "not a duration" in await run(server, "media delete-past-remote-media soon")
    assert "Deleted 1 file(s) uploaded" in await run(server, "media delete-all-from-user alice")
    assert not path_of(four).exists()


async def test_server_commands(server: Server) -> None:
    svc = server.services
    assert svc is not None
    assert (await run(server, "server uptime")).startswith("Up for ")
    config = await run(server, "server show-config")
    assert "server_name = 'test.local'" in config
    assert SECRET not in config and "registration_token = <redacted>" in config
    assert "resident (RSS): " in await run(server, "server memory-usage")
    assert "well-known" in await run(server, "server clear-caches")
    assert "0 backup(s)" in await run(server, "server list-backups")
    assert "made in" in await run(server, "server backup-database")
    assert "1 backup(s)" in await run(server, "server list-backups")
    assert "CURRENT" in await run(server, "server list-database-files")
    assert "no admin room" in await run(server, "server admin-notice hello admins")
    await svc.admin_room.ensure_room()
    assert "Notice sent" in await run(server, "server admin-notice hello --all admins")
    room = svc.admin_room.room_id()
    assert room is not None
    bodies = [e.content.get("body") for _, e in svc.rooms.events.timeline(room)]
    assert "hello --all admins" in bodies
    assert "not reloaded" in await run(server, "server reload-config")
    assert "not possible here" in await run(server, "server restart")
    # Every named job, with its state.
    jobs = await run(server, "server jobs")
    for status in server.supervisor.statuses():
        assert f"`{status.full_name}`: **{status.state.value}**" in jobs
    for name in ("admin/commands", "sender/federation", "devices/last-seen"):
        assert f"`{name}`: **running**" in jobs


async def test_shutdown_from_the_admin_room(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as server:
        assert server.services is not None
        admin = await make_user(server, "root", admin=True)
        await server.services.admin_room.make_admin(admin.user_id)
        room = server.services.admin_room.room_id()
        assert room is not None
        await server.services.rooms.timeline.send(room, Draft(
            admin.user_id, "m.room.message", {"msgtype": "m.text",
                                              "body": "!admin server shutdown"}))
        with trio.fail_after(10):
            await server.stopping.wait()
        bodies = [e.content.get("body") for _, e in server.services.rooms.events.timeline(room)]
        assert any(str(b).startswith("Shutting down") for b in bodies)
        assert any(s.full_name == "admin/commands" and s.state is JobState.RUNNING
                   for s in server.supervisor.statuses())


async def test_debug_commands(server: Server) -> None:
    svc = server.services
    assert svc is not None
    alice = await make_user(server, "alice")
    room = await svc.rooms.creation.create(alice.user_id, {"name": "Debugging"})
    event = await svc.rooms.timeline.send(room, Draft(alice.user_id, "m.room.message",
                                                      {"msgtype": "m.text", "body": "x"}))
    assert "The log filter is now `debug`" in await run(server, "debug change-log-level debug")
    assert "unknown level" in await run(server, "debug change-log-level loud")
    assert "now `info`" in await run(server, "debug change-log-level --reset")
    pdu = await run(server, f"debug get-pdu {event.event_id}")
    assert "timeline event" in pdu and '"body": "x"' in pdu
    assert "No event" in await run(server, "debug get-pdu $nope")
    chain = await run(server, f"debug get-auth-chain {event.event_id}")
    assert re.search(r"\d+ event\(s\), 0 missing", chain), chain
    parsed = await run(server, "debug parse-pdu\n```json\n"
                       + orjson.dumps(event.pdu).decode() + "\n```")
    assert f"- event id: `{event.event_id}`" in parsed and "content hash: valid" in parsed
    assert "not JSON" in await run(server, "debug parse-pdu\n```\n{nope\n```")
    assert "Invalid PDU" in await run(server, 'debug parse-pdu\n```\n{"type": 1}\n```')
    assert "of 1 local user(s)" in await run(server, "debug force-device-list-updates")
    assert "`test.local`" not in await run(server, "debug resolve-true-destination 1.2.3.4")
    assert "`bannedroomids`" in await run(server, "debug database trees")
    got = await run(server, "debug database get userid_password @alice:test.local")
    assert "argon2" in got
    items = await run(server, "debug database iter userid_password @ --limit 1")
    assert "1 item(s)" in items
    assert "no tree named" in await run(server, "debug database iter nope")
    assert "no key" in await run(server, "debug database get userid_password @x:y")
    assert (await run(server, "debug echo a b  c")) == "a b c"


async def test_appservices_commands(server: Server) -> None:
    listed = await run(server, "appservices list")
    assert "appservice(s)" in listed or "not available" in listed
    assert "code block" in await run(server, "appservices register")
    assert "**Error**" in await run(server, "appservices show nope")


async def test_admin_execute_runs_commands_at_startup(tmp_path: Path) -> None:
    config = make_config(tmp_path, admin_execute=["debug echo from the config",
                                                  "server shutdown"])
    async with running_server(config) as server:
        with trio.fail_after(10):
            await server.stopping.wait()  # the second command stopped the server
