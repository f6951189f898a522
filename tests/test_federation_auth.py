"""X-Matrix request authentication both ways, and the inbound federation queries.

Inbound: requests signed by fake servers on loopback reach our in-process server;
every refusal is the spec's error and the handler behind it never runs. Outbound:
our client's requests are checked by a fake server the way a remote server would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.context import MatrixApp
from conduwuit.handlers.federation.auth import origin
from conduwuit.handlers.json import json_response
from conduwuit.protocol import signing
from conduwuit.server import Server
from conduwuit.services.federation.auth import (
    RequestVerifier,
    authorization_header,
    parse_x_matrix,
)
from conduwuit.services.federation.client import FederationError, RemoteError
from tests.support.config import make_config
from tests.support.fakefed import (
    FakeFederation,
    FakeRequest,
    FakeServer,
    fake_servers,
    federation_options,
)
from tests.support.inprocess import base_url, running_server
from tests.support.users import make_user

PROBE = "/_matrix/federation/v1/probe"
US = "test.local"


# -- the header ------------------------------------------------------------------------------


def test_parse_x_matrix() -> None:
    auth = parse_x_matrix('X-Matrix origin="origin.hs",destination="dest.hs",'
                          'key="ed25519:key1",sig="ABCDEF"')
    assert (auth.origin, auth.destination, auth.key, auth.sig) == (
        "origin.hs", "dest.hs", "ed25519:key1", "ABCDEF")
    # Names are case-insensitive, order is free, spaces around commas and unknown
    # parameters are allowed, and bare values may hold colons (old senders).
    auth = parse_x_matrix('x-matrix   SIG=abc , Key=ed25519:k1,\tOrigin=127.0.0.1:8448,'
                          'future="x,y"')
    assert (auth.origin, auth.key, auth.sig, auth.destination) == (
        "127.0.0.1:8448", "ed25519:k1", "abc", None)
    auth = parse_x_matrix(r'X-Matrix origin="a\"b\\c",key="ed25519:k",sig="s"')
    assert auth.origin == 'a"b\\c'
    for bad in ('Bearer abc', 'X-Matrix origin="a",key="ed25519:k"', 'X-Matrix origin="a',
                'X-Matrix origin', 'X-Matrix'):
        with pytest.raises(ValueError):
            parse_x_matrix(bad)


async def test_header_round_trip() -> None:
    key = signing.generate_signing_key("k1")
    header = authorization_header("origin.hs", "dest.hs", key, "PUT", "/_matrix/x?a=%40b",
                                  {"hello": "world"})

    async def lookup(server: str, key_id: str) -> str:
        assert (server, key_id) == ("origin.hs", "ed25519:k1")
        return signing.verify_key_base64(key)

    verifier = RequestVerifier("dest.hs", lookup, lambda name: False)
    assert await verifier.verify("PUT", "/_matrix/x?a=%40b", header, {"hello": "world"}) \
        == "origin.hs"
    for method, uri, content in (("GET", "/_matrix/x?a=%40b", {"hello": "world"}),
                                 ("PUT", "/_matrix/x?a=@b", {"hello": "world"}),
                                 ("PUT", "/_matrix/x?a=%40b", {"hello": "there"}),
                                 ("PUT", "/_matrix/x?a=%40b", None)):
        with pytest.raises(MatrixError) as caught:
            await verifier.verify(method, uri, header, content)
        assert (caught.value.status, caught.value.errcode) == (401, "M_UNAUTHORIZED")


# -- inbound ---------------------------------------------------------------------------------


def _probe(ran: list[str]) -> Any:
    def install(app: MatrixApp) -> None:
        bp = Blueprint("probe", __name__)

        @bp.route(PROBE, methods=["GET", "PUT"])
        async def probe() -> Response:
            who = await origin()
            ran.append(who)
            return json_response({"origin": who})

        app.register_blueprint(bp)

    return install


@asynccontextmanager
async def _setup(tmp_path: Path, ran: list[str], count: int = 3,
                 **options: Any) -> AsyncIterator[tuple[FakeFederation, Server, httpx.AsyncClient]]:
    config = make_config(tmp_path, **federation_options(**options))
    async with fake_servers(tmp_path, count) as fakes, \
            running_server(config, app_hooks=[_probe(ran)]) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        yield fakes, server, client


async def _signed(client: httpx.AsyncClient, fake: FakeServer, method: str, path: str, *,
                  params: dict[str, str] | None = None, body: Any = None,
                  destination: str | None = US, sign_body: Any = ...,
                  key: signing.SigningKey | None = None) -> httpx.Response:
    request = client.build_request(method, path, params=params, json=body)
    uri = request.url.raw_path.decode()
    content = body if sign_body is ... else sign_body
    header = authorization_header(fake.name, destination or US, key or fake.key, method, uri,
                                  content)
    if destination is None:  # an old sender: no destination parameter
        header = ",".join(p for p in header.split(",") if not p.startswith("destination="))
    request.headers["Authorization"] = header
    return await client.send(request)


def _refused(r: httpx.Response, status: int = 401, errcode: str = "M_UNAUTHORIZED") -> None:
    assert (r.status_code, r.json()["errcode"]) == (status, errcode), r.text


async def test_inbound_requests_are_verified(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran) as (fakes, _server, client):
        good, stale, stranger = fakes.servers
        stale.valid_until_ts = 1000  # its key expired long ago

        r = await _signed(client, good, "GET", PROBE,
                          params={"user_id": "@alice:test.local", "x": "a b/c"})
        assert r.status_code == 200 and r.json() == {"origin": good.name}
        r = await _signed(client, good, "PUT", PROBE, body={"edu": [1, 2, {"a": "é"}]})
        assert r.status_code == 200
        r = await _signed(client, good, "GET", PROBE, destination=None)
        assert r.status_code == 200, "requests without destination are accepted"
        assert ran == [good.name] * 3
        assert len(good.requests_to("/_matrix/key/v2/server")) == 1, "its key was cached"

        _refused(await client.get(PROBE))
        _refused(await client.get(PROBE, headers={"Authorization": "Bearer abc"}))
        _refused(await client.get(PROBE, headers={"Authorization": "X-Matrix origin="}))
        _refused(await _signed(client, good, "PUT", PROBE, body={"a": 1}, sign_body={"a": 2}))
        _refused(await _signed(client, good, "GET", PROBE,
                               key=signing.generate_signing_key(good.key.version)))
        _refused(await _signed(client, good, "GET", PROBE, destination="elsewhere.example"))
        _refused(await _signed(client, good, "GET", PROBE,
                               key=signing.generate_signing_key("unknown")))
        r = await _signed(client, stale, "GET", PROBE)
        _refused(r)
        assert "expired" in r.json()["error"]
        r = await _signed(client, stranger, "GET", PROBE)
        assert r.status_code == 200  # not forbidden here; see the next test
        assert ran == [good.name] * 3 + [stranger.name], "no refused request ran the handler"


async def test_forbidden_servers_and_disabled_federation(tmp_path: Path) -> None:
    ran: list[str] = []
    async with fake_servers(tmp_path, 1) as fakes:
        banned = fakes[0]
        port = banned.name.rsplit(":", 1)[1]
        config = make_config(tmp_path, **federation_options(
            forbidden_remote_server_names=[f":{port}$"]))
        async with running_server(config, app_hooks=[_probe(ran)]) as server, \
                httpx.AsyncClient(base_url=base_url(server)) as client:
            _refused(await _signed(client, banned, "GET", PROBE), 403, "M_FORBIDDEN")
            assert banned.requests == [], "no key fetched for a forbidden server"
            assert server.services is not None
            with pytest.raises(FederationError, match="forbidden"):
                await server.services.federation.client.request("GET", banned.name, "/x")

    (tmp_path / "off").mkdir()
    config = make_config(tmp_path / "off", **federation_options(allow_federation=False))
    async with fake_servers(tmp_path, 1) as fakes, \
            running_server(config, app_hooks=[_probe(ran)]) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        for path in (PROBE, "/_matrix/federation/v1/query/profile?user_id=@a:test.local",
                     "/_matrix/federation/v1/openid/userinfo?access_token=x"):
            _refused(await _signed(client, fakes[0], "GET", path), 403, "M_FORBIDDEN")
        assert fakes[0].requests == []
        assert server.services is not None
        with pytest.raises(FederationError, match="disabled"):
            await server.services.federation.client.request("GET", fakes[0].name, "/x")
        assert fakes[0].requests == [], "nothing is sent with federation off"
    assert ran == []


# -- outbound --------------------------------------------------------------------------------


async def test_outbound_requests_are_signed_and_backed_off(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=1) as (fakes, server, _client):
        remote = fakes[0]
        assert server.services is not None
        fed = server.services.federation
        ours = server.services.server_keys
        seen: list[str] = []

        async def lookup(server_name: str, key_id: str) -> str:
            assert (server_name, key_id) == (US, ours.key_id)
            return ours.verify_key_base64

        verifier = RequestVerifier(remote.name, lookup, lambda name: False)

        async def check(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            seen.append(await verifier.verify(request.method, request.uri,
                                              request.headers.get("authorization"),
                                              request.json()))
            assert request.headers["host"] == remote.name
            assert request.headers["user-agent"].startswith("conduwuit/")
            return 200, {"ok": True}

        remote.routes[("GET", "/_matrix/federation/v1/query/profile")] = check
        remote.routes[("PUT", "/_matrix/federation/v1/send/t%2F1")] = check
        answer = await fed.client.request(
            "GET", remote.name, "/_matrix/federation/v1/query/profile",
            query={"user_id": f"@bob:{remote.name}", "field": "displayname"})
        assert answer == {"ok": True}
        await fed.client.request("PUT", remote.name, "/_matrix/federation/v1/send/t%2F1",
                                 body={"pdus": [], "edus": [{"é": 1}]})
        assert seen == [US, US]

        with pytest.raises(RemoteError) as remote_error:
            await fed.client.request("GET", remote.name, "/_matrix/federation/v1/nothing")
        assert remote_error.value.status == 404

        # An unreachable server is backed off, remembered across requests.
        with pytest.raises(FederationError):
            await fed.client.request("GET", "127.0.0.1:1", "/_matrix/federation/v1/version")
        with pytest.raises(FederationError, match="backing off"):
            await fed.client.request("GET", "127.0.0.1:1", "/_matrix/federation/v1/version")
        assert fed.client.backing_off("127.0.0.1:1") > 0
        with pytest.raises(FederationError, match="this server"):
            await fed.client.request("GET", US, "/_matrix/federation/v1/version")


# -- inbound queries -------------------------------------------------------------------------


async def _device_keys(user_id: str,
                       device_id: str) -> tuple[dict[str, Any], signing.SigningKey]:
    key = signing.generate_signing_key(device_id)
    body = {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{device_id}": signing.verify_key_base64(key),
                     f"curve25519:{device_id}": signing.verify_key_base64(
                         signing.generate_signing_key("c"))}}
    return signing.sign_json(body, user_id, key), key


async def test_inbound_queries(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=1) as (fakes, server, client):
        remote = fakes[0]
        alice = await make_user(server, "alice")
        r = await client.put("/_matrix/client/v3/profile/@alice:test.local/displayname",
                             json={"displayname": "Alice"}, headers=alice.headers)
        assert r.status_code == 200
        r = await client.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                              json={"room_alias_name": "hall"})
        room_id = r.json()["room_id"]

        q = "/_matrix/federation/v1/query"
        r = await _signed(client, remote, "GET", f"{q}/profile",
                          params={"user_id": alice.user_id})
        assert r.status_code == 200 and r.json()["displayname"] == "Alice"
        r = await _signed(client, remote, "GET", f"{q}/profile",
                          params={"user_id": alice.user_id, "field": "displayname"})
        assert r.json() == {"displayname": "Alice"}
        r = await _signed(client, remote, "GET", f"{q}/profile",
                          params={"user_id": alice.user_id, "field": "avatar_url"})
        _refused(r, 404, "M_NOT_FOUND")
        _refused(await _signed(client, remote, "GET", f"{q}/profile",
                               params={"user_id": "@nobody:test.local"}), 404, "M_NOT_FOUND")
        _refused(await _signed(client, remote, "GET", f"{q}/profile",
                               params={"user_id": f"@x:{remote.name}"}), 400, "M_INVALID_PARAM")

        r = await _signed(client, remote, "GET", f"{q}/directory",
                          params={"room_alias": "#hall:test.local"})
        assert r.json() == {"room_id": room_id, "servers": [US]}
        _refused(await _signed(client, remote, "GET", f"{q}/directory",
                               params={"room_alias": "#nope:test.local"}), 404, "M_NOT_FOUND")
        _refused(await _signed(client, remote, "GET", f"{q}/weather"), 404, "M_UNRECOGNIZED")
        _refused(await client.get(f"{q}/weather"))  # authentication comes first

        # Devices and keys: names only with allow_device_name_federation (off here).
        keys, device_key = await _device_keys(alice.user_id, alice.device_id)
        otk = signing.sign_json({"key": signing.verify_key_base64(
            signing.generate_signing_key("o"))}, alice.user_id, device_key)
        r = await client.post("/_matrix/client/v3/keys/upload", headers=alice.headers,
                              json={"device_keys": keys,
                                    "one_time_keys": {"signed_curve25519:AAAA": otk}})
        assert r.status_code == 200, r.text
        r = await _signed(client, remote, "GET",
                          f"/_matrix/federation/v1/user/devices/{alice.user_id}")
        body = r.json()
        assert body["user_id"] == alice.user_id and isinstance(body["stream_id"], int)
        [device] = body["devices"]
        assert device["device_id"] == alice.device_id and "device_display_name" not in device
        assert device["keys"]["keys"] == keys["keys"]
        r = await _signed(client, remote, "POST", "/_matrix/federation/v1/user/keys/query",
                          body={"device_keys": {alice.user_id: []}})
        got = r.json()["device_keys"][alice.user_id][alice.device_id]
        assert got["keys"] == keys["keys"] and "device_display_name" not in got["unsigned"]
        claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
        r = await _signed(client, remote, "POST", "/_matrix/federation/v1/user/keys/claim",
                          body=claim)
        assert list(r.json()["one_time_keys"][alice.user_id][alice.device_id]) == [
            "signed_curve25519:AAAA"]
        r = await _signed(client, remote, "POST", "/_matrix/federation/v1/user/keys/claim",
                          body=claim)
        assert r.json()["one_time_keys"] == {}, "a one-time key is handed out once"

        # OpenID: a token for a third party, which exchanges it for the user id.
        r = await client.post(f"/_matrix/client/v3/user/{alice.user_id}/openid/request_token",
                              headers=alice.headers, json={})
        token = r.json()
        assert token["token_type"] == "Bearer" and token["matrix_server_name"] == US
        r = await client.get("/_matrix/federation/v1/openid/userinfo",
                             params={"access_token": token["access_token"]})
        assert r.json() == {"sub": alice.user_id}
        _refused(await client.get("/_matrix/federation/v1/openid/userinfo",
                                  params={"access_token": "nope"}), 401, "M_UNKNOWN_TOKEN")
        r = await client.post("/_matrix/client/v3/user/@bob:test.local/openid/request_token",
                              headers=alice.headers, json={})
        assert r.status_code == 403


async def test_profile_lookup_over_federation_can_be_refused(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=1,
                      allow_inbound_profile_lookup_federation_requests=False) as (
            fakes, server, client):
        await make_user(server, "alice")
        r = await _signed(client, fakes[0], "GET", "/_matrix/federation/v1/query/profile",
                          params={"user_id": "@alice:test.local"})
        _refused(r, 403, "M_FORBIDDEN")


async def test_remote_profile_and_alias_from_the_client_api(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=1) as (fakes, server, client):
        remote = fakes[0]
        bob = f"@bob:{remote.name}"

        async def profile(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            if bob not in httpx.URL(request.uri).params.get("user_id", ""):
                return 404, {"errcode": "M_NOT_FOUND", "error": "no such user"}
            return 200, {"displayname": "Bob", "avatar_url": None}

        async def directory(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 200, {"room_id": "!r:" + remote.name, "servers": ["other.example"]}

        remote.routes[("GET", "/_matrix/federation/v1/query/profile")] = profile
        remote.routes[("GET", "/_matrix/federation/v1/query/directory")] = directory
        alice = await make_user(server, "alice")
        r = await client.get(f"/_matrix/client/v3/profile/{bob}", headers=alice.headers)
        assert r.json() == {"displayname": "Bob"}
        r = await client.get(f"/_matrix/client/v3/profile/{bob}/displayname")
        assert r.json() == {"displayname": "Bob"}
        r = await client.get(f"/_matrix/client/v3/profile/{bob}/avatar_url")
        _refused(r, 404, "M_NOT_FOUND")
        r = await client.get(f"/_matrix/client/v3/profile/@carol:{remote.name}")
        _refused(r, 404, "M_NOT_FOUND")
        r = await client.get("/_matrix/client/v3/profile/@carol:127.0.0.1:1")
        _refused(r, 404, "M_NOT_FOUND")  # unreachable: no profile to show
        assert server.services is not None
        queries = server.services.federation.queries
        with pytest.raises(MatrixError) as caught:
            await queries.resolve_alias("#x:127.0.0.1:1")
        assert caught.value.status == 502
        assert await queries.resolve_alias(f"#hall:{remote.name}") == {
            "room_id": "!r:" + remote.name, "servers": ["other.example", remote.name]}
        with pytest.raises(MatrixError) as caught:
            await queries.resolve_alias("#hall:test.local")
        assert caught.value.status == 404


async def test_public_room_directory_over_federation(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=1,
                      allow_public_room_directory_over_federation=True) as (
            fakes, server, client):
        alice = await make_user(server, "alice")
        r = await client.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                              json={"visibility": "public", "name": "Town square"})
        room = r.json()["room_id"]
        r = await _signed(client, fakes[0], "GET", "/_matrix/federation/v1/publicRooms")
        assert [c["room_id"] for c in r.json()["chunk"]] == [room]
        r = await _signed(client, fakes[0], "POST", "/_matrix/federation/v1/publicRooms",
                          body={"filter": {"generic_search_term": "town"}, "limit": 5})
        assert [c["name"] for c in r.json()["chunk"]] == ["Town square"]
        r = await client.get("/_matrix/federation/v1/publicRooms")
        _refused(r, 401, "M_UNAUTHORIZED")

        # Our client reads the fake server's directory through us.
        async def directory(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 200, {"chunk": [{"room_id": f"!far:{fakes[0].name}", "num_joined_members": 3,
                                    "world_readable": False, "guest_can_join": False}],
                         "total_room_count_estimate": 1}

        fakes[0].routes[("POST", "/_matrix/federation/v1/publicRooms")] = directory
        r = await client.get("/_matrix/client/v3/publicRooms",
                             params={"server": fakes[0].name}, headers=alice.headers)
        assert r.json()["chunk"][0]["room_id"] == f"!far:{fakes[0].name}"


async def test_public_room_directory_over_federation_is_off_by_default(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=1) as (fakes, _server, client):
        r = await _signed(client, fakes[0], "GET", "/_matrix/federation/v1/publicRooms")
        _refused(r, 403, "M_FORBIDDEN")


async def test_remote_device_keys_from_the_client_api(tmp_path: Path) -> None:
    ran: list[str] = []
    async with _setup(tmp_path, ran, count=2) as (fakes, server, client):
        remote, silent = fakes[0], fakes[1]
        bob = f"@bob:{remote.name}"
        device = {"user_id": bob, "device_id": "BOBDEV", "algorithms": [],
                  "keys": {"ed25519:BOBDEV": "abc"}, "signatures": {}}

        async def query(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 200, {"device_keys": {bob: {"BOBDEV": device}}}

        async def claim(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 200, {"one_time_keys": {bob: {"BOBDEV": {"signed_curve25519:1": {}}}}}

        async def broken(_: FakeServer, request: FakeRequest) -> tuple[int, Any]:
            return 500, {"errcode": "M_UNKNOWN", "error": "down"}

        remote.routes[("POST", "/_matrix/federation/v1/user/keys/query")] = query
        remote.routes[("POST", "/_matrix/federation/v1/user/keys/claim")] = claim
        silent.routes[("POST", "/_matrix/federation/v1/user/keys/query")] = broken
        alice = await make_user(server, "alice")
        carol = f"@carol:{silent.name}"
        r = await client.post("/_matrix/client/v3/keys/query", headers=alice.headers,
                              json={"device_keys": {bob: [], carol: []}})
        assert r.json()["device_keys"][bob]["BOBDEV"]["keys"] == device["keys"]
        assert silent.name in r.json()["failures"]
        r = await client.post("/_matrix/client/v3/keys/claim", headers=alice.headers,
                              json={"one_time_keys": {bob: {"BOBDEV": "signed_curve25519"}}})
        assert r.json()["one_time_keys"] == {bob: {"BOBDEV": {"signed_curve25519:1": {}}}}
