"""The MSC4186 request body, checked and normalised before any work is done.

Both shapes clients send today are accepted: Synapse's (``ranges: [[0, 19]]``,
``required_state: [["m.room.name", ""], ["m.room.member", "$LAZY"]]``,
``is_invite``) and the MSC's newest text (``range: [0, 19]``, ``required_state:
{"include": [...], "exclude": [...], "lazy_members": true}``, ``is_invited``).
Anything malformed is a 400 ``M_BAD_JSON`` naming the field, never a 500.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from conduwuit.errors import MatrixError

WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"
MEMBER = "m.room.member"

MAX_LISTS = 100
MAX_LIST_KEY = 64
MAX_TIMELINE_LIMIT = 1000
MAX_SUBSCRIPTIONS = 1000
MAX_TO_DEVICE_LIMIT = 100

Rule = tuple[str, str]  # (event type or "*", state key or "*" / "$ME")


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


@attrs.frozen
class RequiredState:
    """Which state a room config asks for; ``include`` rules OR'd, ``exclude`` after."""

    include: frozenset[Rule] = frozenset()
    exclude: frozenset[Rule] = frozenset()
    lazy: bool = False

    def matches(self, event_type: str, state_key: str, me: str) -> bool:
        if any(_rule_matches(rule, event_type, state_key, me) for rule in self.exclude):
            return False
        for rule in self.include:
            if not _rule_matches(rule, event_type, state_key, me):
                continue
            # With lazy members, a wildcard type does not pull in every member: the
            # documented meaning of [["m.room.member", "$LAZY"], ["*", "*"]].
            if self.lazy and event_type == MEMBER and rule[0] == WILDCARD:
                continue
            return True
        return False

    def combine(self, other: RequiredState) -> RequiredState:
        """The superset of two configs (a room in several lists and subscriptions)."""
        return RequiredState(self.include | other.include, self.exclude & other.exclude,
                             self.lazy or other.lazy)

    @property
    def empty(self) -> bool:
        return not self.include and not self.lazy


def _rule_matches(rule: Rule, event_type: str, state_key: str, me: str) -> bool:
    rule_type, rule_key = rule
    if rule_type not in (WILDCARD, event_type):
        return False
    return rule_key in (WILDCARD, state_key) or (rule_key == ME and state_key == me)


@attrs.frozen
class RoomConfig:
    timeline_limit: int
    required_state: RequiredState

    def combine(self, other: RoomConfig) -> RoomConfig:
        return RoomConfig(max(self.timeline_limit, other.timeline_limit),
                          self.required_state.combine(other.required_state))


@attrs.frozen
class Filters:
    is_dm: bool | None = None
    spaces: tuple[str, ...] | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None
    room_name_like: str | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] | None = None


@attrs.frozen
class ListConfig:
    room: RoomConfig
    ranges: tuple[tuple[int, int], ...] | None
    filters: Filters


@attrs.frozen
class ExtensionScope:
    """An extension's ``lists``/``rooms`` keys; ``None`` means ``["*"]`` (the default)."""

    enabled: bool
    lists: tuple[str, ...] | None = None
    rooms: tuple[str, ...] | None = None


@attrs.frozen
class ToDeviceConfig:
    enabled: bool
    since: int | None = None
    limit: int = MAX_TO_DEVICE_LIMIT


@attrs.frozen
class Extensions:
    to_device: ToDeviceConfig = ToDeviceConfig(False)
    e2ee: bool = False
    account_data: ExtensionScope = ExtensionScope(False)
    receipts: ExtensionScope = ExtensionScope(False)
    typing: ExtensionScope = ExtensionScope(False)


@attrs.frozen
class SlidingRequest:
    conn_id: str
    lists: dict[str, ListConfig]
    subscriptions: dict[str, RoomConfig]
    extensions: Extensions


# --- parsing ----------------------------------------------------------------------------


def parse_request(body: Mapping[str, Any]) -> SlidingRequest:
    conn_id = body.get("conn_id")
    if conn_id is None:
        conn_id = ""
    if not isinstance(conn_id, str) or len(conn_id) > 255:
        raise _bad("conn_id must be a string of at most 255 characters")
    lists = _object(body, "lists")
    if len(lists) > MAX_LISTS:
        raise _bad(f"At most {MAX_LISTS} lists")
    parsed_lists: dict[str, ListConfig] = {}
    for key, value in lists.items():
        if len(key) > MAX_LIST_KEY:
            raise _bad(f"List keys are at most {MAX_LIST_KEY} characters")
        parsed_lists[key] = _list(key, value)
    subscriptions = _object(body, "room_subscriptions")
    if len(subscriptions) > MAX_SUBSCRIPTIONS:
        raise _bad(f"At most {MAX_SUBSCRIPTIONS} room subscriptions")
    parsed_subs = {room_id: _room_config(f"room_subscriptions.{room_id}", value)
                   for room_id, value in subscriptions.items()}
    return SlidingRequest(conn_id, parsed_lists, parsed_subs,
                          _extensions(_object(body, "extensions")))


def _object(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"{key} must be an object")
    return value


def _list(key: str, value: Any) -> ListConfig:
    where = f"lists.{key}"
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object")
    ranges: list[tuple[int, int]] | None = None
    if value.get("ranges") is not None:
        raw = value["ranges"]
        if not isinstance(raw, list):
            raise _bad(f"{where}.ranges must be a list of [start, end] pairs")
        ranges = [_range(f"{where}.ranges", r) for r in raw]
    elif value.get("range") is not None:
        ranges = [_range(f"{where}.range", value["range"])]
    if value.get("slow_get_all_rooms") is True:
        ranges = None
    return ListConfig(_room_config(where, value), tuple(ranges) if ranges is not None else None,
                      _filters(where, value.get("filters")))


def _range(where: str, value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in value)
            or value[0] > value[1]):
        raise _bad(f"{where} must be [start, end] with 0 <= start <= end")
    return value[0], value[1]


def _room_config(where: str, value: Any) -> RoomConfig:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object")
    limit = value.get("timeline_limit", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or not \
            0 <= limit <= MAX_TIMELINE_LIMIT:
        raise _bad(f"{where}.timeline_limit must be an integer from 0 to "
                   f"{MAX_TIMELINE_LIMIT}")
    return RoomConfig(limit, _required_state(where, value.get("required_state")))


def _required_state(where: str, value: Any) -> RequiredState:
    where = f"{where}.required_state"
    if value is None:
        return RequiredState()
    if isinstance(value, list):
        include: set[Rule] = set()
        lazy = False
        for pair in value:
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(p, str) for p in pair)):
                raise _bad(f"{where} must be a list of [event type, state key] pairs")
            if pair[0] == MEMBER and pair[1] == LAZY:
                lazy = True
            else:
                include.add((pair[0], pair[1]))
        return RequiredState(frozenset(include), frozenset(), lazy)
    if isinstance(value, dict):
        lazy_members = value.get("lazy_members", False)
        if not isinstance(lazy_members, bool):
            raise _bad(f"{where}.lazy_members must be a boolean")
        return RequiredState(_elements(f"{where}.include", value.get("include")),
                             _elements(f"{where}.exclude", value.get("exclude")),
                             lazy_members)
    raise _bad(f"{where} must be a list of pairs or an object")


def _elements(where: str, value: Any) -> frozenset[Rule]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise _bad(f"{where} must be a list")
    out: set[Rule] = set()
    for element in value:
        if not isinstance(element, dict):
            raise _bad(f"{where} must hold objects")
        event_type = element.get("type", WILDCARD)
        state_key = element.get("state_key", WILDCARD)
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            raise _bad(f"{where}: type and state_key must be strings")
        out.add((event_type, state_key))
    return frozenset(out)


def _filters(where: str, value: Any) -> Filters:
    if value is None:
        return Filters()
    where = f"{where}.filters"
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object")
    is_invite = value.get("is_invite", value.get("is_invited"))
    return Filters(
        is_dm=_opt_bool(where, "is_dm", value.get("is_dm")),
        spaces=_opt_strings(where, "spaces", value.get("spaces")),
        is_encrypted=_opt_bool(where, "is_encrypted", value.get("is_encrypted")),
        is_invite=_opt_bool(where, "is_invite", is_invite),
        room_types=_opt_types(where, "room_types", value.get("room_types")),
        not_room_types=_opt_types(where, "not_room_types", value.get("not_room_types")),
        room_name_like=_opt_str(where, "room_name_like", value.get("room_name_like")),
        tags=_opt_strings(where, "tags", value.get("tags")),
        not_tags=_opt_strings(where, "not_tags", value.get("not_tags")),
    )


def _opt_bool(where: str, key: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{where}.{key} must be a boolean")
    return value


def _opt_str(where: str, key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(f"{where}.{key} must be a string")
    return value


def _opt_strings(where: str, key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _opt_types(where: str, key: str, value: Any) -> tuple[str | None, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise _bad(f"{where}.{key} must be a list of strings or nulls")
    return tuple(value)


def _extensions(value: dict[str, Any]) -> Extensions:
    def section(name: str) -> dict[str, Any]:
        raw = value.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise _bad(f"extensions.{name} must be an object")
        return raw

    def enabled(name: str, raw: dict[str, Any]) -> bool:
        flag = raw.get("enabled", False)
        if not isinstance(flag, bool):
            raise _bad(f"extensions.{name}.enabled must be a boolean")
        return flag

    def scope(name: str) -> ExtensionScope:
        raw = section(name)
        return ExtensionScope(enabled(name, raw),
                              _scope_keys(name, "lists", raw.get("lists")),
                              _scope_keys(name, "rooms", raw.get("rooms")))

    raw_to_device = section("to_device")
    since_raw = raw_to_device.get("since")
    since: int | None = None
    if since_raw is not None:
        if not isinstance(since_raw, str) or not since_raw.isascii() \
                or not since_raw.isdigit() or len(since_raw) > 18:
            raise _bad("extensions.to_device.since must be a token from next_batch")
        since = int(since_raw)
    limit = raw_to_device.get("limit", MAX_TO_DEVICE_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise _bad("extensions.to_device.limit must be a non-negative integer")
    return Extensions(
        to_device=ToDeviceConfig(enabled("to_device", raw_to_device), since,
                                 min(limit, MAX_TO_DEVICE_LIMIT)),
        e2ee=enabled("e2ee", section("e2ee")),
        account_data=scope("account_data"),
        receipts=scope("receipts"),
        typing=scope("typing"),
    )


def _scope_keys(name: str, key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"extensions.{name}.{key} must be a list of strings")
    return None if WILDCARD in value else tuple(value)


def scoped_rooms(scope: ExtensionScope, list_rooms: Mapping[str, Iterable[str]],
                 subscribed: Iterable[str]) -> set[str]:
    """The rooms of this response an extension covers (its ``lists``/``rooms`` keys)."""
    out: set[str] = set()
    for key, rooms in list_rooms.items():
        if scope.lists is None or key in scope.lists:
            out.update(rooms)
    out.update(room for room in subscribed if scope.rooms is None or room in scope.rooms)
    return out
