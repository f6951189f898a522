"""Other servers acting on our rooms: make/send join, leave, knock, invites, /send.

A fake server on loopback plays the remote side: it signs requests (X-Matrix) and
the events it builds from our templates with its own key, exactly as a real server
would, so every request goes through the whole inbound path.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import pytest
import trio

from conduwuit.protocol import signing
from conduwuit.protocol.room_versions import ROOM_VERSIONS, RoomVersion
from conduwuit.server import Server
from conduwuit.services.federation.ingest import Ingest
from conduwuit.services.rooms.timeline import Draft
from tests.support.config import make_config
from tests.support.fakefed import (
    FakeServer,
    fake_servers,
    federation_options,
    sign_pdu,
    signed_request,
)
from tests.support.inprocess import base_url, running_server
from tests.support.users import make_user
from tests.test_rooms import create
from tests.test_sync import sync

US = "test.local"
V3 = "/_matrix/client/v3"
F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"


def q(identifier: str) -> str:
    return quote(identifier, safe="")


@attrs.define
class Env:
    server: Server
    client: httpx.AsyncClient
    fake: FakeServer
    other: FakeServer

    async def fed(self, method: str, path: str, *, fake: FakeServer | None = None,
                  params: dict[str, Any] | None = None, body: Any = None) -> httpx.Response:
        return await signed_request(self.client, fake or self.fake, method, path,
                                    destination=US, params=params, body=body)

    def remote(self, localpart: str, fake: FakeServer | None = None) -> str:
        return f"@{localpart}:{(fake or self.fake).name}"


@asynccontextmanager
async def environment(tmp_path: Path, **options: Any) -> AsyncIterator[Env]:
    config = make_config(tmp_path, **federation_options(**options))
    async with fake_servers(tmp_path, 2) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server), timeout=30) as client:
        yield Env(server, client, fakes[0], fakes[1])


async def remote_join(env: Env, room: str, user_id: str) -> dict[str, Any]:
    """make_join + send_join v2 for a user of the fake server; the send_join answer."""
    r = await env.fed("GET", f"{F1}/make_join/{q(room)}/{q(user_id)}",
                      params={"ver": list(ROOM_VERSIONS)})
    assert r.status_code == 200, r.text
    template = r.json()["event"]
    version = ROOM_VERSIONS[r.json()["room_version"]]
    event_id, pdu = sign_pdu(env.fake, {**template,
                                        "origin_server_ts": int(time.time() * 1000)}, version)
    r = await env.fed("PUT", f"{F2}/send_join/{q(room)}/{q(event_id)}", body=pdu)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    answer["event_id"] = event_id
    return answer


def room_version(env: Env, room: str) -> RoomVersion:
    assert env.server.services is not None
    version = env.server.services.rooms.events.room_version(room)
    assert version is not None
    return version


def remote_message(env: Env, room: str, sender: str, body: str,
                   fake: FakeServer | None = None) -> tuple[str, dict[str, Any]]:
    """A message of ``sender`` on top of our room's current extremities, signed."""
    services = env.server.services
    assert services is not None
    version = room_version(env, room)
    state = services.rooms.state.current(room)
    template = services.rooms.timeline.template(
        room, version, state, Draft(sender, "m.room.message", {"msgtype": "m.text", "body": body}))
    return sign_pdu(fake or env.fake, template, version)


def _refused(r: httpx.Response, status: int, errcode: str) -> None:
    assert (r.status_code, r.json().get("errcode")) == (status, errcode), r.text


# -- joins -------------------------------------------------------------------------------------


async def test_remote_user_joins_public_room(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        room = await create(env.client, alice, preset="public_chat", name="Lobby")
        since = (await sync(env.client, alice))["next_batch"]
        bob = env.remote("bob")

        answer = await remote_join(env, room, bob)
        types = {(e["type"], e.get("state_key")) for e in answer["state"]}
        assert ("m.room.create", "") in types and ("m.room.join_rules", "") in types
        assert ("m.room.member", alice.user_id) in types
        assert ("m.room.member", bob) not in types, "the state before the join"
        assert answer["auth_chain"], "the auth chain of that state"
        assert answer["members_omitted"] is False
        assert sorted(answer["servers_in_room"]) == sorted([US, env.fake.name])

        r = await env.client.get(f"{V3}/rooms/{q(room)}/members", headers=alice.headers)
        members = {e["state_key"]: e["content"]["membership"] for e in r.json()["chunk"]}
        assert members[bob] == "join"
        body = await sync(env.client, alice, since=since)
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        assert any(e["type"] == "m.room.member" and e["state_key"] == bob
                   and e["event_id"] == answer["event_id"] for e in timeline)

        # ... and leaves again.
        r = await env.fed("GET", f"{F1}/make_leave/{q(room)}/{q(bob)}")
        assert r.status_code == 200, r.text
        version = ROOM_VERSIONS[r.json()["room_version"]]
        event_id, pdu = sign_pdu(env.fake, r.json()["event"], version)
        r = await env.fed("PUT", f"{F2}/send_leave/{q(room)}/{q(event_id)}", body=pdu)
        assert r.status_code == 200 and r.json() == {}, r.text
        r = await env.client.get(f"{V3}/rooms/{q(room)}/members", headers=alice.headers)
        members = {e["state_key"]: e["content"]["membership"] for e in r.json()["chunk"]}
        assert members[bob] == "leave"


async def test_v1_send_join_answers_the_old_shape(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        room = await create(env.client, alice, preset="public_chat", room_version="10")
        bob = env.remote("bob")
        r = await env.fed("GET", f"{F1}/make_join/{q(room)}/{q(bob)}", params={"ver": "10"})
        assert r.status_code == 200 and r.json()["room_version"] == "10", r.text
        event_id, pdu = sign_pdu(env.fake, r.json()["event"], ROOM_VERSIONS["10"])
        r = await env.fed("PUT", f"{F1}/send_join/{q(room)}/{q(event_id)}", body=pdu)
        assert r.status_code == 200, r.text
        status, answer = r.json()
        assert status == 200 and answer["state"] and answer["auth_chain"]


async def test_make_join_refusals(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        private = await create(env.client, alice, preset="private_chat")
        public = await create(env.client, alice, preset="public_chat", room_version="10")
        bob = env.remote("bob")

        r = await env.fed("GET", f"{F1}/make_join/{q(private)}/{q(bob)}",
                          params={"ver": list(ROOM_VERSIONS)})
        _refused(r, 403, "M_FORBIDDEN")  # invite-only
        r = await env.fed("GET", f"{F1}/make_join/{q(public)}/{q(bob)}",
                          params={"ver": ["1", "2"]})
        _refused(r, 400, "M_INCOMPATIBLE_ROOM_VERSION")
        assert r.json()["room_version"] == "10"
        r = await env.fed("GET", f"{F1}/make_join/{q(public)}/{q(bob)}")
        _refused(r, 400, "M_INCOMPATIBLE_ROOM_VERSION")  # no ver: version 1 only
        r = await env.fed("GET", f"{F1}/make_join/{q(public)}/{q(env.remote('eve', env.other))}",
                          params={"ver": "10"})
        _refused(r, 403, "M_FORBIDDEN")  # not a user of the asking server
        r = await env.fed("GET", f"{F1}/make_join/{q('!nowhere:test.local')}/{q(bob)}",
                          params={"ver": "10"})
        _refused(r, 404, "M_NOT_FOUND")
        r = await env.fed("GET", f"{F1}/make_knock/{q(public)}/{q(bob)}", params={"ver": "10"})
        _refused(r, 403, "M_FORBIDDEN")  # public rooms take no knocks

        # send_join: the path must name the event, the event must be the origin's join.
        r = await env.fed("GET", f"{F1}/make_join/{q(public)}/{q(bob)}", params={"ver": "10"})
        template = r.json()["event"]
        event_id, pdu = sign_pdu(env.fake, template, ROOM_VERSIONS["10"])
        r = await env.fed("PUT", f"{F2}/send_join/{q(public)}/{q('$other')}", body=pdu)
        _refused(r, 400, "M_INVALID_PARAM")
        r = await env.fed("PUT", f"{F2}/send_join/{q(public)}/{q(event_id)}", body=pdu,
                          fake=env.other)
        _refused(r, 403, "M_FORBIDDEN")
        forged = {**pdu, "origin_server_ts": pdu["origin_server_ts"] + 1}
        r = await env.fed("PUT", f"{F2}/send_join/{q(public)}/{q(event_id)}", body=forged)
        _refused(r, 400, "M_INVALID_PARAM")  # a different event than the path names
        event_id, unsigned_pdu = sign_pdu(env.other, template, ROOM_VERSIONS["10"])
        r = await env.fed("PUT", f"{F2}/send_join/{q(public)}/{q(event_id)}",
                          body=unsigned_pdu)
        _refused(r, 403, "M_FORBIDDEN")  # not signed by the member's server
        r = await env.fed("PUT", f"{F2}/send_join/{q(public)}/x", body=[1])
        _refused(r, 400, "M_BAD_JSON")


async def test_restricted_join_is_countersigned(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        space = await create(env.client, alice, preset="public_chat", room_version="10")
        bob = env.remote("bob")
        await remote_join(env, space, bob)
        room = await create(env.client, alice, room_version="10", initial_state=[{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted",
                        "allow": [{"type": "m.room_membership", "room_id": space}]}}])
        r = await env.fed("GET", f"{F1}/make_join/{q(room)}/{q(env.remote('eve'))}",
                          params={"ver": "10"})
        _refused(r, 400, "M_UNABLE_TO_AUTHORISE_JOIN")  # eve is in no allowed room
        answer = await remote_join(env, room, bob)
        event = answer["event"]
        assert event["content"]["join_authorised_via_users_server"] == alice.user_id
        services = env.server.services
        assert services is not None
        signing.verify_event(event, US, services.server_keys.key_id,
                             services.server_keys.verify_key_base64, ROOM_VERSIONS["10"])
        assert services.rooms.membership.is_joined(room, bob)


async def test_knock(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        room = await create(env.client, alice, room_version="10", name="Knock here",
                            initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                            "content": {"join_rule": "knock"}}])
        bob = env.remote("bob")
        r = await env.fed("GET", f"{F1}/make_knock/{q(room)}/{q(bob)}", params={"ver": "10"})
        assert r.status_code == 200, r.text
        event_id, pdu = sign_pdu(env.fake, r.json()["event"], ROOM_VERSIONS["10"])
        r = await env.fed("PUT", f"{F1}/send_knock/{q(room)}/{q(event_id)}", body=pdu)
        assert r.status_code == 200, r.text
        names = [e for e in r.json()["knock_room_state"] if e["type"] == "m.room.name"]
        assert names and names[0]["content"]["name"] == "Knock here"
        r = await env.client.get(f"{V3}/rooms/{q(room)}/members", headers=alice.headers)
        members = {e["state_key"]: e["content"]["membership"] for e in r.json()["chunk"]}
        assert members[bob] == "knock"


# -- invites -----------------------------------------------------------------------------------


def invite_pdu(fake: FakeServer, invitee: str, version: str = "10",
               room: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(room id, event id, PDU) of an invite from a room living on ``fake``."""
    room = room or f"!remote{int(time.time() * 1e6)}:{fake.name}"
    pdu: dict[str, Any] = {
        "type": "m.room.member", "state_key": invitee, "sender": f"@carol:{fake.name}",
        "room_id": room, "content": {"membership": "invite"},
        "origin_server_ts": int(time.time() * 1000), "depth": 5,
        "prev_events": ["$" + "a" * 43], "auth_events": ["$" + "b" * 43]}
    if version in ("1", "2"):  # event ids name their server; references carry hashes
        pdu.update(event_id=f"$invite{int(time.time() * 1e6)}:{fake.name}",
                   prev_events=[[f"$a:{fake.name}", {"sha256": "x"}]],
                   auth_events=[[f"$b:{fake.name}", {"sha256": "y"}]])
    event_id, signed = sign_pdu(fake, pdu, ROOM_VERSIONS[version])
    return room, event_id, signed


STRIPPED = [{"type": "m.room.name", "state_key": "", "content": {"name": "Elsewhere"},
             "sender": "@carol:x"}, "junk"]


async def test_invite_arrives_in_sync(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        since = (await sync(env.client, alice))["next_batch"]
        room, event_id, pdu = invite_pdu(env.fake, alice.user_id)
        r = await env.fed("PUT", f"{F2}/invite/{q(room)}/{q(event_id)}",
                          body={"event": pdu, "room_version": "10",
                                "invite_room_state": STRIPPED})
        assert r.status_code == 200, r.text
        signed = r.json()["event"]
        services = env.server.services
        assert services is not None
        signing.verify_event(signed, US, services.server_keys.key_id,
                             services.server_keys.verify_key_base64, ROOM_VERSIONS["10"])
        signing.verify_event(signed, env.fake.name, env.fake.key_id,
                             signing.verify_key_base64(env.fake.key), ROOM_VERSIONS["10"])

        body = await sync(env.client, alice, since=since)
        invite_state = body["rooms"]["invite"][room]["invite_state"]["events"]
        assert {"m.room.name", "m.room.member"} == {e["type"] for e in invite_state}
        assert services.rooms.events.get(event_id) is not None, "kept as an outlier"

        # v1: the body is the event itself, the answer [200, {event}].
        room2, event_id2, pdu2 = invite_pdu(env.fake, alice.user_id, "1")
        r = await env.fed("PUT", f"{F1}/invite/{q(room2)}/{q(event_id2)}", body=pdu2)
        assert r.status_code == 200 and r.json()[0] == 200, r.text
        assert room2 in (await sync(env.client, alice))["rooms"]["invite"]


async def test_invite_refusals(tmp_path: Path) -> None:
    async with environment(tmp_path, block_non_admin_invites=True,
                           forbidden_remote_server_names=["evil\\.example$"]) as env:
        alice = await make_user(env.server, "alice")
        admin = await make_user(env.server, "boss", admin=True)

        async def put(invitee: str, *, version: str = "10", room_version: str = "10",
                      room: str | None = None, tamper: bool = False,
                      fake: FakeServer | None = None) -> httpx.Response:
            room_id, event_id, pdu = invite_pdu(fake or env.fake, invitee, version, room)
            if tamper:  # signed with another key under the fake's key id
                impostor = signing.generate_signing_key((fake or env.fake).key.version)
                pdu = signing.sign_event({k: v for k, v in pdu.items() if k != "signatures"},
                                         (fake or env.fake).name, impostor, ROOM_VERSIONS[version])
            return await env.fed("PUT", f"{F2}/invite/{q(room_id)}/{q(event_id)}",
                                 body={"event": pdu, "room_version": room_version})

        _refused(await put(alice.user_id), 403, "M_FORBIDDEN")  # block_non_admin_invites
        assert (await put(admin.user_id)).status_code == 200
        r = await put(admin.user_id, room_version="99")
        _refused(r, 400, "M_INCOMPATIBLE_ROOM_VERSION")
        _refused(await put(admin.user_id, room="!r:evil.example"), 403, "M_FORBIDDEN")
        _refused(await put(f"@nobody:{US}"), 404, "M_NOT_FOUND")
        _refused(await put(env.remote("bob")), 403, "M_FORBIDDEN")  # not our user
        _refused(await put(admin.user_id, tamper=True), 403, "M_FORBIDDEN")  # bad signature
        # Sent by one server, signed by another.
        room_id, event_id, pdu = invite_pdu(env.other, admin.user_id)
        r = await env.fed("PUT", f"{F2}/invite/{q(room_id)}/{q(event_id)}",
                          body={"event": pdu, "room_version": "10"})
        _refused(r, 403, "M_FORBIDDEN")
        r = await env.fed("PUT", f"{F2}/invite/{q(room_id)}/{q('$wrong')}",
                          body={"event": pdu, "room_version": "10"}, fake=env.other)
        _refused(r, 400, "M_INVALID_PARAM")

        assert env.server.services is not None
        env.server.services.users.deactivate(admin.user_id)
        _refused(await put(admin.user_id), 404, "M_NOT_FOUND")


# -- transactions ------------------------------------------------------------------------------


async def test_send_transactions(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        room = await create(env.client, alice, preset="public_chat")
        bob = env.remote("bob")
        await remote_join(env, room, bob)
        since = (await sync(env.client, alice))["next_batch"]

        first_id, first = remote_message(env, room, bob, "first")
        unknown = {**first, "room_id": "!unknown:elsewhere.example"}
        txn = {"origin": env.fake.name, "origin_server_ts": 1, "pdus": [first, unknown]}
        r = await env.fed("PUT", f"{F1}/send/t1", body=txn)
        assert r.status_code == 200, r.text
        results = r.json()["pdus"]
        assert results[first_id] == {}
        assert len(results) == 2
        assert next(v for k, v in results.items() if k != first_id)["error"]

        # The same transaction id again: the stored answer, nothing processed again.
        second_id, second = remote_message(env, room, bob, "second")
        r = await env.fed("PUT", f"{F1}/send/t1",
                          body={"origin": env.fake.name, "origin_server_ts": 2,
                                "pdus": [second]})
        assert r.status_code == 200 and r.json()["pdus"] == results
        assert env.server.services is not None
        assert env.server.services.rooms.events.get(second_id) is None
        # Stored answers are pruned once no sender could still be retrying them: then the
        # same id is a new transaction.
        inbound = env.server.services.federation.inbound
        assert inbound.prune_transactions(older_than_ms=0) == 0
        assert inbound.prune_transactions(older_than_ms=2**62) == 1
        r = await env.fed("PUT", f"{F1}/send/t1",
                          body={"origin": env.fake.name, "origin_server_ts": 2,
                                "pdus": [second]})
        assert r.status_code == 200 and r.json()["pdus"] == {second_id: {}}

        body = await sync(env.client, alice, since=since)
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        texts = [e["content"].get("body") for e in timeline]
        assert texts == ["first", "second"]

        # A forged sender (a user of another server) is rejected, the rest goes on.
        forged_id, forged = remote_message(env, room, env.remote("eve", env.other), "forged")
        r = await env.fed("PUT", f"{F1}/send/t2", body={"pdus": [forged, second]})
        assert r.status_code == 200, r.text
        assert "error" in r.json()["pdus"][forged_id] and r.json()["pdus"][second_id] == {}


async def test_send_refusals(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        pdus = [{"room_id": "!a:b.example"}] * 51
        _refused(await env.fed("PUT", f"{F1}/send/big", body={"pdus": pdus}), 400, "M_BAD_JSON")
        edus = [{"edu_type": "m.typing", "content": {}}] * 101
        _refused(await env.fed("PUT", f"{F1}/send/big2", body={"pdus": [], "edus": edus}),
                 400, "M_BAD_JSON")
        r = await env.fed("PUT", f"{F1}/send/spoof", body={"origin": env.other.name,
                                                          "pdus": []})
        _refused(r, 403, "M_FORBIDDEN")
        _refused(await env.fed("PUT", f"{F1}/send/x", body={"pdus": {}}), 400, "M_BAD_JSON")
        _refused(await env.fed("PUT", f"{F1}/send/y", body=[1]), 400, "M_BAD_JSON")
        r = await env.client.put(f"{F1}/send/unsigned", json={"pdus": []})
        _refused(r, 401, "M_UNAUTHORIZED")
        # Junk PDUs get no answer but do not fail the transaction.
        r = await env.fed("PUT", f"{F1}/send/junk", body={"pdus": [1, {"room_id": 5}]})
        assert r.status_code == 200 and r.json() == {"pdus": {}}


async def test_server_acl_denies_pdus(tmp_path: Path) -> None:
    async with environment(tmp_path) as env:
        alice = await make_user(env.server, "alice")
        room = await create(env.client, alice, preset="public_chat")
        bob = env.remote("bob")
        await remote_join(env, room, bob)
        r = await env.client.put(
            f"{V3}/rooms/{q(room)}/state/m.room.server_acl/", headers=alice.headers,
            json={"allow": ["*"], "deny": [env.fake.name.split(":")[0]],
                  "allow_ip_literals": True})
        assert r.status_code == 200, r.text
        event_id, pdu = remote_message(env, room, bob, "denied")
        r = await env.fed("PUT", f"{F1}/send/acl", body={"pdus": [pdu]})
        assert r.status_code == 200 and "error" in r.json()["pdus"][event_id], r.text
        r = await env.fed("GET", f"{F1}/make_leave/{q(room)}/{q(bob)}")
        _refused(r, 403, "M_FORBIDDEN")


@pytest.mark.parametrize("path", [f"{F1}/make_join/!r:x/@u:y", f"{F2}/invite/!r:x/$e"])
async def test_unauthenticated_requests_are_refused(tmp_path: Path, path: str) -> None:
    async with environment(tmp_path) as env:
        r = await env.client.request("PUT" if "invite" in path else "GET", path, json={})
        _refused(r, 401, "M_UNAUTHORIZED")


async def test_one_transaction_per_origin_at_a_time(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Transactions of one origin queue; rooms of one transaction and other origins don't."""
    in_flight, peak = 0, 0

    async def slow_receive(_self: Ingest, origin: str, pdu: Mapping[str, Any], *,
                           durable: bool = True) -> tuple[str | None, str | None]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.2)
        in_flight -= 1
        return str(pdu["event_id"]), None

    monkeypatch.setattr(Ingest, "receive", slow_receive)

    def pdu(room: str) -> dict[str, Any]:
        return {"room_id": room, "event_id": f"${room[1:]}{time.monotonic_ns()}"}

    async with environment(tmp_path) as env:
        async def txn(name: str, rooms: list[str], fake: FakeServer | None = None) -> None:
            r = await env.fed("PUT", f"{F1}/send/{name}", fake=fake,
                              body={"pdus": [pdu(room) for room in rooms]})
            assert r.status_code == 200 and len(r.json()["pdus"]) == len(rooms), r.text

        async with trio.open_nursery() as nursery:
            nursery.start_soon(txn, "a", ["!a:x"])
            nursery.start_soon(txn, "b", ["!b:x"])
        assert peak == 1, "one origin: one transaction at a time"
        peak = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(txn, "c", ["!a:x"])
            nursery.start_soon(txn, "c", ["!a:x"], env.other)  # same id, other origin
        assert peak == 2
        peak = 0
        await txn("d", ["!a:x", "!b:x"])
        assert peak == 2, "rooms of one transaction side by side"
