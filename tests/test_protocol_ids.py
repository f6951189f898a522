"""Room ids, event ids and room aliases (spec appendices, "Identifier Grammar")."""

from __future__ import annotations

import pytest

from conduwuit.protocol import room_versions
from conduwuit.protocol.ids import (
    MAX_ID_LENGTH,
    RoomAlias,
    UserId,
    is_valid_event_id,
    is_valid_room_alias,
    is_valid_room_id,
    server_name_of,
)

V = room_versions.ROOM_VERSIONS
HASH_URLSAFE = "Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"  # the spec's pdu_v12 example
HASH_STANDARD = "acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk"  # the spec's rooms/v3 example
HASH_PLAIN = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"  # valid in both alphabets


# -- room ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "room_id",
    [
        "!abc:example.org",
        "!jEsUZKDJdhlrceRyVU:example.org",
        "!a:[::1]:8448",
        "!a:1.2.3.4:1234",
        "!with space and\tcontrol:example.org",  # the grammar allows them (not ':' or NUL)
        "!日本:example.org",
        "!" + HASH_URLSAFE,
    ],
)
def test_valid_room_ids(room_id: str) -> None:
    assert is_valid_room_id(room_id)


@pytest.mark.parametrize(
    "room_id",
    [
        "",
        "!",
        "abc:example.org",
        "#alias:example.org",
        "@user:example.org",
        "!:example.org",
        "!abc",
        "!abc:",
        "!abc:bad_server!",
        "!a\x00b:example.org",
        "!a\ud800:example.org",
        "!" + HASH_STANDARD,  # '/' is not url-safe
        "!" + HASH_URLSAFE[:-1],
        "!" + HASH_URLSAFE + "A",
        "!" + "a" * 250 + ":example.org",  # over 255 bytes
    ],
)
def test_invalid_room_ids(room_id: str) -> None:
    assert not is_valid_room_id(room_id)


def test_room_id_forms_by_version() -> None:
    for n in range(1, 12):
        assert is_valid_room_id("!abc:example.org", V[str(n)])
        assert not is_valid_room_id("!" + HASH_URLSAFE, V[str(n)])
    assert is_valid_room_id("!" + HASH_URLSAFE, V["12"])
    assert not is_valid_room_id("!abc:example.org", V["12"])


def test_room_id_length_is_counted_in_bytes() -> None:
    server = ":example.org"
    fits = "!" + "a" * (MAX_ID_LENGTH - 1 - len(server)) + server
    assert len(fits.encode()) == MAX_ID_LENGTH and is_valid_room_id(fits)
    assert not is_valid_room_id("!" + "é" * 125 + server)  # 250 chars, 263 bytes


# -- event ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_id", "formats"),
    [
        ("$0:domain", {"1"}),
        ("$1444812213350496Caaaf:example.com", {"1"}),
        ("$" + HASH_STANDARD, {"3"}),
        ("$" + HASH_URLSAFE, {"4"}),
        ("$" + HASH_PLAIN, {"3", "4"}),
        ("$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", {"4"}),  # the spec's rooms/v4 example
    ],
)
def test_event_id_forms(event_id: str, formats: set[str]) -> None:
    assert is_valid_event_id(event_id)
    for version in ("1", "2", "3", "4", "5", "11", "12"):
        event_format = str(V[version].event_format.value)
        assert is_valid_event_id(event_id, V[version]) == (event_format in formats)


@pytest.mark.parametrize(
    "event_id",
    [
        "",
        "$",
        "$abc",
        "$:domain",
        "$a:",
        "$a:bad domain",
        "!" + HASH_URLSAFE,
        "$" + HASH_URLSAFE + "=",
        "$" + HASH_URLSAFE[:-1],
        "$" + "a" * 250 + ":example.org",
    ],
)
def test_invalid_event_ids(event_id: str) -> None:
    assert not is_valid_event_id(event_id)


# -- room aliases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "localpart", "server"),
    [
        ("#room:example.org", "room", "example.org"),
        ("#Room With Spaces:example.org", "Room With Spaces", "example.org"),
        ("#日本語:example.org:8448", "日本語", "example.org:8448"),
        ("#a:[::1]", "a", "[::1]"),
    ],
)
def test_valid_aliases(alias: str, localpart: str, server: str) -> None:
    parsed = RoomAlias.parse(alias)
    assert (parsed.localpart, parsed.server_name) == (localpart, server)
    assert str(parsed) == alias
    assert is_valid_room_alias(alias)
    assert server_name_of(alias) == server


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("room:example.org", "must start with '#'"),
        ("#room", "must look like"),
        ("#:example.org", "must look like"),
        ("#a\x00b:example.org", "not allowed"),
        ("#a:bad_server", "invalid server name"),
        ("#a:", "invalid server name"),
        ("#" + "a" * 250 + ":example.org", "longer than 255 bytes"),
    ],
)
def test_invalid_aliases(alias: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoomAlias.parse(alias)
    assert RoomAlias.try_parse(alias) is None
    assert not is_valid_room_alias(alias)


def test_alias_localpart_stops_at_the_first_colon() -> None:
    # "#a:b:c" is localpart "a" on server "b:c", and "b:c" is not a valid server name.
    assert not is_valid_room_alias("#a:b:c")
    assert RoomAlias.parse("#a:b:80") == RoomAlias("a", "b:80")


# -- server_name_of ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "server"),
    [
        ("@alice:example.org", "example.org"),
        ("@Historical_User!:example.org:8448", "example.org:8448"),
        ("!abc:example.org", "example.org"),
        ("#alias:[::1]:80", "[::1]:80"),
        ("$0:domain", "domain"),
        ("!" + HASH_URLSAFE, None),
        ("$" + HASH_STANDARD, None),
    ],
)
def test_server_name_of(identifier: str, server: str | None) -> None:
    assert server_name_of(identifier) == server


@pytest.mark.parametrize("identifier", ["", "alice:example.org", "%x:y", "!a:bad server"])
def test_server_name_of_rejects_non_ids(identifier: str) -> None:
    with pytest.raises(ValueError):
        server_name_of(identifier)


def test_user_ids_still_parse() -> None:
    """The additions keep the existing user id behaviour."""
    assert UserId.parse("@alice:example.org") == UserId("alice", "example.org")
    assert UserId.try_parse("@:example.org") is None
