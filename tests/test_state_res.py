"""State resolution v2 (rooms v2-v11) and v2.1 (room v12): the classic conflicts.

The scenarios are those of the well-known state resolution test suite (Synapse's
tests/state/test_v2.py, ruma-state-res): each starts from the same room (``Dag.initial``)
and forks at START; the state at END is the resolution of the forks. Expected results
list the keys that differ from START's state (plus any named).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from conduwuit.protocol.events import StateKey
from conduwuit.protocol.state_res import auth_chain, resolve
from conduwuit.protocol.state_res.common import EventCache
from conduwuit.protocol.state_res.v2 import (
    conflicted_state_subgraph,
    mainline_sort,
    topological_sort,
)
from tests.test_state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JR_KEY,
    PL_KEY,
    TOPIC_KEY,
    ZARA,
    Dag,
    Spec,
    join,
    member,
    member_key,
    message,
    topic,
)

V2_ROOMS = ["2", "3", "6", "10", "11"]
V2_AND_V2_1_ROOMS = [*V2_ROOMS, "12"]


def run(
    identifier: str,
    build: Sequence[Spec] | None,
    edges: Sequence[Sequence[str]],
    specs: Sequence[Spec] = (),
) -> Dag:
    dag = Dag(identifier)
    dag.initial()
    dag.graph(list(specs) if build is None else list(build), edges)
    return dag


def check(dag: Dag, expected: Sequence[str]) -> None:
    wanted = dag.expect(expected)
    assert dag.changed_since_start(wanted) == wanted


# --- the classic scenarios, each in every v2-based room version ------------------------


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_ban_vs_pl(identifier: str) -> None:
    """Alice bans Bob while Bob (a moderator at 50) concurrently sends power levels: the
    ban is sorted first (Alice outranks Bob), so Bob's power levels fail (he is banned)."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            dag.power("PA", ALICE, {ALICE: 100, BOB: 50}),
            join("MA", ALICE),
            member("MB", ALICE, BOB, "ban"),
            dag.power("PB", BOB, {ALICE: 100, BOB: 50}),
        ],
        [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]],
    )
    check(dag, ["PA", "MA", "MB"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_ban_vs_join(identifier: str) -> None:
    """A moderator's ban wins over the concurrent re-join of the banned user."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [member("LE", EVELYN, EVELYN, "join"), member("BE", ALICE, EVELYN, "ban")],
        [["END", "BE", "START"], ["END", "LE", "START"]],
    )
    check(dag, ["BE"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_join_rule_evasion(identifier: str) -> None:
    """Alice makes the room invite-only while Evelyn joins on another fork: the join
    rules (a power event) are applied first and the join then fails."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            Spec("JR", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}),
            join("ME", EVELYN),
        ],
        [["END", "JR", "START"], ["END", "ME", "START"]],
    )
    check(dag, ["JR"])
    assert member_key(EVELYN) not in dag.state_at_end()


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_offtopic_pl(identifier: str) -> None:
    """A chain of power-level changes on one fork against an older one on the other:
    the newest in the chain wins."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            dag.power("PA", ALICE, {ALICE: 100, BOB: 50}),
            dag.power("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
            dag.power("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}),
        ],
        [["END", "PC", "PB", "PA", "START"], ["END", "PA"]],
    )
    check(dag, ["PC"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_topic_basic(identifier: str) -> None:
    """Alice demotes Bob (PA2) while Bob re-asserts his level (PB) and sets a topic (T3):
    PA2 wins, and Bob's later topic is rejected; the topic falls back to Alice's T2."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            topic("T1", ALICE),
            dag.power("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            dag.power("PA2", ALICE, {ALICE: 100, BOB: 0}),
            dag.power("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
        ],
        [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]],
    )
    check(dag, ["PA2", "T2"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_topic_reset(identifier: str) -> None:
    """Bob sets a topic then is banned on one fork; the other fork only has T1: the ban
    is kept and Bob's topic does not survive it (no reset to a state Bob could set)."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            topic("T1", ALICE),
            dag.power("PA", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", BOB),
            member("MB", ALICE, BOB, "ban"),
        ],
        [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]],
    )
    check(dag, ["T1", "MB", "PA"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_topic(identifier: str) -> None:
    """Like topic_basic, with a merge (MZ1) in the middle and a later topic by Alice."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            topic("T1", ALICE),
            dag.power("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            dag.power("PA2", ALICE, {ALICE: 100, BOB: 0}),
            dag.power("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
            message("MZ1"),
            topic("T4", ALICE),
        ],
        [
            ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
            ["END", "MZ1", "T3", "PB", "PA1"],
        ],
    )
    check(dag, ["T4", "PA2"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_mainline_sort(identifier: str) -> None:
    """T3 (authed by the newer PA2) beats T4 although T4 is newer by timestamp: T4's
    power levels (PB) lose to PA2, so T4 hangs off an older mainline point (PA1)."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            topic("T1", ALICE),
            dag.power("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            dag.power("PA2", ALICE, {ALICE: 100, BOB: 50}, events={"m.room.power_levels": 100}),
            dag.power("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
            topic("T4", ALICE),
        ],
        [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]],
    )
    check(dag, ["T3", "PA2"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_concurrent_joins_both_kept(identifier: str) -> None:
    """Two users joining on different forks: no conflict, both joins are in the state."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [join("JE", EVELYN), topic("JT", ALICE)],
        [["END", "JE", "START"], ["END", "JT", "START"]],
    )
    check(dag, ["JE", "JT"])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
@pytest.mark.parametrize(("bob_after", "winner"), [(0, "PZ"), (50, "PB2")])
def test_concurrent_power_levels_higher_sender_first(
    identifier: str, bob_after: int, winner: str
) -> None:
    """Concurrent PL changes by Alice (100) and Bob (50). The reverse topological power
    ordering puts the higher-powered sender first, whatever the timestamps, so Alice's
    PZ is applied, then Bob's PB2 is checked against it: if PZ demoted Bob, PB2 is
    refused and PZ stays; if not, PB2 is allowed and applied last."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [
            dag.power("PA", ALICE, {ALICE: 100, BOB: 50}),
            dag.power("PB2", BOB, {ALICE: 100, BOB: 50, CHARLIE: 10}),
            dag.power("PZ", ALICE, {ALICE: 100, BOB: bob_after, CHARLIE: 20}),
        ],
        [["END", "PB2", "PA", "START"], ["END", "PZ", "PA"]],
    )
    # Alice's change is the newer one: were the order by timestamp, it would win.
    assert dag.event("PZ").origin_server_ts > dag.event("PB2").origin_server_ts
    check(dag, [winner])


@pytest.mark.parametrize("identifier", V2_AND_V2_1_ROOMS)
def test_topic_conflict_by_equals_goes_to_the_newest(identifier: str) -> None:
    """Two topics under the same power levels: same mainline position, so the later
    origin_server_ts is applied last and wins."""
    dag = Dag(identifier)
    dag.initial()
    dag.graph(
        [topic("TA", ALICE), topic("TB", ALICE)],
        [["END", "TA", "START"], ["END", "TB", "START"]],
    )
    check(dag, ["TB"])


# --- v2 against v2.1 -------------------------------------------------------------------


def _ban_after_topic(identifier: str) -> tuple[Dag, list[dict[StateKey, str]]]:
    """Bob (50) sets topic T_NEW while, concurrently, Alice bans him. One fork saw only
    the ban; the other saw the ban and the new topic. The ban is unconflicted."""
    dag = Dag(identifier)
    dag.initial()
    dag.add(dag.power("PA", ALICE, {ALICE: 100, BOB: 50}))
    dag.add(topic("T_OLD", ALICE))
    dag.add(topic("T_NEW", BOB), prev=["T_OLD"])
    dag.add(member("BAN", ALICE, BOB, "ban"), prev=["T_OLD"])
    with_ban = dag.state_after[dag.id("BAN")]
    both = dict(with_ban)
    both[TOPIC_KEY] = dag.id("T_NEW")
    return dag, [with_ban, both]


def test_v2_checks_conflicted_events_against_future_unconflicted_state() -> None:
    """v2 starts the iterative auth checks from the unconflicted state, which already
    has Bob banned: his concurrent topic is refused and the topic resets to T_OLD."""
    dag, states = _ban_after_topic("11")
    resolved = resolve(dag.version, states, dag.fetch)
    assert resolved[TOPIC_KEY] == dag.id("T_OLD")
    assert resolved[member_key(BOB)] == dag.id("BAN")


def test_v2_1_starts_from_empty_state_and_keeps_the_topic() -> None:
    """v2.1 (room v12) starts from an empty state: T_NEW is checked against its own auth
    events (Bob joined at 50) and kept; the ban is kept too."""
    dag, states = _ban_after_topic("12")
    resolved = resolve(dag.version, states, dag.fetch)
    assert resolved[TOPIC_KEY] == dag.id("T_NEW")
    assert resolved[member_key(BOB)] == dag.id("BAN")


def test_conflicted_state_subgraph_is_the_paths_between_conflicted_events() -> None:
    """Auth graph A <- B <- C <- D and B <- E (arrows point at auth events): with C and A
    conflicted, the subgraph is {A, B, C}; D (above C) and E (not leading to a
    conflicted event) are out."""
    dag = Dag("12")
    dag.initial()
    # Build a chain of Alice's topics whose auth events we set by hand.
    ids = {}
    for name, auth in [("A", []), ("B", ["A"]), ("C", ["B"]), ("D", ["C"]), ("E", ["B"])]:
        event = dag.add(topic(name, ALICE))
        pdu = dict(event.pdu)
        pdu["auth_events"] = [dag.id(a) for a in auth]
        dag.events[event.event_id] = type(event)(event.event_id, pdu, event.room_version)
        ids[name] = event.event_id
    cache = EventCache(dag.fetch)
    subgraph = conflicted_state_subgraph({ids["C"], ids["A"]}, cache)
    assert subgraph == {ids["A"], ids["B"], ids["C"]}
    assert conflicted_state_subgraph({ids["D"]}, cache) == {ids["D"]}


@pytest.mark.parametrize(("identifier", "winner"), [("11", "IPOWER"), ("12", "P_BOB")])
def test_state_reset_avoided_by_the_conflicted_state_subgraph(identifier: str, winner: str) -> None:
    """Alice promotes Bob (P50), then Bob sends power levels P_BOB; the other fork has
    the state from before the promotion plus a later topic T that cites P50.

    P50 is in the auth chain of both forks, so it is not in the auth difference and v2
    never replays it: P_BOB is checked against the conflicted IPOWER (Bob at 0) and
    refused, and the power levels reset to IPOWER. In v2.1 P50 lies on the path from
    P_BOB to IPOWER (the conflicted state subgraph), is replayed between them, and
    P_BOB passes."""
    dag = Dag(identifier)
    dag.initial()
    dag.add(dag.power("P50", ALICE, {ALICE: 100, BOB: 50}))
    dag.add(dag.power("P_BOB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 10}))
    old = dict(dag.state_after[dag.id("START")])
    dag.add(topic("T", ALICE), prev=["P50"])
    old[TOPIC_KEY] = dag.id("T")
    new = dag.state_after[dag.id("P_BOB")]
    for states in ([old, new], [new, old]):
        resolved = resolve(dag.version, states, dag.fetch)
        assert resolved[PL_KEY] == dag.id(winner)
        assert resolved[TOPIC_KEY] == dag.id("T")
    cache = EventCache(dag.fetch)
    subgraph = conflicted_state_subgraph({dag.id("IPOWER"), dag.id("P_BOB")}, cache)
    # P50, and Bob's join IMB and the join rules IJR it cites, all lead to IPOWER.
    on_paths = ["IPOWER", "P50", "P_BOB", "IMB", "IJR"]
    assert subgraph == {dag.id(name) for name in on_paths}


# --- pieces ------------------------------------------------------------------------------


def test_topological_sort_takes_smallest_ready_node() -> None:
    graph = {"l": {"o"}, "m": {"n", "o"}, "n": {"o"}, "o": set(), "p": {"o"}}
    assert topological_sort(graph, lambda node: (0.0, 0, node)) == ["o", "l", "n", "m", "p"]


def test_topological_sort_prefers_power_then_time() -> None:
    keys = {"a": (-100.0, 5, "a"), "b": (-50.0, 1, "b"), "c": (-50.0, 0, "c")}
    graph: dict[str, set[str]] = {"a": set(), "b": set(), "c": set()}
    assert topological_sort(graph, keys.__getitem__) == ["a", "c", "b"]


def test_mainline_sort_orders_by_mainline_position_then_time() -> None:
    dag = Dag("10")
    dag.initial()
    dag.add(topic("T0", ALICE))  # cites IPOWER
    dag.add(dag.power("P1", ALICE, {ALICE: 100}))
    dag.add(topic("T1", ALICE))  # cites P1
    dag.add(dag.power("P2", ALICE, {ALICE: 100, BOB: 1}))
    dag.add(topic("T2", ALICE))  # cites P2
    dag.add(topic("T1B", ALICE), prev=["T1"])  # cites P1, but newer than T2
    cache = EventCache(dag.fetch)
    names = ["T2", "T1B", "T1", "T0"]
    ordered = mainline_sort([dag.id(n) for n in names], dag.id("P2"), cache)
    assert ordered == [dag.id(n) for n in ["T0", "T1", "T1B", "T2"]]


def test_auth_chain_is_transitive_and_excludes_the_start() -> None:
    dag = Dag("10")
    dag.initial()
    chain = auth_chain([dag.id("IMZ")], dag.fetch)
    assert chain == {dag.id(n) for n in ["CREATE", "IMA", "IPOWER", "IJR"]}
    # A start event reached from another start event is part of the chain.
    assert dag.id("IMA") in auth_chain([dag.id("IMA"), dag.id("IMZ")], dag.fetch)


def test_auth_chain_of_a_long_chain_is_iterative() -> None:
    dag = Dag("10")
    dag.initial()
    previous = "IPOWER"
    for index in range(3000):
        dag.add(dag.power(f"P{index}", ALICE, {ALICE: 100, BOB: index % 7}))
        previous = f"P{index}"
    chain = auth_chain([dag.id(previous)], dag.fetch)
    assert len(chain) == 3000 - 1 + 3  # the other P*, IPOWER, IMA, CREATE


def test_long_history_resolves_quickly() -> None:
    """Thousands of power-level changes behind a fork: no recursion, and fast."""
    import time

    dag = Dag("10")
    dag.initial()
    for index in range(2000):
        dag.add(dag.power(f"P{index}", ALICE, {ALICE: 100, BOB: index % 50}))
    dag.add(topic("TA", ALICE), prev=["P1999"])
    dag.add(dag.power("PX", ALICE, {ALICE: 100, BOB: 99}), prev=["P1999"])
    dag.add(topic("TB", ALICE), prev=["P0"])
    states = [dag.state_after[dag.id(n)] for n in ("TA", "PX", "TB")]
    started = time.perf_counter()
    resolved = resolve(dag.version, states, dag.fetch)
    elapsed = time.perf_counter() - started
    assert resolved[PL_KEY] == dag.id("PX")
    assert elapsed < 5


def test_missing_events_are_skipped() -> None:
    """A conflicted event fetch cannot return is left out; the rest still resolves."""
    dag = Dag("10")
    dag.initial()
    dag.add(topic("TA", ALICE), prev=["START"])
    dag.add(topic("TB", ALICE), prev=["START"])
    states = [dag.state_after[dag.id("TA")], dag.state_after[dag.id("TB")]]
    missing = dag.id("TB")
    resolved = resolve(
        dag.version, states, lambda event_id: None if event_id == missing else dag.fetch(event_id)
    )
    assert resolved[TOPIC_KEY] == dag.id("TA")
    # Nothing fetchable at all: only the unconflicted state remains.
    nothing = resolve(dag.version, states, lambda event_id: None)
    assert TOPIC_KEY not in nothing
    assert nothing[member_key(ZARA)] == dag.id("IMZ")


def test_rejected_auth_events_are_not_used() -> None:
    """Iterative auth checks take a missing key from the event's own auth events only
    if that auth event was not rejected (v12 starts from an empty state, so Bob's
    membership must come from his topic's auth events)."""
    dag, states = _ban_after_topic("12")
    assert resolve(dag.version, states, dag.fetch)[TOPIC_KEY] == dag.id("T_NEW")
    rejected = {dag.id("IMB")}
    resolved = resolve(dag.version, states, dag.fetch, is_rejected=rejected.__contains__)
    assert resolved[TOPIC_KEY] == dag.id("T_OLD")


def test_no_state_sets() -> None:
    dag = Dag("10")
    assert resolve(dag.version, [], dag.fetch) == {}
    assert JR_KEY not in resolve(dag.version, [{}], dag.fetch)
