"""Profiles: the service over a real store, then /profile over a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conduwuit.errors import MatrixError
from conduwuit.server import Server
from conduwuit.services.profile import MAX_PROFILE_BYTES, Profile
from conduwuit.services.users import Users
from conduwuit.store import Store
from tests.support.config import make_config
from tests.support.inprocess import base_url, running_server
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
ALICE = "@alice:test.local"


# ------------------------------------------------------------------ service


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


@pytest.fixture
def profile(store: Store) -> Profile:
    users = Users(store, "test.local")
    users.create(ALICE, "")
    return Profile(store, users, "test.local")


async def test_service_displayname_avatar_and_fields(profile: Profile) -> None:
    assert profile.fields(ALICE) == {} and profile.displayname(ALICE) is None
    await profile.set_displayname(ALICE, "Alice")
    await profile.set_avatar_url(ALICE, "mxc://test.local/abc", "LEHV6nWB2yk8")
    await profile.set_field(ALICE, "m.tz", {"m.tz": "Europe/Paris"})
    await profile.set_field(ALICE, "org.example.null", {"org.example.null": None})
    assert profile.fields(ALICE) == {"displayname": "Alice", "avatar_url": "mxc://test.local/abc",
                                     "m.tz": "Europe/Paris", "org.example.null": None}
    assert profile.blurhash(ALICE) == "LEHV6nWB2yk8"
    assert profile.lookup(ALICE)["xyz.amorgan.blurhash"] == "LEHV6nWB2yk8"
    # a stored null is a value, not an absence
    assert profile.has_field(ALICE, "org.example.null")
    assert profile.lookup_field(ALICE, "org.example.null") == {"org.example.null": None}
    # "" clears the display name; clearing the avatar drops its blurhash
    await profile.set_displayname(ALICE, "")
    await profile.set_avatar_url(ALICE, None)
    assert profile.displayname(ALICE) is None and profile.blurhash(ALICE) is None


async def test_service_clear_removes_everything_and_calls_hooks(profile: Profile) -> None:
    seen: list[tuple[str, str, Any]] = []

    async def hook(user_id: str, key: str, value: Any) -> None:
        seen.append((user_id, key, value))

    profile.on_profile_change.append(hook)
    await profile.set_displayname(ALICE, "Alice")
    await profile.set_avatar_url(ALICE, "mxc://test.local/abc", "hash")
    await profile.set_field(ALICE, "org.example.a", {"org.example.a": 1})
    await profile.clear(ALICE)
    assert profile.fields(ALICE) == {} and profile.blurhash(ALICE) is None
    assert seen[:3] == [(ALICE, "displayname", "Alice"),
                        (ALICE, "avatar_url", "mxc://test.local/abc"),
                        (ALICE, "org.example.a", 1)]
    assert {(key, value) for _, key, value in seen[3:]} == {
        ("displayname", None), ("avatar_url", None), ("org.example.a", None)}
    # clearing again changes nothing and calls no hook
    seen.clear()
    await profile.clear(ALICE)
    await profile.set_displayname(ALICE, None)
    assert seen == []


async def test_service_profile_size_limit(profile: Profile) -> None:
    # exactly at the limit: {"org.example.big":"aaa…"}
    big = "a" * (MAX_PROFILE_BYTES - len(orjson.dumps({"org.example.big": ""})))
    await profile.set_field(ALICE, "org.example.big", {"org.example.big": big})
    with pytest.raises(MatrixError) as info:
        await profile.set_displayname(ALICE, "A")
    assert info.value.errcode == "M_PROFILE_TOO_LARGE"
    # replacing the big field by a smaller one is measured without the old value
    await profile.set_field(ALICE, "org.example.big", {"org.example.big": "small"})
    await profile.set_displayname(ALICE, "A")


async def test_service_lookup_errors(profile: Profile) -> None:
    for user_id, errcode in (("@nobody:test.local", "M_NOT_FOUND"),
                             ("@alice:elsewhere.example", "M_NOT_FOUND"),
                             ("alice", "M_INVALID_PARAM")):
        with pytest.raises(MatrixError) as info:
            profile.lookup(user_id)
        assert info.value.errcode == errcode, user_id
    profile.users.deactivate(ALICE)
    with pytest.raises(MatrixError):
        profile.lookup(ALICE)


# --------------------------------------------------------------------- HTTP


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, allow_registration=True, allow_guest_registration=True,
                         registration_token="unused-token")
    async with running_server(config) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


@pytest.fixture
async def bob(server: Server) -> LoggedIn:
    return await make_user(server, "bob")


def url(user_id: str, key: str | None = None, prefix: str = V3) -> str:
    return f"{prefix}/profile/{user_id}" + (f"/{key}" if key else "")


async def test_set_and_get_displayname_and_avatar(client: httpx.AsyncClient,
                                                  alice: LoggedIn) -> None:
    r = await client.get(url(ALICE))
    assert r.status_code == 200 and r.json() == {}
    r = await client.put(url(ALICE, "displayname"), json={"displayname": "Alice"},
                         headers=alice.headers)
    assert r.status_code == 200 and r.json() == {}
    r = await client.put(url(ALICE, "avatar_url", R0), json={"avatar_url": "mxc://test.local/x1"},
                         headers=alice.headers)
    assert r.status_code == 200, r.text
    assert (await client.get(url(ALICE, "displayname"))).json() == {"displayname": "Alice"}
    r = await client.get(url(ALICE, "avatar_url", R0))
    assert r.json() == {"avatar_url": "mxc://test.local/x1"}
    r = await client.get(url(ALICE, prefix=R0))
    assert r.json() == {"displayname": "Alice", "avatar_url": "mxc://test.local/x1"}
    # null and "" clear the historical fields
    await client.put(url(ALICE, "displayname"), json={"displayname": None}, headers=alice.headers)
    await client.put(url(ALICE, "avatar_url"), json={"avatar_url": ""}, headers=alice.headers)
    r = await client.get(url(ALICE, "displayname"))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    assert (await client.get(url(ALICE))).json() == {}


async def test_custom_fields(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    for key, value in (("m.tz", "Europe/London"), ("org.example.job", {"title": "Engineer"}),
                       ("org.example.empty", None)):
        r = await client.put(url(ALICE, key), json={key: value}, headers=alice.headers)
        assert r.status_code == 200, r.text
        assert (await client.get(url(ALICE, key))).json() == {key: value}
    assert (await client.get(url(ALICE))).json() == {
        "m.tz": "Europe/London", "org.example.job": {"title": "Engineer"},
        "org.example.empty": None}
    for _ in range(2):  # deleting an absent field succeeds too
        r = await client.delete(url(ALICE, "org.example.job"), headers=alice.headers)
        assert r.status_code == 200 and r.json() == {}
    r = await client.get(url(ALICE, "org.example.job"))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    # DELETE works for the historical fields as well
    await client.put(url(ALICE, "displayname"), json={"displayname": "A"}, headers=alice.headers)
    await client.delete(url(ALICE, "displayname"), headers=alice.headers)
    assert (await client.get(url(ALICE, "displayname"))).status_code == 404


@pytest.mark.parametrize(
    ("key", "body", "errcode"),
    [
        ("displayname", {"displayname": 5}, "M_INVALID_PARAM"),
        ("displayname", {"displayname": "x" * 257}, "M_INVALID_PARAM"),
        ("avatar_url", {"avatar_url": "https://example.com/a.png"}, "M_INVALID_PARAM"),
        ("avatar_url", {"avatar_url": ["mxc://a/b"]}, "M_INVALID_PARAM"),
        ("avatar_url", {"avatar_url": "mxc://a/b", "blurhash": 7}, "M_INVALID_PARAM"),
        ("m.tz", {"m.tz": 1}, "M_INVALID_PARAM"),
        ("m.tz", {"m.tz": None}, "M_INVALID_PARAM"),
        ("Org.Example", {"Org.Example": 1}, "M_INVALID_PARAM"),
        ("nodots", {"nodots": 1}, "M_INVALID_PARAM"),
        ("a." + "b" * 254, {"a." + "b" * 254: 1}, "M_KEY_TOO_LARGE"),
        ("org.example.field", {"other": 1}, "M_MISSING_PARAM"),
        ("displayname", {}, "M_MISSING_PARAM"),
    ],
)
async def test_put_validation(client: httpx.AsyncClient, alice: LoggedIn, key: str,
                              body: dict[str, Any], errcode: str) -> None:
    r = await client.put(url(ALICE, key), json=body, headers=alice.headers)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == errcode


async def test_put_body_must_be_a_json_object(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await client.put(url(ALICE, "displayname"), content=b"{nope", headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = await client.put(url(ALICE, "displayname"), json=["Alice"], headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


async def test_profile_too_large(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    key = "org.example.big"
    r = await client.put(url(ALICE, key), json={key: "a" * 60000}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.put(url(ALICE, "org.example.more"), json={"org.example.more": "b" * 6000},
                         headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_PROFILE_TOO_LARGE"


async def test_only_the_owner_may_change_a_profile(client: httpx.AsyncClient, alice: LoggedIn,
                                                   bob: LoggedIn) -> None:
    r = await client.put(url(ALICE, "displayname"), json={"displayname": "Mallory"},
                         headers=bob.headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await client.delete(url(ALICE, "displayname"), headers=bob.headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await client.put(url(ALICE, "displayname"), json={"displayname": "Anon"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.put(url(ALICE, "displayname"), json={"displayname": "Anon"},
                         headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"


async def test_unknown_remote_invalid_and_deactivated_users(client: httpx.AsyncClient,
                                                            server: Server,
                                                            alice: LoggedIn) -> None:
    for user_id in ("@nobody:test.local", "@alice:elsewhere.example"):
        for path in (url(user_id), url(user_id, "displayname")):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND", path
    r = await client.get(url("not-a-user-id"))
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    await client.put(url(ALICE, "displayname"), json={"displayname": "Alice"},
                     headers=alice.headers)
    assert server.services is not None
    server.services.users.deactivate(ALICE)
    r = await client.get(url(ALICE))
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


async def test_require_auth_for_profile_requests(tmp_path: Path) -> None:
    config = make_config(tmp_path, require_auth_for_profile_requests=True)
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=server.bound[0]
    ) as client:
        alice = await make_user(server, "alice")
        for path in (url(ALICE), url(ALICE, "displayname")):
            r = await client.get(path)
            assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
        r = await client.get(url(ALICE), headers=alice.headers)
        assert r.status_code == 200 and r.json() == {}


async def test_guests_may_only_set_a_display_name(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{V3}/register", params={"kind": "guest"}, json={})
    assert r.status_code == 200, r.text
    guest = r.json()
    headers = {"Authorization": f"Bearer {guest['access_token']}"}
    r = await client.put(url(guest["user_id"], "displayname"), json={"displayname": "Guest"},
                         headers=headers)
    assert r.status_code == 200, r.text
    r = await client.put(url(guest["user_id"], "avatar_url"),
                         json={"avatar_url": "mxc://test.local/g"}, headers=headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_profile_account_data_and_filters_persist_across_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=server.bound[0]
    ) as client:
        alice = await make_user(server, "alice")
        h = alice.headers
        await client.put(url(ALICE, "displayname"), json={"displayname": "Alice"}, headers=h)
        await client.put(url(ALICE, "m.tz"), json={"m.tz": "UTC"}, headers=h)
        await client.put(f"{V3}/user/{ALICE}/account_data/org.example.cfg", json={"a": 1},
                         headers=h)
        await client.put(f"{V3}/user/{ALICE}/rooms/!r:test.local/tags/m.favourite",
                         json={"order": 0.5}, headers=h)
        r = await client.post(f"{V3}/user/{ALICE}/filter", json={"room": {"rooms": ["!r:x"]}},
                              headers=h)
        filter_id = r.json()["filter_id"]
    async with running_server(config) as server, httpx.AsyncClient(
        base_url=server.bound[0]
    ) as client:
        assert (await client.get(url(ALICE))).json() == {"displayname": "Alice", "m.tz": "UTC"}
        r = await client.get(f"{V3}/user/{ALICE}/account_data/org.example.cfg", headers=h)
        assert r.json() == {"a": 1}
        r = await client.get(f"{V3}/user/{ALICE}/rooms/!r:test.local/tags", headers=h)
        assert r.json() == {"tags": {"m.favourite": {"order": 0.5}}}
        r = await client.get(f"{V3}/user/{ALICE}/filter/{filter_id}", headers=h)
        assert r.json() == {"room": {"rooms": ["!r:x"]}}


async def test_display_name_and_avatar_changes_reach_joined_rooms(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as client:
        alice = await make_user(server, "alice")
        rooms = []
        for _ in range(2):
            r = await client.post("/_matrix/client/v3/createRoom", headers=alice.headers,
                                  json={})
            rooms.append(r.json()["room_id"])
        r = await client.put(f"/_matrix/client/v3/profile/{alice.user_id}/displayname",
                             headers=alice.headers, json={"displayname": "Alice Liddell"})
        assert r.status_code == 200
        r = await client.put(f"/_matrix/client/v3/profile/{alice.user_id}/avatar_url",
                             headers=alice.headers, json={"avatar_url": "mxc://x/y"})
        assert r.status_code == 200
        for room_id in rooms:
            r = await client.get(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/"
                                 f"{alice.user_id}", headers=alice.headers)
            assert r.json() == {"membership": "join", "displayname": "Alice Liddell",
                                "avatar_url": "mxc://x/y"}
        # Unchanged values send nothing new.
        before = (await client.get(f"/_matrix/client/v3/rooms/{rooms[0]}/messages",
                                   params={"dir": "b"}, headers=alice.headers)).json()
        await client.put(f"/_matrix/client/v3/profile/{alice.user_id}/displayname",
                         headers=alice.headers, json={"displayname": "Alice Liddell"})
        after = (await client.get(f"/_matrix/client/v3/rooms/{rooms[0]}/messages",
                                  params={"dir": "b"}, headers=alice.headers)).json()
        assert len(after["chunk"]) == len(before["chunk"])
