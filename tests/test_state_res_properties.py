"""Property tests of state resolution over random forking room histories.

Hypothesis draws a history (topics, power-level changes, joins, leaves, kicks, bans,
join-rule changes, messages; each built on one or two earlier events, so it forks and
merges), then picks some of its states to resolve. The properties hold for every
algorithm: v1 (room 1), v2 (rooms 2-11) and v2.1 (room 12).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduwuit.protocol.events import Event, StateKey
from conduwuit.protocol.state_res import resolve
from tests.test_state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    Dag,
    Spec,
    member,
    message,
    topic,
)

USERS = [ALICE, BOB, CHARLIE, EVELYN]
VERSIONS = ["1", "2", "6", "10", "11", "12"]
State = dict[StateKey, str]

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _spec(dag: Dag, index: int, action: str, sender: str, target: str, level: int) -> Spec:
    name = f"E{index}"
    if action == "topic":
        return topic(name, sender)
    if action == "name":
        return Spec(name, sender, "m.room.name", "", {"name": name})
    if action == "power":
        return dag.power(name, sender, {ALICE: 100, target: level})
    if action == "join_rules":
        rule = "public" if level % 2 else "invite"
        return Spec(name, sender, "m.room.join_rules", "", {"join_rule": rule})
    if action in ("join", "leave"):
        return member(name, sender, sender, action)
    if action in ("kick", "ban"):
        return member(name, sender, target, "leave" if action == "kick" else "ban")
    return message(name, sender)


step = st.tuples(
    st.sampled_from(
        ["topic", "name", "power", "join_rules", "join", "leave", "kick", "ban", "message"]
    ),
    st.sampled_from(USERS),
    st.sampled_from(USERS[1:]),
    st.sampled_from([0, 25, 50, 75]),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=2),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[Dag, list[State]]:
    """A random history and 2-4 of its states (after distinct events)."""
    dag = Dag(draw(st.sampled_from(VERSIONS)))
    dag.initial()
    nodes = ["START"]
    for index, (action, sender, target, level, prevs) in enumerate(
        draw(st.lists(step, min_size=2, max_size=14))
    ):
        prev = sorted({nodes[choice % len(nodes)] for choice in prevs})
        dag.add(_spec(dag, index, action, sender, target, level), prev=prev)
        nodes.append(f"E{index}")
    picked = draw(st.lists(st.sampled_from(nodes), min_size=2, max_size=4, unique=True))
    return dag, [dict(dag.state_after[dag.id(name)]) for name in picked]


def _shuffled_state(state: Mapping[StateKey, str], rng: random.Random) -> State:
    items = list(state.items())
    rng.shuffle(items)
    return dict(items)


def _shuffled_store(events: Mapping[str, Event], rng: random.Random) -> dict[str, Event]:
    """The same events as fresh objects, inserted in another order."""
    items = list(events.items())
    rng.shuffle(items)
    return {event_id: Event(e.event_id, e.pdu, e.room_version) for event_id, e in items}


@PROPERTY_SETTINGS
@given(histories(), st.randoms(use_true_random=False))
def test_order_independent(case: tuple[Dag, list[State]], rng: random.Random) -> None:
    """Shuffling the state sets, the keys inside each, and the event store (new event
    objects, other insertion order) gives the same result."""
    dag, states = case
    expected = resolve(dag.version, states, dag.fetch)
    shuffled = [_shuffled_state(state, rng) for state in states]
    rng.shuffle(shuffled)
    store = _shuffled_store(dag.events, rng)
    assert resolve(dag.version, shuffled, store.get) == expected


@PROPERTY_SETTINGS
@given(histories())
def test_idempotent(case: tuple[Dag, list[State]]) -> None:
    """A state resolved with itself (or alone) is unchanged; so is a resolved state."""
    dag, states = case
    for state in states:
        assert resolve(dag.version, [state, dict(state)], dag.fetch) == state
        assert resolve(dag.version, [state], dag.fetch) == state
    resolved = resolve(dag.version, states, dag.fetch)
    assert resolve(dag.version, [resolved], dag.fetch) == resolved
    assert resolve(dag.version, [resolved, resolved], dag.fetch) == resolved


@PROPERTY_SETTINGS
@given(histories())
def test_unconflicted_keys_preserved(case: tuple[Dag, list[State]]) -> None:
    """A key every state set maps to the same event keeps that event (v2 step 5; v1's
    starting R). v1 also keeps a key only some sets have, if they agree on it."""
    dag, states = case
    resolved = resolve(dag.version, states, dag.fetch)
    keys = {key for state in states for key in state}
    for key in keys:
        values = [state.get(key) for state in states]
        present = {value for value in values if value is not None}
        everywhere = None not in values
        if len(present) == 1 and (everywhere or dag.version.identifier == "1"):
            assert resolved[key] == next(iter(present)), key


@PROPERTY_SETTINGS
@given(histories())
def test_result_is_a_state_map(case: tuple[Dag, list[State]]) -> None:
    """Every resolved entry is a known state event for its own key; v1 only ever picks
    among the state sets' values (v2 may also pick an event of the auth difference)."""
    dag, states = case
    resolved = resolve(dag.version, states, dag.fetch)
    for key, event_id in resolved.items():
        event = dag.events[event_id]
        assert event.is_state
        assert event.state_pair == key
    if dag.version.identifier == "1":
        # v1 only ever picks among the values of the state sets.
        for key, event_id in resolved.items():
            assert event_id in {state.get(key) for state in states}


def test_resolve_does_not_mutate_its_inputs() -> None:
    dag = Dag("10")
    dag.initial()
    dag.add(topic("TA", ALICE), prev=["START"])
    dag.add(topic("TB", BOB), prev=["START"])
    states = [dag.state_after[dag.id("TA")], dag.state_after[dag.id("TB")]]
    before: list[Any] = [dict(state) for state in states]
    resolve(dag.version, states, dag.fetch)
    assert before == states


def _all_resolve(dag: Dag, states: Sequence[State]) -> list[State]:
    return [resolve(dag.version, list(order), dag.fetch) for order in (states, states[::-1])]


def test_three_way_fork_is_symmetric() -> None:
    dag = Dag("11")
    dag.initial()
    dag.add(topic("TA", ALICE), prev=["START"])
    dag.add(dag.power("PB", ALICE, {ALICE: 100, BOB: 50}), prev=["START"])
    dag.add(member("BC", ALICE, CHARLIE, "ban"), prev=["START"])
    states = [dag.state_after[dag.id(name)] for name in ("TA", "PB", "BC")]
    first, second = _all_resolve(dag, states)
    assert first == second
