"""Ed25519 server keys and signed JSON (spec appendices, "Signing JSON").

Keys are signedjson/PyNaCl ``SigningKey`` objects carrying ``.alg`` and
``.version``, so a key read from a Synapse or conduwuit key file works as is.
Signing and verifying use our own canonical encoder rather than signedjson's
(canonicaljson is several times slower and every federated event is verified),
and never mutate their arguments: ``signedjson.sign.sign_json`` does, which
has bitten callers holding on to the original dict. Tests check byte-identical
results against signedjson and the spec's test vectors.

Signed JSON is encoded leniently (floats and big integers allowed): the
signature must cover exactly the bytes the signer encoded, even in the old
room versions that allowed such numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import nacl.exceptions
import nacl.signing
from signedjson.key import decode_signing_key_base64, encode_signing_key_base64
from signedjson.key import generate_signing_key as _signedjson_generate
from signedjson.types import SigningKey
from unpaddedbase64 import decode_base64, encode_base64

from .canonical import CanonicalJsonError, encode_canonical
from .hashes import with_content_hash
from .redaction import redact
from .room_versions import RoomVersion

__all__ = [
    "SignatureError",
    "SigningKey",
    "decode_signing_key",
    "encode_signing_key",
    "generate_signing_key",
    "hash_and_sign_event",
    "key_id",
    "sign_event",
    "sign_json",
    "verify_event",
    "verify_json",
    "verify_key_base64",
]

ED25519: Final = "ed25519"
_SIGNATURE_BYTES: Final = 64
_VERIFY_KEY_BYTES: Final = 32
# Spec (server keys): a key version matches [a-zA-Z0-9_]. Enforced for keys we make;
# key files written by other software are read as long as the id stays parseable.
_NEW_KEY_VERSION = re.compile(r"[A-Za-z0-9_]+")


class SignatureError(ValueError):
    """A signature is missing, malformed or does not match; the message says which."""


# -- keys -------------------------------------------------------------------------------------


def generate_signing_key(version: str) -> SigningKey:
    """A new random ed25519 key; ``version`` is the part after ``ed25519:`` in its id."""
    if not _NEW_KEY_VERSION.fullmatch(version):
        raise ValueError(f"invalid key version {version!r}: use letters, digits and '_'")
    key: SigningKey = _signedjson_generate(version)
    return key


def encode_signing_key(key: SigningKey) -> str:
    """``"ed25519 <version> <unpadded base64 seed>"``: one line of a Synapse/conduwuit key file."""
    return f"{key.alg} {key.version} {encode_signing_key_base64(key)}"


def decode_signing_key(text: str) -> SigningKey:
    """Parse one key-file line (see :func:`encode_signing_key`); ValueError if malformed."""
    parts = text.split()
    if len(parts) != 3:
        raise ValueError("a signing key line is '<algorithm> <version> <base64 seed>'")
    algorithm, version, seed = parts
    if algorithm != ED25519:
        raise ValueError(f"unsupported signing key algorithm {algorithm!r}")
    _check_key_version(version)
    try:
        key: SigningKey = decode_signing_key_base64(algorithm, version, seed)
    except ValueError as exc:  # binascii.Error and nacl's ValueError included
        raise ValueError(f"signing key seed is not 32 bytes of base64: {exc}") from None
    return key


def _check_key_version(version: str) -> None:
    """Lenient check for key files: the version must survive ``ed25519:<version>`` ids."""
    if not version or any(c.isspace() or c == ":" for c in version):
        raise ValueError(f"invalid key version {version!r} (no spaces or ':')")


def key_id(key: SigningKey) -> str:
    """``"ed25519:<version>"``, the id signatures and key queries use."""
    return f"{key.alg}:{key.version}"


def verify_key_base64(key: SigningKey) -> str:
    """The public key, unpadded base64, as published on ``/_matrix/key/v2/server``."""
    return encode_base64(bytes(key.verify_key))


# -- JSON -------------------------------------------------------------------------------------


def sign_json(obj: Mapping[str, Any], server_name: str, key: SigningKey) -> dict[str, Any]:
    """A copy of ``obj`` with this server's signature added.

    The signature covers everything but ``signatures`` and ``unsigned``; other
    entities' signatures already on ``obj`` are kept. The copy is shallow
    except for ``signatures``, which is new, so ``obj`` is never changed.
    """
    message = _signed_bytes(obj)
    signature = encode_base64(key.sign(message).signature)
    signatures = _copy_signatures(obj.get("signatures"))
    signatures.setdefault(server_name, {})[key_id(key)] = signature
    return {**obj, "signatures": signatures}


def verify_json(obj: Mapping[str, Any], server_name: str, key_id: str, verify_key_b64: str) -> None:
    """Check ``server_name``'s signature by ``key_id`` on ``obj``.

    ``verify_key_b64`` is the public key as published (unpadded base64).
    Raises :class:`SignatureError` naming the server and key on any failure.
    """
    who = f"{server_name} {key_id}"
    if not key_id.startswith(ED25519 + ":"):
        raise SignatureError(f"{who}: unsupported signing algorithm")
    signature = _decode(_find_signature(obj, server_name, key_id), _SIGNATURE_BYTES, who)
    public = _decode(verify_key_b64, _VERIFY_KEY_BYTES, f"{who} verify key")
    try:
        message = _signed_bytes(obj)
    except CanonicalJsonError as exc:
        raise SignatureError(f"{who}: object is not JSON: {exc}") from None
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError(f"{who}: signature does not match") from None


def _signed_bytes(obj: Mapping[str, Any]) -> bytes:
    """What a signature covers: canonical JSON without signatures and unsigned."""
    unsigned_view = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return encode_canonical(unsigned_view, strict=False)


def _copy_signatures(value: object) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        return {}
    return {name: dict(sigs) if isinstance(sigs, Mapping) else {} for name, sigs in value.items()}


def _find_signature(obj: Mapping[str, Any], server_name: str, key_id: str) -> str:
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureError("object has no signatures")
    by_server = signatures.get(server_name)
    if not isinstance(by_server, Mapping):
        raise SignatureError(f"no signature from {server_name}")
    signature = by_server.get(key_id)
    if not isinstance(signature, str):
        raise SignatureError(f"no signature from {server_name} with key {key_id}")
    return signature


def _decode(text: str, length: int, what: str) -> bytes:
    try:
        raw = decode_base64(text)
    except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise SignatureError(f"{what}: not valid base64") from None
    if len(raw) != length:
        raise SignatureError(f"{what}: expected {length} bytes, got {len(raw)}")
    return raw


# -- events -----------------------------------------------------------------------------------


def sign_event(
    pdu: Mapping[str, Any], server_name: str, key: SigningKey, version: RoomVersion
) -> dict[str, Any]:
    """A copy of ``pdu`` signed by this server, per "Signing Events".

    The signature covers the *redacted* event (so it still verifies after a
    redaction) including ``hashes``, which is how the unredacted content is
    protected. So the content hash must already be there: ValueError if not
    (use :func:`hash_and_sign_event` for events we create).
    """
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping) or not isinstance(hashes.get("sha256"), str):
        raise ValueError("add the content hash (hashes.with_content_hash) before signing")
    signed_redacted = sign_json(redact(pdu, version), server_name, key)
    return {**pdu, "signatures": signed_redacted["signatures"]}


def hash_and_sign_event(
    pdu: Mapping[str, Any], server_name: str, key: SigningKey, version: RoomVersion
) -> dict[str, Any]:
    """Content hash, then signature: a new event of ours ready to send."""
    return sign_event(with_content_hash(pdu), server_name, key, version)


def verify_event(
    pdu: Mapping[str, Any],
    server_name: str,
    key_id: str,
    verify_key_b64: str,
    version: RoomVersion,
) -> None:
    """Check ``server_name``'s signature on the redacted form of ``pdu``.

    Succeeds for the full event and for a redacted copy alike; whether the
    content was tampered with is the content hash's business
    (:func:`hashes.has_valid_content_hash`). Raises :class:`SignatureError`.
    """
    verify_json(redact(pdu, version), server_name, key_id, verify_key_b64)
