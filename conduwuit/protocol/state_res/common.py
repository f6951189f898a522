"""Pieces shared by state resolution v1 and v2: the per-call event cache, auth chains,
the split of state sets into unconflicted and conflicted parts, and the auth-rule glue.

Everything here is pure: events come only through the caller's ``fetch`` callable, and
a missing event (``fetch`` returns None) is skipped rather than reported, as Synapse
and ruma do: the resolution has to give an answer from whatever the server holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from ..auth import AuthError, auth_types_for_event, check_auth
from ..events import Event, StateKey
from ..room_versions import RoomVersion

StateMap = Mapping[StateKey, str]
"""One room state: (event type, state key) -> event id."""

Fetch = Callable[[str], "Event | None"]
IsRejected = Callable[[str], bool]

CREATE: StateKey = ("m.room.create", "")
POWER_LEVELS: StateKey = ("m.room.power_levels", "")
JOIN_RULES_TYPE = "m.room.join_rules"
MEMBER_TYPE = "m.room.member"


class EventCache:
    """Memoises ``fetch`` and each event's auth event ids for one resolution.

    State resolution looks at the same events many times (auth chains, power levels,
    mainlines); the caller's store is asked for each id once.
    """

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._events: dict[str, Event | None] = {}
        self._auth_ids: dict[str, tuple[str, ...]] = {}

    def get(self, event_id: str) -> Event | None:
        try:
            return self._events[event_id]
        except KeyError:
            event = self._fetch(event_id)
            self._events[event_id] = event
            return event

    def auth_ids(self, event_id: str) -> tuple[str, ...]:
        """The event's auth_events ids (duplicates dropped, order kept); () if missing."""
        try:
            return self._auth_ids[event_id]
        except KeyError:
            event = self.get(event_id)
            ids = tuple(dict.fromkeys(event.auth_event_ids)) if event is not None else ()
            self._auth_ids[event_id] = ids
            return ids

    def auth_event_of_type(self, event_id: str, key: StateKey) -> Event | None:
        """The first of the event's auth events whose (type, state_key) is ``key``."""
        for auth_id in self.auth_ids(event_id):
            auth = self.get(auth_id)
            if auth is not None and auth.is_state and auth.state_pair == key:
                return auth
        return None


def walk_auth_chain(
    start: Iterable[str], events: EventCache, *, include_start: bool = False
) -> set[str]:
    """Every event reachable from ``start`` along auth_events edges (spec: "auth chain").

    Iterative, so chains thousands of events long do not hit the recursion limit. Events
    ``fetch`` does not have are skipped. With ``include_start`` the starting ids are in
    the result too (whether or not they could be fetched).
    """
    seen: set[str] = set()
    stack: list[str] = []
    for event_id in start:
        if include_start:
            seen.add(event_id)
        stack.extend(events.auth_ids(event_id))
    while stack:
        event_id = stack.pop()
        if event_id in seen or events.get(event_id) is None:
            continue
        seen.add(event_id)
        stack.extend(events.auth_ids(event_id))
    return seen


def auth_chain(event_ids: Iterable[str], fetch: Fetch) -> set[str]:
    """The full auth chain of ``event_ids``: their auth events, those events' auth events,
    and so on back to the create event (spec, rooms v2 "Auth chain").

    A given event is in the result only if another given event reaches it. Missing events
    are skipped (their own auth events cannot be known).
    """
    return walk_auth_chain(event_ids, EventCache(fetch))


Split = tuple[dict[StateKey, str], dict[StateKey, set[str]]]


def split_v2(state_sets: Sequence[StateMap]) -> Split:
    """Unconflicted state map and conflicted state set (spec, rooms v2 "Definitions").

    A key is unconflicted only if it is present in *every* state set with the same event;
    a key missing from some set is conflicted (its events are those present).
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    keys = {key for state in state_sets for key in state}
    for key in keys:
        values = {state.get(key) for state in state_sets}
        if len(values) == 1 and None not in values:
            unconflicted[key] = next(iter(values))  # type: ignore[assignment]
        else:
            conflicted[key] = {value for value in values if value is not None}
    return unconflicted, conflicted


def split_v1(state_sets: Sequence[StateMap]) -> Split:
    """Unconflicted and conflicting entries as room version 1 defines them.

    v1: "A conflict occurs between states where those states have different event_ids
    for the same (event_type, state_key)". A key only some sets have is not a conflict.
    """
    values: dict[StateKey, set[str]] = {}
    for state in state_sets:
        for key, event_id in state.items():
            values.setdefault(key, set()).add(event_id)
    unconflicted = {key: next(iter(ids)) for key, ids in values.items() if len(ids) == 1}
    conflicted = {key: ids for key, ids in values.items() if len(ids) > 1}
    return unconflicted, conflicted


class Authoriser:
    """Glue between state resolution and ``protocol.auth``: builds an event's auth state
    and asks the auth rules whether the event is allowed, with the create event found
    the way the room version wants (v12: from the room id, never in auth_events).
    """

    def __init__(
        self, version: RoomVersion, events: EventCache, is_rejected: IsRejected | None
    ) -> None:
        self.version = version
        self.events = events
        self._is_rejected = is_rejected
        self._auth_types: dict[str, frozenset[StateKey]] = {}

    def rejected(self, event_id: str) -> bool:
        return self._is_rejected is not None and self._is_rejected(event_id)

    def auth_types(self, event: Event) -> frozenset[StateKey]:
        """The state keys the auth rules need for ``event`` (auth events selection)."""
        try:
            return self._auth_types[event.event_id]
        except KeyError:
            keys = frozenset(
                auth_types_for_event(
                    event.type, event.state_key, event.sender, event.content, self.version
                )
            )
            self._auth_types[event.event_id] = keys
            return keys

    def create_event(self, event: Event, auth_state: Mapping[StateKey, Event]) -> Event | None:
        """The room's create event as seen by ``event``.

        Room v12 derives it from the room id ("!" + its reference hash), because it is
        never listed in auth_events; older versions find it in the auth state or among
        the event's own auth events.
        """
        if event.type == CREATE[0] and event.state_key == "":
            return event
        if self.version.room_id_is_create_hash:
            room_id = event.room_id
            if room_id is None or not room_id.startswith("!"):
                return None
            create = self.events.get("$" + room_id[1:])
            return create if create is not None and create.type == CREATE[0] else None
        if CREATE in auth_state:
            return auth_state[CREATE]
        return self.events.auth_event_of_type(event.event_id, CREATE)

    def allowed(self, event: Event, auth_state: Mapping[StateKey, Event]) -> bool:
        """True if the auth rules allow ``event`` against ``auth_state``."""
        try:
            check_auth(event, auth_state, create=self.create_event(event, auth_state))
        except AuthError:
            return False
        return True

    def state_events(
        self, state: Mapping[StateKey, str], keys: Iterable[StateKey]
    ) -> dict[StateKey, Event]:
        """``state`` restricted to ``keys``, as events (missing or rejected ones left out)."""
        found: dict[StateKey, Event] = {}
        for key in keys:
            event_id = state.get(key)
            if event_id is None or self.rejected(event_id):
                continue
            event = self.events.get(event_id)
            if event is not None:
                found[key] = event
        return found
