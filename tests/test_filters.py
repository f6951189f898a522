"""Filters: the pure validation, the service over a real store, then the HTTP endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.errors import MatrixError
from conduwuit.protocol.filters import FilterError, validate_filter
from conduwuit.server import Server
from conduwuit.services.filters import Filters
from conduwuit.store import Store
from tests.support.users import LoggedIn, make_user

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
ALICE = "@alice:test.local"

# The example of the spec's filter.yaml, plus every optional field.
FULL_FILTER: dict[str, Any] = {
    "room": {
        "rooms": ["!a:example.com"],
        "not_rooms": ["!726s6s6q:example.com"],
        "include_leave": False,
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"],
                  "lazy_load_members": True, "include_redundant_members": False},
        "timeline": {"limit": 10, "types": ["m.room.message"], "not_senders": ["@spam:x"],
                     "contains_url": True, "unread_thread_notifications": True},
        "ephemeral": {"types": ["m.receipt", "m.typing"], "senders": ["@a:x"]},
        "account_data": {"not_types": ["*"], "rooms": ["!b:x"]},
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"], "limit": 0},
    "account_data": {"limit": 5, "not_types": ["m.push_rules"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
    "org.example.unknown": {"kept": True},
}


# --------------------------------------------------------------- validation


def test_valid_filters() -> None:
    assert validate_filter(FULL_FILTER) is FULL_FILTER
    assert validate_filter({}) == {}
    assert validate_filter({"event_format": "federation"})


@pytest.mark.parametrize(
    ("definition", "errcode", "field"),
    [
        ([], "M_BAD_JSON", "filter"),
        ({"event_format": "raw"}, "M_INVALID_PARAM", "event_format"),
        ({"event_format": 1}, "M_BAD_JSON", "event_format"),
        ({"event_fields": "type"}, "M_BAD_JSON", "event_fields"),
        ({"event_fields": ["type", 1]}, "M_BAD_JSON", "event_fields[1]"),
        ({"presence": []}, "M_BAD_JSON", "presence"),
        ({"presence": {"limit": "10"}}, "M_BAD_JSON", "presence.limit"),
        ({"presence": {"limit": 1.5}}, "M_BAD_JSON", "presence.limit"),
        ({"presence": {"limit": True}}, "M_BAD_JSON", "presence.limit"),
        ({"account_data": {"limit": -1}}, "M_INVALID_PARAM", "account_data.limit"),
        ({"account_data": {"limit": 2**53}}, "M_INVALID_PARAM", "account_data.limit"),
        ({"account_data": {"types": [None]}}, "M_BAD_JSON", "account_data.types[0]"),
        ({"presence": {"senders": ["alice"]}}, "M_INVALID_PARAM", "presence.senders[0]"),
        ({"presence": {"not_senders": [5]}}, "M_BAD_JSON", "presence.not_senders[0]"),
        ({"room": "all"}, "M_BAD_JSON", "room"),
        ({"room": {"rooms": "!a:x"}}, "M_BAD_JSON", "room.rooms"),
        ({"room": {"not_rooms": ["#a:x"]}}, "M_INVALID_PARAM", "room.not_rooms[0]"),
        ({"room": {"include_leave": "yes"}}, "M_BAD_JSON", "room.include_leave"),
        ({"room": {"timeline": {"limit": -5}}}, "M_INVALID_PARAM", "room.timeline.limit"),
        ({"room": {"state": {"lazy_load_members": 1}}}, "M_BAD_JSON",
         "room.state.lazy_load_members"),
        ({"room": {"ephemeral": {"rooms": ["x"]}}}, "M_INVALID_PARAM",
         "room.ephemeral.rooms[0]"),
        ({"room": {"account_data": {"contains_url": None}}}, "M_BAD_JSON",
         "room.account_data.contains_url"),
        ({"room": {"timeline": []}}, "M_BAD_JSON", "room.timeline"),
    ],
)
def test_invalid_filters(definition: Any, errcode: str, field: str) -> None:
    with pytest.raises(FilterError) as info:
        validate_filter(definition)
    assert info.value.errcode == errcode
    assert info.value.message.startswith(field + " "), info.value.message


# ------------------------------------------------------------------ service


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


def test_service_create_and_get(store: Store) -> None:
    filters = Filters(store)
    first = filters.create(ALICE, FULL_FILTER)
    assert not first.startswith("{")
    assert filters.get(ALICE, first) == FULL_FILTER
    # identical definitions (key order aside) share an id; others do not
    assert filters.create(ALICE, dict(reversed(FULL_FILTER.items()))) == first
    assert filters.create(ALICE, {}) != first
    # ids are per user
    assert filters.get("@bob:test.local", first) is None
    assert filters.get(ALICE, "nope") is None


def test_service_refuses_invalid_filters(store: Store) -> None:
    with pytest.raises(MatrixError) as info:
        Filters(store).create(ALICE, {"room": {"timeline": {"limit": "ten"}}})
    assert info.value.status == 400 and info.value.errcode == "M_BAD_JSON"
    assert "room.timeline.limit" in info.value.error


# --------------------------------------------------------------------- HTTP


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


@pytest.fixture
async def bob(server: Server) -> LoggedIn:
    return await make_user(server, "bob")


@pytest.mark.parametrize("prefix", [V3, R0])
async def test_upload_and_download(client: httpx.AsyncClient, alice: LoggedIn,
                                   prefix: str) -> None:
    r = await client.post(f"{prefix}/user/{ALICE}/filter", json=FULL_FILTER,
                          headers=alice.headers)
    assert r.status_code == 200, r.text
    filter_id = r.json()["filter_id"]
    assert isinstance(filter_id, str) and not filter_id.startswith("{")
    r = await client.get(f"{prefix}/user/{ALICE}/filter/{filter_id}", headers=alice.headers)
    assert r.status_code == 200 and r.json() == FULL_FILTER


async def test_unknown_filter_is_404(client: httpx.AsyncClient, alice: LoggedIn) -> None:
    r = await client.get(f"{V3}/user/{ALICE}/filter/12345", headers=alice.headers)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


async def test_other_users_filters_are_forbidden(client: httpx.AsyncClient, alice: LoggedIn,
                                                 bob: LoggedIn) -> None:
    r = await client.post(f"{V3}/user/{ALICE}/filter", json={}, headers=alice.headers)
    filter_id = r.json()["filter_id"]
    r = await client.get(f"{V3}/user/{ALICE}/filter/{filter_id}", headers=bob.headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await client.post(f"{V3}/user/{ALICE}/filter", json={}, headers=bob.headers)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    for method in ("GET", "POST"):
        path = f"{V3}/user/{ALICE}/filter" + (f"/{filter_id}" if method == "GET" else "")
        r = await client.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b'{"room": {"timeline": {"limit": "10"}}}', "M_BAD_JSON"),
        (b'{"event_format": "xml"}', "M_INVALID_PARAM"),
        (b'{"room": {"rooms": ["not-a-room"]}}', "M_INVALID_PARAM"),
        (b"[]", "M_BAD_JSON"),
        (b"{", "M_NOT_JSON"),
    ],
)
async def test_invalid_filter_is_400(client: httpx.AsyncClient, alice: LoggedIn, body: bytes,
                                     errcode: str) -> None:
    r = await client.post(f"{V3}/user/{ALICE}/filter", content=body, headers=alice.headers)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == errcode
