"""State snapshots: round trips through diffs, dedup, bounded chains, restart."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conduwuit.services.rooms.state_store import MAX_CHAIN, StateStore
from conduwuit.store import Store


def test_chain_of_changes_round_trips(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    try:
        states = StateStore(store)
        state = {i: 1000 + i for i in range(50)}
        parent = states.save(state)
        history = [(parent, dict(state))]
        rng = random.Random(7)
        for step in range(40):
            state = dict(state)
            state[rng.randrange(80)] = 5000 + step
            if step % 5 == 0:
                state.pop(rng.choice(list(state)))
            parent = states.save(state, parent)
            history.append((parent, dict(state)))
        fresh = StateStore(store)  # no cache: everything comes from the diffs
        for short, expected in history:
            assert fresh.load(short) == expected
            assert fresh._read(short).depth <= MAX_CHAIN
        # An identical map gets the same id.
        assert states.save(dict(history[3][1]), parent) == history[3][0]
    finally:
        store.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.dictionaries(st.integers(1, 40), st.integers(1, 10**6), max_size=30),
                min_size=1, max_size=10))
def test_any_sequence_round_trips(sequence: list[dict[int, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "db")
        try:
            states = StateStore(store)
            parent = None
            saved = []
            for state in sequence:
                parent = states.save(state, parent)
                saved.append((parent, state))
            fresh = StateStore(store)
            for short, expected in saved:
                assert fresh.load(short) == expected
        finally:
            store.close()
