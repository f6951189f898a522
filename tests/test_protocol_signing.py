"""Server keys and signed JSON: the spec's test vectors, signedjson parity, error messages."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import canonicaljson
import nacl.signing
import pytest
import signedjson.sign
from hypothesis import given, settings
from hypothesis import strategies as st

from conduwuit.protocol import room_versions
from conduwuit.protocol.hashes import (
    content_hash,
    event_id_for,
    has_valid_content_hash,
    with_content_hash,
)
from conduwuit.protocol.redaction import redact
from conduwuit.protocol.signing import (
    SignatureError,
    decode_signing_key,
    encode_signing_key,
    generate_signing_key,
    hash_and_sign_event,
    key_id,
    sign_event,
    sign_json,
    verify_event,
    verify_json,
    verify_key_base64,
)

V = room_versions.ROOM_VERSIONS

# Spec appendices, "Cryptographic Test Vectors".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_KEY = decode_signing_key(f"ed25519 1 {SPEC_SEED}")
SPEC_SERVER = "domain"


def _b64(data: bytes, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(data).decode().rstrip("=")


def _raw_nacl_key() -> nacl.signing.SigningKey:
    """The spec key built directly from the seed, independent of our key handling."""
    return nacl.signing.SigningKey(base64.b64decode(SPEC_SEED + "="))


SPEC_VERIFY_KEY = _b64(bytes(_raw_nacl_key().verify_key))


# -- keys -------------------------------------------------------------------------------------


def test_spec_key_decodes() -> None:
    assert key_id(SPEC_KEY) == "ed25519:1"
    assert SPEC_KEY.alg == "ed25519" and SPEC_KEY.version == "1"
    assert verify_key_base64(SPEC_KEY) == SPEC_VERIFY_KEY
    # The spec's seed text has non-zero padding bits ("...XA1"); the canonical
    # encoding of the same 32 bytes ends in "XA0".
    line = encode_signing_key(SPEC_KEY)
    assert line == f"ed25519 1 {SPEC_SEED[:-1]}0"
    assert bytes(decode_signing_key(line)) == bytes(SPEC_KEY) == bytes(_raw_nacl_key())


def test_generated_keys_round_trip_through_the_key_file_line() -> None:
    key = generate_signing_key("a_XyZ1")
    assert key_id(key) == "ed25519:a_XyZ1"
    line = encode_signing_key(key)
    algorithm, version, seed = line.split(" ")
    assert (algorithm, version) == ("ed25519", "a_XyZ1")
    assert len(base64.b64decode(seed + "=")) == 32 and "=" not in seed
    again = decode_signing_key(line + "\n")  # a line read from a file keeps its newline
    assert bytes(again) == bytes(key)
    assert key_id(again) == key_id(key) and verify_key_base64(again) == verify_key_base64(key)
    assert bytes(generate_signing_key("a_XyZ1")) != bytes(key)


@pytest.mark.parametrize("version", ["", "a:b", "a b", "a/b", "é"])
def test_generate_refuses_versions_outside_the_spec_alphabet(version: str) -> None:
    with pytest.raises(ValueError, match="key version"):
        generate_signing_key(version)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "signing key line"),
        ("ed25519 1", "signing key line"),
        ("ed25519 1 abc extra", "signing key line"),
        (f"rsa 1 {SPEC_SEED}", "unsupported signing key algorithm"),
        (f"ed25519 a:b {SPEC_SEED}", "key version"),
        ("ed25519 1 AAAA", "not 32 bytes"),
        ("ed25519 1 !!!!", "not 32 bytes"),
    ],
)
def test_decode_rejects_malformed_lines(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_signing_key(line)


# -- JSON signing vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "signature"),
    [
        (
            {},
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
        ),
        (
            {"one": 1, "two": "Two"},
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        ),
    ],
)
def test_spec_json_signing_vectors(obj: dict[str, Any], signature: str) -> None:
    signed = sign_json(obj, SPEC_SERVER, SPEC_KEY)
    assert signed == {**obj, "signatures": {"domain": {"ed25519:1": signature}}}
    verify_json(signed, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY)


def test_sign_json_returns_a_copy_and_keeps_other_signatures_and_unsigned() -> None:
    obj = {
        "a": 1,
        "unsigned": {"age_ts": 5},
        "signatures": {"other.org": {"ed25519:x": "theirs"}, "domain": {"ed25519:0": "old"}},
    }
    before = copy.deepcopy(obj)
    signed = sign_json(obj, SPEC_SERVER, SPEC_KEY)
    assert obj == before  # signedjson's sign_json would have mutated it
    assert signed["unsigned"] == {"age_ts": 5}
    assert signed["signatures"]["other.org"] == {"ed25519:x": "theirs"}
    assert set(signed["signatures"]["domain"]) == {"ed25519:0", "ed25519:1"}
    expected = _b64(_raw_nacl_key().sign(b'{"a":1}').signature)
    assert signed["signatures"]["domain"]["ed25519:1"] == expected


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
def test_sign_json_equals_signedjson(obj: dict[str, Any]) -> None:
    theirs = signedjson.sign.sign_json(copy.deepcopy(obj), SPEC_SERVER, SPEC_KEY)
    assert sign_json(obj, SPEC_SERVER, SPEC_KEY) == theirs
    verify_json(theirs, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY)


def test_unsigned_is_not_covered_by_the_signature() -> None:
    signed = sign_json({"a": 1}, SPEC_SERVER, SPEC_KEY)
    verify_json({**signed, "unsigned": {"age": 1000}}, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY)


@pytest.mark.parametrize(
    ("mutate", "server", "kid", "message"),
    [
        (lambda o: {**o, "a": 2}, "domain", "ed25519:1", "domain ed25519:1: signature does not"),
        (lambda o: {"a": 1}, "domain", "ed25519:1", "object has no signatures"),
        (lambda o: o, "other.org", "ed25519:1", "no signature from other.org"),
        (lambda o: o, "domain", "ed25519:2", "no signature from domain with key ed25519:2"),
        (lambda o: o, "domain", "curve25519:1", "unsupported signing algorithm"),
        (
            lambda o: {**o, "signatures": {"domain": {"ed25519:1": "AAAA"}}},
            "domain",
            "ed25519:1",
            "domain ed25519:1: expected 64 bytes, got 3",
        ),
        (
            lambda o: {**o, "signatures": {"domain": {"ed25519:1": "é"}}},
            "domain",
            "ed25519:1",
            "not valid base64",
        ),
    ],
)
def test_verify_json_failures_say_what_is_wrong(
    mutate: Any, server: str, kid: str, message: str
) -> None:
    signed = sign_json({"a": 1}, SPEC_SERVER, SPEC_KEY)
    with pytest.raises(SignatureError, match=message):
        verify_json(mutate(signed), server, kid, SPEC_VERIFY_KEY)


def test_verify_json_with_the_wrong_key() -> None:
    signed = sign_json({"a": 1}, SPEC_SERVER, SPEC_KEY)
    other = verify_key_base64(generate_signing_key("1"))
    with pytest.raises(SignatureError, match="does not match"):
        verify_json(signed, SPEC_SERVER, "ed25519:1", other)
    with pytest.raises(SignatureError, match="verify key: expected 32 bytes"):
        verify_json(signed, SPEC_SERVER, "ed25519:1", "AAAA")
    assert issubclass(SignatureError, ValueError)


# -- event signing vectors ----------------------------------------------------------------------

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
MINIMAL_SIGNATURE = (
    "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
)
MESSAGE_SIGNATURE = (
    "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
)
MINIMAL_SIGNED: dict[str, Any] = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {"domain": {"ed25519:1": MINIMAL_SIGNATURE}},
    "type": "X",
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
MESSAGE_SIGNED: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {"domain": {"ed25519:1": MESSAGE_SIGNATURE}},
    "unsigned": {"age_ts": 1000000},
}
# The vectors keep the top-level `origin`, which only room versions 1-10 protect.
PRE_V11 = [str(n) for n in range(1, 11)]


@pytest.mark.parametrize("version", PRE_V11)
@pytest.mark.parametrize(
    ("event", "expected"), [(MINIMAL_EVENT, MINIMAL_SIGNED), (MESSAGE_EVENT, MESSAGE_SIGNED)]
)
def test_spec_event_signing_vectors(
    event: dict[str, Any], expected: dict[str, Any], version: str
) -> None:
    before = copy.deepcopy(event)
    assert hash_and_sign_event(event, SPEC_SERVER, SPEC_KEY, V[version]) == expected
    assert event == before
    verify_event(expected, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V[version])


def test_v11_signs_without_origin_so_the_vector_signature_differs() -> None:
    signed = hash_and_sign_event(MINIMAL_EVENT, SPEC_SERVER, SPEC_KEY, V["11"])
    assert signed["signatures"] != MINIMAL_SIGNED["signatures"]
    verify_event(signed, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["11"])
    # origin is not protected in v11: changing it keeps the signature valid.
    verify_event({**signed, "origin": "x"}, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["11"])
    with pytest.raises(SignatureError):
        verify_event({**signed, "origin": "x"}, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["10"])


def test_sign_event_requires_the_content_hash() -> None:
    with pytest.raises(ValueError, match="content hash"):
        sign_event(MINIMAL_EVENT, SPEC_SERVER, SPEC_KEY, V["10"])


def test_signatures_survive_redaction_but_content_tampering_fails_the_hash() -> None:
    event = hash_and_sign_event(MESSAGE_EVENT, SPEC_SERVER, SPEC_KEY, V["1"])
    redacted = redact(event, V["1"])
    verify_event(redacted, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["1"])
    tampered = {**event, "content": {"body": "something else"}}
    verify_event(tampered, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["1"])
    assert not has_valid_content_hash(tampered)
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(
            {**event, "type": "m.other"}, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["1"]
        )


def test_a_second_server_adds_its_signature_alongside() -> None:
    event = hash_and_sign_event(MESSAGE_EVENT, SPEC_SERVER, SPEC_KEY, V["9"])
    theirs = generate_signing_key("k2")
    both = sign_event(event, "resident.org", theirs, V["9"])
    assert set(both["signatures"]) == {"domain", "resident.org"}
    verify_event(both, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["9"])
    verify_event(both, "resident.org", "ed25519:k2", verify_key_base64(theirs), V["9"])
    assert event["signatures"] == {"domain": {"ed25519:1": MESSAGE_SIGNATURE}}


# -- one full v4 event, derived twice ---------------------------------------------------------

FULL_EVENT: dict[str, Any] = {
    "type": "m.room.message",
    "room_id": "!jEsUZKDJdhlrceRyVU:domain",
    "sender": "@alice:domain",
    "origin": "domain",
    "origin_server_ts": 1_432_735_824_653,
    "depth": 12,
    "prev_events": ["$prev_event_hash_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
    "auth_events": ["$create_hash_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"],
    "content": {"msgtype": "m.text", "body": "Hello, \u2028 wörld \U0001f600"},
    "unsigned": {"age": 1234},
}
# Pinned so any change to canonical JSON, redaction or signing shows up as a diff here.
FULL_HASH = "jd4gvwNkRE65VtinRhjRwX4Hs1dyRrkc49bANKlR2v8"
FULL_SIGNATURE = (
    "iERjsM9f5/tVNS7a+LgDbmmzdsqBZzn6eIEXIXcVGVkSsRvekVovZ63Ky1X+0Yx2KALg7oUNeqpkw/NQAzYiBQ"
)
FULL_EVENT_ID = "$tpQVYAbLSIhKdNNqv3tFLNGgAOHfRHEqHx9VFlRH5T4"


def _independent_v4_derivation() -> tuple[str, str, str]:
    """The content hash, signature and v4 event id via canonicaljson + hashlib + nacl."""
    body = {k: v for k, v in FULL_EVENT.items() if k != "unsigned"}
    sha = _b64(hashlib.sha256(canonicaljson.encode_canonical_json(body)).digest())
    # v4 redaction of an m.room.message: empty content, top-level keys of v1-v10.
    redacted = {k: v for k, v in FULL_EVENT.items() if k not in ("content", "unsigned")}
    redacted["content"] = {}
    redacted["hashes"] = {"sha256": sha}
    signature = _b64(_raw_nacl_key().sign(canonicaljson.encode_canonical_json(redacted)).signature)
    event_id = "$" + _b64(
        hashlib.sha256(canonicaljson.encode_canonical_json(redacted)).digest(), urlsafe=True
    )
    return sha, signature, event_id


def test_full_v4_event_hash_sign_and_id() -> None:
    sha, signature, event_id = _independent_v4_derivation()
    hashed = with_content_hash(FULL_EVENT)
    assert hashed["hashes"] == {"sha256": sha}
    assert _b64(content_hash(FULL_EVENT)) == sha
    signed = sign_event(hashed, SPEC_SERVER, SPEC_KEY, V["4"])
    assert signed["signatures"] == {"domain": {"ed25519:1": signature}}
    assert signed["unsigned"] == {"age": 1234}
    assert event_id_for(signed, V["4"]) == event_id
    verify_event(signed, SPEC_SERVER, "ed25519:1", SPEC_VERIFY_KEY, V["4"])
    assert (sha, signature, event_id) == (FULL_HASH, FULL_SIGNATURE, FULL_EVENT_ID)
