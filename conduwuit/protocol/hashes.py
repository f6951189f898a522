"""Content hashes, reference hashes and the ids derived from them.

Spec: server-server API, "Calculating the content hash for an event" and
"Calculating the reference hash for an event"; rooms/v3, v4 and v12 for how
event ids and room ids are made from the reference hash.

The *content hash* covers the whole event (so a receiver can tell that it was
given a redacted copy); the *reference hash* covers only the redacted event
(so it survives redaction) and is what v3+ event ids and v12 room ids are.
All hashing uses the lax canonical encoding: old rooms hold floats and big
integers, and the bytes must be those the event's author hashed. Validating
new events against the strict rules is :func:`canonical.check_strict`'s job.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import decode_base64, encode_base64

from .canonical import encode_canonical
from .redaction import redact
from .room_versions import EventFormat, RoomVersion

# Keys a content hash leaves out: they change in transit or depend on the hash.
_NOT_IN_CONTENT_HASH = frozenset({"unsigned", "signatures", "hashes"})


def content_hash(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of ``pdu`` without unsigned, signatures, hashes."""
    stripped = {key: value for key, value in pdu.items() if key not in _NOT_IN_CONTENT_HASH}
    return hashlib.sha256(encode_canonical(stripped, strict=False)).digest()


def with_content_hash(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``pdu`` with ``hashes.sha256`` set (unpadded standard base64).

    Other algorithms already in ``hashes`` are kept: they are not part of the
    hash and a future room version may add some.
    """
    hashes = pdu.get("hashes")
    new_hashes = dict(hashes) if isinstance(hashes, Mapping) else {}
    new_hashes["sha256"] = encode_base64(content_hash(pdu))
    return {**pdu, "hashes": new_hashes}


def has_valid_content_hash(pdu: Mapping[str, Any]) -> bool:
    """True if ``hashes.sha256`` matches the event.

    False when it is missing or not base64. A receiver that gets False must
    use the redacted form of the event (spec: checks on receipt of a PDU).
    """
    hashes = pdu.get("hashes")
    claimed = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(claimed, str):
        return False
    try:
        claimed_bytes = decode_base64(claimed)
    except ValueError:  # binascii.Error is a ValueError
        return False
    return hmac.compare_digest(claimed_bytes, content_hash(pdu))


def reference_hash(pdu: Mapping[str, Any], version: RoomVersion) -> bytes:
    """SHA-256 of the canonical JSON of the redacted ``pdu`` without signatures.

    ``unsigned`` (and the legacy top-level ``age_ts``) are dropped by the
    redaction itself. The PDU must be in its federation form: from v3 on it
    has no ``event_id`` key (the id is derived from the event, so a stored
    copy that carries one must drop it first, or the hash changes).
    """
    redacted = redact(pdu, version)
    for key in ("signatures", "unsigned", "age_ts"):
        redacted.pop(key, None)
    return hashlib.sha256(encode_canonical(redacted, strict=False)).digest()


def event_id_for(pdu: Mapping[str, Any], version: RoomVersion) -> str:
    """The event id of ``pdu`` in a room of ``version``.

    v1/v2 events carry their id (``$opaque:server``); v3 ids are ``$`` plus the
    reference hash in standard unpadded base64 (so they may contain ``/`` and
    ``+``); v4+ use the URL-safe alphabet (``-`` and ``_``).
    Raises ValueError for a v1/v2 event without a string ``event_id``.
    """
    if version.event_format is EventFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("a v1/v2 event must carry its event_id")
        return event_id
    digest = reference_hash(pdu, version)
    if version.event_format is EventFormat.V3:
        return "$" + encode_base64(digest)
    return "$" + encode_base64(digest, urlsafe=True)


def room_id_from_create(create_pdu: Mapping[str, Any], version: RoomVersion) -> str:
    """The room id a create event establishes.

    v12 (``room_id_is_create_hash``): the create event's event id with the
    ``!`` sigil instead of ``$``, i.e. ``!`` plus its URL-safe unpadded base64
    reference hash, no server part. Before v12 the room id is chosen by the
    creating server and written in the create event, so it is read from there
    (ValueError if missing).
    """
    if version.room_id_is_create_hash:
        return "!" + encode_base64(reference_hash(create_pdu, version), urlsafe=True)
    room_id = create_pdu.get("room_id")
    if not isinstance(room_id, str):
        raise ValueError("a create event before room v12 must carry its room_id")
    return room_id
