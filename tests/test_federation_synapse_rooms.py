"""Rooms shared with a real Synapse on loopback, over TLS: the acceptance of federation II.

One Synapse and one of our servers, each with a user: bob on Synapse, alice (and
carol) here. Rooms are created on either side and joined from the other; messages,
edits, redactions, state, typing, receipts, presence, display names, invites both
ways, kicks, bans and leaves must reach the other side's clients, and a user who
joins late pages through the history from before the join.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import httpx
import pytest
import trio
import trustme

from conduwuit.config import Config
from conduwuit.server import Server
from tests.support.inprocess import running_server
from tests.support.synapse import Synapse
from tests.support.users import make_user
from tests.test_federation_synapse import (
    _device_keys,
    _our_tls_config,
    _register,
    _synapse_or_skip,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")
WAIT = 45.0  # seconds for anything to cross between the servers


async def eventually(check: Callable[[], Awaitable[T | None]], what: str,
                     timeout: float = WAIT) -> T:
    """Poll ``check`` until it returns something truthy."""
    with trio.move_on_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await trio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@attrs.define
class Account:
    """A user on one of the two servers, with its client and a /sync position."""

    http: httpx.AsyncClient
    user_id: str
    token: str
    device_id: str = ""
    since: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **params: str) -> Any:
        r = await self.http.get(path, params=params, headers=self.headers)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        return r.json()

    async def call(self, method: str, path: str, body: Any = None,
                   expect: int = 200) -> Any:
        r = await self.http.request(method, path, json=body if body is not None else {},
                                    headers=self.headers)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    async def send(self, room_id: str, body: str, **content: Any) -> str:
        txn = f"t{trio.current_time()}-{body[:8]}".replace(" ", "")
        answer = await self.call(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{quote(txn)}",
            {"msgtype": "m.text", "body": body, **content})
        return str(answer["event_id"])

    async def messages(self, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
        page = await self.get(f"/_matrix/client/v3/rooms/{room_id}/messages", dir="b",
                              limit=str(limit))
        return list(page["chunk"])

    async def sync(self) -> dict[str, Any]:
        params = {"timeout": "500"}
        if self.since is not None:
            params["since"] = self.since
        answer: dict[str, Any] = await self.get("/_matrix/client/v3/sync", **params)
        self.since = answer["next_batch"]
        return answer

    async def sees(self, room_id: str, predicate: Callable[[dict[str, Any]], bool],
                   what: str) -> dict[str, Any]:
        """Wait until an event of the room's timeline matches ``predicate``."""

        async def look() -> dict[str, Any] | None:
            return next((e for e in await self.messages(room_id) if predicate(e)), None)

        return await eventually(look, f"{self.user_id} to see {what}")

    async def sees_body(self, room_id: str, body: str) -> dict[str, Any]:
        return await self.sees(room_id, lambda e: e.get("content", {}).get("body") == body,
                               repr(body))

    async def member(self, room_id: str, user_id: str) -> str | None:
        r = await self.http.get(
            f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{quote(user_id)}",
            headers=self.headers)
        return str(r.json()["membership"]) if r.status_code == 200 else None

    async def sees_membership(self, room_id: str, user_id: str, membership: str) -> None:
        async def look() -> bool:
            return await self.member(room_id, user_id) == membership

        await eventually(look, f"{self.user_id} to see {user_id} {membership} in {room_id}")

    async def ephemeral(self, room_id: str, predicate: Callable[[dict[str, Any]], bool],
                        what: str) -> dict[str, Any]:
        """Wait for an ephemeral event of the room in incremental syncs."""

        async def look() -> dict[str, Any] | None:
            answer = await self.sync()
            room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
            return next((e for e in room.get("ephemeral", {}).get("events", [])
                         if predicate(e)), None)

        return await eventually(look, f"{self.user_id} to see {what}")

    async def invited_to(self, room_id: str) -> None:
        async def look() -> bool:
            answer = await self.sync()
            return room_id in answer.get("rooms", {}).get("invite", {})

        await eventually(look, f"{self.user_id} to be invited to {room_id}")

    async def join(self, room: str, via: str | None = None) -> str:
        path = f"/_matrix/client/v3/join/{quote(room, safe='')}"
        if via is not None:
            path += f"?server_name={quote(via)}"
        answer = await self.call("POST", path)
        return str(answer["room_id"])


@attrs.define
class World:
    server: Server
    synapse: Synapse
    alice: Account
    carol: Account
    bob: Account
    ours: str


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    python = await _synapse_or_skip()
    ca = trustme.CA()
    synapse = Synapse(tmp_path / "synapse", python, ca, presence=True)
    await trio.to_thread.run_sync(synapse.start)
    try:
        ours, config, trusted = _our_tls_config(tmp_path, ca)
        async with _ours(config, ours, trusted, synapse) as w:
            yield w
    except BaseException:
        print(synapse.log_tail(120))
        raise
    finally:
        await trio.to_thread.run_sync(synapse.stop)


@asynccontextmanager
async def _ours(config: Config, ours: str, trusted: ssl.SSLContext,
                synapse: Synapse) -> AsyncIterator[World]:
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=f"https://{ours}", verify=trusted, timeout=60) as us, \
            httpx.AsyncClient(base_url=synapse.client_url, timeout=60) as syn:
        alice = await make_user(server, "alice")
        carol = await make_user(server, "carol")
        bob = await _register(syn, "bob")
        yield World(server, synapse,
                    Account(us, alice.user_id, alice.access_token, alice.device_id),
                    Account(us, carol.user_id, carol.access_token, carol.device_id),
                    Account(syn, bob["user_id"], bob["access_token"], bob["device_id"]), ours)


def _body(event: dict[str, Any]) -> str | None:
    return event.get("content", {}).get("body")


async def test_room_on_synapse_joined_from_here(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol = w.alice, w.bob, w.carol
        room = (await bob.call("POST", "/_matrix/client/v3/createRoom",
                               {"preset": "public_chat", "room_alias_name": "lobby",
                                "name": "Lobby"}))["room_id"]
        await bob.call("PUT", f"/_matrix/client/v3/rooms/{room}/state/"
                              "m.room.history_visibility/",
                       {"history_visibility": "shared"})
        early = [await bob.send(room, f"early {n}") for n in range(3)]

        # Joined by alias: the alias resolves over federation, the join goes to Synapse.
        assert await alice.join(f"#lobby:{w.synapse.server_name}") == room
        await bob.sees_membership(room, alice.user_id, "join")
        # History from before the join, backfilled from Synapse.
        bodies = [_body(e) for e in await alice.messages(room)]
        assert [b for b in bodies if b and b.startswith("early")] == ["early 2", "early 1",
                                                                      "early 0"]
        assert early  # ids exist on both sides
        # Joined by id with a via server.
        assert await carol.join(room, via=w.synapse.server_name) == room

        # Messages both ways.
        from_bob = await bob.send(room, "hello from synapse")
        seen = await alice.sees_body(room, "hello from synapse")
        assert seen["event_id"] == from_bob
        await alice.send(room, "hello from conduwuit")
        await bob.sees_body(room, "hello from conduwuit")

        # An edit and a redaction from Synapse.
        await bob.send(room, "* edited", **{"m.new_content": {"msgtype": "m.text",
                                                             "body": "edited"},
                                            "m.relates_to": {"rel_type": "m.replace",
                                                             "event_id": from_bob}})
        await alice.sees_body(room, "* edited")
        await bob.call("PUT", f"/_matrix/client/v3/rooms/{room}/redact/{from_bob}/r1",
                       {"reason": "oops"})

        async def redacted() -> bool:
            r = await alice.http.get(f"/_matrix/client/v3/rooms/{room}/event/{from_bob}",
                                     headers=alice.headers)
            return r.status_code == 200 and "body" not in r.json()["content"]

        await eventually(redacted, "the redaction to reach us")

        # State: Synapse renames the room; we set the topic.
        await bob.call("PUT", f"/_matrix/client/v3/rooms/{room}/state/m.room.name/",
                       {"name": "Renamed"})

        async def renamed() -> bool:
            r = await alice.http.get(f"/_matrix/client/v3/rooms/{room}/state/m.room.name/",
                                     headers=alice.headers)
            return r.status_code == 200 and r.json().get("name") == "Renamed"

        await eventually(renamed, "the new room name")

        # Typing and receipts, both ways.
        alice.since = (await alice.sync())["next_batch"]
        bob.since = (await bob.sync())["next_batch"]
        await alice.call("PUT", f"/_matrix/client/v3/rooms/{room}/typing/"
                                f"{quote(alice.user_id)}", {"typing": True, "timeout": 30000})
        await bob.ephemeral(room, lambda e: e["type"] == "m.typing"
                            and alice.user_id in e["content"]["user_ids"], "alice typing")
        await bob.call("PUT", f"/_matrix/client/v3/rooms/{room}/typing/{quote(bob.user_id)}",
                       {"typing": True, "timeout": 30000})
        await alice.ephemeral(room, lambda e: e["type"] == "m.typing"
                              and bob.user_id in e["content"]["user_ids"], "bob typing")
        last = (await alice.messages(room, 1))[0]["event_id"]
        await alice.call("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}")
        await bob.ephemeral(room, lambda e: e["type"] == "m.receipt"
                            and alice.user_id in str(e["content"]), "alice's receipt")
        await bob.call("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}")
        await alice.ephemeral(room, lambda e: e["type"] == "m.receipt"
                              and bob.user_id in str(e["content"]), "bob's receipt")

        # Presence both ways.
        await alice.call("PUT", f"/_matrix/client/v3/presence/{quote(alice.user_id)}/status",
                         {"presence": "online", "status_msg": "here"})

        async def alice_online() -> bool:
            r = await bob.http.get(f"/_matrix/client/v3/presence/{quote(alice.user_id)}/status",
                                   headers=bob.headers)
            return r.status_code == 200 and r.json().get("status_msg") == "here"

        await eventually(alice_online, "alice's presence on Synapse")
        await bob.call("PUT", f"/_matrix/client/v3/presence/{quote(bob.user_id)}/status",
                       {"presence": "online", "status_msg": "there"})

        async def bob_online() -> bool:
            r = await alice.http.get(f"/_matrix/client/v3/presence/{quote(bob.user_id)}/status",
                                     headers=alice.headers)
            return r.status_code == 200 and r.json().get("status_msg") == "there"

        await eventually(bob_online, "bob's presence here")

        # A display-name change reaches the room on the other side.
        await alice.call("PUT", f"/_matrix/client/v3/profile/{quote(alice.user_id)}/displayname",
                         {"displayname": "Alice Renamed"})

        async def renamed_member() -> bool:
            r = await bob.http.get(f"/_matrix/client/v3/rooms/{room}/state/m.room.member/"
                                   f"{quote(alice.user_id)}", headers=bob.headers)
            return r.status_code == 200 and r.json().get("displayname") == "Alice Renamed"

        await eventually(renamed_member, "alice's new display name on Synapse")

        # Kick, ban and leave replicate.
        await bob.call("POST", f"/_matrix/client/v3/rooms/{room}/kick",
                       {"user_id": carol.user_id, "reason": "test"})
        await alice.sees_membership(room, carol.user_id, "leave")
        await bob.call("POST", f"/_matrix/client/v3/rooms/{room}/ban",
                       {"user_id": carol.user_id})
        await alice.sees_membership(room, carol.user_id, "ban")
        await alice.call("POST", f"/_matrix/client/v3/rooms/{room}/leave")
        await bob.sees_membership(room, alice.user_id, "leave")


async def test_room_here_joined_from_synapse(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        alice, bob = w.alice, w.bob
        room = (await alice.call("POST", "/_matrix/client/v3/createRoom",
                                 {"preset": "public_chat", "room_alias_name": "hall",
                                  "initial_state": [{"type": "m.room.history_visibility",
                                                     "content": {"history_visibility":
                                                                 "shared"}}]}))["room_id"]
        await alice.send(room, "before bob")
        assert await bob.join(f"#hall:{w.ours}") == room
        await alice.sees_membership(room, bob.user_id, "join")
        await bob.sees_body(room, "before bob")
        await alice.send(room, "hi bob")
        await bob.sees_body(room, "hi bob")
        await bob.send(room, "hi alice")
        await alice.sees_body(room, "hi alice")
        await alice.call("PUT", f"/_matrix/client/v3/rooms/{room}/state/m.room.topic/",
                         {"topic": "federated"})

        async def topic() -> bool:
            r = await bob.http.get(f"/_matrix/client/v3/rooms/{room}/state/m.room.topic/",
                                   headers=bob.headers)
            return r.status_code == 200 and r.json().get("topic") == "federated"

        await eventually(topic, "the topic on Synapse")

        # Private rooms: our invite to bob, and bob's invite to us.
        private = (await alice.call("POST", "/_matrix/client/v3/createRoom",
                                    {"preset": "private_chat", "invite": [bob.user_id]}))
        private_id = private["room_id"]
        await bob.invited_to(private_id)
        await bob.join(private_id, via=w.ours)
        await alice.sees_membership(private_id, bob.user_id, "join")
        theirs = (await bob.call("POST", "/_matrix/client/v3/createRoom",
                                 {"preset": "private_chat", "invite": [alice.user_id]}))
        theirs_id = theirs["room_id"]
        await alice.invited_to(theirs_id)
        await alice.join(theirs_id)
        await bob.sees_membership(theirs_id, alice.user_id, "join")
        await alice.send(theirs_id, "thanks for the invite")
        await bob.sees_body(theirs_id, "thanks for the invite")

        # E2EE plumbing: device-list updates and to-device messages cross servers.
        bob.since = (await bob.sync())["next_batch"]
        alice.since = (await alice.sync())["next_batch"]
        await alice.call("POST", "/_matrix/client/v3/keys/upload",
                         {"device_keys": _device_keys(alice.user_id, alice.device_id)})

        async def bob_hears_of_alice() -> bool:
            answer = await bob.sync()
            return alice.user_id in answer.get("device_lists", {}).get("changed", [])

        await eventually(bob_hears_of_alice, "alice's device-list update on Synapse")
        keys = await bob.call("POST", "/_matrix/client/v3/keys/query",
                              {"device_keys": {alice.user_id: []}})
        assert alice.device_id in keys["device_keys"][alice.user_id]
        await alice.call("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1",
                         {"messages": {bob.user_id: {"*": {"hello": "bob"}}}})

        async def bob_gets_to_device() -> bool:
            answer = await bob.sync()
            return any(m.get("content") == {"hello": "bob"}
                       for m in answer.get("to_device", {}).get("events", []))

        await eventually(bob_gets_to_device, "alice's to-device message on Synapse")
        await bob.call("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn2",
                       {"messages": {alice.user_id: {alice.device_id: {"hello": "alice"}}}})

        async def alice_gets_to_device() -> bool:
            answer = await alice.sync()
            return any(m.get("content") == {"hello": "alice"}
                       for m in answer.get("to_device", {}).get("events", []))

        await eventually(alice_gets_to_device, "bob's to-device message here")

        # Kick and ban from our side replicate to Synapse.
        await alice.call("POST", f"/_matrix/client/v3/rooms/{room}/kick",
                         {"user_id": bob.user_id})
        async def kicked() -> bool:
            r = await bob.http.get("/_matrix/client/v3/joined_rooms", headers=bob.headers)
            return room not in r.json()["joined_rooms"]

        await eventually(kicked, "bob's kick on Synapse")
        await alice.call("POST", f"/_matrix/client/v3/rooms/{room}/ban", {"user_id": bob.user_id})
        r = await bob.http.post(f"/_matrix/client/v3/join/{quote(room)}?server_name="
                                f"{quote(w.ours)}", json={}, headers=bob.headers)
        assert r.status_code == 403, r.text


async def test_messages_queued_while_synapse_is_down_arrive_once_in_order(
        tmp_path: Path) -> None:
    """Restart us with Synapse unreachable; queued messages reach it once it is back."""
    python = await _synapse_or_skip()
    ca = trustme.CA()
    synapse = Synapse(tmp_path / "synapse", python, ca)
    await trio.to_thread.run_sync(synapse.start)
    try:
        ours, config, trusted = _our_tls_config(tmp_path, ca)
        async with _ours(config, ours, trusted, synapse) as w:
            alice, bob = w.alice, w.bob
            room = (await alice.call("POST", "/_matrix/client/v3/createRoom",
                                     {"preset": "public_chat"}))["room_id"]
            await bob.join(room, via=ours)
            await alice.sees_membership(room, bob.user_id, "join")
            await trio.to_thread.run_sync(synapse.stop)
            queued = [f"queued {n}" for n in range(5)]
            for body in queued:
                await alice.send(room, body)
        # Our server is down now; start it again on the same database, then Synapse.
        async with running_server(config) as server, \
                httpx.AsyncClient(base_url=synapse.client_url, timeout=60) as syn:
            await trio.to_thread.run_sync(synapse.start)
            bob.http = syn

            async def all_arrived() -> list[str] | None:
                bodies = [_body(e) for e in reversed(await bob.messages(room))]
                got = [b for b in bodies if b and b.startswith("queued")]
                return got if len(got) >= len(queued) else None

            assert await eventually(all_arrived, "the queued messages on Synapse") == queued
            assert server.services is not None
    except BaseException:
        print(synapse.log_tail(120))
        raise
    finally:
        await trio.to_thread.run_sync(synapse.stop)
