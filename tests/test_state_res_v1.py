"""State resolution v1 (room version 1): the four passes of content/rooms/v1.md.

Power levels, then join rules, then memberships are resolved by walking the conflicting
events from the shallowest (ascending depth, then descending sha1(event_id)) and
keeping each next one while the auth rules allow it in R; any other key takes the
deepest event (then lowest sha1) that R allows.
"""

from __future__ import annotations

from conduwuit.protocol.state_res import resolve
from tests.test_state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JR_KEY,
    PL_KEY,
    TOPIC_KEY,
    Dag,
    Spec,
    join,
    member,
    member_key,
    message,
    topic,
)


def v1_room() -> Dag:
    dag = Dag("1")
    dag.initial()
    assert dag.rejected == set()
    return dag


def resolve_at(dag: Dag, *names: str) -> dict[tuple[str, str], str]:
    return resolve(dag.version, [dag.state_after[dag.id(name)] for name in names], dag.fetch)


def test_event_ids_have_the_v1_format() -> None:
    dag = v1_room()
    assert dag.id("START") == "$START:example.com"
    assert dag.event("IMZ").pdu["auth_events"][0][1] == {"sha256": "fake"}


def test_single_state_and_identical_states_come_back_unchanged() -> None:
    dag = v1_room()
    start = dag.state_after[dag.id("START")]
    assert resolve(dag.version, [start], dag.fetch) == start
    assert resolve(dag.version, [start, dict(start)], dag.fetch) == start


def test_key_missing_from_one_state_is_not_a_conflict() -> None:
    """v1: a conflict is different event ids for the same key; a key only one state has
    is simply kept (v2 treats it as conflicted)."""
    dag = v1_room()
    dag.add(topic("T", ALICE), prev=["START"])
    dag.add(message("M"), prev=["START"])
    assert resolve_at(dag, "T", "M")[TOPIC_KEY] == dag.id("T")
    # Even a topic the state would not allow: v1 never checks unconflicted entries.
    forged = dict(dag.state_after[dag.id("M")])
    forged[TOPIC_KEY] = dag.id("T")
    assert resolve(dag.version, [forged, dag.state_after[dag.id("M")]], dag.fetch)[
        TOPIC_KEY
    ] == dag.id("T")


def test_power_levels_deeper_change_kept_while_allowed() -> None:
    """Two power levels by Alice at different depths: the shallower is put in R first,
    the deeper one is allowed on top of it and wins."""
    dag = v1_room()
    dag.add(dag.power("PA", ALICE, {ALICE: 100, BOB: 10}), prev=["START"])
    dag.add(message("M1"), prev=["START"])
    dag.add(dag.power("PB", ALICE, {ALICE: 100, CHARLIE: 10}))
    assert dag.event("PB").depth > dag.event("PA").depth
    assert resolve_at(dag, "PA", "PB")[PL_KEY] == dag.id("PB")


def test_power_levels_stop_at_first_refused() -> None:
    """Bob was promoted on his fork and changes the power levels deeper down; the
    shallower PA (from the other fork, Bob at 0) goes into R first and Bob's change is
    not allowed against it, so PA stays."""
    dag = v1_room()
    dag.add(dag.power("PA", ALICE, {ALICE: 100, CHARLIE: 10}), prev=["START"])
    dag.add(dag.power("P50", ALICE, {ALICE: 100, BOB: 50}), prev=["START"])
    dag.add(dag.power("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 5}))
    assert dag.id("PB") not in dag.rejected
    assert resolve_at(dag, "PA", "PB")[PL_KEY] == dag.id("PA")


def test_join_rule_evasion_succeeds_in_v1() -> None:
    """Alice makes the room invite-only while Evelyn joins on another fork. Evelyn's
    membership is in one state only, so v1 keeps it without checking it: the join
    evades the join rules (v2 refuses it: see test_state_res.test_join_rule_evasion)."""
    dag = v1_room()
    dag.add(Spec("JR", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}), prev=["START"])
    dag.add(join("JE", EVELYN), prev=["START"])
    resolved = resolve_at(dag, "JR", "JE")
    assert resolved[JR_KEY] == dag.id("JR")
    assert resolved[member_key(EVELYN)] == dag.id("JE")


def test_ban_beats_concurrent_join() -> None:
    """Evelyn joins on one fork, and on a deeper fork leaves and is banned: the shallow
    join goes into R first, then the ban is allowed on top of it."""
    dag = v1_room()
    dag.add(join("JE", EVELYN), prev=["START"])
    dag.add(join("JE0", EVELYN), prev=["START"])
    dag.add(member("BE", ALICE, EVELYN, "ban"))
    assert resolve_at(dag, "JE", "BE")[member_key(EVELYN)] == dag.id("BE")


def test_banned_user_cannot_rejoin_by_conflict() -> None:
    """The ban is shallower than Evelyn's rejoin attempt on the other fork: the ban goes
    into R first, and the join is refused against it."""
    dag = v1_room()
    dag.add(join("JE0", EVELYN), prev=["START"])
    dag.add(member("BE", ALICE, EVELYN, "ban"))
    dag.add(message("M1"), prev=["JE0"])
    dag.add(message("M2"))
    dag.add(member("LE", EVELYN, EVELYN, "leave"))
    dag.add(join("JE", EVELYN))
    assert dag.event("JE").depth > dag.event("BE").depth
    assert resolve_at(dag, "BE", "JE")[member_key(EVELYN)] == dag.id("BE")


def test_other_keys_take_deepest_allowed() -> None:
    dag = v1_room()
    dag.add(topic("TA", ALICE), prev=["START"])
    dag.add(message("M1"), prev=["START"])
    dag.add(topic("TB", ALICE))
    assert resolve_at(dag, "TA", "TB")[TOPIC_KEY] == dag.id("TB")


def test_other_keys_skip_events_not_allowed_in_r() -> None:
    """Bob's deeper topic was allowed on his fork (he had 50 there) but the power levels
    resolve to Alice's (deeper) PA where Bob has 0: the shallower topic TA wins."""
    dag = v1_room()
    dag.add(message("M0"), prev=["START"])
    dag.add(dag.power("PA", ALICE, {ALICE: 100, CHARLIE: 1}))
    dag.add(topic("TA", ALICE))
    dag.add(dag.power("P50", ALICE, {ALICE: 100, BOB: 50}), prev=["START"])
    dag.add(message("M1"))
    dag.add(message("M2"))
    dag.add(message("M3"))
    dag.add(topic("TB", BOB))
    assert dag.id("TB") not in dag.rejected
    resolved = resolve_at(dag, "TA", "TB")
    assert resolved[PL_KEY] == dag.id("PA")
    assert resolved[TOPIC_KEY] == dag.id("TA")


def test_equal_depth_ties_break_on_sha1() -> None:
    """Same depth: the "other" pass prefers the lowest sha1(event_id)."""
    import hashlib

    dag = v1_room()
    dag.add(topic("TA", ALICE), prev=["START"])
    dag.add(topic("TB", ALICE), prev=["START"])
    ids = [dag.id("TA"), dag.id("TB")]
    lowest = min(ids, key=lambda event_id: hashlib.sha1(event_id.encode()).hexdigest())
    assert resolve_at(dag, "TA", "TB")[TOPIC_KEY] == lowest
    assert resolve_at(dag, "TB", "TA")[TOPIC_KEY] == lowest
