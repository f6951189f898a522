"""Login, logout, whoami, tokens, password changes, deactivation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, well_known={"client": "https://matrix.test.local"})
    async with running_server(config) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice", "wonderland")


def auth(user: LoggedIn | str) -> dict[str, str]:
    token = user if isinstance(user, str) else user.access_token
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post(f"{V3}/login", json={"type": "m.login.password", **body})


async def test_login_flows(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{V3}/login")
    types = [flow["type"] for flow in r.json()["flows"]]
    assert "m.login.password" in types and "m.login.token" in types


async def test_password_login_variants(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    for ident in ({"identifier": {"type": "m.id.user", "user": "alice"}},
                  {"identifier": {"type": "m.id.user", "user": "@alice:test.local"}},
                  {"identifier": {"type": "m.id.user", "user": "ALICE"}},
                  {"user": "alice"}):
        r = await login(client, password="wonderland", **ident)
        assert r.status_code == 200, (ident, r.text)
        body = r.json()
        assert body["user_id"] == "@alice:test.local"
        assert body["well_known"] == {"m.homeserver": {"base_url": "https://matrix.test.local"}}
        who = await client.get(f"{V3}/account/whoami", headers=auth(body["access_token"]))
        assert who.json()["device_id"] == body["device_id"]


async def test_login_errors(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await login(client, user="alice", password="wrong")
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await login(client, user="nobody", password="wrong")
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await login(client, user="@alice:elsewhere.test", password="wonderland")
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = await login(client, password="wonderland")
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")
    r = await login(client, user="alice", password=1234)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")
    r = await login(client, identifier={"type": "m.id.thirdparty", "medium": "email",
                                        "address": "a@b.c"}, password="x")
    assert r.status_code == 400
    r = await client.post(f"{V3}/login", json={"type": "m.login.fancy"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_UNKNOWN")


async def test_reusing_a_device_id_revokes_its_old_token(client: httpx.AsyncClient,
                                                         alice: LoggedIn) -> None:
    r = await login(client, user="alice", password="wonderland", device_id=alice.device_id)
    assert r.json()["device_id"] == alice.device_id
    old = await client.get(f"{V3}/account/whoami", headers=auth(alice))
    assert (old.status_code, old.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_missing_and_bad_tokens(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await client.get(f"{V3}/account/whoami")
    assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    r = await client.get(f"{V3}/account/whoami", headers=auth("cwt_nonsense"))
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert r.json()["soft_logout"] is False
    r = await client.get(f"{V3}/account/whoami", headers={"Authorization": "Basic abc"})
    assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    # The deprecated query-string token still works.
    r = await client.get(f"{V3}/account/whoami", params={"access_token": alice.access_token})
    assert r.json()["user_id"] == alice.user_id


async def test_logout_and_logout_all(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    second = (await login(client, user="alice", password="wonderland")).json()["access_token"]
    third = (await login(client, user="alice", password="wonderland")).json()["access_token"]
    assert (await client.post(f"{V3}/logout", headers=auth(second))).status_code == 200
    assert (await client.get(f"{V3}/account/whoami", headers=auth(second))).status_code == 401
    assert (await client.get(f"{V3}/account/whoami", headers=auth(third))).status_code == 200
    assert (await client.post(f"{V3}/logout/all", headers=auth(third))).status_code == 200
    for token in (alice.access_token, third):
        r = await client.get(f"{V3}/account/whoami", headers=auth(token))
        assert r.status_code == 401


async def uia(client: httpx.AsyncClient, url: str, user: LoggedIn, body: dict[str, object],
              password: str | None = None, method: str = "POST") -> httpx.Response:
    first = await client.request(method, url, json=body, headers=auth(user))
    if first.status_code != 401 or "session" not in first.json():
        return first
    assert first.json()["flows"] == [{"stages": ["m.login.password"]}]
    stage = {"type": "m.login.password", "session": first.json()["session"],
             "identifier": {"type": "m.id.user", "user": user.user_id},
             "password": password or user.password}
    return await client.request(method, url, json={**body, "auth": stage}, headers=auth(user))


async def test_change_password(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    other = (await login(client, user="alice", password="wonderland")).json()["access_token"]
    url = f"{V3}/account/password"
    r = await uia(client, url, alice, {"new_password": "looking-glass"}, password="wrong")
    assert (r.status_code, r.json()["errcode"]) == (401, "M_FORBIDDEN")
    r = await uia(client, url, alice, {"new_password": 12})
    assert r.status_code == 400
    r = await uia(client, url, alice, {"new_password": "looking-glass"})
    assert r.status_code == 200, r.text
    # logout_devices defaults to true: other sessions end, this one stays.
    assert (await client.get(f"{V3}/account/whoami", headers=auth(other))).status_code == 401
    assert (await client.get(f"{V3}/account/whoami", headers=auth(alice))).status_code == 200
    assert (await login(client, user="alice", password="wonderland")).status_code == 403
    assert (await login(client, user="alice", password="looking-glass")).status_code == 200


async def test_uia_session_belongs_to_its_user(client: httpx.AsyncClient, alice: LoggedIn,
                                               server: Server) -> None:
    bob = await make_user(server, "bob", "builder")
    first = await client.post(f"{V3}/account/password", json={"new_password": "x"},
                              headers=auth(alice))
    stage = {"type": "m.login.password", "session": first.json()["session"],
             "user": "bob", "password": "builder"}
    r = await client.post(f"{V3}/account/password", json={"new_password": "x", "auth": stage},
                          headers=auth(bob))
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")


async def test_deactivation(client: httpx.AsyncClient, alice: LoggedIn, server: Server) -> None:
    r = await client.put(f"{V3}/profile/{alice.user_id}/displayname",
                         json={"displayname": "Alice"}, headers=auth(alice))
    assert r.status_code == 200
    r = await client.post(f"{V3}/createRoom", json={}, headers=auth(alice))
    room = r.json()["room_id"]
    r = await uia(client, f"{V3}/account/deactivate", alice, {})
    assert r.json() == {"id_server_unbind_result": "no-support"}
    assert server.services is not None
    assert server.services.rooms.membership.membership(room, alice.user_id) == "leave"
    r = await client.get(f"{V3}/account/whoami", headers=auth(alice))
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    r = await login(client, user="alice", password="wonderland")
    assert (r.status_code, r.json()["errcode"]) == (403, "M_USER_DEACTIVATED")
    assert server.services is not None
    assert server.services.devices.for_user(alice.user_id) == []
    # The profile is cleared and the name stays taken.
    r = await client.get(f"{V3}/profile/{alice.user_id}")
    assert r.status_code == 404
    r = await client.get(f"{V3}/register/available", params={"username": "alice"})
    assert r.json()["errcode"] == "M_USER_IN_USE"


async def test_login_token(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await uia(client, "/_matrix/client/v1/login/get_token", alice, {})
    assert r.status_code == 200, r.text
    token = r.json()["login_token"]
    assert r.json()["expires_in_ms"] > 0
    r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": token})
    assert r.json()["user_id"] == alice.user_id
    r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": token})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")


async def test_malformed_login_leaves_no_device_and_keeps_the_token(
        client: httpx.AsyncClient, alice: LoggedIn, server: Server) -> None:
    # Found by tests/test_schemathesis.py: fields were checked after the device was made
    # (and after a login token was used up), so a bad request left a tokenless device.
    assert server.services is not None
    devices = server.services.devices
    before = [d["device_id"] for d in devices.for_user(alice.user_id)]
    for bad in ({"refresh_token": "yes"}, {"device_id": 5},
                {"initial_device_display_name": ["x"]}):
        r = await login(client, user="alice", password="wonderland", **bad)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), bad
    assert [d["device_id"] for d in devices.for_user(alice.user_id)] == before
    r = await uia(client, "/_matrix/client/v1/login/get_token", alice, {})
    token = r.json()["login_token"]
    r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": token,
                                               "refresh_token": 1})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")
    r = await client.post(f"{V3}/login", json={"type": "m.login.token", "token": token})
    assert r.status_code == 200, r.text


async def test_wrongly_typed_credentials_are_bad_json(client: httpx.AsyncClient,
                                                      alice: LoggedIn) -> None:
    # Present but of the wrong type is M_BAD_JSON; M_MISSING_PARAM only when absent.
    for body in ({"type": "m.login.password", "password": "x",
                  "identifier": {"type": "m.id.user", "user": 5}},
                 {"type": "m.login.password", "password": "x", "user": ["alice"]},
                 {"type": "m.login.token", "token": 5}):
        r = await client.post(f"{V3}/login", json=body)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), body
    r = await client.post(f"{V3}/login", json={"type": "m.login.token"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")
    r = await client.post(f"{V3}/refresh", json={"refresh_token": 5})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")
    r = await client.post(f"{V3}/refresh", json={})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")


async def test_legacy_r0_paths(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await client.get("/_matrix/client/r0/account/whoami", headers=auth(alice))
    assert r.json()["user_id"] == alice.user_id
