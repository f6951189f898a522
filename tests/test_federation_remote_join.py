"""Our users in rooms of other servers: join, leave, knock, invite (issue 8, outbound side).

Fake servers on loopback act as the resident server of a small room built of properly
signed PDUs; our in-process server joins it by id with ``via`` and by alias, rejects a
remote invite, knocks, and invites a user of a fake server.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import httpx
import pytest

from conduwuit.errors import MatrixError
from conduwuit.protocol import hashes, signing
from conduwuit.protocol.auth import auth_types_for_event
from conduwuit.protocol.events import Event
from conduwuit.protocol.room_versions import ROOM_VERSIONS, EventFormat, RoomVersion
from conduwuit.server import Server
from conduwuit.services.federation.client import FederationError, RemoteError
from conduwuit.services.federation.membership import (
    MAX_FAILED,
    MAX_INCOMPATIBLE,
    BadAnswer,
    RemoteMembership,
)
from conduwuit.services.rooms.format import stripped_state
from tests.support.config import make_config
from tests.support.fakefed import (
    FakeFederation,
    FakeRequest,
    FakeServer,
    fake_servers,
    federation_options,
)
from tests.support.inprocess import base_url, running_server
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"
FED = "/_matrix/federation"
Handler = Callable[[FakeServer, FakeRequest], Awaitable[tuple[int, Any]]]


def _segments(request: FakeRequest, prefix: str) -> list[str]:
    path = request.uri.split("?")[0][len(prefix):]
    return [unquote(p) for p in path.split("/") if p]


class FakeRoom:
    """A room resident on a fake server, its events signed with the fake's key."""

    def __init__(self, fake: FakeServer, version: str = "10", join_rule: str = "public",
                 alias: str | None = None) -> None:
        self.fake = fake
        self.version: RoomVersion = ROOM_VERSIONS[version]
        self.creator = f"@alice:{fake.name}"
        self.pdus: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.state: dict[tuple[str, str], str] = {}
        self.alias = alias
        self.room_id = "" if self.version.room_id_is_create_hash \
            else f"!{secrets.token_hex(6)}:{fake.name}"
        create: dict[str, Any] = {"room_version": version}
        if not self.version.creator_is_sender:
            create["creator"] = self.creator
        create_id = self.add("m.room.create", "", create)
        if self.version.room_id_is_create_hash:
            self.room_id = "!" + create_id[1:]
        self.add("m.room.member", self.creator, {"membership": "join"})
        users = {} if self.version.privileged_creators else {self.creator: 100}
        self.add("m.room.power_levels", "", {"users": users, "invite": 0})
        self.add("m.room.join_rules", "", {"join_rule": join_rule})
        self.add("m.room.history_visibility", "", {"history_visibility": "shared"})
        self.bad_signature = False  # send_join answers with a forged create event
        self.countersign_changes = False  # /invite answers with a changed event
        self.refuse_invites = False

    def template(self, event_type: str, state_key: str | None, sender: str,
                 content: dict[str, Any]) -> dict[str, Any]:
        pdu: dict[str, Any] = {"type": event_type, "sender": sender, "content": content,
                               "origin_server_ts": int(time.time() * 1000)}
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.room_id:
            pdu["room_id"] = self.room_id
        if not self.version.updated_redaction_rules:
            pdu["origin"] = self.fake.name
        if self.version.event_format is EventFormat.V1:
            pdu["event_id"] = f"${secrets.token_hex(8)}:{self.fake.name}"
        wanted = auth_types_for_event(event_type, state_key, sender, content, self.version)
        pdu["auth_events"] = sorted(self.state[p] for p in wanted if p in self.state)
        pdu["prev_events"] = self.order[-1:]
        pdu["depth"] = len(self.order) + 1
        return pdu

    def add(self, event_type: str, state_key: str | None, content: dict[str, Any],
            sender: str | None = None) -> str:
        pdu = self.template(event_type, state_key, sender or self.creator, content)
        return self.accept(self.sign(pdu))

    def sign(self, pdu: dict[str, Any]) -> dict[str, Any]:
        return signing.sign_event(hashes.with_content_hash(pdu), self.fake.name, self.fake.key,
                                  self.version)

    def accept(self, pdu: dict[str, Any]) -> str:
        event_id = hashes.event_id_for(pdu, self.version)
        self.pdus[event_id] = pdu
        self.order.append(event_id)
        if "state_key" in pdu:
            self.state[(pdu["type"], pdu["state_key"])] = event_id
        return event_id

    def member(self, user_id: str) -> str | None:
        event_id = self.state.get(("m.room.member", user_id))
        return self.pdus[event_id]["content"]["membership"] if event_id else None

    def stripped(self) -> list[dict[str, Any]]:
        return [stripped_state(Event(i, self.pdus[i], self.version)) for i in
                (self.state.get(("m.room.create", "")), self.state.get(("m.room.join_rules", "")))
                if i is not None]

    def install(self) -> None:
        """Serve make_*/send_* for this room (and its alias) from the fake."""
        routes = self.fake.prefix_routes  # paths end in ids we cannot foresee
        for kind, send_version in (("join", "v2"), ("leave", "v2"), ("knock", "v1")):
            routes[("GET", f"{FED}/v1/make_{kind}/")] = self._make(kind)
            routes[("PUT", f"{FED}/{send_version}/send_{kind}/")] = self._send(kind)
        routes[("GET", f"{FED}/v1/query/directory")] = self._directory
        routes[("PUT", f"{FED}/v2/invite/")] = self._invite

    def _make(self, kind: str) -> Handler:
        async def handler(_fake: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            room_id, user_id = _segments(request, f"{FED}/v1/make_{kind}/")
            if room_id != self.room_id:
                return 404, {"errcode": "M_NOT_FOUND", "error": "Unknown room"}
            offered = parse_qs(request.uri.partition("?")[2]).get("ver", [])
            if kind != "leave" and self.version.identifier not in offered:
                return 400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "no",
                             "room_version": self.version.identifier}
            rule = self.pdus[self.state[("m.room.join_rules", "")]]["content"]["join_rule"]
            if kind == "knock" and rule != "knock":
                return 403, {"errcode": "M_FORBIDDEN", "error": "You may not knock here"}
            if kind == "join" and rule != "public" and self.member(user_id) != "invite":
                return 403, {"errcode": "M_FORBIDDEN", "error": "You are not invited"}
            event = self.template("m.room.member", user_id, user_id, {"membership": kind})
            return 200, {"event": event, "room_version": self.version.identifier}
        return handler

    def _send(self, kind: str) -> Handler:
        async def handler(_fake: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            pdu = request.json()
            if pdu.get("content", {}).get("membership") != kind or "signatures" not in pdu:
                return 400, {"errcode": "M_BAD_JSON", "error": "not a signed " + kind}
            state_before = [self.pdus[i] for i in self.state.values()]
            self.accept(pdu)
            if kind == "leave":
                return 200, {}
            if kind == "knock":
                return 200, {"knock_room_state": self.stripped()}
            if self.bad_signature:
                state_before = [dict(p) for p in state_before]
                create = next(p for p in state_before if p["type"] == "m.room.create")
                sigs = create["signatures"][self.fake.name]
                create["signatures"] = {self.fake.name: {k: "A" * 86 for k in sigs}}
            return 200, {"state": state_before, "auth_chain": state_before,
                         "origin": self.fake.name, "members_omitted": False}
        return handler

    async def _directory(self, _fake: FakeServer, request: FakeRequest) -> tuple[int, Any]:
        wanted = parse_qs(request.uri.partition("?")[2]).get("room_alias", [""])[0]
        if wanted != self.alias:
            return 404, {"errcode": "M_NOT_FOUND", "error": "Unknown alias"}
        return 200, {"room_id": self.room_id, "servers": [self.fake.name]}

    async def _invite(self, _fake: FakeServer, request: FakeRequest) -> tuple[int, Any]:
        body = request.json()
        if self.refuse_invites:
            return 403, {"errcode": "M_FORBIDDEN", "error": "We do not like invites"}
        version = ROOM_VERSIONS[body["room_version"]]
        event = dict(body["event"])
        assert body["invite_room_state"], "stripped state comes along"
        if self.countersign_changes:
            event["content"] = {**event["content"], "displayname": "changed"}
        return 200, {"event": signing.sign_event(event, self.fake.name, self.fake.key, version)}


@asynccontextmanager
async def _setup(tmp_path: Path, count: int = 2, **options: Any,
                 ) -> AsyncIterator[tuple[FakeFederation, Server, httpx.AsyncClient, LoggedIn]]:
    config = make_config(tmp_path, **federation_options(**options))
    async with fake_servers(tmp_path, count) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server), timeout=30) as client:
        yield fakes, server, client, await make_user(server, "bob")


def _q(value: str) -> str:
    return quote(value, safe="")


async def _sync(client: httpx.AsyncClient, user: LoggedIn) -> dict[str, Any]:
    r = await client.get(f"{V3}/sync", headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _services(server: Server) -> Any:
    assert server.services is not None
    return server.services


# --- joining ----------------------------------------------------------------------------------


async def test_join_by_id_with_via_and_by_alias(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (fakes, _server, client, bob):
        resident = fakes[0]
        room = FakeRoom(resident, "10")
        room.install()
        r = await client.post(f"{V3}/join/{_q(room.room_id)}", params={"via": resident.name},
                              json={"reason": "hello"}, headers=bob.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"room_id": room.room_id}
        assert room.member(bob.user_id) == "join"
        join = room.pdus[room.state[("m.room.member", bob.user_id)]]
        assert join["content"]["reason"] == "hello"
        assert join["origin_server_ts"] > 0 and "test.local" in join["signatures"]
        made = resident.requests_to(f"{FED}/v1/make_join/{_q(room.room_id)}/{_q(bob.user_id)}")
        assert len(made) == 1
        assert [f"ver={v}" in made[0].uri for v in ROOM_VERSIONS] == [True] * len(ROOM_VERSIONS)

        body = await _sync(client, bob)
        joined = body["rooms"]["join"][room.room_id]
        timeline = joined["timeline"]["events"]
        assert [(e["type"], e["state_key"]) for e in timeline] == \
            [("m.room.member", bob.user_id)]
        r = await client.get(f"{V3}/rooms/{_q(room.room_id)}/state", headers=bob.headers)
        assert r.status_code == 200, r.text
        assert {(e["type"], e["state_key"]) for e in r.json()} == {
            ("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", ""),
            ("m.room.history_visibility", ""), ("m.room.member", room.creator),
            ("m.room.member", bob.user_id)}
        r = await client.get(f"{V3}/rooms/{_q(room.room_id)}/members", headers=bob.headers)
        assert r.status_code == 200, r.text
        assert sorted(e["state_key"] for e in r.json()["chunk"]) == \
            sorted([room.creator, bob.user_id])
        r = await client.get(f"{V3}/joined_rooms", headers=bob.headers)
        assert room.room_id in r.json()["joined_rooms"]

        # By alias: a second room of the fake, found through its directory.
        lobby = FakeRoom(resident, "12", alias=f"#lobby:{resident.name}")
        lobby.install()
        r = await client.post(f"{V3}/join/{_q(lobby.alias or '')}", headers=bob.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"room_id": lobby.room_id}
        assert lobby.member(bob.user_id) == "join"
        r = await client.get(f"{V3}/rooms/{_q(lobby.room_id)}/state/m.room.join_rules",
                             headers=bob.headers)
        assert r.status_code == 200 and r.json() == {"join_rule": "public"}


async def test_sync_shows_state_of_joined_remote_room(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1) as (fakes, _server, client, bob):
        room = FakeRoom(fakes[0], "10")
        room.install()
        r = await client.post(f"{V3}/join/{_q(room.room_id)}", params={"via": fakes[0].name},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        joined = (await _sync(client, bob))["rooms"]["join"][room.room_id]
        state_types = {e["type"] for e in joined["state"]["events"]}
        assert {"m.room.create", "m.room.power_levels", "m.room.join_rules",
                "m.room.history_visibility", "m.room.member"} <= state_types


async def test_incompatible_server_is_skipped(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (fakes, _server, client, bob):
        old, resident = fakes[0], fakes[1]
        room = FakeRoom(resident, "10")
        room.install()

        async def incompatible(_fake: FakeServer, _request: FakeRequest) -> tuple[int, Any]:
            return 400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "too new",
                         "room_version": "99"}
        old.prefix_routes[("GET", f"{FED}/v1/make_join/")] = incompatible
        r = await client.post(f"{V3}/join/{_q(room.room_id)}",
                              params={"via": [old.name], "server_name": resident.name},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        assert [r.uri.startswith(f"{FED}/v1/make_join/") for r in old.requests] == [True]
        assert room.member(bob.user_id) == "join"


async def test_no_server_can_help(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1,
                      forbidden_remote_server_names=["^forbidden\\.example$"]) as (
            fakes, server, client, bob):
        # A v12 room id names no server: with no via there is no one to ask.
        r = await client.post(f"{V3}/join/{_q('!' + 'a' * 43)}", headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
        # A server that does not know the room.
        r = await client.post(f"{V3}/join/{_q('!nothere:' + fakes[0].name)}",
                              headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
        assert "No server could help" in r.json()["error"]
        # Forbidden servers are never asked.
        r = await client.post(f"{V3}/join/{_q('!x:forbidden.example')}", headers=bob.headers)
        assert r.status_code == 404, r.text
        # A resident server refusing passes its 403 on.
        room = FakeRoom(fakes[0], "10", join_rule="invite")
        room.install()
        r = await client.post(f"{V3}/join/{_q(room.room_id)}", headers=bob.headers)
        assert (r.status_code, r.json()) == (403, {"errcode": "M_FORBIDDEN",
                                                   "error": "You are not invited"}), r.text
        # knock on a room that is not knockable: the 403 of the resident server
        r = await client.post(f"{V3}/knock/{_q(room.room_id)}", headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text
        assert "knock" in r.json()["error"]
        # Unknown remote alias: the remote's 404.
        r = await client.post(f"{V3}/join/{_q('#nope:' + fakes[0].name)}", headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
        assert _services(server).rooms.membership.rooms_of(bob.user_id) is not None
        assert list(_services(server).rooms.membership.rooms_of(bob.user_id)) == []


async def test_guests_do_not_join_remote_rooms(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1, allow_registration=True,
                      allow_guest_registration=True,
                      registration_token="unused-token") as (fakes, _s, client, _bob):
        room = FakeRoom(fakes[0], "10")
        room.install()
        r = await client.post(f"{V3}/register", params={"kind": "guest"}, json={})
        assert r.status_code == 200, r.text
        guest = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await client.post(f"{V3}/rooms/{_q(room.room_id)}/join", json={}, headers=guest)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text
        assert not [r for r in fakes[0].requests if "/make_join/" in r.uri]


async def test_federation_disabled(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1, allow_federation=False) as (fakes, _s, client, bob):
        r = await client.post(f"{V3}/join/{_q('!room:' + fakes[0].name)}", headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text
        assert fakes[0].requests == []


async def test_bad_signature_in_send_join_state_is_refused(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1) as (fakes, server, client, bob):
        room = FakeRoom(fakes[0], "10")
        room.bad_signature = True
        room.install()
        r = await client.post(f"{V3}/join/{_q(room.room_id)}", params={"via": fakes[0].name},
                              headers=bob.headers)
        assert r.status_code == 404, r.text
        assert "create" in r.json()["error"]
        services = _services(server)
        assert services.rooms.events.room_version(room.room_id) is None
        assert services.rooms.membership.membership(room.room_id, bob.user_id) is None
        body = await _sync(client, bob)
        assert room.room_id not in body["rooms"]["join"]


async def test_candidate_limits() -> None:
    """conduwuit's limits: 15 version refusals, or 50 failed servers, end the search."""
    tried: list[str] = []

    def membership() -> RemoteMembership:
        config = make_config_like()
        return RemoteMembership(config, _NoClient(), None, None, None, None, None)  # type: ignore[arg-type]

    async def incompatible(server: str) -> None:
        tried.append(server)
        raise RemoteError(server, 400, {"errcode": "M_UNSUPPORTED_ROOM_VERSION"})

    remote = membership()
    with pytest.raises(MatrixError) as caught:
        await remote._through([f"s{i}" for i in range(40)], "joining", incompatible)
    assert caught.value.status == 404 and len(tried) == MAX_INCOMPATIBLE

    tried.clear()

    async def unreachable(server: str) -> None:
        tried.append(server)
        if len(tried) % 2:
            raise FederationError(server, "down")
        raise BadAnswer("nonsense")

    with pytest.raises(MatrixError):
        await remote._through([f"s{i}" for i in range(80)], "joining", unreachable)
    assert len(tried) == MAX_FAILED

    async def works(server: str) -> str:
        if server == "s0":
            raise RemoteError(server, 403, {"errcode": "M_FORBIDDEN", "error": "not in room"})
        return server
    assert await remote._through(["s0", "s1"], "joining", works) == "s1"

    async def refused(server: str) -> str:
        raise RemoteError(server, 403, {"errcode": "M_FORBIDDEN", "error": "You are banned"})
    with pytest.raises(MatrixError) as caught:
        await remote._through(["s0", "s1"], "joining", refused)
    assert (caught.value.status, caught.value.error) == (403, "You are banned")


class _NoClient:
    def is_forbidden(self, _server: str) -> bool:
        return False


def make_config_like() -> Any:
    class _Config:
        allow_federation = True
        server_name = "test.local"
    return _Config()


# --- leaving, knocking, inviting --------------------------------------------------------------


async def test_reject_remote_invite(tmp_path: Path) -> None:
    async with _setup(tmp_path) as (fakes, server, client, bob):
        room = FakeRoom(fakes[0], "10")
        room.install()
        invite_id = room.add("m.room.member", bob.user_id, {"membership": "invite"})
        invite = Event(invite_id, room.pdus[invite_id], room.version)
        remote = _services(server).federation.membership
        remote.record_membership(room.room_id, bob.user_id, "invite", invite,
                                 [*room.stripped(), stripped_state(invite)])
        first = await _sync(client, bob)
        assert room.room_id in first["rooms"]["invite"]

        r = await client.post(f"{V3}/rooms/{_q(room.room_id)}/leave", json={},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        assert room.member(bob.user_id) == "leave"
        leave = room.pdus[room.state[("m.room.member", bob.user_id)]]
        assert leave["sender"] == bob.user_id and "test.local" in leave["signatures"]
        assert len([r for r in fakes[0].requests if "/send_leave/" in r.uri]) == 1

        r = await client.get(f"{V3}/sync", params={"since": first["next_batch"]},
                             headers=bob.headers)
        later = r.json()
        assert room.room_id not in later["rooms"]["invite"]
        assert room.room_id in later["rooms"]["leave"]
        assert _services(server).rooms.membership.membership(room.room_id, bob.user_id) \
            == "leave"
        assert _services(server).rooms.events.get(
            hashes.event_id_for(leave, room.version)) is not None, "kept as an outlier"

        # The inviting server is gone: the invite is still rejected here.
        gone = f"!gone:{fakes[1].name}"
        remote.record_membership(gone, bob.user_id, "invite", None,
                                 [{"type": "m.room.member", "state_key": bob.user_id,
                                   "sender": f"@eve:{fakes[1].name}",
                                   "content": {"membership": "invite"}}])
        r = await client.post(f"{V3}/rooms/{_q(gone)}/leave", json={}, headers=bob.headers)
        assert r.status_code == 200, r.text
        assert _services(server).rooms.membership.membership(gone, bob.user_id) == "leave"


async def test_join_after_remote_invite_through_the_inviter(tmp_path: Path) -> None:
    """A v12 room id names no server: the inviter's server is asked."""
    async with _setup(tmp_path, count=1) as (fakes, server, client, bob):
        room = FakeRoom(fakes[0], "12", join_rule="invite")
        room.install()
        invite_id = room.add("m.room.member", bob.user_id, {"membership": "invite"})
        invite = Event(invite_id, room.pdus[invite_id], room.version)
        _services(server).federation.membership.record_membership(
            room.room_id, bob.user_id, "invite", invite, [*room.stripped(),
                                                          stripped_state(invite)])
        first = await _sync(client, bob)
        assert room.room_id in first["rooms"]["invite"]
        r = await client.post(f"{V3}/rooms/{_q(room.room_id)}/join", json={},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        assert room.member(bob.user_id) == "join"
        r = await client.get(f"{V3}/sync", params={"since": first["next_batch"]},
                             headers=bob.headers)
        assert room.room_id in r.json()["rooms"]["join"]
        assert room.room_id not in r.json()["rooms"]["invite"]


async def test_knock_on_remote_room(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1) as (fakes, _server, client, bob):
        room = FakeRoom(fakes[0], "10", join_rule="knock")
        room.install()
        r = await client.post(f"{V3}/knock/{_q(room.room_id)}", params={"via": fakes[0].name},
                              json={"reason": "let me in"}, headers=bob.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"room_id": room.room_id}
        assert room.member(bob.user_id) == "knock"
        body = await _sync(client, bob)
        knock = body["rooms"]["knock"][room.room_id]["knock_state"]["events"]
        assert {(e["type"], e.get("state_key")) for e in knock} >= {
            ("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.member", bob.user_id)}

        # Retracting the knock goes through make_leave/send_leave.
        r = await client.post(f"{V3}/rooms/{_q(room.room_id)}/leave", json={},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        assert room.member(bob.user_id) == "leave"


async def test_invite_remote_user(tmp_path: Path) -> None:
    async with _setup(tmp_path, count=1) as (fakes, server, client, bob):
        fake = fakes[0]
        helper = FakeRoom(fake, "10")  # only for its /invite route
        helper.install()
        r = await client.post(f"{V3}/createRoom", json={"preset": "private_chat"},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        room_id = r.json()["room_id"]
        carol = f"@carol:{fake.name}"

        helper.refuse_invites = True
        r = await client.post(f"{V3}/rooms/{_q(room_id)}/invite", json={"user_id": carol},
                              headers=bob.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), r.text
        assert "do not like" in r.json()["error"]
        services = _services(server)
        assert services.rooms.membership.membership(room_id, carol) is None

        helper.refuse_invites, helper.countersign_changes = False, True
        r = await client.post(f"{V3}/rooms/{_q(room_id)}/invite", json={"user_id": carol},
                              headers=bob.headers)
        assert r.status_code == 502, r.text
        assert services.rooms.membership.membership(room_id, carol) is None

        helper.countersign_changes = False
        r = await client.post(f"{V3}/rooms/{_q(room_id)}/invite", json={"user_id": carol},
                              headers=bob.headers)
        assert r.status_code == 200, r.text
        assert services.rooms.membership.membership(room_id, carol) == "invite"
        invite_id = services.rooms.state.current(room_id)[("m.room.member", carol)]
        stored = services.rooms.events.get(invite_id)
        assert set(stored.pdu["signatures"]) == {"test.local", fake.name}
        sent = [r for r in fake.requests if r.uri.startswith(f"{FED}/v2/invite/")][-1].json()
        assert sent["room_version"] == stored.room_version.identifier
        assert {e["type"] for e in sent["invite_room_state"]} >= {
            "m.room.create", "m.room.join_rules", "m.room.member"}
        r = await client.get(f"{V3}/rooms/{_q(room_id)}/members", headers=bob.headers)
        assert {(e["state_key"], e["content"]["membership"]) for e in r.json()["chunk"]} == {
            (bob.user_id, "join"), (carol, "invite")}
