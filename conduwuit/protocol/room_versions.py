"""The table of room versions 1-12 and the rule switches each one turns on.

Every difference between versions that code must branch on is one named flag
here, so rules read ``if version.knock_join_rule:`` rather than comparing
version strings. Facts from the spec's room version pages.
"""

from __future__ import annotations

import enum

import attrs


class EventFormat(enum.Enum):
    V1 = 1  # event_id "$opaque:server" in the PDU; prev/auth events are [id, hashes] pairs
    V3 = 3  # event id = reference hash, standard unpadded base64; plain id lists
    V4 = 4  # event id = reference hash, URL-safe unpadded base64


class StateRes(enum.Enum):
    V1 = 1
    V2 = 2
    V2_1 = 21  # v12: iterative auth from empty state, conflicted state subgraph


@attrs.frozen
class RoomVersion:
    identifier: str
    event_format: EventFormat
    state_res: StateRes
    # v5+: a signing key must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    # v1-v5: m.room.aliases has its own auth rule and redaction rule.
    special_case_aliases: bool
    # v1-v2: redactions are checked by the auth rules (domain of the event id).
    redaction_in_auth_rules: bool
    # v6+: integers within +-(2^53-1), no floats, in canonical JSON.
    strict_canonical_json: bool
    # v6+: the power-levels rule also checks `notifications`.
    limit_notifications_power_levels: bool
    # v7+: knock membership and join rule.
    knock_join_rule: bool
    # v8+: restricted join rule, join_authorised_via_users_server; redaction keeps `allow`.
    restricted_join_rule: bool
    # v9+: redaction keeps join_authorised_via_users_server in member content.
    restricted_join_redaction_fix: bool
    # v10+: knock_restricted join rule.
    knock_restricted_join_rule: bool
    # v10+: power level values must be integers (no strings).
    integer_power_levels: bool
    # v11+: the updated redaction algorithm (MSC2176, MSC3821, MSC3989).
    updated_redaction_rules: bool
    # v11+: m.room.create has no `creator`; the sender is the creator (MSC2175).
    creator_is_sender: bool
    # v11+: redactions carry `redacts` in content, not at the top level.
    redacts_in_content: bool
    # v12: room id is "!" + the create event's reference hash, with no server part;
    # the create event has no room_id and is never listed in auth_events.
    room_id_is_create_hash: bool
    # v12: creators (create sender + additional_creators) have infinite power.
    privileged_creators: bool


def _version(identifier: str, **changes: object) -> RoomVersion:
    base = ROOM_VERSIONS[str(int(identifier) - 1)] if identifier != "1" else _V1
    return attrs.evolve(base, identifier=identifier, **changes)  # type: ignore[arg-type]


_V1 = RoomVersion(
    identifier="1",
    event_format=EventFormat.V1,
    state_res=StateRes.V1,
    enforce_key_validity=False,
    special_case_aliases=True,
    redaction_in_auth_rules=True,
    strict_canonical_json=False,
    limit_notifications_power_levels=False,
    knock_join_rule=False,
    restricted_join_rule=False,
    restricted_join_redaction_fix=False,
    knock_restricted_join_rule=False,
    integer_power_levels=False,
    updated_redaction_rules=False,
    creator_is_sender=False,
    redacts_in_content=False,
    room_id_is_create_hash=False,
    privileged_creators=False,
)

ROOM_VERSIONS: dict[str, RoomVersion] = {"1": _V1}
for _id, _changes in (
    ("2", {"state_res": StateRes.V2}),
    ("3", {"event_format": EventFormat.V3, "redaction_in_auth_rules": False}),
    ("4", {"event_format": EventFormat.V4}),
    ("5", {"enforce_key_validity": True}),
    ("6", {"special_case_aliases": False, "strict_canonical_json": True,
           "limit_notifications_power_levels": True}),
    ("7", {"knock_join_rule": True}),
    ("8", {"restricted_join_rule": True}),
    ("9", {"restricted_join_redaction_fix": True}),
    ("10", {"knock_restricted_join_rule": True, "integer_power_levels": True}),
    ("11", {"updated_redaction_rules": True, "creator_is_sender": True,
            "redacts_in_content": True}),
    ("12", {"state_res": StateRes.V2_1, "room_id_is_create_hash": True,
            "privileged_creators": True}),
):
    ROOM_VERSIONS[_id] = _version(_id, **_changes)

DEFAULT_ROOM_VERSION = "12"


def get(identifier: str) -> RoomVersion | None:
    return ROOM_VERSIONS.get(identifier)
