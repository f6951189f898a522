"""matrix-nio in the admin room of a running server.

Run as ``python -m tests.support.nio_admin_scenario HOMESERVER_URL TOKEN``: alice registers
first (so she is the admin and is put in ``#admins``), sends one command of every group and
reads the bot's replies from /sync; bob (no admin) is let in and tries commands; alice bans
a room bob is in, and bob's join and alice's invite are refused afterwards; an uploaded file
is deleted with ``media delete`` and its download fails. Prints one JSON summary.

nio is asyncio-only: this module must run in its own process, never under Trio.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from nio import (
    AsyncClient,
    DownloadError,
    JoinResponse,
    RoomPreset,
    RoomResolveAliasResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)

from tests.support.nio_common import describe, raw, register, run_scenario

REPLY_TIMEOUT = 20.0
COMMANDS = {
    "users": "!admin users list-users",
    "rooms": "!admin rooms list",
    "federation": "!admin federation incoming-federation",
    "server": "!admin server jobs",
    "debug": "!admin debug echo hello from nio",
    "appservices": "!admin appservices list",
    "help": "!admin users --help",
    "bad": "!admin users frobnicate",
}


async def send_text(client: AsyncClient, room: str, text: str) -> str:
    resp = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})
    if not isinstance(resp, RoomSendResponse):
        raise AssertionError(f"sending {text!r}: {describe(resp)}")
    return resp.event_id


async def reply_to(client: AsyncClient, room: str, event_id: str,
                   timeout: float = REPLY_TIMEOUT) -> dict[str, Any] | None:
    """The content of the bot's reply to ``event_id``, read from /sync; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=1000)
        if not isinstance(resp, SyncResponse):
            continue
        joined = resp.rooms.join.get(room)
        for event in joined.timeline.events if joined else []:
            content = event.source.get("content", {})
            relates = content.get("m.relates_to") or {}
            if event.source.get("sender", "").startswith("@conduit:") and \
                    relates.get("m.in_reply_to", {}).get("event_id") == event_id:
                return {"sender": event.source["sender"], **content}
    return None


async def command(client: AsyncClient, room: str, text: str) -> dict[str, Any] | None:
    return await reply_to(client, room, await send_text(client, room, text))


async def scenario(homeserver: str, token: str, out: dict[str, Any]) -> None:
    alice = await register(homeserver, token, "alice", "alice password 1")
    bob = await register(homeserver, token, "bob", "bob password 22")
    try:
        server_name = alice.user_id.split(":", 1)[1]
        resolved = await alice.room_resolve_alias(f"#admins:{server_name}")
        if not isinstance(resolved, RoomResolveAliasResponse):
            raise AssertionError(f"#admins does not resolve: {describe(resolved)}")
        admin_room = resolved.room_id
        out["admin_room"] = admin_room
        await alice.sync(timeout=0)
        out["alice_joined"] = admin_room in alice.rooms
        await bob.sync(timeout=0)

        out["replies"] = {name: await command(alice, admin_room, text)
                          for name, text in COMMANDS.items()}

        # media: an uploaded file is deleted and can no longer be downloaded
        data = b"admin room media test"
        up, _ = await alice.upload(lambda *_: data, content_type="text/plain",
                                   filename="note.txt", filesize=len(data))
        if not isinstance(up, UploadResponse):
            raise AssertionError(f"upload: {describe(up)}")
        out["replies"]["media"] = await command(alice, admin_room,
                                                f"!admin media delete {up.content_uri}")
        download = await alice.download(up.content_uri)
        out["download_after_delete"] = describe(download)
        out["download_failed"] = isinstance(download, DownloadError)

        # non-admins: bob is let into the room, but his commands do not run
        await alice.room_invite(admin_room, bob.user_id)
        joined = await bob.join(admin_room)
        out["bob_join_admin_room"] = describe(joined)
        out["bob_reply"] = await command(bob, admin_room, "!admin users create-user mallory")
        out["users_after_bob"] = await command(alice, admin_room, "!admin users list-users")

        # a banned room: bob is made to leave, may not come back, nobody may invite
        created = await alice.room_create(name="Doomed", preset=RoomPreset.public_chat)
        room = created.room_id  # type: ignore[union-attr]
        out["bob_join_before"] = describe(await bob.join(room))
        out["ban_reply"] = await command(alice, admin_room,
                                         f"!admin rooms moderation ban-room {room}")
        status, members = await raw(alice, "GET", f"rooms/{room}/joined_members")
        out["members_after_ban"] = {"status": status, "body": members}
        rejoin = await bob.join(room)
        out["bob_join_after"] = describe(rejoin)
        out["bob_join_after_ok"] = isinstance(rejoin, JoinResponse)
        status, body = await raw(alice, "POST", f"rooms/{room}/invite",
                                 {"user_id": bob.user_id})
        out["invite_after"] = {"status": status, "body": body}
        out["bob_rooms"] = list((await bob.joined_rooms()).rooms)  # type: ignore[union-attr]
    finally:
        await alice.close()
        await bob.close()


def main(argv: list[str]) -> int:
    homeserver, token = argv
    return run_scenario(lambda summary: scenario(homeserver, token, summary))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
