"""Events from other servers: every check of the spec, against a hostile fake peer.

A fake server's user joins one of our public rooms through the ingest pipeline, then
sends good and bad events. Whatever it sends, the room's state only changes by
events that pass the auth rules, clients never see rejected or soft-failed events,
and the server keeps answering.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx

from conduwuit.protocol.room_versions import RoomVersion
from conduwuit.server import Server
from conduwuit.services.federation.client import path_segment
from conduwuit.services.federation.ingest import Ingest
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.fakefed import FakeRequest, FakeServer, fake_servers, federation_options
from tests.support.inprocess import base_url, running_server
from tests.support.users import LoggedIn, make_user


@attrs.define
class Scene:
    server: Server
    client: httpx.AsyncClient
    alice: LoggedIn
    room_id: str
    fake: FakeServer
    other: FakeServer

    @property
    def ingest(self) -> Ingest:
        assert self.server.services is not None
        return self.server.services.federation.ingest

    @property
    def version(self) -> RoomVersion:
        assert self.server.services is not None
        version = self.server.services.rooms.events.room_version(self.room_id)
        assert version is not None
        return version

    def template(self, sender: str, event_type: str, content: dict[str, Any],
                 state_key: str | None = None) -> dict[str, Any]:
        services = self.server.services
        assert services is not None
        state = services.rooms.state.current(self.room_id)
        return services.rooms.timeline.template(
            self.room_id, self.version, state, Draft(sender, event_type, content, state_key))

    def signed(self, pdu: dict[str, Any],
               by: FakeServer | None = None) -> tuple[str, dict[str, Any]]:
        return (by or self.fake).sign_pdu(pdu, self.version)

    async def members(self) -> dict[str, str]:
        r = await self.client.get(f"/_matrix/client/v3/rooms/{self.room_id}/members",
                                  headers=self.alice.headers)
        assert r.status_code == 200, r.text
        return {e["state_key"]: e["content"]["membership"] for e in r.json()["chunk"]}

    async def bodies(self) -> list[str]:
        r = await self.client.get(f"/_matrix/client/v3/rooms/{self.room_id}/messages",
                                  params={"dir": "b", "limit": "50"}, headers=self.alice.headers)
        assert r.status_code == 200, r.text
        return [e["content"].get("body", "") for e in r.json()["chunk"]
                if e["type"] == "m.room.message"]

    async def state_snapshot(self) -> dict[str, Any]:
        r = await self.client.get(f"/_matrix/client/v3/rooms/{self.room_id}/state",
                                  headers=self.alice.headers)
        assert r.status_code == 200, r.text
        return {f"{e['type']}|{e['state_key']}": e["event_id"] for e in r.json()}


@asynccontextmanager
async def scene(tmp_path: Path, room_version: str = "12") -> AsyncIterator[Scene]:
    config = make_config(tmp_path, **federation_options())
    async with fake_servers(tmp_path, 2) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        alice = await make_user(server, "alice")
        r = await client.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                              json={"preset": "public_chat", "room_version": room_version})
        assert r.status_code == 200, r.text
        yield Scene(server, client, alice, r.json()["room_id"], fakes[0], fakes[1])


async def _join(s: Scene, user: str, by: FakeServer | None = None) -> str:
    event_id, pdu = s.signed(s.template(user, "m.room.member", {"membership": "join"}, user), by)
    assert await s.ingest.receive((by or s.fake).name, pdu) == (event_id, None)
    return event_id


async def test_remote_join_and_messages_are_accepted(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        bob = f"@bob:{s.fake.name}"
        await _join(s, bob)
        assert (await s.members())[bob] == "join"
        event_id, pdu = s.signed(s.template(bob, "m.room.message",
                                            {"msgtype": "m.text", "body": "hi from afar"}))
        assert await s.ingest.receive(s.fake.name, pdu) == (event_id, None)
        assert "hi from afar" in await s.bodies()
        # The same PDU again is accepted once: no duplicate in the timeline.
        assert await s.ingest.receive(s.fake.name, pdu) == (event_id, None)
        assert (await s.bodies()).count("hi from afar") == 1
        r = await s.client.get("/_matrix/client/v3/sync", headers=s.alice.headers)
        timeline = r.json()["rooms"]["join"][s.room_id]["timeline"]["events"]
        assert any(e["event_id"] == event_id for e in timeline)


async def test_hostile_events_are_refused_and_state_is_unchanged(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        bob = f"@bob:{s.fake.name}"
        await _join(s, bob)
        before = await s.state_snapshot()

        # A bad signature: dropped.
        _, pdu = s.signed(s.template(bob, "m.room.message", {"msgtype": "m.text", "body": "x"}))
        key_id = next(iter(pdu["signatures"][s.fake.name]))
        pdu["signatures"][s.fake.name][key_id] = "A" * 86
        _, error = await s.ingest.receive(s.fake.name, pdu)
        assert error is not None and "signature" in error

        # A forged sender: a user of another server, signed only by the fake.
        mallory = f"@mallory:{s.other.name}"
        _, pdu = s.signed(s.template(mallory, "m.room.member", {"membership": "join"}, mallory))
        _, error = await s.ingest.receive(s.fake.name, pdu)
        assert error is not None and s.other.name in error

        # Failing the auth rules: bob (power 0) takes over the power levels.
        power = s.template(bob, "m.room.power_levels", {"users": {bob: 100}}, "")
        _, pdu = s.signed(power)
        _, error = await s.ingest.receive(s.fake.name, pdu)
        assert error is not None and "not allowed" in error

        # Oversized: more than 64 KiB.
        _, pdu = s.signed(s.template(bob, "m.room.message",
                                     {"msgtype": "m.text", "body": "y" * 70_000}))
        _, error = await s.ingest.receive(s.fake.name, pdu)
        assert error is not None and "65536" in error

        # Malformed: no depth; and a room we are not in.
        _, pdu = s.signed(s.template(bob, "m.room.message", {"body": "z"}))
        del pdu["depth"]
        assert (await s.ingest.receive(s.fake.name, pdu))[1] is not None
        pdu = {**pdu, "room_id": "!elsewhere:example.org"}
        assert (await s.ingest.receive(s.fake.name, pdu))[1] is not None

        assert await s.state_snapshot() == before
        assert "x" not in await s.bodies()
        r = await s.client.get("/_matrix/client/versions")
        assert r.status_code == 200


async def test_wrong_content_hash_is_kept_redacted(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        bob = f"@bob:{s.fake.name}"
        await _join(s, bob)
        event_id, pdu = s.signed(s.template(bob, "m.room.message",
                                            {"msgtype": "m.text", "body": "original"}))
        pdu["content"]["body"] = "tampered"  # the signature covers only the redacted form
        assert await s.ingest.receive(s.fake.name, pdu) == (event_id, None)
        r = await s.client.get(f"/_matrix/client/v3/rooms/{s.room_id}/event/{event_id}",
                               headers=s.alice.headers)
        assert r.status_code == 200 and r.json()["content"] == {}


async def test_event_allowed_before_a_ban_is_soft_failed(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        bob = f"@bob:{s.fake.name}"
        await _join(s, bob)
        # Bob's server builds a message on the state before the ban it has not seen yet.
        late_id, late = s.signed(s.template(bob, "m.room.message",
                                            {"msgtype": "m.text", "body": "sneaky"}))
        r = await s.client.post(f"/_matrix/client/v3/rooms/{s.room_id}/ban",
                                headers=s.alice.headers, json={"user_id": bob})
        assert r.status_code == 200, r.text
        assert await s.ingest.receive(s.fake.name, late) == (late_id, None)
        assert "sneaky" not in await s.bodies()
        services = s.server.services
        assert services is not None
        assert services.rooms.timeline.is_soft_failed(late_id)
        assert late_id not in services.rooms.timeline.leaves(s.room_id)
        assert (await s.members())[bob] == "ban"


async def test_missing_prev_events_are_fetched(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        bob = f"@bob:{s.fake.name}"
        await _join(s, bob)
        first = s.template(bob, "m.room.message", {"msgtype": "m.text", "body": "first"})
        first_id, first_pdu = s.signed(first)
        second = {**first, "content": {"msgtype": "m.text", "body": "second"},
                  "prev_events": [first_id], "depth": first["depth"] + 1}
        second_id, second_pdu = s.signed(second)

        async def missing(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            body = request.json()
            assert body["latest_events"] == [second_id]
            return 200, {"events": [first_pdu]}

        path = f"/_matrix/federation/v1/get_missing_events/{path_segment(s.room_id)}"
        s.fake.routes[("POST", path)] = missing
        assert await s.ingest.receive(s.fake.name, second_pdu) == (second_id, None)
        assert (await s.bodies())[:2] == ["second", "first"]
        services = s.server.services
        assert services is not None
        assert services.rooms.timeline.leaves(s.room_id) == [second_id]


async def test_gap_closed_with_state_ids(tmp_path: Path) -> None:
    """No /get_missing_events answer: the state at the gap comes from /state_ids."""
    async with scene(tmp_path) as s:
        bob = f"@bob:{s.fake.name}"
        await _join(s, bob)
        services = s.server.services
        assert services is not None
        gap = s.template(bob, "m.room.message", {"msgtype": "m.text", "body": "unseen"})
        gap_id, gap_pdu = s.signed(gap)
        after = {**gap, "content": {"msgtype": "m.text", "body": "after the gap"},
                 "prev_events": [gap_id], "depth": gap["depth"] + 1}
        after_id, after_pdu = s.signed(after)
        state_ids = list(services.rooms.state.current(s.room_id).values())
        room = path_segment(s.room_id)

        async def ids(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 200, {"pdu_ids": state_ids, "auth_chain_ids": []}

        async def event(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 200, {"origin": s.fake.name, "origin_server_ts": 0, "pdus": [gap_pdu]}

        s.fake.routes[("GET", f"/_matrix/federation/v1/state_ids/{room}")] = ids
        s.fake.routes[("GET", f"/_matrix/federation/v1/event/{path_segment(gap_id)}")] = event
        assert await s.ingest.receive(s.fake.name, after_pdu) == (after_id, None)
        assert "after the gap" in await s.bodies()
        assert s.fake.requests_to(f"/_matrix/federation/v1/state_ids/{room}")
