"""Account data and room tags: the service over a real store, then the HTTP endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.errors import MatrixError
from conduwuit.server import Server
from conduwuit.services.account_data import AccountData, is_valid_room_id
from conduwuit.store import Store
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
ALICE = "@alice:test.local"
BOB = "@bob:test.local"
ROOM = "!room:test.local"


# ------------------------------------------------------------------ service


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


@pytest.fixture
def data(store: Store) -> AccountData:
    return AccountData(store)


def test_set_get_and_replace(data: AccountData) -> None:
    assert data.get(ALICE, None, "org.example") is None
    data.set(ALICE, None, "org.example", {"v": 1})
    data.set(ALICE, None, "org.example", {"v": 2})
    data.set(ALICE, ROOM, "org.example", {"room": True})
    assert data.get(ALICE, None, "org.example") == {"v": 2}
    assert data.get(ALICE, ROOM, "org.example") == {"room": True}
    # global and per-room data do not inherit from each other, nor leak between users
    assert data.get(ALICE, "!other:test.local", "org.example") is None
    assert data.get(BOB, None, "org.example") is None


def test_changes_since_returns_latest_of_each_type_in_order(data: AccountData) -> None:
    start = data.store.current_count()
    a1 = data.set(ALICE, None, "a", {"n": 1})
    b = data.set(ALICE, None, "b", {"n": 1})
    a2 = data.set(ALICE, None, "a", {"n": 2})
    data.set(ALICE, ROOM, "r", {})
    data.set(BOB, None, "a", {"bob": True})
    assert start < a1 < b < a2
    assert data.changes_since(ALICE, start) == [
        {"type": "b", "content": {"n": 1}}, {"type": "a", "content": {"n": 2}}]
    assert data.changes_since(ALICE, b) == [{"type": "a", "content": {"n": 2}}]
    assert data.changes_since(ALICE, a2) == []
    assert data.changes_since(ALICE, 2**64) == []  # tokens from clients are not trusted
    assert len(data.changes_since(ALICE, -5)) == 2
    assert data.changes_since(ALICE, 0, ROOM) == [{"type": "r", "content": {}}]
    assert data.latest_position(ALICE) == a2
    assert data.latest_position(ALICE, "!none:x") == 0


def test_change_hooks(data: AccountData) -> None:
    seen: list[tuple[str, str | None, int]] = []
    data.on_change.append(lambda user, room, pos: seen.append((user, room, pos)))
    p1 = data.set(ALICE, None, "a", {})
    p2 = data.set_tag(ALICE, ROOM, "u.work", {})
    assert seen == [(ALICE, None, p1), (ALICE, ROOM, p2)]


def test_client_writes_are_checked(data: AccountData) -> None:
    for room_id, event_type, status, errcode in (
        (None, "m.push_rules", 405, "M_BAD_JSON"),
        (ROOM, "m.fully_read", 405, "M_BAD_JSON"),
        ("not-a-room", "org.example", 400, "M_INVALID_PARAM"),
        (None, "", 400, "M_INVALID_PARAM"),
        (None, "x" * 256, 400, "M_INVALID_PARAM"),
    ):
        with pytest.raises(MatrixError) as info:
            data.set_by_client(ALICE, room_id, event_type, {})
        assert (info.value.status, info.value.errcode) == (status, errcode), event_type
    # the server itself may still write its own types
    data.set(ALICE, ROOM, "m.fully_read", {"event_id": "$e"})
    assert data.get(ALICE, ROOM, "m.fully_read") == {"event_id": "$e"}


def test_tags(data: AccountData) -> None:
    assert data.tags(ALICE, ROOM) == {}
    data.set_tag(ALICE, ROOM, "m.favourite", {"order": 0.25})
    data.set_tag(ALICE, ROOM, "u.work", {})
    assert data.get(ALICE, ROOM, "m.tag") == {"tags": {"m.favourite": {"order": 0.25},
                                                       "u.work": {}}}
    before = data.store.current_count()
    assert data.delete_tag(ALICE, ROOM, "u.none") is None  # no change, no new event
    assert data.store.current_count() == before
    assert data.delete_tag(ALICE, ROOM, "u.work") is not None
    assert data.tags(ALICE, ROOM) == {"m.favourite": {"order": 0.25}}


@pytest.mark.parametrize("room_id", ["!abc:test.local", "!" + "A" * 43, "!a:[::1]:8448"])
def test_valid_room_ids(room_id: str) -> None:
    assert is_valid_room_id(room_id)


@pytest.mark.parametrize("room_id", ["", "!", "#alias:test.local", "@user:x", "!a b:x",
                                     "!" + "a" * 255])
def test_invalid_room_ids(room_id: str) -> None:
    assert not is_valid_room_id(room_id)


# --------------------------------------------------------------------- HTTP


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


@pytest.fixture
async def bob(server: Server) -> LoggedIn:
    return await make_user(server, "bob")


def data_url(event_type: str, room_id: str | None = None, user_id: str = ALICE,
             prefix: str = V3) -> str:
    room = f"/rooms/{room_id}" if room_id is not None else ""
    return f"{prefix}/user/{user_id}{room}/account_data/{event_type}"


def tag_url(tag: str | None = None, room_id: str = ROOM, user_id: str = ALICE,
            prefix: str = V3) -> str:
    return f"{prefix}/user/{user_id}/rooms/{room_id}/tags" + (f"/{tag}" if tag else "")


@pytest.mark.parametrize("room_id", [None, ROOM])
@pytest.mark.parametrize("prefix", [V3, R0])
async def test_put_and_get(client: httpx.AsyncClient, alice: LoggedIn, room_id: str | None,
                           prefix: str) -> None:
    path = data_url("org.example.settings", room_id, prefix=prefix)
    r = await client.get(path, headers=alice.headers)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await client.put(path, json={"theme": "dark"}, headers=alice.headers)
    assert r.status_code == 200 and r.json() == {}
    r = await client.get(path, headers=alice.headers)
    assert r.status_code == 200 and r.json() == {"theme": "dark"}


async def test_other_users_are_refused(client: httpx.AsyncClient, alice: LoggedIn,
                                       bob: LoggedIn) -> None:
    await client.put(data_url("org.example"), json={"secret": 1}, headers=alice.headers)
    for method, path in (("GET", data_url("org.example")), ("PUT", data_url("org.example")),
                         ("GET", data_url("org.example", ROOM)),
                         ("PUT", data_url("org.example", ROOM)),
                         ("GET", tag_url()), ("PUT", tag_url("u.x")),
                         ("DELETE", tag_url("u.x"))):
        body: dict[str, Any] | None = {} if method == "PUT" else None
        r = await client.request(method, path, json=body, headers=bob.headers)
        assert r.status_code == 403, (method, path)
        assert r.json()["errcode"] == "M_FORBIDDEN"
        r = await client.request(method, path, json=body)
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"


async def test_server_managed_types_are_refused(client: httpx.AsyncClient,
                                                alice: LoggedIn) -> None:
    for path in (data_url("m.fully_read"), data_url("m.push_rules"),
                 data_url("m.fully_read", ROOM), data_url("m.push_rules", ROOM)):
        r = await client.put(path, json={"event_id": "$x"}, headers=alice.headers)
        assert r.status_code == 405, path
        assert r.json()["errcode"] == "M_BAD_JSON"


async def test_body_must_be_a_json_object(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await client.put(data_url("org.example"), content=b"not json", headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    r = await client.put(data_url("org.example", ROOM), json=[1, 2], headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
    r = await client.put(tag_url("u.x"), json="order", headers=alice.headers)
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


async def test_invalid_room_ids_are_refused(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    for method, path in (("GET", data_url("org.example", "@notaroom:test.local")),
                         ("PUT", data_url("org.example", "@notaroom:test.local")),
                         ("GET", tag_url(room_id="%23alias:test.local")),
                         ("PUT", tag_url("u.x", room_id="%23alias:test.local")),
                         ("DELETE", tag_url("u.x", room_id="%23alias:test.local"))):
        body: dict[str, Any] | None = {} if method == "PUT" else None
        r = await client.request(method, path, json=body, headers=alice.headers)
        assert r.status_code == 400, (method, path, r.text)
        assert r.json()["errcode"] == "M_INVALID_PARAM"


async def test_tags_over_http(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await client.get(tag_url(), headers=alice.headers)
    assert r.status_code == 200 and r.json() == {"tags": {}}
    r = await client.put(tag_url("m.favourite"), json={"order": 0.1}, headers=alice.headers)
    assert r.status_code == 200 and r.json() == {}
    r = await client.put(tag_url("u.Customers", prefix=R0), json={}, headers=alice.headers)
    assert r.status_code == 200
    r = await client.get(tag_url(prefix=R0), headers=alice.headers)
    assert r.json() == {"tags": {"m.favourite": {"order": 0.1}, "u.Customers": {}}}
    # tags are the m.tag room account data event
    r = await client.get(data_url("m.tag", ROOM), headers=alice.headers)
    assert r.json() == {"tags": {"m.favourite": {"order": 0.1}, "u.Customers": {}}}
    for _ in range(2):  # removing an absent tag succeeds as well
        r = await client.delete(tag_url("m.favourite"), headers=alice.headers)
        assert r.status_code == 200 and r.json() == {}
    r = await client.get(tag_url(), headers=alice.headers)
    assert r.json() == {"tags": {"u.Customers": {}}}


@pytest.mark.parametrize(
    ("tag", "body", "errcode"),
    [
        ("u.x", {"order": "0.5"}, "M_BAD_JSON"),
        ("u.x", {"order": True}, "M_BAD_JSON"),
        ("u.x", {"order": 1.5}, "M_INVALID_PARAM"),
        ("u.x", {"order": -0.1}, "M_INVALID_PARAM"),
        ("u." + "x" * 254, {}, "M_INVALID_PARAM"),
    ],
)
async def test_tag_validation(client: httpx.AsyncClient, alice: LoggedIn, tag: str,
                              body: dict[str, Any], errcode: str) -> None:
    r = await client.put(tag_url(tag), json=body, headers=alice.headers)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == errcode
    assert (await client.get(tag_url(), headers=alice.headers)).json() == {"tags": {}}


async def test_writes_are_visible_to_changes_since(client: httpx.AsyncClient, server: Server,
                                                   alice: LoggedIn) -> None:
    assert server.services is not None
    service = server.services.account_data
    since = server.services.store.current_count()
    await client.put(data_url("org.example.a"), json={"n": 1}, headers=alice.headers)
    await client.put(tag_url("u.x"), json={}, headers=alice.headers)
    assert service.changes_since(ALICE, since) == [{"type": "org.example.a",
                                                    "content": {"n": 1}}]
    assert service.changes_since(ALICE, since, ROOM) == [{"type": "m.tag",
                                                          "content": {"tags": {"u.x": {}}}}]
