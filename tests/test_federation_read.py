"""The federation read paths, asked by fake servers: events, state, history, spaces.

A fake server's user joins one of our rooms through the ingest pipeline (a signed join
event, as a real server would send), so the fake is "in the room"; a second fake has
no user there. Every answer's PDUs must verify: our signature, their content hash (or
their redacted form where history visibility hides them), their event id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import pytest

from conduwuit.protocol import hashes, redaction, signing
from conduwuit.protocol.room_versions import RoomVersion
from conduwuit.protocol.state_res import auth_chain
from conduwuit.server import Server
from conduwuit.services.federation.auth import authorization_header
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.fakefed import FakeServer, fake_servers, federation_options
from tests.support.inprocess import base_url, running_server
from tests.support.users import LoggedIn, make_user

US = "test.local"
V1 = "/_matrix/federation/v1"
Params = dict[str, str] | list[tuple[str, str | int | float | bool | None]] | None


async def signed(client: httpx.AsyncClient, fake: FakeServer, method: str, path: str, *,
                 params: Params = None, body: Any = None) -> httpx.Response:
    """A request signed by ``fake`` (X-Matrix over the exact target httpx sends)."""
    request = client.build_request(method, path, params=params, json=body)
    header = authorization_header(fake.name, US, fake.key, method,
                                  request.url.raw_path.decode(), body)
    request.headers["Authorization"] = header
    return await client.send(request)


def q(identifier: str) -> str:
    return quote(identifier, safe="")


def refused(r: httpx.Response, status: int, errcode: str) -> None:
    assert (r.status_code, r.json().get("errcode")) == (status, errcode), r.text


@attrs.define
class Scene:
    server: Server
    client: httpx.AsyncClient
    alice: LoggedIn
    room_id: str
    fake: FakeServer  # has a joined user in the room
    stranger: FakeServer  # has none

    @property
    def services(self) -> Any:
        assert self.server.services is not None
        return self.server.services

    @property
    def version(self) -> RoomVersion:
        version: RoomVersion | None = self.services.rooms.events.room_version(self.room_id)
        assert version is not None
        return version

    async def join_remote(self, localpart: str = "bob") -> str:
        """A user of the fake joins through the ingest pipeline; returns the event id."""
        user = f"@{localpart}:{self.fake.name}"
        state = self.services.rooms.state.current(self.room_id)
        pdu = self.services.rooms.timeline.template(
            self.room_id, self.version, state,
            Draft(user, "m.room.member", {"membership": "join"}, user))
        if "event_id" in pdu:  # v1/v2: the id names the server that made the event
            pdu["event_id"] = f"$join-{localpart}:{self.fake.name}"
        event_id, signed_pdu = self.fake.sign_pdu(pdu, self.version)
        assert await self.services.federation.ingest.receive(self.fake.name, signed_pdu) \
            == (event_id, None)
        return event_id

    async def send(self, body: str) -> str:
        event = await self.services.rooms.timeline.send(
            self.room_id, Draft(self.alice.user_id, "m.room.message",
                                {"msgtype": "m.text", "body": body}))
        return str(event.event_id)

    async def put_state(self, event_type: str, content: dict[str, Any], state_key: str = "",
                        room_id: str | None = None) -> str:
        r = await self.client.put(
            f"/_matrix/client/v3/rooms/{q(room_id or self.room_id)}/state/{event_type}/"
            f"{q(state_key)}", json=content, headers=self.alice.headers)
        assert r.status_code == 200, r.text
        return str(r.json()["event_id"])

    async def create_room(self, **body: Any) -> str:
        r = await self.client.post("/_matrix/client/v3/createRoom", json=body,
                                   headers=self.alice.headers)
        assert r.status_code == 200, r.text
        return str(r.json()["room_id"])

    def check_pdu(self, pdu: dict[str, Any], event_id: str, *, redacted: bool = False) -> None:
        """The sender's server's signature verifies (ours, or the fake's for its user's
        join), the id is the event's, and the hash matches (unless the event was sent
        redacted, in which case it is exactly the redacted form)."""
        if pdu["sender"].endswith(":" + self.fake.name):
            signing.verify_event(pdu, self.fake.name, self.fake.key_id,
                                 signing.verify_key_base64(self.fake.key), self.version)
        else:
            keys = self.services.server_keys
            signing.verify_event(pdu, US, keys.key_id, keys.verify_key_base64, self.version)
        assert hashes.event_id_for(pdu, self.version) == event_id
        assert "unsigned" not in pdu
        stored = self.services.rooms.events.get(event_id)
        assert stored is not None
        if redacted:
            assert pdu == redaction.redact(stored.pdu, self.version)
        else:
            assert hashes.has_valid_content_hash(pdu)
            assert pdu == {k: v for k, v in stored.pdu.items() if k != "unsigned"}


@asynccontextmanager
async def scene(tmp_path: Path, join: bool = True, **room: Any) -> AsyncIterator[Scene]:
    config = make_config(tmp_path, **federation_options())
    async with fake_servers(tmp_path, 2) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        alice = await make_user(server, "alice")
        r = await client.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                              json={"preset": "public_chat", **room})
        assert r.status_code == 200, r.text
        s = Scene(server, client, alice, r.json()["room_id"], fakes[0], fakes[1])
        if join:
            await s.join_remote()
        yield s


def ids(pdus: list[dict[str, Any]], version: RoomVersion) -> list[str]:
    return [hashes.event_id_for(pdu, version) for pdu in pdus]


# -- single events, state, auth chains --------------------------------------------------------


@pytest.mark.parametrize("room_version", ["12", "10", "1"])
async def test_event_state_and_auth_chain(tmp_path: Path, room_version: str) -> None:
    async with scene(tmp_path, room_version=room_version) as s:
        message = await s.send("hello over there")
        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(message)}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["origin"] == US and isinstance(body["origin_server_ts"], int)
        [pdu] = body["pdus"]
        s.check_pdu(pdu, message)
        assert pdu["content"]["body"] == "hello over there"

        # State at a message = the state before it = the current state here.
        current = s.services.rooms.state.current(s.room_id)
        r = await signed(s.client, s.fake, "GET", f"{V1}/state_ids/{q(s.room_id)}",
                         params={"event_id": message})
        assert r.status_code == 200, r.text
        state_ids = r.json()
        assert sorted(state_ids["pdu_ids"]) == sorted(current.values())
        expected_chain = auth_chain(current.values(), s.services.rooms.events.get)
        assert set(state_ids["auth_chain_ids"]) == expected_chain

        # At a state event the state is the one *before* it: the old topic, not the new.
        old_topic = await s.put_state("m.room.topic", {"topic": "old"})
        new_topic = await s.put_state("m.room.topic", {"topic": "new"})
        r = await signed(s.client, s.fake, "GET", f"{V1}/state/{q(s.room_id)}",
                         params={"event_id": new_topic})
        assert r.status_code == 200, r.text
        state = r.json()
        pdu_ids = ids(state["pdus"], s.version)
        assert old_topic in pdu_ids and new_topic not in pdu_ids
        assert len(pdu_ids) == len(current) + 1  # the topic is new since `current`
        for pdu, event_id in zip(state["pdus"], pdu_ids, strict=True):
            s.check_pdu(pdu, event_id)
        chain_ids = ids(state["auth_chain"], s.version)
        assert set(chain_ids) == auth_chain(pdu_ids, s.services.rooms.events.get)
        for pdu, event_id in zip(state["auth_chain"], chain_ids, strict=True):
            s.check_pdu(pdu, event_id)
        # The state before the first topic has no topic at all.
        r = await signed(s.client, s.fake, "GET", f"{V1}/state_ids/{q(s.room_id)}",
                         params={"event_id": old_topic})
        topics = [i for i in r.json()["pdu_ids"]
                  if s.services.rooms.events.get(i).type == "m.room.topic"]
        assert topics == []

        # The state at the remote join is the state before it: without the join.
        bob_join = s.services.rooms.state.current(s.room_id)[
            ("m.room.member", f"@bob:{s.fake.name}")]
        r = await signed(s.client, s.fake, "GET", f"{V1}/state_ids/{q(s.room_id)}",
                         params={"event_id": bob_join})
        assert bob_join not in r.json()["pdu_ids"]

        # A redacted event goes out redacted, without what we keep in `unsigned`.
        r = await s.client.put(f"/_matrix/client/v3/rooms/{q(s.room_id)}/redact/{q(message)}/t1",
                               json={}, headers=s.alice.headers)
        assert r.status_code == 200, r.text
        assert "unsigned" in s.services.rooms.events.get(message).pdu
        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(message)}")
        [pdu] = r.json()["pdus"]
        s.check_pdu(pdu, message, redacted=True)
        assert pdu["content"] == {}

        # The auth chain of one event: its auth events, recursively, not the event.
        r = await signed(s.client, s.fake, "GET", f"{V1}/event_auth/{q(s.room_id)}/{q(message)}")
        assert r.status_code == 200, r.text
        chain = r.json()["auth_chain"]
        chain_ids = ids(chain, s.version)
        assert set(chain_ids) == auth_chain([message], s.services.rooms.events.get)
        assert message not in chain_ids
        assert {s.services.rooms.events.get(i).type for i in chain_ids} >= {
            "m.room.power_levels", "m.room.member"}  # v12 cites no create event
        for pdu, event_id in zip(chain, chain_ids, strict=True):
            s.check_pdu(pdu, event_id)


async def test_timestamp_to_event(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        first = await s.send("first")
        last = await s.send("last")
        path = f"{V1}/timestamp_to_event/{q(s.room_id)}"
        r = await signed(s.client, s.fake, "GET", path, params={"ts": "0", "dir": "f"})
        assert r.status_code == 200, r.text
        create = s.services.rooms.state.current(s.room_id)[("m.room.create", "")]
        assert r.json()["event_id"] == create
        now = str(int(time.time() * 1000) + 60_000)
        r = await signed(s.client, s.fake, "GET", path, params={"ts": now, "dir": "b"})
        assert r.json() == {"event_id": last, "origin_server_ts":
                            s.services.rooms.events.get(last).origin_server_ts}
        r = await signed(s.client, s.fake, "GET", path, params={"ts": now, "dir": "f"})
        refused(r, 404, "M_NOT_FOUND")
        assert first != last


# -- history: backfill and missing events ----------------------------------------------------


async def test_backfill_order_and_limit(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        sent = [await s.send(f"m{i}") for i in range(10)]
        path = f"{V1}/backfill/{q(s.room_id)}"
        r = await signed(s.client, s.fake, "GET", path,
                         params=[("v", sent[9]), ("limit", "5")])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["origin"] == US
        got = ids(body["pdus"], s.version)
        assert got == sent[9:4:-1], "the given event and those before it, newest first"
        for pdu, event_id in zip(body["pdus"], got, strict=True):
            s.check_pdu(pdu, event_id)

        # Several starting points: the deepest events come first.
        r = await signed(s.client, s.fake, "GET", path,
                         params=[("v", sent[3]), ("v", sent[9]), ("limit", "3")])
        assert ids(r.json()["pdus"], s.version) == [sent[9], sent[8], sent[7]]

        # Everything back to the create event, depths never increasing.
        r = await signed(s.client, s.fake, "GET", path, params=[("v", sent[9]), ("limit", "100")])
        pdus = r.json()["pdus"]
        depths = [pdu["depth"] for pdu in pdus]
        assert depths == sorted(depths, reverse=True)
        assert pdus[-1]["type"] == "m.room.create"
        timeline = [e.event_id for _, e in s.services.rooms.events.timeline(s.room_id)]
        assert sorted(ids(pdus, s.version)) == sorted(timeline)

        r = await signed(s.client, s.fake, "GET", path, params=[("v", sent[9]), ("limit", "0")])
        assert r.json()["pdus"] == []
        # Unknown starting points give nothing; the limit is capped at 100.
        r = await signed(s.client, s.fake, "GET", path,
                         params=[("v", "$unknown"), ("limit", "10")])
        assert r.json()["pdus"] == []
        for i in range(100):
            await s.send(f"more {i}")
        latest = s.services.rooms.timeline.leaves(s.room_id)
        r = await signed(s.client, s.fake, "GET", path,
                         params=[("v", latest[0]), ("limit", "1000")])
        assert len(r.json()["pdus"]) == 100


async def test_get_missing_events(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        sent = [await s.send(f"m{i}") for i in range(15)]
        path = f"{V1}/get_missing_events/{q(s.room_id)}"

        async def missing(**body: Any) -> list[str]:
            r = await signed(s.client, s.fake, "POST", path, body=body)
            assert r.status_code == 200, r.text
            events = r.json()["events"]
            event_ids = ids(events, s.version)
            for pdu, event_id in zip(events, event_ids, strict=True):
                s.check_pdu(pdu, event_id)
            return event_ids

        # Stops at earliest_events, oldest first, without the latest events themselves.
        assert await missing(earliest_events=[sent[5]], latest_events=[sent[9]]) == sent[6:9]
        # The limit keeps the events nearest to latest_events.
        assert await missing(earliest_events=[sent[2]], latest_events=[sent[9]],
                             limit=2) == sent[7:9]
        # Default limit: 10.
        assert await missing(earliest_events=[], latest_events=[sent[14]]) == sent[4:14]
        # min_depth: nothing shallower is returned or walked past.
        depth = s.services.rooms.events.get(sent[7]).depth
        assert await missing(earliest_events=[], latest_events=[sent[9]],
                             min_depth=depth) == sent[7:9]
        assert await missing(earliest_events=[], latest_events=["$unknown"]) == []
        assert await missing(earliest_events=[], latest_events=[sent[9]], limit=0) == []


async def test_joined_visibility_hides_history_before_the_servers_join(tmp_path: Path) -> None:
    visibility = {"type": "m.room.history_visibility", "state_key": "",
                  "content": {"history_visibility": "joined"}}
    async with scene(tmp_path, join=False, initial_state=[visibility]) as s:
        before = await s.send("before the join")
        await s.join_remote()
        after = await s.send("after the join")

        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(before)}")
        assert r.status_code == 200, r.text
        [pdu] = r.json()["pdus"]
        s.check_pdu(pdu, before, redacted=True)
        assert pdu["content"] == {}
        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(after)}")
        [pdu] = r.json()["pdus"]
        s.check_pdu(pdu, after)
        assert pdu["content"]["body"] == "after the join"

        # Backfill keeps the graph whole: hidden events come redacted, not left out.
        r = await signed(s.client, s.fake, "GET", f"{V1}/backfill/{q(s.room_id)}",
                         params=[("v", after), ("limit", "50")])
        by_id = dict(zip(ids(r.json()["pdus"], s.version), r.json()["pdus"], strict=True))
        s.check_pdu(by_id[after], after)
        s.check_pdu(by_id[before], before, redacted=True)
        # A history_visibility change is visible if the visibility before it allowed it.
        hv = s.services.rooms.state.current(s.room_id)[("m.room.history_visibility", "")]
        s.check_pdu(by_id[hv], hv)

        r = await signed(s.client, s.fake, "POST", f"{V1}/get_missing_events/{q(s.room_id)}",
                         body={"earliest_events": [], "latest_events": [after]})
        by_id = dict(zip(ids(r.json()["events"], s.version), r.json()["events"], strict=True))
        s.check_pdu(by_id[before], before, redacted=True)

        # timestamp_to_event only points at events the server may read.
        ts = s.services.rooms.events.get(before).origin_server_ts
        r = await signed(s.client, s.fake, "GET", f"{V1}/timestamp_to_event/{q(s.room_id)}",
                         params={"ts": str(ts), "dir": "b"})
        assert r.status_code == 200 and r.json()["event_id"] != before


# -- refusals -----------------------------------------------------------------------------------


def _read_paths(room_id: str, event_id: str) -> list[tuple[str, str, Params, Any]]:
    room, event = q(room_id), q(event_id)
    return [
        ("GET", f"{V1}/event/{event}", None, None),
        ("GET", f"{V1}/state/{room}", {"event_id": event_id}, None),
        ("GET", f"{V1}/state_ids/{room}", {"event_id": event_id}, None),
        ("GET", f"{V1}/event_auth/{room}/{event}", None, None),
        ("GET", f"{V1}/backfill/{room}", [("v", event_id), ("limit", "10")], None),
        ("POST", f"{V1}/get_missing_events/{room}", None,
         {"earliest_events": [], "latest_events": [event_id]}),
        ("GET", f"{V1}/timestamp_to_event/{room}", {"ts": "0", "dir": "f"}, None),
    ]


async def test_servers_not_in_the_room_or_denied_by_acl_are_refused(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        message = await s.send("members only")
        for method, path, params, body in _read_paths(s.room_id, message):
            r = await signed(s.client, s.stranger, method, path, params=params, body=body)
            refused(r, 403, "M_FORBIDDEN")
            r = await signed(s.client, s.fake, method, path, params=params, body=body)
            assert r.status_code == 200, (path, r.text)
            r = await s.client.request(method, path, params=params, json=body)
            refused(r, 401, "M_UNAUTHORIZED")

        # The fakes are IP literals (127.0.0.1:port): an ACL refusing those denies them,
        # whatever their port, even though the fake has a user in the room.
        await s.put_state("m.room.server_acl", {"allow": ["*"], "allow_ip_literals": False})
        assert not s.services.federation.serving.acl_allows(s.room_id, s.fake.name)
        for method, path, params, body in _read_paths(s.room_id, message):
            r = await signed(s.client, s.fake, method, path, params=params, body=body)
            refused(r, 403, "M_FORBIDDEN")
            assert "ACL" in r.json()["error"]
        await s.put_state("m.room.server_acl", {"allow": ["*"], "deny": ["127.0.0.1"]})
        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(message)}")
        refused(r, 403, "M_FORBIDDEN")
        await s.put_state("m.room.server_acl", {"allow": ["127.0.0.*", US]})
        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(message)}")
        assert r.status_code == 200, r.text


async def test_unknown_rooms_and_events(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        message = await s.send("here")
        other_room = await s.create_room(preset="public_chat")
        elsewhere = (await s.services.rooms.timeline.send(
            other_room, Draft(s.alice.user_id, "m.room.message",
                              {"msgtype": "m.text", "body": "elsewhere"}))).event_id
        for method, path, params, body in _read_paths("!nowhere:test.local", message):
            if "/event/" in path:
                continue  # /event has no room: the event is found in its own room
            r = await signed(s.client, s.fake, method, path, params=params, body=body)
            refused(r, 404, "M_NOT_FOUND")
        room = q(s.room_id)
        for path, params in ((f"{V1}/event/{q('$nope')}", None),
                             (f"{V1}/state/{room}", {"event_id": "$nope"}),
                             (f"{V1}/state_ids/{room}", {"event_id": elsewhere}),
                             (f"{V1}/event_auth/{room}/{q(elsewhere)}", None)):
            r = await signed(s.client, s.fake, "GET", path, params=params)
            refused(r, 404, "M_NOT_FOUND")
        # An event of a room the fake is not in is refused, not shown.
        r = await signed(s.client, s.fake, "GET", f"{V1}/event/{q(elsewhere)}")
        refused(r, 403, "M_FORBIDDEN")


async def test_bad_parameters(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        message = await s.send("x")
        room = q(s.room_id)
        cases: list[tuple[str, str, Params, Any, str]] = [
            ("GET", f"{V1}/state/{room}", None, None, "M_MISSING_PARAM"),
            ("GET", f"{V1}/state_ids/{room}", None, None, "M_MISSING_PARAM"),
            ("GET", f"{V1}/backfill/{room}", {"limit": "5"}, None, "M_MISSING_PARAM"),
            ("GET", f"{V1}/backfill/{room}", {"v": message}, None, "M_MISSING_PARAM"),
            ("GET", f"{V1}/backfill/{room}", {"v": message, "limit": "ten"}, None,
             "M_INVALID_PARAM"),
            ("GET", f"{V1}/backfill/{room}", {"v": message, "limit": "-1"}, None,
             "M_INVALID_PARAM"),
            ("GET", f"{V1}/timestamp_to_event/{room}", {"dir": "f"}, None, "M_MISSING_PARAM"),
            ("GET", f"{V1}/timestamp_to_event/{room}", {"ts": "soon", "dir": "f"}, None,
             "M_INVALID_PARAM"),
            ("GET", f"{V1}/timestamp_to_event/{room}", {"ts": "1", "dir": "up"}, None,
             "M_INVALID_PARAM"),
            ("GET", f"{V1}/timestamp_to_event/{room}", {"ts": "1"}, None, "M_MISSING_PARAM"),
            ("GET", f"{V1}/hierarchy/{room}", {"suggested_only": "maybe"}, None,
             "M_INVALID_PARAM"),
            ("POST", f"{V1}/get_missing_events/{room}", None, {"latest_events": [message]},
             "M_BAD_JSON"),
            ("POST", f"{V1}/get_missing_events/{room}", None,
             {"earliest_events": [], "latest_events": message}, "M_BAD_JSON"),
            ("POST", f"{V1}/get_missing_events/{room}", None,
             {"earliest_events": [], "latest_events": [message], "limit": "5"}, "M_BAD_JSON"),
            ("POST", f"{V1}/get_missing_events/{room}", None,
             {"earliest_events": [], "latest_events": [message], "min_depth": -1},
             "M_INVALID_PARAM"),
            ("POST", f"{V1}/get_missing_events/{room}", None, [1, 2], "M_BAD_JSON"),
        ]
        for method, path, params, body, errcode in cases:
            r = await signed(s.client, s.fake, method, path, params=params, body=body)
            refused(r, 400, errcode)


# -- spaces -------------------------------------------------------------------------------------


async def test_hierarchy(tmp_path: Path) -> None:
    async with scene(tmp_path, join=False) as s:
        space = await s.create_room(preset="public_chat", name="Space",
                                    creation_content={"type": "m.space"})
        public = await s.create_room(preset="public_chat", name="Public child")
        private = await s.create_room(preset="private_chat", name="Private child")
        world = await s.create_room(preset="private_chat", name="Readable child", initial_state=[
            {"type": "m.room.history_visibility", "state_key": "",
             "content": {"history_visibility": "world_readable"}}])
        unknown = "!unknown:elsewhere.example"
        for child in (public, private, world, unknown):
            await s.put_state("m.space.child", {"via": [US], "suggested": child == public},
                              child, room_id=space)
        await s.put_state("m.space.child", {"via": "not a list"}, "!bad:x.example",
                          room_id=space)

        # The stranger has no user anywhere: it sees what anyone could peek at or join.
        path = f"{V1}/hierarchy/{q(space)}"
        r = await signed(s.client, s.stranger, "GET", path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["room"]["room_id"] == space and body["room"]["room_type"] == "m.space"
        assert body["room"]["name"] == "Space" and body["room"]["join_rule"] == "public"
        assert sorted(c["state_key"] for c in body["room"]["children_state"]) == sorted(
            [public, private, world, unknown])
        assert all(isinstance(c["origin_server_ts"], int) for c in body["room"]["children_state"])
        assert sorted(c["room_id"] for c in body["children"]) == sorted([public, world])
        assert body["inaccessible_children"] == [private], "unknown rooms are left out"
        named = {c["room_id"]: c for c in body["children"]}
        assert named[public]["name"] == "Public child" and named[world]["world_readable"]
        assert named[public]["children_state"] == []

        r = await signed(s.client, s.stranger, "GET", path, params={"suggested_only": "true"})
        assert [c["room_id"] for c in r.json()["children"]] == [public]
        assert [c["state_key"] for c in r.json()["room"]["children_state"]] == [public]

        # A private room is not described to a server with nobody in it.
        r = await signed(s.client, s.stranger, "GET", f"{V1}/hierarchy/{q(private)}")
        refused(r, 404, "M_NOT_FOUND")
        r = await signed(s.client, s.stranger, "GET", f"{V1}/hierarchy/{q(unknown)}")
        refused(r, 404, "M_NOT_FOUND")
        # A server ACL that denies the server hides the room too.
        await s.put_state("m.room.server_acl", {"allow": [US]}, room_id=public)
        r = await signed(s.client, s.stranger, "GET", path)
        assert sorted(r.json()["inaccessible_children"]) == sorted([private, public])
        refused(await signed(s.client, s.stranger, "GET", f"{V1}/hierarchy/{q(public)}"),
                404, "M_NOT_FOUND")
