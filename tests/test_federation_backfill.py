"""History from before our join, backfilled from a resident server as clients page back.

A fake server holds a room of signed events (create, state, 30 messages). Our user
joins through ``Ingest.import_join``, so we hold only the state and the join. Paging
back with ``/messages`` then fetches the older events with ``/backfill``, shows them in
order across pages, keeps them, and never asks again once the create event is here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest

from conduwuit.protocol import hashes, signing
from conduwuit.protocol.auth import auth_types_for_event
from conduwuit.protocol.events import Event
from conduwuit.protocol.room_versions import ROOM_VERSIONS, RoomVersion
from conduwuit.server import Server
from conduwuit.services import Services
from conduwuit.services.federation import backfill as backfill_module
from conduwuit.services.federation.client import path_segment
from tests.support.config import make_config
from tests.support.fakefed import FakeRequest, FakeServer, fake_servers, federation_options
from tests.support.inprocess import base_url, running_server
from tests.support.users import LoggedIn, make_user

MESSAGES = 30


@attrs.define
class FakeRoom:
    """A room living on fake servers: every event, signed, oldest first."""

    version: RoomVersion
    room_id: str = ""
    order: list[str] = attrs.field(factory=list)
    pdus: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    state: dict[tuple[str, str], str] = attrs.field(factory=dict)

    def add(self, by: FakeServer, sender: str, event_type: str, content: dict[str, Any],
            state_key: str | None = None) -> str:
        pdu: dict[str, Any] = {"type": event_type, "sender": sender, "content": content,
                               "origin_server_ts": int(time.time() * 1000)}
        if state_key is not None:
            pdu["state_key"] = state_key
        return self.append(by.sign_pdu(self.link(pdu), self.version))

    def link(self, pdu: dict[str, Any]) -> dict[str, Any]:
        """prev_events, auth_events and depth on top of the newest event."""
        wanted = auth_types_for_event(pdu["type"], pdu.get("state_key"), pdu["sender"],
                                      pdu["content"], self.version)
        is_create = pdu["type"] == "m.room.create"
        if not (is_create and self.version.room_id_is_create_hash):
            pdu["room_id"] = self.room_id
        last = self.order[-1] if self.order else None
        pdu["prev_events"] = [last] if last is not None else []
        pdu["auth_events"] = sorted(self.state[p] for p in wanted if p in self.state)
        pdu["depth"] = len(self.order) + 1
        return pdu

    def append(self, signed: tuple[str, dict[str, Any]]) -> str:
        event_id, pdu = signed
        if pdu["type"] == "m.room.create" and self.version.room_id_is_create_hash:
            self.room_id = hashes.room_id_from_create(pdu, self.version)
        self.order.append(event_id)
        self.pdus[event_id] = pdu
        if "state_key" in pdu:
            self.state[(pdu["type"], pdu["state_key"])] = event_id
        return event_id

    def state_pdus(self) -> list[dict[str, Any]]:
        return [self.pdus[i] for i in self.state.values()]

    def before(self, from_ids: list[str], limit: int) -> list[dict[str, Any]]:
        """What Synapse answers to /backfill: the events named and their ancestors,
        newest first."""
        taken: list[str] = []
        queue = sorted((i for i in from_ids if i in self.pdus),
                       key=lambda i: -self.pdus[i]["depth"])
        seen = set(queue)
        while queue and len(taken) < limit:
            event_id = queue.pop(0)
            taken.append(event_id)
            for prev in self.pdus[event_id]["prev_events"]:
                if prev not in seen:
                    seen.add(prev)
                    queue.append(prev)
            queue.sort(key=lambda i: -self.pdus[i]["depth"])
        return [self.pdus[i] for i in taken]


def build_room(fakes: list[FakeServer], room_version: str, visibility: str) -> FakeRoom:
    fake = fakes[0]
    room = FakeRoom(ROOM_VERSIONS[room_version])
    if not room.version.room_id_is_create_hash:
        room.room_id = f"!history:{fake.name}"
    carol = f"@carol:{fake.name}"
    create: dict[str, Any] = {"room_version": room_version}
    if not room.version.creator_is_sender:
        create["creator"] = carol
    room.add(fake, carol, "m.room.create", create, "")
    room.add(fake, carol, "m.room.member", {"membership": "join"}, carol)
    power: dict[str, Any] = {"users": {} if room.version.privileged_creators else {carol: 100}}
    room.add(fake, carol, "m.room.power_levels", power, "")
    room.add(fake, carol, "m.room.join_rules", {"join_rule": "public"}, "")
    room.add(fake, carol, "m.room.history_visibility", {"history_visibility": visibility}, "")
    for other in fakes[1:]:
        dave = f"@dave:{other.name}"
        room.add(other, dave, "m.room.member", {"membership": "join"}, dave)
    for n in range(MESSAGES):
        room.add(fake, carol, "m.room.message", {"msgtype": "m.text", "body": f"msg {n}"})
    return room


@attrs.define
class Scene:
    server: Server
    client: httpx.AsyncClient
    alice: LoggedIn
    fakes: list[FakeServer]
    room: FakeRoom
    join_id: str

    @property
    def services(self) -> Services:
        assert self.server.services is not None
        return self.server.services

    @property
    def backfill_path(self) -> str:
        return f"/_matrix/federation/v1/backfill/{path_segment(self.room.room_id)}"

    def asked(self) -> int:
        return sum(len(f.requests_to(self.backfill_path)) for f in self.fakes)

    def serve_history(self, fake: FakeServer) -> None:
        """``fake`` answers /backfill as a resident server does."""
        async def backfill(server: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            query = parse_qs(urlsplit(request.uri).query)
            pdus = self.room.before(query.get("v", []), int(query["limit"][0]))
            return 200, {"origin": server.name,
                         "origin_server_ts": int(time.time() * 1000), "pdus": pdus}

        fake.routes[("GET", self.backfill_path)] = backfill

    def answer(self, fake: FakeServer, status: int, body: Any) -> None:
        async def fixed(server: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return status, body

        fake.routes[("GET", self.backfill_path)] = fixed

    async def page(self, **params: str) -> dict[str, Any]:
        r = await self.client.get(f"/_matrix/client/v3/rooms/{self.room.room_id}/messages",
                                  params=params, headers=self.alice.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def all_back(self, limit: int = 10) -> tuple[list[str], int]:
        """Every event id paging back from now; (ids, number of pages)."""
        ids: list[str] = []
        params = {"dir": "b", "limit": str(limit)}
        pages = 0
        while True:
            body = await self.page(**params)
            pages += 1
            ids += [e["event_id"] for e in body["chunk"]]
            if "end" not in body:
                return ids, pages
            assert pages < 50
            params["from"] = body["end"]


@asynccontextmanager
async def scene(tmp_path: Path, *, room_version: str = "10", visibility: str = "shared",
                servers: int = 1) -> AsyncIterator[Scene]:
    config = make_config(tmp_path, **federation_options())
    async with fake_servers(tmp_path, servers) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        alice = await make_user(server, "alice")
        services = server.services
        assert services is not None
        room = build_room(fakes.servers, room_version, visibility)
        # Our join, on top of the resident server's newest event, signed by us.
        pdu = room.link({"type": "m.room.member", "sender": alice.user_id,
                         "content": {"membership": "join"}, "state_key": alice.user_id,
                         "origin_server_ts": int(time.time() * 1000)})
        signed = signing.hash_and_sign_event(pdu, config.server_name, services.server_keys.key,
                                             room.version)
        join_id = hashes.event_id_for(signed, room.version)
        state = room.state_pdus()
        await services.federation.ingest.import_join(
            fakes[0].name, room.room_id, room.version, Event(join_id, signed, room.version),
            state, state)
        room.append((join_id, signed))  # the resident server has it too
        yield Scene(server, client, alice, fakes.servers, room, join_id)


def _bodies(ids: list[str], room: FakeRoom) -> list[str]:
    return [room.pdus[i]["content"]["body"] for i in ids
            if room.pdus[i]["type"] == "m.room.message"]


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_history_is_backfilled_in_order(tmp_path: Path, room_version: str) -> None:
    async with scene(tmp_path, room_version=room_version) as s:
        s.serve_history(s.fakes[0])
        rooms = s.services.rooms
        state_before = rooms.state.current(s.room.room_id)
        first = await s.page(dir="b", limit="10")
        assert first["chunk"][0]["event_id"] == s.join_id
        assert len(first["chunk"]) == 10 and first["end"].startswith("b")
        assert s.asked() == 1

        ids, pages = await s.all_back(limit=10)
        # Everything the resident server has, newest first, each once.
        assert ids == list(reversed(s.room.order))
        assert _bodies(ids, s.room) == [f"msg {n}" for n in reversed(range(MESSAGES))]
        assert pages >= 4
        asked = s.asked()
        assert asked >= 2  # several /backfill requests, 20 events each
        assert s.services.federation.backfill.is_done(s.room.room_id)
        # History never touches the current state or the forward extremities.
        assert rooms.state.current(s.room.room_id) == state_before
        assert rooms.timeline.leaves(s.room.room_id) == [s.join_id]

        # A second pass: the same events from our store, the fake is not asked again.
        again, _ = await s.all_back(limit=7)
        assert again == ids
        assert s.asked() == asked

        # Tokens into the history work forward too, back up into the timeline.
        second = await s.page(dir="b", limit="10", **{"from": first["end"]})
        newer = await s.page(dir="f", limit="5", **{"from": second["end"]})
        assert [e["event_id"] for e in newer["chunk"]] == \
            list(reversed([e["event_id"] for e in second["chunk"]]))[:5]
        to_timeline = await s.page(dir="f", limit="50", **{"from": first["end"]})
        assert [e["event_id"] for e in to_timeline["chunk"]] == \
            list(reversed([e["event_id"] for e in first["chunk"]]))
        assert "end" not in to_timeline
        # A bounded page: from the first page's end back to the second page's end.
        bounded = await s.page(dir="b", limit="50",
                               **{"from": first["end"], "to": second["end"]})
        assert [e["event_id"] for e in bounded["chunk"]] == \
            [e["event_id"] for e in second["chunk"]]
        assert "end" not in bounded


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        s.serve_history(s.fakes[0])
        ids, _ = await s.all_back(limit=50)
        asked = s.asked()
        assert len(ids) == len(s.room.order)
        # The store keeps the history: a new Backfill with nothing in memory reads it.
        services = s.services
        federation = services.federation
        fresh = type(federation.backfill)(services.config, services.store, services.rooms,
                                          federation.ingest, federation.client)
        federation.backfill = fresh
        again, _ = await s.all_back(limit=50)
        assert again == ids and s.asked() == asked


async def test_joined_visibility_hides_history(tmp_path: Path) -> None:
    async with scene(tmp_path, visibility="joined") as s:
        s.serve_history(s.fakes[0])
        body = await s.page(dir="b", limit="10")
        assert [e["event_id"] for e in body["chunk"]] == [s.join_id]
        assert "end" not in body
        body = await s.page(dir="b", limit="10", **{"from": "b0"})
        assert body["chunk"] == [] and "end" not in body
        body = await s.page(dir="f", limit="10", **{"from": "b0"})
        assert [e["event_id"] for e in body["chunk"]] == [s.join_id]
        assert s.asked() == 0


async def test_invited_visibility_hides_history(tmp_path: Path) -> None:
    async with scene(tmp_path, visibility="invited") as s:
        s.serve_history(s.fakes[0])
        body = await s.page(dir="b", limit="10")
        assert [e["event_id"] for e in body["chunk"]] == [s.join_id]
        assert s.asked() == 0


async def test_bad_tokens(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        url = f"/_matrix/client/v3/rooms/{s.room.room_id}/messages"
        for name, token in [("from", "b"), ("from", "bx"), ("from", "b-1"), ("from", "b1x"),
                            ("from", "b\u00b2"), ("from", "b" + "9" * 30), ("from", "s\u00b2"),
                            ("from", "9" * 30), ("to", "bz"), ("to", "b 1")]:
            r = await s.client.get(url, params={"dir": "b", name: token},
                                   headers=s.alice.headers)
            assert r.status_code == 400, (name, token, r.text)
            assert r.json()["errcode"] == "M_INVALID_PARAM"
        assert s.asked() == 0
        # A token past the end of the history is just empty.
        s.serve_history(s.fakes[0])
        await s.all_back(limit=100)
        body = await s.page(dir="b", **{"from": "b999999"})
        assert body["chunk"] == [] and "end" not in body


async def test_local_room_never_asks(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        r = await s.client.post("/_matrix/client/v3/createRoom", headers=s.alice.headers,
                                json={"preset": "public_chat"})
        assert r.status_code == 200, r.text
        room_id = r.json()["room_id"]
        r = await s.client.get(f"/_matrix/client/v3/rooms/{room_id}/messages",
                               params={"dir": "b", "limit": "100"}, headers=s.alice.headers)
        assert r.status_code == 200 and "end" not in r.json()
        assert r.json()["chunk"][-1]["type"] == "m.room.create"
        assert s.services.federation.backfill.is_done(room_id)
        assert not await s.services.federation.backfill.fetch(room_id, 10)


async def test_garbage_answers_show_nothing(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        backfill = s.services.federation.backfill
        backfill.retry_after_failure = 0  # try again at every page
        events = s.services.rooms.events
        messages = [i for i in s.room.order if s.room.pdus[i]["type"] == "m.room.message"]
        badly_signed = []
        for pdu in s.room.before([s.join_id], 50):
            pdu = {**pdu, "signatures": {k: {kid: "A" * 86 for kid in v}
                                         for k, v in pdu["signatures"].items()}}
            badly_signed.append(pdu)
        other_room = [{**p, "room_id": "!elsewhere:example.org"}
                      for p in s.room.before([s.join_id], 50)]
        answers: list[tuple[int, Any]] = [
            (200, [1, 2, 3]),
            (200, {"pdus": "nope"}),
            (200, {"pdus": [1, "x", None, {"type": 5}]}),
            (200, {"pdus": badly_signed}),
            (200, {"pdus": other_room}),
            (500, {"errcode": "M_UNKNOWN"}),
            (404, "not json at all"),
        ]
        for status, answer in answers:
            s.answer(s.fakes[0], status, answer)
            body = await s.page(dir="b", limit="10")
            assert [e["event_id"] for e in body["chunk"]] == [s.join_id], answer
            assert "end" not in body
            assert not any(events.known(i) for i in messages)
            assert not backfill.is_done(s.room.room_id)
        assert s.asked() == len(answers)

        # Within the cool-down after a fruitless round, nobody is asked.
        backfill.retry_after_failure = 3600
        await s.page(dir="b", limit="10")
        assert s.asked() == len(answers)

        # Once the server answers properly, the history comes.
        backfill.retry_after_failure = 0
        s.serve_history(s.fakes[0])
        ids, _ = await s.all_back(limit=50)
        assert ids == list(reversed(s.room.order))


async def test_servers_are_tried_in_turn(tmp_path: Path) -> None:
    async with scene(tmp_path, servers=2) as s:
        first, second = sorted(s.fakes, key=lambda f: f.name)
        s.answer(first, 200, {"pdus": "garbage"})
        s.serve_history(second)
        ids, _ = await s.all_back(limit=100)
        assert ids == list(reversed(s.room.order))
        assert first.requests_to(s.backfill_path) and second.requests_to(s.backfill_path)


async def test_empty_answer_ends_the_history(tmp_path: Path) -> None:
    """A server that has nothing before our join (or may not show it to us)."""
    async with scene(tmp_path) as s:
        s.answer(s.fakes[0], 200, {"origin": s.fakes[0].name, "origin_server_ts": 0,
                                   "pdus": []})
        body = await s.page(dir="b", limit="10")
        assert [e["event_id"] for e in body["chunk"]] == [s.join_id]
        assert s.services.federation.backfill.is_done(s.room.room_id)
        await s.page(dir="b", limit="10")
        assert s.asked() == 1


async def test_slow_server_does_not_hold_the_page(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill_module, "ASK_TIMEOUT", 0.3)
    async with scene(tmp_path) as s:
        s.serve_history(s.fakes[0])
        s.fakes[0].delay = 5.0
        started = time.monotonic()
        body = await s.page(dir="b", limit="10")
        assert time.monotonic() - started < 4
        assert [e["event_id"] for e in body["chunk"]] == [s.join_id]
        assert not s.services.federation.backfill.is_done(s.room.room_id)
