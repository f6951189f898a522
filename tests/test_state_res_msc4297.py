"""The two problems MSC4297 (state resolution v2.1, room version 12) fixes, rebuilt with
our DAG builder; expected results are those the MSC gives (and ruma's fixtures check).

Problem A: v2 checks conflicted events against the *unconflicted* state, which can hold
events from "the future" (here: Alice has left), so a legitimate older event is
refused and the room loses its join rules. v2.1 starts from an empty state.

Problem B: an event between two conflicted events in the auth DAG, but in the auth
chains of both forks, is not in the auth difference, so v2 never replays it and the
power levels reset. v2.1 adds the *conflicted state subgraph* to the full conflicted set.
"""

from __future__ import annotations

import pytest

from conduwuit.protocol.events import StateKey
from conduwuit.protocol.state_res import resolve
from tests.test_state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    ZARA,
    Dag,
    Spec,
    join,
    member,
)

DISPLAYNAME = "m.room.member"


def _rename(name: str, user: str) -> Spec:
    return Spec(name, user, DISPLAYNAME, user, {"membership": "join", "displayname": name})


def _opening(identifier: str) -> Dag:
    """create, Alice joins, power levels P0 (Alice 100), public join rules J0, Bob and
    Charlie join."""
    dag = Dag(identifier)
    content: dict[str, str] = {"room_version": identifier}
    if not dag.version.creator_is_sender:
        content["creator"] = ALICE
    dag.add_all(
        [
            Spec("CREATE", ALICE, "m.room.create", "", content),
            join("JA", ALICE),
            dag.power("P0", ALICE, {ALICE: 100}),
            Spec("J0", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
            join("JB", BOB),
            join("JC", CHARLIE),
        ]
    )
    return dag


def _state(dag: Dag, *names: str) -> dict[StateKey, str]:
    state: dict[StateKey, str] = {}
    for name in names:
        event = dag.event(name)
        state[event.state_pair] = event.event_id
    return state


def _resolve_both_orders(dag: Dag, states: list[dict[StateKey, str]]) -> dict[StateKey, str]:
    first = resolve(dag.version, states, dag.fetch)
    assert resolve(dag.version, states[::-1], dag.fetch) == first
    return first


@pytest.mark.parametrize(("identifier", "keeps_join_rules"), [("11", False), ("12", True)])
def test_problem_a(identifier: str, keeps_join_rules: bool) -> None:
    """Alice makes the room invite-only (J1) and leaves; Bob and Charlie then change
    their display names. Each fork has one of the renames, and Charlie's fork still has
    the old join rules J0. Alice's leave is unconflicted."""
    dag = _opening(identifier)
    dag.add_all(
        [
            Spec("J1", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}),
            member("LA", ALICE, ALICE, "leave"),
            _rename("B2", BOB),
            _rename("C2", CHARLIE),
        ]
    )
    assert dag.rejected == set()
    bob_side = _state(dag, "CREATE", "P0", "JC", "J1", "LA", "B2")
    charlie_side = _state(dag, "CREATE", "P0", "J0", "JB", "LA", "C2")

    resolved = _resolve_both_orders(dag, [bob_side, charlie_side])

    expected = _state(dag, "CREATE", "LA", "B2", "C2", "P0")
    if keeps_join_rules:
        expected.update(_state(dag, "J1"))
    assert resolved == expected


@pytest.mark.parametrize(("identifier", "power_levels"), [("11", "P0"), ("12", "P2")])
def test_problem_b(identifier: str, power_levels: str) -> None:
    """Alice gives Bob 50 (P1); Bob gives Charlie 50 (P2); Zara and Evelyn join and
    Evelyn renames herself, all under P2. Evelyn's fork has the state reset to P0; Zara's
    has P2. P1 is in both forks' auth chains."""
    dag = _opening(identifier)
    dag.add_all(
        [
            dag.power("P1", ALICE, {ALICE: 100, BOB: 50}),
            dag.power("P2", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
            join("JZ", ZARA),
        ]
    )
    dag.add(join("JE", EVELYN), prev=["P2"])
    dag.add(_rename("E2", EVELYN))
    assert dag.rejected == set()
    evelyn_side = _state(dag, "CREATE", "JA", "P0", "J0", "JB", "JC", "E2")
    zara_side = _state(dag, "CREATE", "JA", "J0", "JB", "JC", "P2", "JZ")

    resolved = _resolve_both_orders(dag, [evelyn_side, zara_side])

    assert resolved == _state(dag, "CREATE", "JA", "J0", "JB", "JC", "E2", "JZ", power_levels)
