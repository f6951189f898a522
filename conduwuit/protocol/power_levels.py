"""Power levels of a room, as the authorization rules and the server read them.

Two readings of ``m.room.power_levels`` content exist on purpose:

* ``read_power_level_content`` is lenient. It is used for power levels already in
  the room state, which passed the auth rules of their room version; values those
  rules never checked (before v10 only ``users`` was checked) may be junk and are
  then treated as absent, so the default applies rather than the room breaking.
* ``parse_power_level_content`` is strict. It applies the validation part of the
  power-levels auth rule (rules 10.1-10.4 of the v12 page) to a *new* event.

Value formats by room version (spec ``rooms/v1`` "stringy"/"floaty" fragments):
v1-v9 accept strings holding base-10 integers (whitespace and a sign allowed);
v1-v5 also accept floats, truncated toward zero (v6+ canonical JSON forbids
floats); v10+ accept only JSON integers. Booleans are never levels.

v12 room creators (the create event's sender plus ``additional_creators``) have an
infinite level, represented by ``math.inf`` so plain comparisons work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .events import Event
from .ids import UserId
from .room_versions import RoomVersion

Level = int | float  # float only ever holds math.inf (a v12 creator)

# The named thresholds the power-levels rule compares (rule 10.6), with their
# defaults when absent. state_default is 50 with or without a power-levels event:
# spec v1.7 removed the old text that said 0 when the room has none.
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
NAMED_LEVELS: tuple[str, ...] = tuple(NAMED_LEVEL_DEFAULTS)
# v1-v11: with no m.room.power_levels event the creator has level 100.
CREATOR_LEVEL_WITHOUT_POWER_LEVELS = 100
# `notifications.room` defaults to 50; other keys have no documented default, so
# they get the same value (what servers do for the push rule condition).
DEFAULT_NOTIFICATION_LEVEL = 50

# "a single base 10 integer ... optionally prefixed with a single - or +,
# optionally with leading or trailing whitespace" (v1-stringy-power-levels).
_INT_STRING = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


class InvalidPowerLevels(ValueError):
    """New m.room.power_levels content that the auth rules refuse; says which field."""


@attrs.frozen
class PowerLevelContent:
    """The levels a power-levels event states, parsed to ints; absent keys are absent.

    Absence matters: rule 10.6 distinguishes "added" and "removed" from "changed".
    """

    named: Mapping[str, int] = attrs.field(factory=dict)
    events: Mapping[str, int] = attrs.field(factory=dict)
    notifications: Mapping[str, int] = attrs.field(factory=dict)
    users: Mapping[str, int] = attrs.field(factory=dict)


def parse_level(value: object, version: RoomVersion) -> int | None:
    """One power level as an int, or None if this room version does not accept it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and not version.integer_power_levels:
        return int(value) if _INT_STRING.fullmatch(value) else None
    if isinstance(value, float) and not version.strict_canonical_json:
        return int(value) if math.isfinite(value) else None
    return None


def room_creators(create: Event | None, version: RoomVersion) -> frozenset[str]:
    """Who created the room: ``content.creator`` in v1-v10, the sender from v11,
    plus ``content.additional_creators`` in v12 (invalid entries are ignored here;
    the create-event rule refuses them)."""
    if create is None:
        return frozenset()
    if not version.creator_is_sender:
        creator = create.content.get("creator")
        return frozenset([creator]) if isinstance(creator, str) else frozenset()
    creators = {create.sender}
    if version.privileged_creators:
        extra = create.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(user for user in extra if isinstance(user, str))
    return frozenset(creators)


def read_power_level_content(content: Mapping[str, Any], version: RoomVersion) -> PowerLevelContent:
    """Lenient reading: every value this room version cannot read is left out."""
    named: dict[str, int] = {}
    for key in NAMED_LEVELS:
        level = parse_level(content.get(key), version)
        if level is not None:
            named[key] = level
    return PowerLevelContent(
        named=named,
        events=_read_map(content.get("events"), version),
        notifications=_read_map(content.get("notifications"), version),
        users=_read_map(content.get("users"), version),
    )


def _read_map(value: object, version: RoomVersion) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    levels: dict[str, int] = {}
    for key, raw in value.items():
        level = parse_level(raw, version)
        if isinstance(key, str) and level is not None:
            levels[key] = level
    return levels


def parse_power_level_content(
    content: Mapping[str, Any],
    version: RoomVersion,
    creators: Iterable[str] = (),
) -> PowerLevelContent:
    """Validate new power-levels content (rules 10.1-10.4) and return it parsed.

    ``creators`` are the room's creators; only v12 forbids them in ``users``.
    Raises InvalidPowerLevels naming the offending field.
    """
    if version.integer_power_levels:
        _require_integer_fields(content, version)  # rules 10.1 and 10.2 (v10+)
    users = content.get("users", {})
    # Rule 10.3: users maps valid user ids to levels (absent is fine, as servers do).
    if not isinstance(users, Mapping):
        raise InvalidPowerLevels("users is not an object")
    for user_id, raw in users.items():
        if not isinstance(user_id, str) or UserId.try_parse(user_id) is None:
            raise InvalidPowerLevels(f"users has an invalid user id {user_id!r}")
        if parse_level(raw, version) is None:
            raise InvalidPowerLevels(f"users[{user_id!r}] is not a valid power level")
    if version.privileged_creators:
        # Rule 10.4 (v12): creators' infinite level cannot be stated or demoted.
        listed = sorted(set(creators) & set(users))
        if listed:
            raise InvalidPowerLevels(f"users lists room creator {listed[0]}")
    return read_power_level_content(content, version)


def _require_integer_fields(content: Mapping[str, Any], version: RoomVersion) -> None:
    for key in NAMED_LEVELS:
        if key in content and parse_level(content[key], version) is None:
            raise InvalidPowerLevels(f"{key} is not an integer")
    for key in ("events", "notifications"):
        if key not in content:
            continue
        value = content[key]
        if not isinstance(value, Mapping):
            raise InvalidPowerLevels(f"{key} is not an object")
        for name, raw in value.items():
            if parse_level(raw, version) is None:
                raise InvalidPowerLevels(f"{key}[{name!r}] is not an integer")


@attrs.frozen
class PowerLevels:
    """The effective levels of a room at one point: stated values over defaults."""

    users: Mapping[str, int] = attrs.field(factory=dict)
    events: Mapping[str, int] = attrs.field(factory=dict)
    notifications: Mapping[str, int] = attrs.field(factory=dict)
    users_default: int = 0
    events_default: int = 0
    state_default: int = 50
    ban: int = 50
    kick: int = 50
    redact: int = 50
    invite: int = 0
    # v12 only: these users outrank every stated level.
    infinite_users: frozenset[str] = frozenset()

    @classmethod
    def from_state(
        cls, power_levels: Event | None, create: Event | None, version: RoomVersion
    ) -> PowerLevels:
        """Levels from the room's m.room.power_levels and m.room.create events.

        Without a power-levels event, v1-v11 give the creator 100 and everyone else
        0; v12 creators are infinite either way.
        """
        creators = room_creators(create, version)
        infinite = creators if version.privileged_creators else frozenset()
        if power_levels is None:
            users = {} if infinite else dict.fromkeys(creators, CREATOR_LEVEL_WITHOUT_POWER_LEVELS)
            return cls(users=users, infinite_users=infinite)
        stated = read_power_level_content(power_levels.content, version)
        named = {**NAMED_LEVEL_DEFAULTS, **stated.named}
        return cls(
            users=stated.users,
            events=stated.events,
            notifications=stated.notifications,
            users_default=named["users_default"],
            events_default=named["events_default"],
            state_default=named["state_default"],
            ban=named["ban"],
            kick=named["kick"],
            redact=named["redact"],
            invite=named["invite"],
            infinite_users=infinite,
        )

    def user_level(self, user_id: str) -> Level:
        if user_id in self.infinite_users:
            return math.inf
        return self.users.get(user_id, self.users_default)

    def event_level(self, event_type: str, is_state: bool) -> int:
        """The level needed to send an event of this type (rule 8)."""
        default = self.state_default if is_state else self.events_default
        return self.events.get(event_type, default)

    def notification_level(self, key: str) -> int:
        """The level needed to trigger a notification of this kind (e.g. "room")."""
        return self.notifications.get(key, DEFAULT_NOTIFICATION_LEVEL)
