"""The redaction algorithm of every room version (spec: rooms/v1..v12, "Redactions").

Redaction is not only what happens when a user deletes a message: the
redacted form of an event is what its signatures and (from v3) its event id
cover. A single key kept or dropped wrongly changes every reference hash and
breaks federation with that room, so each per-version difference is one
``RoomVersion`` flag and one line here:

- v1-v5 (``special_case_aliases``): ``m.room.aliases`` keeps ``aliases``.
- v8+ (``restricted_join_rule``): ``m.room.join_rules`` keeps ``allow``.
- v9+ (``restricted_join_redaction_fix``): ``m.room.member`` keeps
  ``join_authorised_via_users_server``.
- v11+ (``updated_redaction_rules``): top-level ``origin``, ``membership`` and
  ``prev_state`` are no longer kept; ``m.room.create`` keeps its whole content
  (and so no longer singles out ``creator``); ``m.room.power_levels`` keeps
  ``invite``; ``m.room.redaction`` keeps ``redacts``; ``m.room.member`` keeps
  ``third_party_invite.signed``.
- v12 redacts exactly like v11.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .room_versions import RoomVersion

# Top-level keys every version keeps.
_KEPT_TOP_LEVEL: Final = frozenset(
    {
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
)
# Kept only before v11 (MSC2176 stopped protecting them).
_KEPT_TOP_LEVEL_BEFORE_V11: Final = _KEPT_TOP_LEVEL | {"prev_state", "origin", "membership"}

_POWER_LEVELS_KEYS: Final = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def redact(pdu: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
    """Return the redacted copy of ``pdu`` under ``version``'s rules.

    The input is not modified. ``unsigned`` is dropped like every other key
    not on the list; code that serves redacted events to clients adds back
    what it wants there. ``content`` is always present in the result (an empty
    object when the event had none or a non-object), as every PDU must have
    one and Synapse emits it that way.
    """
    kept = _KEPT_TOP_LEVEL if version.updated_redaction_rules else _KEPT_TOP_LEVEL_BEFORE_V11
    redacted = {key: value for key, value in pdu.items() if key in kept}
    content = pdu.get("content")
    event_type = pdu.get("type")
    if isinstance(content, Mapping) and isinstance(event_type, str):
        redacted["content"] = redact_content(event_type, content, version)
    else:
        redacted["content"] = {}
    return redacted


def redact_content(
    event_type: str, content: Mapping[str, Any], version: RoomVersion
) -> dict[str, Any]:
    """The content an event of ``event_type`` keeps when redacted."""
    if event_type == "m.room.create" and version.updated_redaction_rules:
        return dict(content)
    kept = _kept_content_keys(event_type, version)
    out = {key: content[key] for key in kept if key in content}
    if event_type == "m.room.member" and version.updated_redaction_rules:
        _keep_third_party_invite_signed(content, out)
    return out


def _kept_content_keys(event_type: str, version: RoomVersion) -> tuple[str, ...]:
    """The content keys kept for ``event_type`` (v11 create is handled by the caller)."""
    if event_type == "m.room.member":
        if version.restricted_join_redaction_fix:
            return ("membership", "join_authorised_via_users_server")
        return ("membership",)
    if event_type == "m.room.create":
        return ("creator",)
    if event_type == "m.room.join_rules":
        return ("join_rule", "allow") if version.restricted_join_rule else ("join_rule",)
    if event_type == "m.room.power_levels":
        if version.updated_redaction_rules:
            return (*_POWER_LEVELS_KEYS, "invite")
        return _POWER_LEVELS_KEYS
    if event_type == "m.room.history_visibility":
        return ("history_visibility",)
    if event_type == "m.room.aliases" and version.special_case_aliases:
        return ("aliases",)
    if event_type == "m.room.redaction" and version.updated_redaction_rules:
        return ("redacts",)
    return ()


def _keep_third_party_invite_signed(content: Mapping[str, Any], out: dict[str, Any]) -> None:
    """v11+: a member event keeps ``third_party_invite`` reduced to its ``signed`` key.

    The auth rules need ``signed`` to check a third-party invite join, so it
    must survive redaction (MSC3821). When ``third_party_invite`` is an object
    without ``signed``, an empty object remains: that is what Synapse emits,
    and reference hashes must agree with it.
    """
    invite = content.get("third_party_invite")
    if not isinstance(invite, Mapping):
        return
    out["third_party_invite"] = {"signed": invite["signed"]} if "signed" in invite else {}
