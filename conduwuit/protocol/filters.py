"""Validation of filter definitions (spec: ``definitions/sync_filter.yaml`` and friends).

Pure: no I/O and nothing of ours imported, so ``POST /user/{userId}/filter`` and
``/sync`` (inline ``filter=`` JSON) share one set of rules.

Wrong JSON types are ``M_BAD_JSON``; values of the right type that the spec rules out
(a room id without ``!``, an unknown ``event_format``) are ``M_INVALID_PARAM``. Every
message names the field by its dotted path. Keys the spec does not define are kept and
ignored, as Matrix asks of unknown keys (clients send unstable MSC fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Matrix integers must fit in an IEEE double exactly (spec appendix "Canonical JSON").
MAX_SAFE_INT = 2**53 - 1
EVENT_FORMATS = ("client", "federation")

_ROOM_EVENT_FILTER_BOOLS = (
    "unread_thread_notifications",
    "lazy_load_members",
    "include_redundant_members",
    "contains_url",
)
_ROOM_EVENT_FILTER_KEYS = ("ephemeral", "state", "timeline", "account_data")


class FilterError(ValueError):
    """A filter that breaks the spec; ``errcode`` is the Matrix error code to answer."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


def validate_filter(value: object) -> dict[str, Any]:
    """Check a whole filter (the ``Filter`` schema) and return it unchanged.

    Raises :class:`FilterError` for the first problem found.
    """
    top = _object(value, "filter")
    _optional_list(top, "event_fields", "", _check_string)
    event_format = top.get("event_format")
    if event_format is not None:
        if not isinstance(event_format, str):
            raise _bad_json("event_format must be a string")
        if event_format not in EVENT_FORMATS:
            raise _invalid("event_format must be 'client' or 'federation'")
    for key in ("presence", "account_data"):
        if key in top:
            _event_filter(top[key], key)
    if "room" in top:
        _room_filter(top["room"], "room")
    return top


def _room_filter(value: object, path: str) -> None:
    room = _object(value, path)
    _optional_list(room, "rooms", path, _check_room_id)
    _optional_list(room, "not_rooms", path, _check_room_id)
    _optional_bool(room, "include_leave", path)
    for key in _ROOM_EVENT_FILTER_KEYS:
        if key in room:
            _room_event_filter(room[key], f"{path}.{key}")


def _event_filter(value: object, path: str) -> dict[str, Any]:
    """The ``EventFilter`` fields: limit, (not_)types and (not_)senders."""
    obj = _object(value, path)
    if "limit" in obj:
        _check_limit(obj["limit"], f"{path}.limit")
    _optional_list(obj, "types", path, _check_string)
    _optional_list(obj, "not_types", path, _check_string)
    _optional_list(obj, "senders", path, _check_user_id)
    _optional_list(obj, "not_senders", path, _check_user_id)
    return obj


def _room_event_filter(value: object, path: str) -> None:
    """``RoomEventFilter``: an EventFilter plus room lists and booleans."""
    obj = _event_filter(value, path)
    _optional_list(obj, "rooms", path, _check_room_id)
    _optional_list(obj, "not_rooms", path, _check_room_id)
    for key in _ROOM_EVENT_FILTER_BOOLS:
        _optional_bool(obj, key, path)


# ---------------------------------------------------------------- field checks


def _check_limit(value: object, path: str) -> None:
    # The spec says "greater than 0", but 0 is what some clients send to mean "none"
    # and is harmless, so only negatives and non-integers are refused.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_json(f"{path} must be an integer")
    if not 0 <= value <= MAX_SAFE_INT:
        raise _invalid(f"{path} must be between 0 and {MAX_SAFE_INT}")


def _check_string(value: object, path: str) -> None:
    if not isinstance(value, str):
        raise _bad_json(f"{path} must be a string")


def _check_room_id(value: object, path: str) -> None:
    _check_string(value, path)
    assert isinstance(value, str)
    if len(value) < 2 or not value.startswith("!"):
        raise _invalid(f"{path} must be a room id starting with '!', not {value!r}")


def _check_user_id(value: object, path: str) -> None:
    _check_string(value, path)
    assert isinstance(value, str)
    if len(value) < 2 or not value.startswith("@"):
        raise _invalid(f"{path} must be a user id starting with '@', not {value!r}")


# ----------------------------------------------------------------- structure


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_json(f"{path} must be a JSON object")
    return value


def _optional_bool(obj: dict[str, Any], key: str, path: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise _bad_json(f"{_join(path, key)} must be a boolean")


def _optional_list(
    obj: dict[str, Any], key: str, path: str, check: Callable[[object, str], None]
) -> None:
    if key not in obj:
        return
    where = _join(path, key)
    items = obj[key]
    if not isinstance(items, list):
        raise _bad_json(f"{where} must be a list")
    for index, item in enumerate(items):
        check(item, f"{where}[{index}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _bad_json(message: str) -> FilterError:
    return FilterError("M_BAD_JSON", message)


def _invalid(message: str) -> FilterError:
    return FilterError("M_INVALID_PARAM", message)


# --- applying filters ---------------------------------------------------------------


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def event_allowed(event_filter: dict[str, Any], event_type: str, sender: str,
                  room_id: str | None = None, *, contains_url: bool | None = None) -> bool:
    """Whether an EventFilter/RoomEventFilter lets an event through (spec "Filtering")."""
    types = event_filter.get("types")
    if types is not None and not any(_type_matches(t, event_type) for t in types):
        return False
    if any(_type_matches(t, event_type) for t in event_filter.get("not_types", [])):
        return False
    senders = event_filter.get("senders")
    if senders is not None and sender not in senders:
        return False
    if sender in event_filter.get("not_senders", []):
        return False
    if room_id is not None:
        rooms = event_filter.get("rooms")
        if rooms is not None and room_id not in rooms:
            return False
        if room_id in event_filter.get("not_rooms", []):
            return False
    wanted_url = event_filter.get("contains_url")
    return not (isinstance(wanted_url, bool) and contains_url is not None
                and wanted_url != contains_url)


def room_allowed(room_filter: dict[str, Any], room_id: str) -> bool:
    rooms = room_filter.get("rooms")
    if rooms is not None and room_id not in rooms:
        return False
    return room_id not in room_filter.get("not_rooms", [])
