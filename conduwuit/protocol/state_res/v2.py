"""State resolution v2 (room versions 2-11) and v2.1 (room version 12).

Spec: content/rooms/v2.md "State resolution" and content/rooms/v12.md. Step numbers in
the docstrings below are those of the spec's "Algorithm" list.

Two places where we follow the deployed servers (Synapse, ruma/conduwuit) rather than a
literal reading of the spec, because servers must converge on the same answer:

* The auth chain of a state set, used for the *auth difference*, includes the state
  events themselves (Synapse's chain-cover and breadth-first implementations both do).
* Step 1 enlarges the power events with the events of their auth chains that are in the
  full conflicted set by walking auth edges *through* full-conflicted-set events only;
  the sort's DAG has those direct edges. ``m.room.create`` counts as a power event.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence

from ..events import Event, StateKey
from ..power_levels import Level, PowerLevels
from ..room_versions import RoomVersion, StateRes
from .common import (
    POWER_LEVELS,
    Authoriser,
    EventCache,
    IsRejected,
    StateMap,
    split_v2,
    walk_auth_chain,
)

SortKey = tuple[float, int, str]


def resolve_v2(
    version: RoomVersion,
    state_sets: Sequence[StateMap],
    events: EventCache,
    is_rejected: IsRejected | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` with state resolution v2, or v2.1 for room version 12."""
    unconflicted, conflicted = split_v2(state_sets)
    if not conflicted:
        return unconflicted
    v2_1 = version.state_res is StateRes.V2_1
    authoriser = Authoriser(version, events, is_rejected)
    full = full_conflicted_set(state_sets, unconflicted, conflicted, events, v2_1=v2_1)

    # Step 1: power events of the full conflicted set, enlarged by their auth chains
    # within that set, in reverse topological power ordering.
    power_ids = [event_id for event_id in full if is_power_event(events.get(event_id))]
    graph = power_graph(power_ids, full, events)
    power_order = PowerOrder(authoriser)
    sorted_power = topological_sort(graph, power_order.key)

    # Step 2: iterative auth checks from the unconflicted state map (v2) or from an
    # empty state map (v2.1, room v12).
    base: dict[StateKey, str] = {} if v2_1 else dict(unconflicted)
    partial = iterative_auth_checks(sorted_power, base, authoriser)

    # Step 3: everything not picked in step 1, in mainline order of the resolved
    # power levels.
    rest = [event_id for event_id in full if event_id not in graph]
    sorted_rest = mainline_sort(rest, partial.get(POWER_LEVELS), events)

    # Step 4: iterative auth checks on top of the partially resolved state.
    resolved = iterative_auth_checks(sorted_rest, partial, authoriser)

    # Step 5: the unconflicted state map wins over anything resolved for its keys.
    resolved.update(unconflicted)
    return resolved


def full_conflicted_set(
    state_sets: Sequence[StateMap],
    unconflicted: StateMap,
    conflicted: dict[StateKey, set[str]],
    events: EventCache,
    *,
    v2_1: bool,
) -> set[str]:
    """The conflicted state set, the auth difference and (v2.1) the conflicted state
    subgraph; only state events ``fetch`` has (spec: "Full conflicted set")."""
    conflicted_ids = {event_id for ids in conflicted.values() for event_id in ids}
    full = conflicted_ids | auth_difference(state_sets, unconflicted, events)
    if v2_1:
        full |= conflicted_state_subgraph(conflicted_ids, events)
    return {event_id for event_id in full if _is_state(events.get(event_id))}


def auth_difference(
    state_sets: Sequence[StateMap], unconflicted: StateMap, events: EventCache
) -> set[str]:
    """∪ C_i − ∩ C_i where C_i is the full auth chain of state set i (spec: "Auth
    difference"), each C_i including the state events themselves.

    Every C_i contains U, the chain of the unconflicted events (they are in every set),
    and U is closed under auth edges, so the difference is that of the chains D_i of
    each set's conflicted events with U removed; those walks stop at U. The common
    part of the room's auth DAG is walked once rather than once per state set.
    """
    common = walk_auth_chain(set(unconflicted.values()), events, include_start=True)
    chains = [
        _walk_outside(
            {event_id for key, event_id in state.items() if key not in unconflicted},
            common,
            events,
        )
        for state in state_sets
    ]
    if not chains:
        return set()
    union = chains[0].union(*chains[1:])
    return union - chains[0].intersection(*chains[1:])


def _walk_outside(start: Iterable[str], common: set[str], events: EventCache) -> set[str]:
    """``start`` and what it reaches along auth edges without entering ``common``."""
    seen: set[str] = set()
    stack = [event_id for event_id in start if event_id not in common]
    while stack:
        event_id = stack.pop()
        if event_id in seen:
            continue
        seen.add(event_id)
        for auth_id in events.auth_ids(event_id):
            if auth_id not in common and auth_id not in seen and events.get(auth_id) is not None:
                stack.append(auth_id)
    return seen


def conflicted_state_subgraph(conflicted_ids: set[str], events: EventCache) -> set[str]:
    """Room v12's *conflicted state subgraph*: every event on an auth_events path from one
    conflicted event to another, endpoints included.

    An event is on such a path exactly when a conflicted event reaches it (it is in the
    auth chain of the conflicted events) and it reaches a conflicted event; the second
    half is a walk down the reversed edges of that auth chain from the conflicted events.
    """
    reachable = {
        event_id
        for event_id in walk_auth_chain(conflicted_ids, events, include_start=True)
        if events.get(event_id) is not None
    }
    cited_by: dict[str, list[str]] = {}
    for event_id in reachable:
        for auth_id in events.auth_ids(event_id):
            if auth_id in reachable:
                cited_by.setdefault(auth_id, []).append(event_id)
    subgraph: set[str] = set()
    stack = [event_id for event_id in conflicted_ids if event_id in reachable]
    while stack:
        event_id = stack.pop()
        if event_id not in subgraph:
            subgraph.add(event_id)
            stack.extend(cited_by.get(event_id, ()))
    return subgraph


def is_power_event(event: Event | None) -> bool:
    """Spec "Power events": events that might remove someone's ability to do something
    (power levels, join rules, kicks and bans), plus the create event as Synapse and
    ruma treat it."""
    if event is None or not event.is_state:
        return False
    if event.state_key == "" and event.type in (
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.create",
    ):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def power_graph(
    power_ids: Iterable[str], full: set[str], events: EventCache
) -> dict[str, set[str]]:
    """Step 1's set X as a DAG: each node maps to its auth events that are in X.

    X is the power events plus the events of their auth chains that are in the full
    conflicted set, reached through full-conflicted-set events.
    """
    graph: dict[str, set[str]] = {}
    stack = list(power_ids)
    while stack:
        event_id = stack.pop()
        if event_id in graph:
            continue
        edges = {auth_id for auth_id in events.auth_ids(event_id) if auth_id in full}
        graph[event_id] = edges
        stack.extend(edges.difference(graph))
    return graph


def topological_sort(graph: dict[str, set[str]], key: Callable[[str], SortKey]) -> list[str]:
    """Kahn's algorithm from the oldest events, taking the smallest candidate by ``key``
    at each step (spec: "Reverse topological power ordering").

    Nodes on an auth cycle (impossible with hash event ids, possible with forged v1/v2
    ids) never become candidates and are left out.
    """
    waiting = {node: len(edges) for node, edges in graph.items()}
    cited_by: dict[str, list[str]] = {}
    for node, edges in graph.items():
        for auth_id in edges:
            cited_by.setdefault(auth_id, []).append(node)
    ready = [(key(node), node) for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for child in cited_by.get(node, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (key(child), child))
    return ordered


class PowerOrder:
    """The comparison of the reverse topological power ordering: higher sender power
    level (from the event's own auth events) first, then older origin_server_ts, then
    smaller event id. Levels are cached per event and per power-levels event."""

    def __init__(self, authoriser: Authoriser) -> None:
        self._authoriser = authoriser
        self._keys: dict[str, SortKey] = {}
        self._levels: dict[tuple[str | None, str | None], PowerLevels] = {}

    def key(self, event_id: str) -> SortKey:
        try:
            return self._keys[event_id]
        except KeyError:
            event = self._authoriser.events.get(event_id)
            if event is None:  # never the case for graph nodes; be total anyway
                key: SortKey = (0.0, 0, event_id)
            else:
                key = (-float(self.sender_level(event)), event.origin_server_ts, event_id)
            self._keys[event_id] = key
            return key

    def sender_level(self, event: Event) -> Level:
        """The sender's power level according to the event's auth events (v12: creators
        are infinitely powerful, the create event coming from the room id)."""
        events = self._authoriser.events
        pl_event = events.auth_event_of_type(event.event_id, POWER_LEVELS)
        create = self._authoriser.create_event(event, {})
        cache_key = (
            pl_event.event_id if pl_event else None,
            create.event_id if create else None,
        )
        levels = self._levels.get(cache_key)
        if levels is None:
            levels = PowerLevels.from_state(pl_event, create, self._authoriser.version)
            self._levels[cache_key] = levels
        return levels.user_level(event.sender)


def iterative_auth_checks(
    ordered: Iterable[str], base: dict[StateKey, str], authoriser: Authoriser
) -> dict[StateKey, str]:
    """Spec "Iterative auth checks": apply each event in turn if the auth rules allow it
    against the state built so far.

    A key the rules need that the state lacks comes from the event's own auth_events,
    unless that auth event was rejected. Only the keys the rules need are passed.
    """
    state = dict(base)
    events = authoriser.events
    for event_id in ordered:
        event = events.get(event_id)
        if event is None or not event.is_state:
            continue
        needed = authoriser.auth_types(event)
        auth_state: dict[StateKey, Event] = {}
        for auth_id in events.auth_ids(event_id):
            auth = events.get(auth_id)
            if (
                auth is not None
                and auth.is_state
                and auth.state_pair in needed
                and not authoriser.rejected(auth_id)
            ):
                auth_state[auth.state_pair] = auth
        auth_state.update(authoriser.state_events(state, needed))
        if authoriser.allowed(event, auth_state):
            state[event.state_pair] = event_id
    return state


def mainline_sort(
    event_ids: Iterable[str], power_levels_id: str | None, events: EventCache
) -> list[str]:
    """Spec "Mainline ordering" based on ``power_levels_id``: events whose power-level
    ancestry meets the mainline further back come first; then origin_server_ts, event id.

    Positions of the power-levels events met on the way are memoised, so a long history
    of power-level changes is walked once.
    """
    mainline: dict[str, int] = {}
    current = power_levels_id
    while current is not None and current not in mainline:
        mainline[current] = len(mainline)
        current = _parent_power_levels(current, events)

    known: dict[str, float] = {}

    def position(event_id: str) -> float:
        path: list[str] = []
        on_path: set[str] = set()
        current = _parent_power_levels(event_id, events)
        found = math.inf
        while current is not None:
            if current in mainline:
                found = mainline[current]
                break
            if current in known:
                found = known[current]
                break
            if current in on_path:  # an auth cycle: give up on this walk
                break
            path.append(current)
            on_path.add(current)
            current = _parent_power_levels(current, events)
        for step in path:
            known[step] = found
        return found

    def key(event_id: str) -> SortKey:
        event = events.get(event_id)
        stamp = event.origin_server_ts if event is not None else 0
        return (-position(event_id), stamp, event_id)

    return sorted(event_ids, key=key)


def _parent_power_levels(event_id: str, events: EventCache) -> str | None:
    """The m.room.power_levels event among the event's auth events, if any."""
    parent = events.auth_event_of_type(event_id, POWER_LEVELS)
    return parent.event_id if parent is not None else None


def _is_state(event: Event | None) -> bool:
    return event is not None and event.is_state
