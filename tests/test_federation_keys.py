"""Server signing keys: ours as published, the notary, and the key-fetch job.

Remote servers are fakes on loopback (``tests/support/fakefed.py``), reached by
their IP-literal names over TLS, so no DNS is involved.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol import signing
from conduwuit.server import Server
from conduwuit.services.federation.keys import WEEK_MS, ServerSigningKeys
from tests.support.config import make_config
from tests.support.fakefed import FakeRequest, FakeServer, fake_servers, federation_options
from tests.support.inprocess import base_url, running_server

KEY_PATH = "/_matrix/key/v2/server"


def _keys(server: Server) -> ServerSigningKeys:
    assert server.services is not None
    return server.services.federation.keys


def _dir(base: Path, name: str) -> Path:
    (base / name).mkdir()
    return base / name


def _verify_self_signed(body: dict[str, Any], name: str) -> None:
    assert body["server_name"] == name
    for kid, value in body["verify_keys"].items():
        signing.verify_json(body, name, kid, value["key"])


async def test_own_keys_are_published_signed(tmp_path: Path) -> None:
    config = make_config(tmp_path, **federation_options())
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=base_url(server)) as client:
        assert server.services is not None
        own = server.services.server_keys
        r = await client.get(KEY_PATH)
        assert r.status_code == 200
        body = r.json()
        assert body["verify_keys"] == {own.key_id: {"key": own.verify_key_base64}}
        assert body["old_verify_keys"] == {}
        _verify_self_signed(body, "test.local")
        now = int(time.time() * 1000)
        assert now + WEEK_MS - 60_000 < body["valid_until_ts"] <= now + WEEK_MS + 60_000
        # The deprecated per-key form answers the same.
        r = await client.get(f"{KEY_PATH}/{own.key_id}")
        assert r.json()["verify_keys"] == body["verify_keys"]

        old_id, old_key = own.key_id, own.verify_key_base64
        own.rotate()
        body = (await client.get(KEY_PATH)).json()
        assert list(body["verify_keys"]) == [own.key_id] != [old_id]
        assert body["old_verify_keys"][old_id]["key"] == old_key
        assert body["old_verify_keys"][old_id]["expired_ts"] <= int(time.time() * 1000)
        signing.verify_json(body, "test.local", own.key_id, own.verify_key_base64)


async def test_notary_answers_for_itself(tmp_path: Path) -> None:
    config = make_config(tmp_path, **federation_options())
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=base_url(server)) as client:
        r = await client.get("/_matrix/key/v2/query/test.local")
        [entry] = r.json()["server_keys"]
        _verify_self_signed(entry, "test.local")
        r = await client.post("/_matrix/key/v2/query",
                              json={"server_keys": {"test.local": {}}})
        [entry] = r.json()["server_keys"]
        _verify_self_signed(entry, "test.local")
        r = await client.post("/_matrix/key/v2/query", json={"server_keys": {}})
        assert r.json() == {"server_keys": []}
        r = await client.post("/_matrix/key/v2/query", json={})
        assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")


async def test_notary_fetches_caches_and_signs_remote_keys(tmp_path: Path) -> None:
    config = make_config(tmp_path, **federation_options())
    async with fake_servers(tmp_path, 1) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        remote = fakes[0]
        assert server.services is not None
        ours = server.services.server_keys
        r = await client.post("/_matrix/key/v2/query",
                              json={"server_keys": {remote.name: {remote.key_id: {}}}})
        [entry] = r.json()["server_keys"]
        _verify_self_signed(entry, remote.name)
        signing.verify_json(entry, "test.local", ours.key_id, ours.verify_key_base64)
        assert len(remote.requests_to(KEY_PATH)) == 1

        r = await client.get(f"/_matrix/key/v2/query/{remote.name}")
        assert len(r.json()["server_keys"]) == 1
        assert len(remote.requests_to(KEY_PATH)) == 1, "a valid cached answer is reused"

        # Keys wanted valid beyond what we hold (capped at a week) are fetched again.
        later = int(time.time() * 1000) + 30 * 24 * 3600 * 1000
        r = await client.get(f"/_matrix/key/v2/query/{remote.name}",
                             params={"minimum_valid_until_ts": later})
        assert len(r.json()["server_keys"]) == 1  # still served from the cache
        assert len(remote.requests_to(KEY_PATH)) == 2

        # A server that cannot be reached and has nothing cached is left out.
        r = await client.get("/_matrix/key/v2/query/127.0.0.1:1")
        assert r.json() == {"server_keys": []}


async def test_key_fetch_job_fetches_twenty_servers_concurrently(tmp_path: Path) -> None:
    config = make_config(tmp_path, **federation_options())
    async with fake_servers(tmp_path, 20) as fakes, running_server(config) as server:
        for fake in fakes.servers:
            fake.delay = 0.4
        keys = _keys(server)
        results: dict[str, str] = {}

        async def want(fake: FakeServer) -> None:
            results[fake.name] = await keys.request_key(fake.name, fake.key_id)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # three callers for each server at once
                for fake in fakes.servers:
                    nursery.start_soon(want, fake)
        elapsed = trio.current_time() - began
        for fake in fakes.servers:
            assert results[fake.name] == signing.verify_key_base64(fake.key)
            assert len(fake.requests_to(KEY_PATH)) == 1, "one fetch per server"
            assert fake.max_in_flight == 1
        assert elapsed < 20 * 0.4 / 2, f"servers were not fetched concurrently ({elapsed:.1f} s)"
        assert keys.in_flight() == 0

        # Cached answers are reused: no request at all the second time.
        for fake in fakes.servers:
            await keys.request_key(fake.name, fake.key_id)
            assert len(fake.requests_to(KEY_PATH)) == 1


async def test_expired_and_capped_validity(tmp_path: Path) -> None:
    config = make_config(tmp_path, **federation_options())
    async with fake_servers(tmp_path, 2) as fakes, running_server(config) as server:
        keys = _keys(server)
        stale, greedy = fakes[0], fakes[1]
        now = int(time.time() * 1000)
        stale.valid_until_ts = now - 1000
        greedy.valid_until_ts = now + 365 * 24 * 3600 * 1000
        with pytest.raises(MatrixError) as caught:
            await keys.request_key(stale.name, stale.key_id)
        assert caught.value.status == 401 and "expired" in caught.value.error
        assert len(stale.requests_to(KEY_PATH)) == 1
        # Stored all the same: it still verifies events signed before it expired.
        assert keys.cached(stale.name)[stale.key_id].valid_at(now - 5000)

        await keys.request_key(greedy.name, greedy.key_id)
        until = keys.cached(greedy.name)[greedy.key_id].valid_until_ts
        assert until <= int(time.time() * 1000) + WEEK_MS  # the spec's 7-day cap

        with pytest.raises(MatrixError) as caught:
            await keys.request_key(greedy.name, "ed25519:unknown")
        assert caught.value.status == 401 and "Unknown key" in caught.value.error


async def _broken(server: FakeServer, request: FakeRequest) -> tuple[int, Any]:
    return 500, {"errcode": "M_UNKNOWN", "error": "down"}


async def test_notaries_first_or_last(tmp_path: Path) -> None:
    async with fake_servers(tmp_path, 3) as fakes:
        notary, a, b = fakes.servers
        notary.notary_of = {a.name: a, b.name: b}

        # Notary first: the server itself is never asked.
        config = make_config(_dir(tmp_path, "first"), **federation_options(
            trusted_servers=[notary.name], query_trusted_key_servers_first=True))
        async with running_server(config) as server:
            await _keys(server).request_key(a.name, a.key_id)
            assert a.requests == [] and len(notary.requests_to("/_matrix/key/v2/query")) == 1

        # Notary last: asked only when the server itself fails.
        config = make_config(_dir(tmp_path, "last"), **federation_options(
            trusted_servers=[notary.name], query_trusted_key_servers_first=False))
        async with running_server(config) as server:
            keys = _keys(server)
            await keys.request_key(a.name, a.key_id)
            assert len(notary.requests_to("/_matrix/key/v2/query")) == 1  # unchanged
            b.routes[("GET", KEY_PATH)] = _broken
            assert await keys.request_key(b.name, b.key_id) == signing.verify_key_base64(b.key)
            assert len(b.requests_to(KEY_PATH)) == 1
            assert len(notary.requests_to("/_matrix/key/v2/query")) == 2

        # Only notaries: never the server itself, even when the notary fails.
        config = make_config(_dir(tmp_path, "only"), **federation_options(
            trusted_servers=[notary.name], only_query_trusted_key_servers=True))
        async with running_server(config) as server:
            b.requests.clear()
            b.routes.clear()
            await _keys(server).request_key(b.name, b.key_id)
            assert b.requests == []


async def test_notary_answers_are_verified(tmp_path: Path) -> None:
    async with fake_servers(tmp_path, 2) as fakes:
        notary, a = fakes.servers
        notary.notary_of = {a.name: a}
        notary.notary_key = signing.generate_signing_key("impostor")  # not its published key
        a.routes[("GET", KEY_PATH)] = _broken
        config = make_config(tmp_path, **federation_options(trusted_servers=[notary.name]))
        async with running_server(config) as server:
            keys = _keys(server)
            with pytest.raises(MatrixError):
                await keys.request_key(a.name, a.key_id)
            assert len(notary.requests_to("/_matrix/key/v2/query")) == 1
            assert len(notary.requests_to(KEY_PATH)) == 1  # the notary's own key, to verify
            assert keys.cached(a.name) == {}

            # A notary passing on keys the server itself did not sign is caught too.
            notary.notary_key = None

            async def unsigned_by_origin(_: FakeServer, __: FakeRequest) -> tuple[int, Any]:
                body = {k: v for k, v in a.key_response().items() if k != "signatures"}
                return 200, {"server_keys": [signing.sign_json(body, notary.name, notary.key)]}

            notary.routes[("POST", "/_matrix/key/v2/query")] = unsigned_by_origin
            with pytest.raises(MatrixError):
                await keys.request_key(a.name, a.key_id)
            assert len(notary.requests_to("/_matrix/key/v2/query")) == 2
            assert keys.cached(a.name) == {}


async def test_federation_disabled_sends_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, **federation_options(allow_federation=False))
    async with fake_servers(tmp_path, 1) as fakes, running_server(config) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        for path in (KEY_PATH, "/_matrix/key/v2/query/test.local",
                     "/_matrix/federation/v1/version"):
            r = await client.get(path)
            assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        r = await client.post("/_matrix/key/v2/query", json={"server_keys": {}})
        assert r.status_code == 403
        with pytest.raises(MatrixError):
            await _keys(server).request_key(fakes[0].name, fakes[0].key_id)
        assert fakes[0].requests == []
