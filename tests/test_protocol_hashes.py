"""Content hashes, reference hashes, event ids and v12 room ids."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import canonicaljson
import pytest

from conduwuit.protocol import room_versions
from conduwuit.protocol.events import Event
from conduwuit.protocol.hashes import (
    content_hash,
    event_id_for,
    has_valid_content_hash,
    reference_hash,
    room_id_from_create,
    with_content_hash,
)
from conduwuit.protocol.ids import is_valid_event_id, is_valid_room_id

V = room_versions.ROOM_VERSIONS

# The two events of the spec's "Cryptographic Test Vectors" > "Event Signing".
MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MESSAGE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}


def _b64(data: bytes, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(data).decode().rstrip("=")


def _message(body: str, depth: int = 1) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "origin_server_ts": 1_700_000_000_000,
        "depth": depth,
        "prev_events": ["$prev"],
        "auth_events": ["$create", "$power", "$member"],
        "content": {"msgtype": "m.text", "body": body},
        "hashes": {},
        "signatures": {},
        "unsigned": {"age": 3},
    }


# -- content hash -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (MINIMAL_EVENT, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"),
        (MESSAGE_EVENT, "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"),
    ],
)
def test_content_hash_matches_the_spec_vectors(event: dict[str, Any], expected: str) -> None:
    assert _b64(content_hash(event)) == expected
    assert with_content_hash(event)["hashes"] == {"sha256": expected}


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    event = _message("hi")
    changed = {
        **event,
        "unsigned": {"age": 99, "transaction_id": "t"},
        "signatures": {"other.org": {"ed25519:x": "sig"}},
        "hashes": {"sha256": "stale"},
    }
    assert content_hash(changed) == content_hash(event)
    without = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    assert (
        content_hash(event) == hashlib.sha256(canonicaljson.encode_canonical_json(without)).digest()
    )


def test_with_content_hash_copies_and_keeps_other_algorithms() -> None:
    event = _message("hi")
    event["hashes"] = {"sha512": "future"}
    before = copy.deepcopy(event)
    hashed = with_content_hash(event)
    assert event == before
    assert hashed["hashes"]["sha512"] == "future"
    assert hashed["hashes"]["sha256"] == _b64(content_hash(event))


def test_has_valid_content_hash() -> None:
    hashed = with_content_hash(_message("hi"))
    assert has_valid_content_hash(hashed)
    # Padded base64 is accepted too (the spec asks decoders to be lenient).
    padded = {**hashed, "hashes": {"sha256": hashed["hashes"]["sha256"] + "="}}
    assert has_valid_content_hash(padded)
    tampered = {**hashed, "content": {"msgtype": "m.text", "body": "bye"}}
    assert not has_valid_content_hash(tampered)
    for hashes in (None, {}, {"sha256": 5}, {"sha256": "é"}, "x"):
        assert not has_valid_content_hash({**hashed, "hashes": hashes})


def test_content_hash_of_an_old_room_event_with_a_float() -> None:
    event = {**_message("hi"), "content": {"n": 1.5, "big": 2**60}}
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    expected = hashlib.sha256(canonicaljson.encode_canonical_json(stripped)).digest()
    assert content_hash(event) == expected


# -- reference hash and event ids -------------------------------------------------------------


def _independent_reference_hash(event: dict[str, Any]) -> bytes:
    """The redacted form of a v1-v10 m.room.message, hashed with the reference encoder."""
    kept = {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "hashes",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
    redacted = {k: v for k, v in event.items() if k in kept}
    redacted["content"] = {}
    return hashlib.sha256(canonicaljson.encode_canonical_json(redacted)).digest()


def test_reference_hash_covers_the_redacted_event() -> None:
    event = with_content_hash(_message("hi"))
    assert reference_hash(event, V["4"]) == _independent_reference_hash(event)
    # Redacting, re-signing or changing unsigned does not change the reference hash ...
    redacted = {**event, "content": {}, "unsigned": {}, "signatures": {"x": {"ed25519:a": "s"}}}
    assert reference_hash(redacted, V["4"]) == reference_hash(event, V["4"])
    # ... but the content does, through hashes.sha256.
    other = with_content_hash(_message("bye"))
    assert reference_hash(other, V["4"]) != reference_hash(event, V["4"])


def test_reference_hash_depends_on_the_room_versions_redaction_rules() -> None:
    event = {**with_content_hash(_message("hi")), "origin": "example.org"}
    assert reference_hash(event, V["10"]) != reference_hash(event, V["11"])  # origin dropped
    assert reference_hash(event, V["11"]) == reference_hash(event, V["12"])


def test_v1_event_id_is_carried_by_the_event() -> None:
    assert event_id_for(MESSAGE_EVENT, V["1"]) == "$0:domain"
    assert event_id_for(MESSAGE_EVENT, V["2"]) == "$0:domain"
    with pytest.raises(ValueError, match="event_id"):
        event_id_for(MINIMAL_EVENT, V["1"])


def _event_with_slash_or_plus() -> dict[str, Any]:
    """An event whose standard-base64 id contains '/' or '+' (found by varying depth)."""
    for depth in range(1, 200):
        event = with_content_hash(_message("hi", depth))
        encoded = _b64(reference_hash(event, V["3"]))
        if "/" in encoded and "+" in encoded:
            return event
    raise AssertionError("no such event in 200 tries")


def test_v3_ids_use_standard_base64_and_v4_url_safe() -> None:
    event = _event_with_slash_or_plus()
    digest = _independent_reference_hash(event)
    v3 = event_id_for(event, V["3"])
    v4 = event_id_for(event, V["4"])
    assert v3 == "$" + _b64(digest)
    assert v4 == "$" + _b64(digest, urlsafe=True)
    assert "/" in v3 and "+" in v3
    assert "/" not in v4 and "+" not in v4
    assert v4 == v3.replace("+", "-").replace("/", "_")
    assert len(v3) == len(v4) == 44
    assert is_valid_event_id(v3, V["3"]) and not is_valid_event_id(v3, V["4"])
    assert is_valid_event_id(v4, V["4"]) and not is_valid_event_id(v4, V["3"])
    for version in ("5", "6", "7", "8", "9", "10"):
        assert event_id_for(event, V[version]) == v4


def test_event_id_ignores_what_redaction_drops() -> None:
    event = with_content_hash(_message("hi"))
    assert event_id_for({**event, "unsigned": {"age": 1}}, V["4"]) == event_id_for(event, V["4"])
    assert event_id_for({**event, "junk": 1}, V["4"]) == event_id_for(event, V["4"])


def test_event_from_pdu_computes_the_id() -> None:
    event = with_content_hash(_message("hi"))
    wrapped = Event.from_pdu(event, V["11"])
    assert wrapped.event_id == event_id_for(event, V["11"])
    assert wrapped.pdu is event and wrapped.room_version is V["11"]
    assert Event.from_pdu(MESSAGE_EVENT, V["1"]).event_id == "$0:domain"


# -- v12 room ids -----------------------------------------------------------------------------


def _create_event(version: str) -> dict[str, Any]:
    return with_content_hash(
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": "@alice:example.org",
            "origin_server_ts": 1_700_000_000_000,
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "content": {"room_version": version, "additional_creators": ["@bob:example.org"]},
            "hashes": {},
            "signatures": {},
        }
    )


def test_v12_room_id_is_the_create_event_id_with_a_bang() -> None:
    create = _create_event("12")
    room_id = room_id_from_create(create, V["12"])
    assert room_id == "!" + event_id_for(create, V["12"])[1:]
    redacted_like_v11 = {k: v for k, v in create.items() if k not in ("signatures", "unsigned")}
    expected = hashlib.sha256(canonicaljson.encode_canonical_json(redacted_like_v11)).digest()
    assert room_id == "!" + _b64(expected, urlsafe=True)
    assert is_valid_room_id(room_id, V["12"])
    assert not is_valid_room_id(room_id, V["11"])
    assert ":" not in room_id and len(room_id) == 44


def test_v12_room_id_survives_redaction_of_the_create_event() -> None:
    """v11+ keep the whole create content, so a redacted copy yields the same room id."""
    create = _create_event("12")
    redacted = {**create, "unsigned": {"redacted_because": {}}, "signatures": {}}
    assert room_id_from_create(redacted, V["12"]) == room_id_from_create(create, V["12"])


def test_room_id_before_v12_is_read_from_the_create_event() -> None:
    create = {**_create_event("11"), "room_id": "!abc:example.org"}
    assert room_id_from_create(create, V["11"]) == "!abc:example.org"
    with pytest.raises(ValueError, match="room_id"):
        room_id_from_create(_create_event("11"), V["11"])
