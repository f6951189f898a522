"""``GET /voip/turnServer``: coturn's shared-secret credentials, static ones, guests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.services.turn import Turn, read_secret, turn_password
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import make_user

URIS = ["turn:turn.test.local:3478?transport=udp", "turns:turn.test.local:5349?transport=tcp"]
SECRET = "n0t-a-real-secret"


def coturn_accepts(secret: str, username: str, password: str, now: float) -> bool:
    """What coturn does with ``use-auth-secret``: the username's timestamp (before the
    ``:`` separator) must not have passed, and the password must be the base64 of
    HMAC-SHA1(static-auth-secret, username)."""
    stamp, sep, _ = username.partition(":")
    if not sep or not stamp.isdigit() or int(stamp) < now:
        return False
    expected = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected, password)


async def get_turn(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                   version: str = "v3") -> httpx.Response:
    return await client.get(f"/_matrix/client/{version}/voip/turnServer", headers=headers)


async def register_guest(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/_matrix/client/v3/register", params={"kind": "guest"}, json={})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


GUESTS_POSSIBLE: dict[str, Any] = {
    "allow_registration": True, "allow_guest_registration": True,
    "registration_token": "unused-token",
}


async def test_unconfigured_answers_empty_object(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        for version in ("v3", "r0"):
            r = await get_turn(client, alice.headers, version)
            assert r.status_code == 200 and r.json() == {}
    # a secret without URIs is still "no TURN server"
    async with running_server(make_config(tmp_path, turn_secret=SECRET)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice2")
        r = await get_turn(client, alice.headers)
        assert r.status_code == 200 and r.json() == {}


async def test_shared_secret_credentials_verify_like_coturn(tmp_path: Path) -> None:
    config = make_config(tmp_path, turn_uris=URIS, turn_secret=SECRET, turn_ttl=3600,
                         turn_username="ignored", turn_password="ignored")
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        before = int(time.time())
        for version in ("v3", "r0"):
            r = await get_turn(client, alice.headers, version)
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"username", "password", "ttl", "uris"}
            assert body["uris"] == URIS and body["ttl"] == 3600
            stamp, _, user_id = body["username"].partition(":")
            assert user_id == alice.user_id
            assert before + 3600 <= int(stamp) <= int(time.time()) + 3600
            assert coturn_accepts(SECRET, body["username"], body["password"], time.time())
            # coturn refuses it with another secret, another user, or once it expired
            assert not coturn_accepts("other", body["username"], body["password"], time.time())
            forged = f"{stamp}:@mallory:test.local"
            assert not coturn_accepts(SECRET, forged, body["password"], time.time())
            assert not coturn_accepts(SECRET, body["username"], body["password"],
                                      int(stamp) + 1)


def test_expiry_follows_the_clock() -> None:
    turn = Turn(uris=URIS, ttl=60, allow_guests=False, secret=SECRET, username="",
                password="", server_name="test.local", clock=lambda: 1_000_000.7)
    creds = turn.credentials("@a:test.local")
    assert creds["username"] == "1000060:@a:test.local"
    assert creds["password"] == turn_password(SECRET, "1000060:@a:test.local")
    assert coturn_accepts(SECRET, creds["username"], creds["password"], 1_000_059)
    assert not coturn_accepts(SECRET, creds["username"], creds["password"], 1_000_061)


async def test_secret_file_is_preferred(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn_secret"
    secret_file.write_text("from-the-file\n")  # as `echo secret > file` leaves it
    config = make_config(tmp_path, turn_uris=URIS, turn_secret=SECRET,
                         turn_secret_file=str(secret_file))
    assert read_secret(config) == "from-the-file"
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        body = (await get_turn(client, alice.headers)).json()
        assert coturn_accepts("from-the-file", body["username"], body["password"], time.time())


def test_unreadable_secret_file_falls_back(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, turn_uris=URIS, turn_secret=SECRET,
                         turn_secret_file=str(tmp_path / "missing"))
    assert read_secret(config) == SECRET
    assert "turn_secret_file" in caplog.text
    (tmp_path / "empty").write_text("\n")
    config = make_config(tmp_path, turn_uris=URIS, turn_secret=SECRET,
                         turn_secret_file=str(tmp_path / "empty"))
    assert read_secret(config) == SECRET


async def test_static_credentials(tmp_path: Path) -> None:
    config = make_config(tmp_path, turn_uris=URIS, turn_username="calls",
                         turn_password="hunter2", turn_ttl=600)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        r = await get_turn(client, alice.headers)
        assert r.json() == {"username": "calls", "password": "hunter2", "ttl": 600,
                            "uris": URIS}


async def test_guests_refused_by_default(tmp_path: Path) -> None:
    config = make_config(tmp_path, turn_uris=URIS, turn_secret=SECRET, **GUESTS_POSSIBLE)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        guest = await register_guest(client)
        r = await get_turn(client, guest)
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
        r = await get_turn(client)
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
        r = await get_turn(client, {"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"


async def test_guests_allowed(tmp_path: Path) -> None:
    config = make_config(tmp_path, turn_uris=URIS, turn_secret=SECRET,
                         turn_allow_guests=True, **GUESTS_POSSIBLE)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        guest = await register_guest(client)
        r = await get_turn(client, guest)
        assert r.status_code == 200, r.text
        body = r.json()
        whoami = await client.get("/_matrix/client/v3/account/whoami", headers=guest)
        assert body["username"].split(":", 1)[1] == whoami.json()["user_id"]
        assert coturn_accepts(SECRET, body["username"], body["password"], time.time())
        # no token at all: credentials for a throwaway user id of this server
        r = await get_turn(client)
        assert r.status_code == 200, r.text
        body = r.json()
        user_id = body["username"].split(":", 1)[1]
        assert user_id.startswith("@") and user_id.endswith(":test.local")
        assert coturn_accepts(SECRET, body["username"], body["password"], time.time())
        # a bad token is still refused
        r = await get_turn(client, {"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"
