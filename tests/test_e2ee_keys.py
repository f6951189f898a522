"""E2EE keys: /keys/upload, /query, /claim, /changes, cross-signing, and their sync fields."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
import trio
from unpaddedbase64 import encode_base64

from conduwuit.protocol.signing import sign_json
from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_login import uia
from tests.test_rooms import create

V3 = "/_matrix/client/v3"
ALGORITHMS = ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"]


# --- fake clients: real ed25519 signatures, random curve25519 "keys" -------------------------


def random_key() -> str:
    return encode_base64(os.urandom(32))


def signing_key(version: str | None = None) -> Any:
    """An ed25519 key; ``version`` (default: its public key) names it in signatures."""
    key = nacl.signing.SigningKey.generate()
    key.alg = "ed25519"
    key.version = version or encode_base64(bytes(key.verify_key))
    return key


def public(key: Any) -> str:
    return encode_base64(bytes(key.verify_key))


class FakeDevice:
    """What an E2EE client uploads for one device."""

    def __init__(self, user: LoggedIn) -> None:
        self.user = user
        self.ed = signing_key(user.device_id)
        self.curve = random_key()
        self._next = 0

    def device_keys(self, **changes: Any) -> dict[str, Any]:
        d = self.user.device_id
        keys = {"user_id": self.user.user_id, "device_id": d, "algorithms": ALGORITHMS,
                "keys": {f"curve25519:{d}": self.curve, f"ed25519:{d}": public(self.ed)}}
        keys.update(changes)
        return sign_json(keys, self.user.user_id, self.ed)

    def one_time_keys(self, n: int) -> dict[str, Any]:
        out = {}
        for _ in range(n):
            self._next += 1
            out[f"signed_curve25519:K{self._next:05d}"] = sign_json(
                {"key": random_key()}, self.user.user_id, self.ed)
        return out

    def fallback_key(self, name: str = "F1") -> dict[str, Any]:
        return {f"signed_curve25519:{name}": sign_json({"key": random_key(), "fallback": True},
                                                       self.user.user_id, self.ed)}


class CrossSigner:
    """A user's master, self-signing and user-signing keys."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master, self.ssk, self.usk = signing_key(), signing_key(), signing_key()

    def key(self, usage: str, key: Any, *, signer: Any | None = None) -> dict[str, Any]:
        body = {"user_id": self.user_id, "usage": [usage],
                "keys": {f"ed25519:{public(key)}": public(key)}}
        return sign_json(body, self.user_id, signer) if signer is not None else body

    def upload_body(self) -> dict[str, Any]:
        return {"master_key": self.key("master", self.master),
                "self_signing_key": self.key("self_signing", self.ssk, signer=self.master),
                "user_signing_key": self.key("user_signing", self.usk, signer=self.master)}


# --- fixtures and request helpers ---------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=60) as client:
        yield client


async def post(client: httpx.AsyncClient, user: LoggedIn, path: str,
               body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = await client.post(f"{V3}{path}", json=body, headers=user.headers)
    assert r.status_code == status, r.text
    return dict(r.json())


async def upload(client: httpx.AsyncClient, device: FakeDevice, **body: Any) -> dict[str, Any]:
    return await post(client, device.user, "/keys/upload", body)


async def query(client: httpx.AsyncClient, user: LoggedIn, *users: str) -> dict[str, Any]:
    return await post(client, user, "/keys/query", {"device_keys": {u: [] for u in users}})


async def claim(client: httpx.AsyncClient, user: LoggedIn, target: FakeDevice,
                algorithm: str = "signed_curve25519") -> dict[str, Any]:
    body = {"one_time_keys": {target.user.user_id: {target.user.device_id: algorithm}}}
    found = await post(client, user, "/keys/claim", body)
    return dict(found["one_time_keys"].get(target.user.user_id, {})
                .get(target.user.device_id, {}))


async def sync(client: httpx.AsyncClient, user: LoggedIn, **params: Any) -> dict[str, Any]:
    r = await client.get(f"{V3}/sync", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def join(client: httpx.AsyncClient, user: LoggedIn, room: str) -> None:
    r = await client.post(f"{V3}/join/{room}", json={}, headers=user.headers)
    assert r.status_code == 200, r.text


# --- upload and query -----------------------------------------------------------------------


async def test_upload_query_and_counts(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    device = FakeDevice(alice)
    body = await sync(client, alice)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == []
    counts = await upload(client, device, device_keys=device.device_keys(),
                          one_time_keys=device.one_time_keys(5),
                          fallback_keys=device.fallback_key())
    assert counts == {"one_time_key_counts": {"signed_curve25519": 5}}
    # Uploading the same keys again changes nothing.
    again = await upload(client, device, device_keys=device.device_keys())
    assert again["one_time_key_counts"] == {"signed_curve25519": 5}
    body = await sync(client, alice)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 5}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]

    result = await query(client, bob, alice.user_id, "@nobody:test.local")
    shown = result["device_keys"][alice.user_id][alice.device_id]
    expected = device.device_keys()
    assert {k: v for k, v in shown.items() if k != "unsigned"} == expected
    assert shown["unsigned"] == {"device_display_name": "test device"}
    assert result["device_keys"]["@nobody:test.local"] == {}
    assert result["failures"] == {}
    only = await post(client, bob, "/keys/query",
                      {"device_keys": {alice.user_id: ["NOPE", alice.device_id]}})
    assert list(only["device_keys"][alice.user_id]) == [alice.device_id]


async def test_remote_users_are_reported_as_failures(client: httpx.AsyncClient,
                                                     server: Server) -> None:
    alice = await make_user(server, "alice")
    result = await query(client, alice, "@someone:elsewhere.example")
    assert "elsewhere.example" in result["failures"]
    claimed = await post(client, alice, "/keys/claim", {
        "one_time_keys": {"@someone:elsewhere.example": {"DEV": "signed_curve25519"}}})
    assert claimed["one_time_keys"] == {} and "elsewhere.example" in claimed["failures"]


def _mutations() -> dict[str, tuple[str, Callable[[FakeDevice], dict[str, Any]]]]:
    """Bad uploads, each with the errcode it must get."""

    def tampered(d: FakeDevice) -> dict[str, Any]:
        keys = d.device_keys()
        keys["algorithms"] = ["m.olm.v1.curve25519-aes-sha2"]  # after signing
        return {"device_keys": keys}

    def signed_by_other_key(d: FakeDevice) -> dict[str, Any]:
        keys = d.device_keys()
        other = signing_key(d.user.device_id)
        return {"device_keys": sign_json({k: v for k, v in keys.items() if k != "signatures"},
                                         d.user.user_id, other)}

    def unsigned(d: FakeDevice) -> dict[str, Any]:
        return {"device_keys": {k: v for k, v in d.device_keys().items() if k != "signatures"}}

    def bad_otk(d: FakeDevice) -> dict[str, Any]:
        otks = d.one_time_keys(3)
        first = next(iter(otks))
        otks[first] = {**otks[first], "key": random_key()}  # signature no longer matches
        return {"device_keys": d.device_keys(), "one_time_keys": otks}

    def unsigned_otk(d: FakeDevice) -> dict[str, Any]:
        return {"device_keys": d.device_keys(),
                "one_time_keys": {"signed_curve25519:AAAA": random_key()}}

    def bad_fallback(d: FakeDevice) -> dict[str, Any]:
        fallback = d.fallback_key()
        [(key_id, value)] = fallback.items()
        return {"device_keys": d.device_keys(),
                "fallback_keys": {key_id: {**value, "fallback": False}}}

    def two_fallbacks(d: FakeDevice) -> dict[str, Any]:
        return {"device_keys": d.device_keys(),
                "fallback_keys": {**d.fallback_key("A"), **d.fallback_key("B")}}

    def otk_before_device_keys(d: FakeDevice) -> dict[str, Any]:
        return {"one_time_keys": d.one_time_keys(1)}

    return {
        "wrong user": ("M_INVALID_PARAM",
                       lambda d: {"device_keys": d.device_keys(user_id="@bob:test.local")}),
        "wrong device": ("M_INVALID_PARAM",
                         lambda d: {"device_keys": d.device_keys(device_id="OTHERDEV")}),
        "algorithms not a list": ("M_INVALID_PARAM",
                                  lambda d: {"device_keys": d.device_keys(algorithms="olm")}),
        "short ed25519 key": ("M_INVALID_PARAM", lambda d: {"device_keys": d.device_keys(
            keys={f"ed25519:{d.user.device_id}": "c2hvcnQ"})}),
        "key named after another device": ("M_INVALID_PARAM", lambda d: {
            "device_keys": d.device_keys(keys={f"ed25519:{d.user.device_id}": public(d.ed),
                                               "curve25519:OTHER": d.curve})}),
        "tampered after signing": ("M_INVALID_PARAM", tampered),
        "signed by another key": ("M_INVALID_PARAM", signed_by_other_key),
        "no signatures": ("M_INVALID_PARAM", unsigned),
        "device_keys not an object": ("M_BAD_JSON", lambda d: {"device_keys": [1, 2]}),
        "one bad one-time key": ("M_INVALID_PARAM", bad_otk),
        "unsigned signed_curve25519 key": ("M_INVALID_PARAM", unsigned_otk),
        "one_time_keys not an object": ("M_BAD_JSON", lambda d: {
            "device_keys": d.device_keys(), "one_time_keys": "nope"}),
        "malformed key id": ("M_INVALID_PARAM", lambda d: {
            "device_keys": d.device_keys(), "one_time_keys": {"nocolon": "x"}}),
        "fallback key without fallback flag": ("M_INVALID_PARAM", bad_fallback),
        "two fallback keys of one algorithm": ("M_INVALID_PARAM", two_fallbacks),
        "signed one-time key with no device keys": ("M_INVALID_PARAM",
                                                    otk_before_device_keys),
    }


@pytest.mark.parametrize("case", list(_mutations()))
async def test_bad_uploads_store_nothing(client: httpx.AsyncClient, server: Server,
                                         case: str) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    device = FakeDevice(alice)
    errcode, make = _mutations()[case]
    r = await client.post(f"{V3}/keys/upload", json=make(device), headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (400, errcode), r.text
    assert (await query(client, bob, alice.user_id))["device_keys"][alice.user_id] == {}
    body = await sync(client, alice)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == []


async def test_changing_a_one_time_key_is_refused(client: httpx.AsyncClient,
                                                  server: Server) -> None:
    alice = await make_user(server, "alice")
    device = FakeDevice(alice)
    otks = device.one_time_keys(2)
    await upload(client, device, device_keys=device.device_keys(), one_time_keys=otks)
    assert (await upload(client, device, one_time_keys=otks))["one_time_key_counts"] == {
        "signed_curve25519": 2}
    changed = {k: sign_json({"key": random_key()}, alice.user_id, device.ed) for k in otks}
    r = await client.post(f"{V3}/keys/upload", json={"one_time_keys": changed},
                          headers=alice.headers)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")


# --- claim ----------------------------------------------------------------------------------


async def test_claim_once_then_fallback(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    device = FakeDevice(alice)
    otks = device.one_time_keys(2)
    fallback = device.fallback_key()
    await upload(client, device, device_keys=device.device_keys(), one_time_keys=otks,
                 fallback_keys=fallback)
    first, second = await claim(client, bob, device), await claim(client, bob, device)
    assert [first, second] == [{k: v} for k, v in otks.items()]  # in upload order
    assert (await sync(client, alice))["device_unused_fallback_key_types"] == [
        "signed_curve25519"]
    for _ in range(2):  # the fallback key is reused until replaced
        assert await claim(client, bob, device) == fallback
    body = await sync(client, alice)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == []
    # Replacing the fallback key makes it unused again.
    await upload(client, device, fallback_keys=device.fallback_key("F2"))
    assert (await sync(client, alice))["device_unused_fallback_key_types"] == [
        "signed_curve25519"]
    assert await claim(client, bob, device, "other_algorithm") == {}


async def test_concurrent_claimers_never_share_a_key(client: httpx.AsyncClient,
                                                     server: Server) -> None:
    alice = await make_user(server, "alice")
    claimers = [await make_user(server, f"claimer{i}") for i in range(5)]
    device = FakeDevice(alice)
    otks = device.one_time_keys(50)
    fallback = device.fallback_key()
    await upload(client, device, device_keys=device.device_keys(), one_time_keys=otks,
                 fallback_keys=fallback)
    results: list[dict[str, Any]] = []

    async def claimer(user: LoggedIn) -> None:
        results.append(await claim(client, user, device))

    async with trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(claimer, claimers[i % len(claimers)])
    one_time = [key for r in results for key in r if key not in fallback]
    assert len(one_time) == 50 and set(one_time) == set(otks)  # each key exactly once
    assert sum(1 for r in results if r == fallback) == 10
    assert (await sync(client, alice))["device_one_time_keys_count"] == {
        "signed_curve25519": 0}


# --- device lists -----------------------------------------------------------------------------


async def test_device_list_changes_in_sync_and_keys_changes(client: httpx.AsyncClient,
                                                            server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    carol = await make_user(server, "carol")
    room = await create(client, alice, preset="public_chat")
    await join(client, bob, room)
    since = (await sync(client, alice))["next_batch"]
    bob_device, carol_device = FakeDevice(bob), FakeDevice(carol)
    await upload(client, carol_device, device_keys=carol_device.device_keys())  # no room
    await upload(client, bob_device, device_keys=bob_device.device_keys())
    body = await sync(client, alice, since=since)
    assert body["device_lists"] == {"changed": [bob.user_id], "left": []}
    changes = await client.get(f"{V3}/keys/changes",
                               params={"from": since, "to": body["next_batch"]},
                               headers=alice.headers)
    assert changes.json() == {"changed": [bob.user_id], "left": []}
    # Only one-time keys: the device list did not change.
    since = body["next_batch"]
    await upload(client, bob_device, one_time_keys=bob_device.one_time_keys(3))
    assert (await sync(client, alice, since=since))["device_lists"]["changed"] == []
    # Carol joins: alice must now fetch carol's keys; carol must fetch everyone's.
    carol_since = (await sync(client, carol))["next_batch"]
    await join(client, carol, room)
    body = await sync(client, alice, since=since)
    assert body["device_lists"]["changed"] == [carol.user_id]
    carol_body = await sync(client, carol, since=carol_since)
    assert carol_body["device_lists"]["changed"] == sorted([alice.user_id, bob.user_id])
    # Bob leaves: he no longer shares a room with alice.
    since = body["next_batch"]
    r = await client.post(f"{V3}/rooms/{room}/leave", json={}, headers=bob.headers)
    assert r.status_code == 200
    body = await sync(client, alice, since=since)
    assert body["device_lists"] == {"changed": [], "left": [bob.user_id]}
    # The user's own changes are listed too.
    since = body["next_batch"]
    own = FakeDevice(alice)
    await upload(client, own, device_keys=own.device_keys())
    assert (await sync(client, alice, since=since))["device_lists"]["changed"] == [
        alice.user_id]


async def test_leaving_the_last_shared_room_lists_the_others_as_left(
        client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    carol = await make_user(server, "carol")
    room = await create(client, alice, preset="public_chat")
    other = await create(client, carol, preset="public_chat")
    for user, target in ((bob, room), (carol, room), (bob, other)):
        await join(client, user, target)
    since = (await sync(client, bob))["next_batch"]
    r = await client.post(f"{V3}/rooms/{room}/leave", json={}, headers=bob.headers)
    assert r.status_code == 200
    # carol still shares `other` with bob; alice shares nothing with him any more.
    assert (await sync(client, bob, since=since))["device_lists"] == {
        "changed": [], "left": [alice.user_id]}


async def test_key_upload_wakes_a_waiting_sync(client: httpx.AsyncClient,
                                               server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    await join(client, bob, room)
    since = (await sync(client, alice))["next_batch"]
    result: dict[str, Any] = {}

    async def wait() -> None:
        result["body"] = await sync(client, alice, since=since, timeout="20000")
        result["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.3)
        sent = trio.current_time()
        bob_device = FakeDevice(bob)
        await upload(client, bob_device, device_keys=bob_device.device_keys())
    assert result["body"]["device_lists"]["changed"] == [bob.user_id]
    assert result["at"] - sent < 2


async def test_deleting_a_device_removes_its_keys(client: httpx.AsyncClient,
                                                  server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    room = await create(client, alice, preset="public_chat")
    await join(client, bob, room)
    device = FakeDevice(alice)
    await upload(client, device, device_keys=device.device_keys(),
                 one_time_keys=device.one_time_keys(3), fallback_keys=device.fallback_key())
    since = (await sync(client, bob))["next_batch"]
    r = await uia(client, f"{V3}/devices/{alice.device_id}", alice, {}, method="DELETE")
    assert r.status_code == 200, r.text
    assert (await query(client, bob, alice.user_id))["device_keys"][alice.user_id] == {}
    assert await claim(client, bob, device) == {}  # its one-time and fallback keys are gone
    assert (await sync(client, bob, since=since))["device_lists"]["changed"] == [alice.user_id]


async def test_deactivation_removes_keys(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    device = FakeDevice(alice)
    signer = CrossSigner(alice.user_id)
    await upload(client, device, device_keys=device.device_keys(),
                 one_time_keys=device.one_time_keys(3))
    await post(client, alice, "/keys/device_signing/upload", signer.upload_body())
    r = await uia(client, f"{V3}/account/deactivate", alice, {})
    assert r.status_code == 200, r.text
    result = await query(client, bob, alice.user_id)
    assert result["device_keys"][alice.user_id] == {}
    assert result["master_keys"] == {} and result["self_signing_keys"] == {}
    assert await claim(client, bob, device) == {}


# --- cross-signing ----------------------------------------------------------------------------


async def test_cross_signing_upload_and_query(client: httpx.AsyncClient,
                                              server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    signer = CrossSigner(alice.user_id)
    body = signer.upload_body()
    await post(client, alice, "/keys/device_signing/upload", body)  # first time: no UIA
    await post(client, alice, "/keys/device_signing/upload", body)  # same keys: no UIA
    mine = await query(client, alice, alice.user_id)
    assert mine["master_keys"][alice.user_id] == body["master_key"]
    assert mine["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert mine["user_signing_keys"][alice.user_id] == body["user_signing_key"]
    theirs = await query(client, bob, alice.user_id)
    assert theirs["master_keys"][alice.user_id] == body["master_key"]
    assert theirs["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert theirs["user_signing_keys"] == {}  # only for oneself

    # Replacing the keys needs the password.
    new = CrossSigner(alice.user_id)
    r = await client.post(f"{V3}/keys/device_signing/upload", json=new.upload_body(),
                          headers=alice.headers)
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    assert (await query(client, bob, alice.user_id))["master_keys"][alice.user_id] == \
        body["master_key"]
    r = await uia(client, f"{V3}/keys/device_signing/upload", alice, new.upload_body())
    assert r.status_code == 200, r.text
    assert (await query(client, bob, alice.user_id))["master_keys"][alice.user_id] == \
        new.upload_body()["master_key"]


def _bad_cross_signing() -> dict[str, tuple[int, str, Callable[[CrossSigner],
                                                                dict[str, Any]]]]:
    def unsigned_ssk(s: CrossSigner) -> dict[str, Any]:
        return {"master_key": s.key("master", s.master),
                "self_signing_key": s.key("self_signing", s.ssk)}

    def ssk_signed_by_other(s: CrossSigner) -> dict[str, Any]:
        return {"master_key": s.key("master", s.master),
                "self_signing_key": s.key("self_signing", s.ssk, signer=s.usk)}

    def wrong_usage(s: CrossSigner) -> dict[str, Any]:
        body = s.upload_body()
        body["self_signing_key"] = s.key("user_signing", s.ssk, signer=s.master)
        return body

    def wrong_user(s: CrossSigner) -> dict[str, Any]:
        body = s.upload_body()
        body["master_key"] = {**body["master_key"], "user_id": "@bob:test.local"}
        return body

    def two_keys(s: CrossSigner) -> dict[str, Any]:
        body = s.upload_body()
        body["master_key"]["keys"][f"ed25519:{public(s.ssk)}"] = public(s.ssk)
        return body

    def mismatched_name(s: CrossSigner) -> dict[str, Any]:
        body = s.upload_body()
        body["master_key"]["keys"] = {f"ed25519:{public(s.ssk)}": public(s.master)}
        return body

    return {
        "self-signing key not signed": (400, "M_INVALID_SIGNATURE", unsigned_ssk),
        "self-signing key signed by another key": (400, "M_INVALID_SIGNATURE",
                                                   ssk_signed_by_other),
        "no master key anywhere": (400, "M_MISSING_PARAM", lambda s: {
            "self_signing_key": s.key("self_signing", s.ssk, signer=s.master)}),
        "wrong usage": (400, "M_INVALID_PARAM", wrong_usage),
        "wrong user id": (400, "M_INVALID_PARAM", wrong_user),
        "two public keys": (400, "M_INVALID_PARAM", two_keys),
        "key id does not name the key": (400, "M_INVALID_PARAM", mismatched_name),
        "not an object": (400, "M_BAD_JSON", lambda s: {"master_key": "key"}),
    }


@pytest.mark.parametrize("case", list(_bad_cross_signing()))
async def test_bad_cross_signing_keys(client: httpx.AsyncClient, server: Server,
                                      case: str) -> None:
    alice = await make_user(server, "alice")
    status, errcode, make = _bad_cross_signing()[case]
    r = await client.post(f"{V3}/keys/device_signing/upload",
                          json=make(CrossSigner(alice.user_id)), headers=alice.headers)
    assert (r.status_code, r.json().get("errcode")) == (status, errcode), r.text
    mine = await query(client, alice, alice.user_id)
    assert mine["master_keys"] == {} and mine["self_signing_keys"] == {}


async def test_signature_uploads(client: httpx.AsyncClient, server: Server) -> None:
    alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
    carol = await make_user(server, "carol")
    device = FakeDevice(alice)
    alice_cs, bob_cs = CrossSigner(alice.user_id), CrossSigner(bob.user_id)
    await upload(client, device, device_keys=device.device_keys())
    await post(client, alice, "/keys/device_signing/upload", alice_cs.upload_body())
    await post(client, bob, "/keys/device_signing/upload", bob_cs.upload_body())
    room = await create(client, alice, preset="public_chat")
    await join(client, bob, room)
    bob_since = (await sync(client, bob))["next_batch"]

    # alice signs her device with her self-signing key, and her master key with her device.
    device_sig = sign_json(device.device_keys(), alice.user_id, alice_cs.ssk)
    master_sig = sign_json(alice_cs.key("master", alice_cs.master), alice.user_id, device.ed)
    # A bad one: bob's master key "signed" by alice's self-signing key.
    bad = sign_json(bob_cs.key("master", bob_cs.master), alice.user_id, alice_cs.ssk)
    forged = copy.deepcopy(device_sig)
    result = await post(client, alice, "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: device_sig, public(alice_cs.master): master_sig,
                        "UNKNOWN": forged},
        bob.user_id: {public(bob_cs.master): bad}})
    assert result["failures"][alice.user_id] == {
        "UNKNOWN": {"errcode": "M_NOT_FOUND", "error": result["failures"][alice.user_id][
            "UNKNOWN"]["error"]}}
    assert result["failures"][bob.user_id][public(bob_cs.master)]["errcode"] == \
        "M_INVALID_SIGNATURE"
    shown = await query(client, bob, alice.user_id)
    sigs = shown["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    assert sigs[f"ed25519:{public(alice_cs.ssk)}"] == \
        device_sig["signatures"][alice.user_id][f"ed25519:{public(alice_cs.ssk)}"]
    master_sigs = shown["master_keys"][alice.user_id]["signatures"][alice.user_id]
    assert f"ed25519:{alice.device_id}" in master_sigs
    # Signatures on alice's own keys: everyone sharing a room with her re-fetches them.
    assert (await sync(client, bob, since=bob_since))["device_lists"]["changed"] == [
        alice.user_id]

    # alice signs bob's master key with her user-signing key: only alice sees that.
    good = sign_json(bob_cs.key("master", bob_cs.master), alice.user_id, alice_cs.usk)
    tampered = copy.deepcopy(good)
    tampered["signatures"][alice.user_id][f"ed25519:{public(alice_cs.usk)}"] = \
        encode_base64(os.urandom(64))
    result = await post(client, alice, "/keys/signatures/upload",
                        {bob.user_id: {public(bob_cs.master): tampered}})
    assert result["failures"][bob.user_id][public(bob_cs.master)]["errcode"] == \
        "M_INVALID_SIGNATURE"
    alice_since = (await sync(client, alice))["next_batch"]
    result = await post(client, alice, "/keys/signatures/upload",
                        {bob.user_id: {public(bob_cs.master): good}})
    assert result["failures"] == {}
    assert (await sync(client, alice, since=alice_since))["device_lists"]["changed"] == [
        bob.user_id]
    seen_by_alice = (await query(client, alice, bob.user_id))["master_keys"][bob.user_id]
    assert f"ed25519:{public(alice_cs.usk)}" in seen_by_alice["signatures"][alice.user_id]
    for other in (bob, carol):
        seen = (await query(client, other, bob.user_id))["master_keys"][bob.user_id]
        assert alice.user_id not in seen.get("signatures", {})
    # The signed object must be the stored key.
    changed = sign_json({**bob_cs.key("master", bob_cs.master), "extra": 1}, alice.user_id,
                        alice_cs.usk)
    result = await post(client, alice, "/keys/signatures/upload",
                        {bob.user_id: {public(bob_cs.master): changed}})
    assert result["failures"][bob.user_id][public(bob_cs.master)]["errcode"] == \
        "M_INVALID_SIGNATURE"


# --- allow_encryption -------------------------------------------------------------------------


async def test_encryption_can_be_disallowed(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, allow_encryption=False)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        room = await create(client, alice)
        r = await client.put(f"{V3}/rooms/{room}/state/m.room.encryption/",
                             json={"algorithm": "m.megolm.v1.aes-sha2"}, headers=alice.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        r = await client.post(f"{V3}/createRoom", json={"initial_state": [
            {"type": "m.room.encryption", "state_key": "",
             "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}, headers=alice.headers)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        rooms = (await client.get(f"{V3}/joined_rooms", headers=alice.headers)).json()
        assert rooms["joined_rooms"] == [room]
