"""POST /register and friends: UIA flows, tokens, username rules, guests, refresh tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server

V3 = "/_matrix/client/v3"
TOKEN = "letmein-1234"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, allow_registration=True, registration_token=TOKEN,
                         allow_guest_registration=True, forbidden_usernames=["^admin", "b[a4]d"])
    async with running_server(config) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


async def register(client: httpx.AsyncClient, token: str = TOKEN, **body: Any) -> httpx.Response:
    """The two-step registration a client does: get a session, then complete the stage."""
    body.setdefault("password", "correct horse")
    first = await client.post(f"{V3}/register", json=body)
    if first.status_code != 401:
        return first
    session = first.json()["session"]
    auth = {"type": "m.login.registration_token", "token": token, "session": session}
    second = await client.post(f"{V3}/register", json={**body, "auth": auth})
    if second.status_code != 401 or "errcode" in second.json():
        return second
    assert second.json()["completed"] == ["m.login.registration_token"]
    dummy = {"type": "m.login.dummy", "session": session}
    return await client.post(f"{V3}/register", json={**body, "auth": dummy})


async def test_flows_and_successful_registration(client: httpx.AsyncClient,
                                                 server: Server) -> None:
    r = await client.post(f"{V3}/register", json={"username": "alice", "password": "pw"})
    assert r.status_code == 401
    body = r.json()
    assert body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
    assert body["completed"] == [] and body["session"]
    r = await register(client, username="alice", initial_device_display_name="Phone")
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["user_id"] == "@alice:test.local"
    assert reply["access_token"] and reply["device_id"]
    r = await client.get(f"{V3}/account/whoami",
                         headers={"Authorization": f"Bearer {reply['access_token']}"})
    assert r.json() == {"user_id": "@alice:test.local", "device_id": reply["device_id"],
                        "is_guest": False}
    assert server.services is not None
    # The first account on the server is its admin.
    assert server.services.users.is_admin("@alice:test.local")
    r = await register(client, username="bob")
    assert not server.services.users.is_admin("@bob:test.local")


async def test_bad_registration_token_keeps_the_session(client: httpx.AsyncClient) -> None:
    first = await client.post(f"{V3}/register", json={"username": "carol", "password": "pw"})
    session = first.json()["session"]
    r = await client.post(f"{V3}/register", json={
        "username": "carol", "password": "pw",
        "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}})
    assert r.status_code == 401
    assert r.json()["errcode"] == "M_FORBIDDEN" and r.json()["session"] == session
    r = await client.post(f"{V3}/register", json={
        "username": "carol", "password": "pw",
        "auth": {"type": "m.login.password", "session": session}})
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNRECOGNIZED")
    # The dummy stage alone completes no flow.
    r = await client.post(f"{V3}/register", json={
        "username": "carol", "password": "pw",
        "auth": {"type": "m.login.dummy", "session": session}})
    assert r.status_code == 401 and r.json()["completed"] == ["m.login.dummy"]
    r = await client.post(f"{V3}/register", json={
        "username": "carol", "password": "pw",
        "auth": {"type": "m.login.registration_token", "token": TOKEN, "session": "nope"}})
    assert r.status_code == 400


@pytest.mark.parametrize(("username", "status", "errcode"), [
    ("has space", 400, "M_INVALID_USERNAME"),
    ("émile", 400, "M_INVALID_USERNAME"),
    ("x" * 250, 400, "M_INVALID_USERNAME"),
    ("administrator", 403, "M_FORBIDDEN"),
    ("theb4dguy", 403, "M_FORBIDDEN"),
])
async def test_username_rules(client: httpx.AsyncClient, username: str, status: int,
                              errcode: str) -> None:
    r = await register(client, username=username)
    assert (r.status_code, r.json()["errcode"]) == (status, errcode)
    r = await client.get(f"{V3}/register/available", params={"username": username})
    assert (r.status_code, r.json()["errcode"]) == (status, errcode)


async def test_usernames_are_lowercased_and_taken_names_refused(
        client: httpx.AsyncClient) -> None:
    r = await register(client, username="Dave")
    assert r.json()["user_id"] == "@dave:test.local"
    r = await client.get(f"{V3}/register/available", params={"username": "dave"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")
    r = await register(client, username="dave")
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")
    r = await client.get(f"{V3}/register/available", params={"username": "erin"})
    assert r.json() == {"available": True}
    r = await client.get(f"{V3}/register/available")
    assert r.json()["errcode"] == "M_MISSING_PARAM"


async def test_wrongly_typed_fields(client: httpx.AsyncClient) -> None:
    for body in ({"username": 5}, {"password": ["x"]}, {"password": "p" * 600},
                 {"inhibit_login": "yes"}, {"auth": "token"}):
        r = await client.post(f"{V3}/register", json={"username": "frank", **body})
        assert r.status_code == 400, body
        assert r.json()["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_INVALID_USERNAME")


async def test_inhibit_login_device_id_and_refresh_tokens(client: httpx.AsyncClient) -> None:
    r = await register(client, username="gina", inhibit_login=True)
    assert r.json() == {"user_id": "@gina:test.local", "home_server": "test.local"}
    r = await register(client, username="hank", device_id="MYDEVICE", refresh_token=True)
    reply = r.json()
    assert reply["device_id"] == "MYDEVICE"
    assert reply["refresh_token"] and reply["expires_in_ms"] > 0
    r = await client.post(f"{V3}/refresh", json={"refresh_token": reply["refresh_token"]})
    assert r.status_code == 200
    fresh = r.json()
    assert fresh["access_token"] != reply["access_token"]
    # The old pair stops working; the new access token works.
    r = await client.post(f"{V3}/refresh", json={"refresh_token": reply["refresh_token"]})
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    r = await client.get(f"{V3}/account/whoami",
                         headers={"Authorization": f"Bearer {reply['access_token']}"})
    assert r.status_code == 401
    r = await client.get(f"{V3}/account/whoami",
                         headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert r.json()["device_id"] == "MYDEVICE"


async def test_guest_registration(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{V3}/register?kind=guest", json={})
    assert r.status_code == 200
    token = r.json()["access_token"]
    r = await client.get(f"{V3}/account/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["is_guest"] is True
    r = await client.post(f"{V3}/register?kind=robot", json={})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")


async def test_malformed_guest_registration_creates_no_account(client: httpx.AsyncClient,
                                                               server: Server) -> None:
    # Found by tests/test_schemathesis.py: guests' fields were checked only after the
    # account was created, so every malformed request left a guest account behind.
    assert server.services is not None
    users = server.services.users
    before = users.local_user_ids()
    for body in ({"inhibit_login": "yes"}, {"device_id": 5},
                 {"initial_device_display_name": {}}, {"refresh_token": "no"}):
        r = await client.post(f"{V3}/register?kind=guest", json=body)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), body
    assert users.local_user_ids() == before


async def test_token_validity(client: httpx.AsyncClient) -> None:
    url = "/_matrix/client/v1/register/m.login.registration_token/validity"
    assert (await client.get(url, params={"token": TOKEN})).json() == {"valid": True}
    assert (await client.get(url, params={"token": "nope"})).json() == {"valid": False}
    r = await client.get(url)
    assert r.json()["errcode"] == "M_MISSING_PARAM"


async def test_display_name_suffix(client: httpx.AsyncClient, server: Server) -> None:
    r = await register(client, username="ivy")
    assert r.status_code == 200
    assert server.services is not None
    r = await client.get(f"{V3}/profile/@ivy:test.local/displayname")
    assert r.json() == {"displayname": "ivy 🏳️\u200d⚧️"}


async def test_registration_closed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        assert server.services is not None
        first_run = server.services.first_run
        token = first_run.prepare()
        assert token is not None
        # Closed registration still offers the token stage for the first-run token only.
        r = await register(client, token="some-other-token", username="kate")
        assert (r.status_code, r.json()["errcode"]) == (401, "M_FORBIDDEN")
        r = await register(client, token=token, username="kate")
        assert r.status_code == 200
        assert server.services.users.is_admin("@kate:test.local")
        # The token worked once; now registration is simply closed.
        r = await register(client, token=token, username="liam")
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
        r = await client.post(f"{V3}/register?kind=guest", json={})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_open_registration_offers_dummy(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, allow_registration=True,
        yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse=True)
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        r = await client.post(f"{V3}/register", json={"username": "mia", "password": "pw"})
        assert r.json()["flows"] == [{"stages": ["m.login.dummy"]}]
        r = await client.post(f"{V3}/register", json={
            "username": "mia", "password": "pw",
            "auth": {"type": "m.login.dummy", "session": r.json()["session"]}})
        assert r.status_code == 200


async def test_auto_join_rooms(tmp_path: Path) -> None:
    from tests.support.users import make_user

    config = make_config(tmp_path, allow_registration=True, registration_token=TOKEN,
                         auto_join_rooms=["#lobby:test.local"])
    async with running_server(config) as server, httpx.AsyncClient(
            base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        r = await client.post(f"{V3}/createRoom", headers=alice.headers,
                              json={"preset": "public_chat", "room_alias_name": "lobby"})
        room = r.json()["room_id"]
        reply = (await register(client, username="newcomer")).json()
        r = await client.get(f"{V3}/joined_rooms",
                             headers={"Authorization": f"Bearer {reply['access_token']}"})
        assert r.json() == {"joined_rooms": [room]}
