"""The redaction algorithm of each room version 1-12 (spec: rooms/v*/#redactions)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from conduwuit.protocol import room_versions
from conduwuit.protocol.redaction import redact

V = room_versions.ROOM_VERSIONS
ALL = [str(n) for n in range(1, 13)]


def _versions(first: int, last: int = 12) -> list[str]:
    return [str(n) for n in range(first, last + 1)]


def _event(event_type: str, content: Mapping[str, Any], **top: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "$e:example.org",
        "type": event_type,
        "room_id": "!r:example.org",
        "sender": "@alice:example.org",
        "content": content,
        "hashes": {"sha256": "hash"},
        "signatures": {"example.org": {"ed25519:a": "sig"}},
        "depth": 5,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 1234,
    }
    event.update(top)
    return event


def _content_after(version: str, event_type: str, content: Mapping[str, Any]) -> dict[str, Any]:
    redacted = redact(_event(event_type, content, state_key=""), V[version])
    result: dict[str, Any] = redacted["content"]
    return result


# -- top-level keys -------------------------------------------------------------------------------

OLD_TOP_LEVEL: dict[str, Any] = {"origin": "example.org", "membership": "join", "prev_state": []}
DROPPED_EVERYWHERE: dict[str, Any] = {
    "unsigned": {"age": 1},
    "age_ts": 5,
    "redacts": "$x",
    "custom": 1,
}


@pytest.mark.parametrize("version", ALL)
def test_top_level_keys(version: str) -> None:
    event = _event("m.room.message", {"body": "hi"}, state_key="", **OLD_TOP_LEVEL)
    event.update(DROPPED_EVERYWHERE)
    redacted = redact(event, V[version])
    always = {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
    # v11 (MSC2176) stopped protecting origin, membership and prev_state.
    expected = always if int(version) >= 11 else always | set(OLD_TOP_LEVEL)
    assert set(redacted) == expected
    assert {k: v for k, v in redacted.items() if k != "content"} == {
        k: v for k, v in event.items() if k in expected and k != "content"
    }
    assert redacted["content"] == {}


# -- content, per event type and version --------------------------------------------------------

MEMBER: dict[str, Any] = {
    "membership": "join",
    "displayname": "Alice",
    "avatar_url": "mxc://x/y",
    "join_authorised_via_users_server": "@bob:example.org",
    "third_party_invite": {"display_name": "alice@…", "signed": {"mxid": "@a:x", "token": "t"}},
    "reason": "because",
}


@pytest.mark.parametrize("version", ALL)
def test_member_content(version: str) -> None:
    expected: dict[str, Any] = {"membership": "join"}
    if int(version) >= 9:  # restricted join fix
        expected["join_authorised_via_users_server"] = "@bob:example.org"
    if int(version) >= 11:  # MSC3821: only `signed` survives
        expected["third_party_invite"] = {"signed": {"mxid": "@a:x", "token": "t"}}
    assert _content_after(version, "m.room.member", MEMBER) == expected


@pytest.mark.parametrize("version", _versions(11))
def test_member_third_party_invite_edge_cases(version: str) -> None:
    without_signed = {"membership": "invite", "third_party_invite": {"display_name": "x"}}
    assert _content_after(version, "m.room.member", without_signed) == {
        "membership": "invite",
        "third_party_invite": {},
    }
    not_an_object = {"membership": "invite", "third_party_invite": "junk"}
    assert _content_after(version, "m.room.member", not_an_object) == {"membership": "invite"}


CREATE: dict[str, Any] = {
    "creator": "@alice:example.org",
    "room_version": "1",
    "m.federate": False,
    "predecessor": {"room_id": "!old:example.org", "event_id": "$old"},
    "additional_creators": ["@bob:example.org"],
}


@pytest.mark.parametrize("version", ALL)
def test_create_content(version: str) -> None:
    expected = CREATE if int(version) >= 11 else {"creator": "@alice:example.org"}
    assert _content_after(version, "m.room.create", CREATE) == expected


JOIN_RULES: dict[str, Any] = {
    "join_rule": "restricted",
    "allow": [{"type": "m.room_membership"}],
    "x": 1,
}


@pytest.mark.parametrize("version", ALL)
def test_join_rules_content(version: str) -> None:
    expected: dict[str, Any] = {"join_rule": "restricted"}
    if int(version) >= 8:
        expected["allow"] = [{"type": "m.room_membership"}]
    assert _content_after(version, "m.room.join_rules", JOIN_RULES) == expected


POWER_LEVELS: dict[str, Any] = {
    "ban": 50,
    "events": {"m.room.name": 50},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@alice:example.org": 100},
    "users_default": 0,
    "notifications": {"room": 50},
    "historical": 100,
}


@pytest.mark.parametrize("version", ALL)
def test_power_levels_content(version: str) -> None:
    kept = {
        "ban",
        "events",
        "events_default",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    }
    if int(version) >= 11:
        kept.add("invite")
    expected = {k: v for k, v in POWER_LEVELS.items() if k in kept}
    assert _content_after(version, "m.room.power_levels", POWER_LEVELS) == expected


@pytest.mark.parametrize("version", ALL)
def test_aliases_content(version: str) -> None:
    content = {"aliases": ["#a:example.org"], "other": 1}
    expected = {"aliases": ["#a:example.org"]} if int(version) <= 5 else {}
    assert _content_after(version, "m.room.aliases", content) == expected


@pytest.mark.parametrize("version", ALL)
def test_history_visibility_content(version: str) -> None:
    content = {"history_visibility": "shared", "other": 1}
    assert _content_after(version, "m.room.history_visibility", content) == {
        "history_visibility": "shared"
    }


@pytest.mark.parametrize("version", ALL)
def test_redaction_event(version: str) -> None:
    """v11 moved `redacts` into content and protects it there; the top level never is."""
    event = _event("m.room.redaction", {"redacts": "$t", "reason": "spam"}, redacts="$t")
    redacted = redact(event, V[version])
    assert "redacts" not in redacted
    assert redacted["content"] == ({"redacts": "$t"} if int(version) >= 11 else {})


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    "event_type",
    [
        "m.room.message",
        "m.room.name",
        "m.room.topic",
        "m.room.encryption",
        "m.room.server_acl",
        "m.room.third_party_invite",
        "m.room.canonical_alias",
        "m.room.tombstone",
        "m.reaction",
    ],
)
def test_other_types_lose_all_content(version: str, event_type: str) -> None:
    content = {"body": "x", "name": "n", "m.relates_to": {"rel_type": "m.annotation"}}
    assert _content_after(version, event_type, content) == {}


def test_v12_redacts_exactly_like_v11() -> None:
    for event_type, content in [
        ("m.room.member", MEMBER),
        ("m.room.create", CREATE),
        ("m.room.join_rules", JOIN_RULES),
        ("m.room.power_levels", POWER_LEVELS),
        ("m.room.redaction", {"redacts": "$t"}),
        ("m.room.aliases", {"aliases": []}),
        ("m.room.message", {"body": "x"}),
    ]:
        event = _event(event_type, content, state_key="", origin="example.org")
        assert redact(event, V["12"]) == redact(event, V["11"])


# -- robustness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "11"])
def test_input_is_not_modified_and_nested_values_are_copied_by_reference(version: str) -> None:
    event = _event("m.room.power_levels", dict(POWER_LEVELS), state_key="", unsigned={"a": 1})
    before = copy.deepcopy(event)
    redacted = redact(event, V[version])
    assert event == before
    assert redacted["content"] is not event["content"]


def test_missing_or_malformed_content_becomes_an_empty_object() -> None:
    event = _event("m.room.member", {})
    del event["content"]
    assert redact(event, V["10"])["content"] == {}
    assert redact({**event, "content": "junk"}, V["10"])["content"] == {}
    assert redact({**event, "content": ["membership"]}, V["11"])["content"] == {}
    no_type = {
        k: v for k, v in _event("m.room.member", {"membership": "join"}).items() if k != "type"
    }
    assert redact(no_type, V["10"])["content"] == {}


def test_any_mapping_is_accepted() -> None:
    event = MappingProxyType(_event("m.room.join_rules", MappingProxyType(JOIN_RULES)))
    assert redact(event, V["9"])["content"] == {
        "join_rule": "restricted",
        "allow": JOIN_RULES["allow"],
    }


def test_redaction_is_idempotent() -> None:
    for version in ALL:
        for event_type, content in [
            ("m.room.member", MEMBER),
            ("m.room.create", CREATE),
            ("m.room.power_levels", POWER_LEVELS),
        ]:
            once = redact(_event(event_type, content, origin="x"), V[version])
            assert redact(once, V[version]) == once
