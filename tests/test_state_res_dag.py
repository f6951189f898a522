"""A room DAG builder for the state resolution tests, and tests of the builder itself.

Unlike ``tests/support/events.py`` (one linear current state), ``Dag`` keeps the state
after *every* event so histories can fork and merge: an event with several
prev_events gets the resolution of their states as its state before, the way a server
computes it. Each event cites the auth events the selection algorithm picks from its
state before, and a state event the auth rules refuse against that state is recorded
as rejected and does not change the state.

Scenarios are written as node names ("PA", "T1"); ``Dag.id(name)`` is the event id.
Timestamps count up in build order, so later-built events are newer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import pytest

from conduwuit.protocol import room_versions
from conduwuit.protocol.auth import AuthError, auth_types_for_event, check_auth
from conduwuit.protocol.events import Event, StateKey
from conduwuit.protocol.room_versions import EventFormat, RoomVersion
from conduwuit.protocol.state_res import resolve

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

CREATE_KEY = ("m.room.create", "")
PL_KEY = ("m.room.power_levels", "")
JR_KEY = ("m.room.join_rules", "")
TOPIC_KEY = ("m.room.topic", "")


def member_key(user: str) -> StateKey:
    return ("m.room.member", user)


def version(identifier: str) -> RoomVersion:
    found = room_versions.get(identifier)
    assert found is not None
    return found


@attrs.frozen
class Spec:
    """One event of a scenario, before it has prev/auth events."""

    name: str
    sender: str
    type: str
    state_key: str | None = None
    content: Mapping[str, Any] = attrs.field(factory=dict)


def join(name: str, user: str) -> Spec:
    return Spec(name, user, "m.room.member", user, {"membership": "join"})


def member(name: str, sender: str, target: str, membership: str) -> Spec:
    return Spec(name, sender, "m.room.member", target, {"membership": membership})


def topic(name: str, sender: str) -> Spec:
    return Spec(name, sender, "m.room.topic", "", {"topic": name})


def message(name: str, sender: str = ZARA) -> Spec:
    return Spec(name, sender, "m.room.message", None, {"body": name})


class Dag:
    """A room history that may fork; see the module docstring."""

    def __init__(self, room_version: RoomVersion | str) -> None:
        self.version = version(room_version) if isinstance(room_version, str) else room_version
        self.events: dict[str, Event] = {}
        self.rejected: set[str] = set()
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self._clock = 0
        self._last: str | None = None

    # --- naming -------------------------------------------------------------------

    def id(self, name: str) -> str:
        if self.version.event_format is EventFormat.V1:
            return f"${name}:example.com"
        return f"${name}"

    @property
    def room_id(self) -> str:
        if self.version.room_id_is_create_hash:
            return "!" + self.id("CREATE")[1:]
        return "!room:example.com"

    def fetch(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def event(self, name: str) -> Event:
        return self.events[self.id(name)]

    # --- power levels written for the room version -----------------------------------

    def power_content(self, users: Mapping[str, int], **extra: Any) -> dict[str, Any]:
        """PL content; v12 creators (Alice) cannot be listed, they are infinite anyway."""
        listed = {
            user: level
            for user, level in users.items()
            if not (self.version.privileged_creators and user == ALICE)
        }
        return {"users": listed, **extra}

    def power(self, name: str, sender: str, users: Mapping[str, int], **extra: Any) -> Spec:
        return Spec(name, sender, "m.room.power_levels", "", self.power_content(users, **extra))

    # --- building ---------------------------------------------------------------------

    def state_before(self, prev: Sequence[str]) -> dict[StateKey, str]:
        """The state before an event with these prev_events (names)."""
        if not prev:
            return {}
        states = [self.state_after[self.id(name)] for name in prev]
        if len(states) == 1:
            return dict(states[0])
        return resolve(self.version, states, self.fetch, is_rejected=self.rejected.__contains__)

    def add(self, spec: Spec, prev: Sequence[str] | None = None) -> Event:
        """Build ``spec`` on ``prev`` (default: the last event added), auth-check it
        against its state before and record the state after it."""
        if prev is None:
            prev = [] if self._last is None else [self._last]
        before = self.state_before(prev)
        wanted = auth_types_for_event(
            spec.type, spec.state_key, spec.sender, spec.content, self.version
        )
        auth_ids = sorted(before[key] for key in wanted if key in before)
        event = self._make(spec, prev, auth_ids)
        self.events[event.event_id] = event
        after = dict(before)
        if event.is_state:
            if self._allowed(event, before):
                after[event.state_pair] = event.event_id
            else:
                self.rejected.add(event.event_id)
        self.state_after[event.event_id] = after
        self._last = spec.name
        return event

    def add_all(self, specs: Iterable[Spec]) -> None:
        for spec in specs:
            self.add(spec)

    def _allowed(self, event: Event, before: Mapping[StateKey, str]) -> bool:
        state = {key: self.events[event_id] for key, event_id in before.items()}
        create = self.events.get(self.id("CREATE"))
        try:
            check_auth(event, state, create=create)
        except AuthError:
            return False
        return True

    def _make(self, spec: Spec, prev: Sequence[str], auth_ids: list[str]) -> Event:
        self._clock += 1
        depth = 1 + max((self.event(name).depth for name in prev), default=0)
        pdu: dict[str, Any] = {
            "type": spec.type,
            "sender": spec.sender,
            "content": dict(spec.content),
            "origin_server_ts": self._clock,
            "depth": depth,
            "prev_events": self._refs([self.id(name) for name in prev]),
            "auth_events": self._refs(auth_ids),
        }
        if spec.state_key is not None:
            pdu["state_key"] = spec.state_key
        if not (self.version.room_id_is_create_hash and spec.type == "m.room.create"):
            pdu["room_id"] = self.room_id
        event_id = self.id(spec.name)
        if self.version.event_format is EventFormat.V1:
            pdu["event_id"] = event_id
        return Event(event_id, pdu, self.version)

    def _refs(self, ids: list[str]) -> list[Any]:
        if self.version.event_format is EventFormat.V1:
            return [[event_id, {"sha256": "fake"}] for event_id in ids]
        return list(ids)

    # --- the standard opening of every scenario -------------------------------------

    def initial(self) -> None:
        """CREATE, Alice joins, IPOWER (Alice 100), IJR (public), Bob, Charlie and Zara
        join, then START (a message): the opening of the classic scenarios."""
        create_content: dict[str, Any] = {"room_version": self.version.identifier}
        if not self.version.creator_is_sender:
            create_content["creator"] = ALICE
        self.add_all(
            [
                Spec("CREATE", ALICE, "m.room.create", "", create_content),
                join("IMA", ALICE),
                self.power("IPOWER", ALICE, {ALICE: 100}),
                Spec("IJR", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
                join("IMB", BOB),
                join("IMC", CHARLIE),
                join("IMZ", ZARA),
                message("START"),
            ]
        )

    def graph(self, specs: Sequence[Spec], edges: Sequence[Sequence[str]]) -> None:
        """Add ``specs`` and a final message END after ``initial()``, shaped by
        ``edges``: chains newest-first, e.g. ["END", "B", "A", "START"] means END's
        prev is B, B's is A and A's is START. Nodes are built in topological order,
        ties broken by name (so timestamps follow that order)."""
        by_name = {spec.name: spec for spec in [*specs, message("END")]}
        prevs: dict[str, set[str]] = {name: set() for name in by_name}
        for chain in edges:
            for newer, older in itertools.pairwise(chain):
                prevs[newer].add(older)
        while True:
            ready = sorted(
                name
                for name, before in prevs.items()
                if self.id(name) not in self.state_after
                and all(self.id(p) in self.state_after for p in before)
            )
            if not ready:
                break
            self.add(by_name[ready[0]], sorted(prevs[ready[0]]))
        assert all(self.id(name) in self.state_after for name in by_name), "graph has a cycle"

    def state_at_end(self) -> dict[StateKey, str]:
        return self.state_after[self.id("END")]

    def changed_since_start(self, expected: Iterable[StateKey] = ()) -> dict[StateKey, str]:
        """The END state restricted to keys that differ from START or are ``expected``."""
        start = self.state_after[self.id("START")]
        wanted = set(expected)
        return {
            key: value
            for key, value in self.state_at_end().items()
            if key in wanted or start.get(key) != value
        }

    def expect(self, names: Iterable[str]) -> dict[StateKey, str]:
        """State map of the named events (for comparing with ``changed_since_start``)."""
        found: dict[StateKey, str] = {}
        for name in names:
            event = self.event(name)
            found[event.state_pair] = event.event_id
        return found


# --- tests of the builder ------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["1", "2", "11", "12"])
def test_initial_room_is_fully_accepted(identifier: str) -> None:
    dag = Dag(identifier)
    dag.initial()
    assert dag.rejected == set()
    state = dag.state_after[dag.id("START")]
    assert state[member_key(ZARA)] == dag.id("IMZ")
    assert state[PL_KEY] == dag.id("IPOWER")
    # The v12 create event is never cited; before v12 every event cites it.
    cites_create = dag.id("CREATE") in dag.event("IMZ").auth_event_ids
    assert cites_create is (identifier != "12")


def test_refused_state_event_is_rejected_and_not_applied() -> None:
    dag = Dag("10")
    dag.initial()
    dag.add(topic("T", BOB))  # Bob is at 0; topics need the state default of 50
    assert dag.id("T") in dag.rejected
    assert TOPIC_KEY not in dag.state_after[dag.id("T")]


def test_graph_orders_by_edges_then_name() -> None:
    dag = Dag("10")
    dag.initial()
    dag.graph([topic("B", ALICE), topic("A", ALICE)], [["END", "B", "START"], ["END", "A"]])
    assert dag.event("A").origin_server_ts < dag.event("B").origin_server_ts
    assert sorted(dag.event("END").prev_event_ids) == [dag.id("A"), dag.id("B")]
