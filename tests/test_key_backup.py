"""Server-side room-key backups: versions, keys, etag/count, and the replacement rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.server import Server
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"
ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.local"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0], timeout=60) as client:
        yield client


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


def session(index: int = 0, forwarded: int = 0, verified: bool = False,
            tag: str = "x") -> dict[str, Any]:
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"}}


async def call(client: httpx.AsyncClient, user: LoggedIn, method: str, path: str,
               body: Any = None, status: int = 200, **params: str) -> dict[str, Any]:
    r = await client.request(method, f"{V3}{path}", json=body, params=params,
                             headers=user.headers)
    assert r.status_code == status, r.text
    return dict(r.json())


async def new_version(client: httpx.AsyncClient, user: LoggedIn) -> str:
    body = await call(client, user, "POST", "/room_keys/version",
                      {"algorithm": ALGORITHM, "auth_data": {"public_key": "abc"}})
    return str(body["version"])


async def put(client: httpx.AsyncClient, user: LoggedIn, version: str, session_id: str,
              data: dict[str, Any]) -> dict[str, Any]:
    return await call(client, user, "PUT", f"/room_keys/keys/{ROOM}/{session_id}", data,
                      version=version)


async def stored(client: httpx.AsyncClient, user: LoggedIn, version: str,
                 session_id: str) -> dict[str, Any]:
    return await call(client, user, "GET", f"/room_keys/keys/{ROOM}/{session_id}",
                      version=version)


# --- versions ---------------------------------------------------------------------------------


async def test_version_lifecycle(client: httpx.AsyncClient, alice: LoggedIn,
                                 server: Server) -> None:
    r = await call(client, alice, "GET", "/room_keys/version", status=404)
    assert r["errcode"] == "M_NOT_FOUND"
    version = await new_version(client, alice)
    assert version == "1"
    info = await call(client, alice, "GET", "/room_keys/version")
    assert info == {"algorithm": ALGORITHM, "auth_data": {"public_key": "abc"}, "count": 0,
                    "etag": info["etag"], "version": "1"}
    assert isinstance(info["etag"], str)
    assert await call(client, alice, "GET", "/room_keys/version/1") == info
    # Only auth_data may change.
    await call(client, alice, "PUT", "/room_keys/version/1",
               {"algorithm": ALGORITHM, "auth_data": {"public_key": "def"}, "version": "1"})
    assert (await call(client, alice, "GET", "/room_keys/version/1"))["auth_data"] == {
        "public_key": "def"}
    for body, status, errcode in (
            ({"algorithm": ALGORITHM, "auth_data": {}, "version": "2"}, 400, "M_INVALID_PARAM"),
            ({"algorithm": "org.example.other", "auth_data": {}}, 400, "M_INVALID_PARAM"),
            ({"algorithm": ALGORITHM, "auth_data": "nope"}, 400, "M_BAD_JSON")):
        r = await call(client, alice, "PUT", "/room_keys/version/1", body, status=status)
        assert r["errcode"] == errcode
    r = await call(client, alice, "PUT", "/room_keys/version/7",
                   {"algorithm": ALGORITHM, "auth_data": {}}, status=404)
    assert r["errcode"] == "M_NOT_FOUND"
    # A backup no client could read is refused at creation.
    r = await call(client, alice, "POST", "/room_keys/version",
                   {"algorithm": "org.example.other", "auth_data": {}}, status=400)
    assert r["errcode"] == "M_INVALID_PARAM"
    for bad in ("7", "abc", "-1"):
        await call(client, alice, "GET", f"/room_keys/version/{bad}", status=404)
    r = await call(client, alice, "POST", "/room_keys/version", {"auth_data": {}}, status=400)
    assert r["errcode"] == "M_BAD_JSON"

    # Other users see nothing of it.
    bob = await make_user(server, "bob")
    await call(client, bob, "GET", "/room_keys/version", status=404)
    await call(client, bob, "GET", "/room_keys/version/1", status=404)

    # Deleting: gone, deleting again is fine, a version never made is 404.
    await put(client, alice, "1", "s1", session())
    assert await call(client, alice, "DELETE", "/room_keys/version/1") == {}
    await call(client, alice, "GET", "/room_keys/version", status=404)
    await call(client, alice, "GET", "/room_keys/keys", status=404, version="1")
    assert await call(client, alice, "DELETE", "/room_keys/version/1") == {}
    await call(client, alice, "DELETE", "/room_keys/version/5", status=404)
    assert await new_version(client, alice) == "2"  # numbers are never reused
    assert (await call(client, alice, "GET", "/room_keys/version"))["count"] == 0


# --- keys -------------------------------------------------------------------------------------


async def test_keys_put_get_delete_with_etag_and_count(client: httpx.AsyncClient,
                                                       alice: LoggedIn) -> None:
    version = await new_version(client, alice)
    etag0 = (await call(client, alice, "GET", "/room_keys/version"))["etag"]
    one = await put(client, alice, version, "s1", session(tag="one"))
    assert one["count"] == 1 and one["etag"] != etag0
    room = await call(client, alice, "PUT", f"/room_keys/keys/{ROOM}",
                      {"sessions": {"s2": session(tag="two"), "s3": session(tag="three")}},
                      version=version)
    assert room["count"] == 3 and room["etag"] != one["etag"]
    other_room = "!other:test.local"
    every = await call(client, alice, "PUT", "/room_keys/keys", {"rooms": {
        other_room: {"sessions": {"s4": session(tag="four")}}}}, version=version)
    assert every["count"] == 4
    info = await call(client, alice, "GET", "/room_keys/version")
    assert (info["count"], info["etag"]) == (4, every["etag"])

    assert await stored(client, alice, version, "s2") == session(tag="two")
    by_room = await call(client, alice, "GET", f"/room_keys/keys/{ROOM}", version=version)
    assert sorted(by_room["sessions"]) == ["s1", "s2", "s3"]
    everything = await call(client, alice, "GET", "/room_keys/keys", version=version)
    assert sorted(everything["rooms"]) == sorted([ROOM, other_room])
    assert await call(client, alice, "GET", "/room_keys/keys/!empty:test.local",
                      version=version) == {"sessions": {}}
    r = await call(client, alice, "GET", f"/room_keys/keys/{ROOM}/nope", status=404,
                   version=version)
    assert r["errcode"] == "M_NOT_FOUND"
    r = await call(client, alice, "GET", "/room_keys/keys", status=400)
    assert r["errcode"] == "M_MISSING_PARAM"

    gone = await call(client, alice, "DELETE", f"/room_keys/keys/{ROOM}/s1", version=version)
    assert gone["count"] == 3 and gone["etag"] != every["etag"]
    same = await call(client, alice, "DELETE", f"/room_keys/keys/{ROOM}/s1", version=version)
    assert same == gone  # nothing changed, nor did the etag
    room_gone = await call(client, alice, "DELETE", f"/room_keys/keys/{ROOM}", version=version)
    assert room_gone["count"] == 1
    all_gone = await call(client, alice, "DELETE", "/room_keys/keys", version=version)
    assert all_gone["count"] == 0
    assert await call(client, alice, "GET", "/room_keys/keys", version=version) == {"rooms": {}}


async def test_writes_go_to_the_current_version_only(client: httpx.AsyncClient,
                                                     alice: LoggedIn) -> None:
    r = await call(client, alice, "PUT", f"/room_keys/keys/{ROOM}/s1", session(), status=404,
                   version="1")
    assert r["errcode"] == "M_NOT_FOUND"
    old = await new_version(client, alice)
    await put(client, alice, old, "s1", session(tag="old"))
    current = await new_version(client, alice)
    r = await call(client, alice, "PUT", f"/room_keys/keys/{ROOM}/s2", session(), status=403,
                   version=old)
    assert r == {"errcode": "M_WRONG_ROOM_KEYS_VERSION", "error": r["error"],
                 "current_version": current}
    r = await call(client, alice, "PUT", f"/room_keys/keys/{ROOM}/s2", session(), status=403,
                   version="99")
    assert r["current_version"] == current
    r = await call(client, alice, "PUT", f"/room_keys/keys/{ROOM}/s2", session(), status=400)
    assert r["errcode"] == "M_MISSING_PARAM"
    # The old version can still be read.
    assert await stored(client, alice, old, "s1") == session(tag="old")
    await call(client, alice, "GET", f"/room_keys/keys/{ROOM}/s1", status=404, version=current)


@pytest.mark.parametrize("bad", [
    {"first_message_index": -1},
    {"first_message_index": "0"},
    {"forwarded_count": True},
    {"is_verified": 1},
    {"session_data": "text"},
])
async def test_malformed_sessions_store_nothing(client: httpx.AsyncClient, alice: LoggedIn,
                                                bad: dict[str, Any]) -> None:
    version = await new_version(client, alice)
    good, broken = session(tag="good"), {**session(), **bad}
    r = await call(client, alice, "PUT", f"/room_keys/keys/{ROOM}",
                   {"sessions": {"a": good, "b": broken}}, status=400, version=version)
    assert r["errcode"] == "M_BAD_JSON"
    r = await call(client, alice, "PUT", "/room_keys/keys", {"rooms": {ROOM: "x"}}, status=400,
                   version=version)
    assert r["errcode"] == "M_BAD_JSON"
    assert (await call(client, alice, "GET", "/room_keys/version"))["count"] == 0
    assert await call(client, alice, "GET", "/room_keys/keys", version=version) == {"rooms": {}}


# --- the replacement rules: one test per rule -------------------------------------------------


async def replaced(client: httpx.AsyncClient, user: LoggedIn, first: dict[str, Any],
                   second: dict[str, Any]) -> bool:
    """Upload ``first`` then ``second`` for one session; True if ``second`` was kept."""
    version = await new_version(client, user)
    before = await put(client, user, version, "s", {**first, "session_data": {"c": "first"}})
    after = await put(client, user, version, "s", {**second, "session_data": {"c": "second"}})
    assert after["count"] == 1
    kept = (await stored(client, user, version, "s"))["session_data"]["c"]
    assert (after["etag"] != before["etag"]) == (kept == "second")
    return bool(kept == "second")


async def test_rule_verified_beats_unverified(client: httpx.AsyncClient,
                                              alice: LoggedIn) -> None:
    # Verification wins even against a better index and forwarded count.
    assert await replaced(client, alice, session(index=0, verified=False),
                          session(index=10, forwarded=3, verified=True))
    assert not await replaced(client, alice, session(index=10, forwarded=3, verified=True),
                              session(index=0, verified=False))


async def test_rule_lower_first_message_index_wins(client: httpx.AsyncClient,
                                                   alice: LoggedIn) -> None:
    # Same verification: the lower index wins even with a higher forwarded count.
    assert await replaced(client, alice, session(index=5), session(index=2, forwarded=4))
    assert not await replaced(client, alice, session(index=2, forwarded=4), session(index=5))
    assert await replaced(client, alice, session(index=5, verified=True),
                          session(index=0, verified=True))


async def test_rule_lower_forwarded_count_wins(client: httpx.AsyncClient,
                                               alice: LoggedIn) -> None:
    assert await replaced(client, alice, session(index=3, forwarded=2),
                          session(index=3, forwarded=1))
    assert not await replaced(client, alice, session(index=3, forwarded=1),
                              session(index=3, forwarded=2))


async def test_rule_a_full_tie_keeps_the_stored_key(client: httpx.AsyncClient,
                                                    alice: LoggedIn) -> None:
    assert not await replaced(client, alice, session(index=1, forwarded=1, verified=True),
                              session(index=1, forwarded=1, verified=True))
