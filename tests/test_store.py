"""Store and Tree behaviour on a real LevelDB in tmp_path."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conduwuit.store import (
    TREES,
    Store,
    StoreError,
    Tree,
    from_u64_be,
    u64_be,
)

FOUNDATION_TREES = {
    "global",
    "userid_password",
    "userid_displayname",
    "token_userdeviceid",
    "userdeviceid_token",
    "userdeviceid_metadata",
    "server_signingkeys",
    "jobs_state",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


def fill(tree: Tree, keys: list[bytes]) -> None:
    for k in keys:
        tree.put(k, b"v:" + k)


# ------------------------------------------------------------------ basic ops


def test_get_put_delete(store: Store) -> None:
    t = store.tree("userid_displayname")
    assert t.get(b"@a:hs") is None
    assert b"@a:hs" not in t
    t.put(b"@a:hs", b"Alice")
    assert t.get(b"@a:hs") == b"Alice"
    assert b"@a:hs" in t
    t.put(b"@a:hs", b"Alicia")
    assert t.get(b"@a:hs") == b"Alicia"
    t.delete(b"@a:hs")
    assert t.get(b"@a:hs") is None
    t.delete(b"@never:hs")  # deleting a missing key is not an error


def test_trees_are_isolated(store: Store) -> None:
    a = store.tree("userid_password")
    b = store.tree("userid_displayname")
    a.put(b"@x:hs", b"hash")
    b.put(b"@x:hs", b"Name")
    assert a.get(b"@x:hs") == b"hash"
    assert b.get(b"@x:hs") == b"Name"
    b.delete(b"@x:hs")
    assert a.get(b"@x:hs") == b"hash"
    assert list(a.iter()) == [(b"@x:hs", b"hash")]
    assert b.is_empty()
    assert a.prefix != b.prefix


def test_tree_objects_are_cached(store: Store) -> None:
    assert store.tree("global") is store.tree("global")


def test_high_bytes_do_not_leak_into_the_next_tree(store: Store) -> None:
    # keys full of 0xFF sit at the very end of a tree's range
    names = sorted(FOUNDATION_TREES, key=lambda n: store.tree(n).prefix)
    first, second = store.tree(names[1]), store.tree(names[2])
    first.put(b"\xff\xff", b"end")
    second.put(b"\x00", b"start")
    assert list(first.iter(b"\xff")) == [(b"\xff\xff", b"end")]
    assert list(first.iter()) == [(b"\xff\xff", b"end")]
    assert list(first.iter(reverse=True)) == [(b"\xff\xff", b"end")]
    assert list(second.iter(reverse=True)) == [(b"\x00", b"start")]


# ------------------------------------------------------------------ iteration

KEYS = [b"a\xff1", b"a\xff2", b"a\xff3", b"b\xff1", b"b\xff2", b"c"]


@pytest.fixture
def filled(store: Store) -> Tree:
    t = store.tree("jobs_state")
    fill(t, KEYS)
    store.tree("server_signingkeys").put(b"a\xff0", b"other tree")
    return t


def test_iter_all_in_order(filled: Tree) -> None:
    assert [k for k, _ in filled.iter()] == KEYS
    assert list(filled.keys()) == KEYS
    assert dict(filled.iter())[b"c"] == b"v:c"


def test_iter_prefix_forward_and_backward(filled: Tree) -> None:
    assert list(filled.keys(b"a\xff")) == KEYS[:3]
    assert list(filled.keys(b"a\xff", reverse=True)) == KEYS[2::-1]
    assert list(filled.keys(b"b")) == [b"b\xff1", b"b\xff2"]
    assert list(filled.keys(b"z")) == []
    assert list(filled.keys(reverse=True)) == KEYS[::-1]


def test_iter_start_forward(filled: Tree) -> None:
    assert [k for k, _ in filled.iter(start=b"a\xff2")] == KEYS[1:]
    # start between keys: begins at the next one
    assert [k for k, _ in filled.iter(start=b"a\xff25")] == KEYS[2:]
    # start is clamped to the prefix range on both sides
    assert [k for k, _ in filled.iter(b"b\xff", start=b"a")] == KEYS[3:5]
    assert [k for k, _ in filled.iter(b"a\xff", start=b"b")] == []
    assert [k for k, _ in filled.iter(b"b\xff", start=b"b\xff2")] == [b"b\xff2"]


def test_iter_start_backward(filled: Tree) -> None:
    keys = [k for k, _ in filled.iter(reverse=True, start=b"b\xff1")]
    assert keys == [b"b\xff1", b"a\xff3", b"a\xff2", b"a\xff1"]
    # start between keys: begins at the one below
    assert [k for k, _ in filled.iter(reverse=True, start=b"a\xff25")] == [b"a\xff2", b"a\xff1"]
    # inside a prefix
    assert [k for k, _ in filled.iter(b"a\xff", reverse=True, start=b"a\xff2")] == [
        b"a\xff2",
        b"a\xff1",
    ]
    # start above the prefix range: the whole prefix, newest first
    assert [k for k, _ in filled.iter(b"a\xff", reverse=True, start=b"z")] == KEYS[2::-1]
    # start below the prefix range: nothing
    assert [k for k, _ in filled.iter(b"b\xff", reverse=True, start=b"a")] == []


def test_count_and_is_empty(filled: Tree, store: Store) -> None:
    assert filled.count() == len(KEYS)
    assert filled.count(b"a\xff") == 3
    assert filled.count(b"nope") == 0
    assert not filled.is_empty()
    assert store.tree("userid_password").is_empty()


def test_abandoned_iterator_is_harmless(filled: Tree) -> None:
    it = filled.iter()
    assert next(it)[0] == KEYS[0]
    del it  # the generator's cleanup closes the LevelDB iterator
    assert filled.count() == len(KEYS)


# ------------------------------------------------------------------ counters


def test_increment(store: Store) -> None:
    t = store.tree("jobs_state")
    assert t.increment(b"n") == 1
    assert t.increment(b"n") == 2
    assert t.get(b"n") == u64_be(2)
    t.put(b"bad", b"xyz")
    with pytest.raises(StoreError, match="cannot be incremented"):
        t.increment(b"bad")


def test_global_counter_monotonic_and_persistent(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    assert s.current_count() == 0
    seen = [s.next_count() for _ in range(5)]
    assert seen == [1, 2, 3, 4, 5]
    assert s.current_count() == 5
    s.close()
    s = Store.open(tmp_path / "db")
    try:
        assert s.current_count() == 5
        assert s.next_count() == 6
        assert from_u64_be(s.tree("global").get(b"c") or b"") == 6
    finally:
        s.close()


# ------------------------------------------------------------------ batches


def test_batch_is_atomic_across_trees(store: Store) -> None:
    tokens = store.tree("token_userdeviceid")
    devices = store.tree("userdeviceid_token")
    devices.put(b"@a:hs\xffOLD", b"old-token")
    with store.batch() as b:
        b.put(tokens, b"tok", b"@a:hs\xffDEV")
        b.put("userdeviceid_token", b"@a:hs\xffDEV", b"tok")
        b.delete(devices, b"@a:hs\xffOLD")
        # nothing is visible before the block ends
        assert tokens.get(b"tok") is None
        assert devices.get(b"@a:hs\xffOLD") == b"old-token"
    assert tokens.get(b"tok") == b"@a:hs\xffDEV"
    assert devices.get(b"@a:hs\xffDEV") == b"tok"
    assert devices.get(b"@a:hs\xffOLD") is None


def test_on_commit_runs_after_the_write_and_never_for_a_dropped_batch(store: Store) -> None:
    tokens = store.tree("token_userdeviceid")
    seen: list[bytes | None] = []
    with store.batch() as b:
        b.put(tokens, b"tok", b"x")
        b.on_commit(lambda: seen.append(tokens.get(b"tok")))
        assert seen == []
    assert seen == [b"x"]  # the write is visible to the callback
    with pytest.raises(ZeroDivisionError), store.batch() as b:
        b.put(tokens, b"other", b"y")
        b.on_commit(lambda: seen.append(b"dropped"))
        _ = 1 / 0
    assert seen == [b"x"]


def test_batch_discarded_on_exception(store: Store) -> None:
    tokens = store.tree("token_userdeviceid")
    tokens.put(b"keep", b"1")
    with pytest.raises(ZeroDivisionError), store.batch() as b:
        b.put(tokens, b"tok", b"x")
        b.put("userid_password", b"@a:hs", b"hash")
        b.delete(tokens, b"keep")
        _ = 1 / 0
    assert tokens.get(b"tok") is None
    assert tokens.get(b"keep") == b"1"
    assert store.tree("userid_password").is_empty()


def test_batch_unusable_after_block(store: Store) -> None:
    with store.batch(sync=True) as b:
        b.put("jobs_state", b"k", b"v")
    with pytest.raises(StoreError):
        b.put("jobs_state", b"k2", b"v")
    assert store.tree("jobs_state").get(b"k") == b"v"


def test_batch_rejects_foreign_tree_and_unknown_name(store: Store, tmp_path: Path) -> None:
    other = Store.open(tmp_path / "other")
    try:
        with store.batch() as b:
            with pytest.raises(ValueError):
                b.put(other.tree("jobs_state"), b"k", b"v")
            with pytest.raises(KeyError):
                b.put("no_such_tree", b"k", b"v")
    finally:
        other.close()


# ------------------------------------------------------------------ snapshots


def test_snapshot_isolation(store: Store) -> None:
    t = store.tree("userid_displayname")
    t.put(b"@a:hs", b"A")
    t.put(b"@b:hs", b"B")
    with store.snapshot() as snap:
        view = snap.tree("userid_displayname")
        t.put(b"@a:hs", b"A2")
        t.delete(b"@b:hs")
        t.put(b"@c:hs", b"C")
        assert view.get(b"@a:hs") == b"A"
        assert b"@b:hs" in view
        assert view.get(b"@c:hs") is None
        assert list(view.iter()) == [(b"@a:hs", b"A"), (b"@b:hs", b"B")]
        assert list(view.keys(reverse=True)) == [b"@b:hs", b"@a:hs"]
        assert view.count() == 2
        # the live tree sees the new state
        assert list(t.keys()) == [b"@a:hs", b"@c:hs"]
    with pytest.raises(StoreError, match="snapshot"):
        view.get(b"@a:hs")


def test_snapshot_is_read_only(store: Store) -> None:
    with store.snapshot() as snap:
        view = snap.tree("jobs_state")
        assert not hasattr(view, "put")
        assert not hasattr(view, "delete")


# ------------------------------------------------------------------ catalogue


def test_catalogue_has_foundation_trees(store: Store) -> None:
    assert set(TREES) >= FOUNDATION_TREES
    for name, description in TREES.items():
        assert "->" in description, name
        assert "\n" not in description, name
        assert store.tree(name).name == name
    prefixes = {store.tree(n).prefix for n in TREES}
    assert len(prefixes) == len(TREES)


def test_unknown_tree_raises_keyerror(store: Store) -> None:
    with pytest.raises(KeyError, match=r"trees\.py"):
        store.tree("no_such_tree")
    with store.snapshot() as snap, pytest.raises(KeyError):
        snap.tree("no_such_tree")


def test_every_tree_used_in_the_code_is_catalogued() -> None:
    """A literal ``.tree("name")`` anywhere in the package must name a catalogued tree."""
    package = Path(__file__).resolve().parent.parent / "conduwuit"
    pattern = re.compile(r"""\.tree\(\s*["']([A-Za-z0-9_]+)["']""")
    used: dict[str, Path] = {}
    for source in package.rglob("*.py"):
        for name in pattern.findall(source.read_text(encoding="utf-8")):
            used.setdefault(name, source)
    missing = {name: str(path) for name, path in used.items() if name not in TREES}
    assert not missing, f"trees used but not in store/trees.py: {missing}"


def test_tree_prefixes_stable_across_reopen(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    before = {n: s.tree(n).prefix for n in TREES}
    s.close()
    s = Store.open(tmp_path / "db")
    try:
        assert {n: s.tree(n).prefix for n in TREES} == before
    finally:
        s.close()


def test_new_tree_never_renumbers_existing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store.open(tmp_path / "db")
    s.tree("userid_password").put(b"@a:hs", b"hash")
    before = {n: s.tree(n).prefix for n in TREES}
    s.close()
    # names that sort first and last must not shift anything
    monkeypatch.setitem(TREES, "aaa_new", "new -> tree")
    monkeypatch.setitem(TREES, "zzz_new", "new -> tree")
    s = Store.open(tmp_path / "db")
    try:
        for name, prefix in before.items():
            assert s.tree(name).prefix == prefix
        new = {s.tree("aaa_new").prefix, s.tree("zzz_new").prefix}
        assert len(new) == 2
        assert not new & set(before.values())
        assert s.tree("userid_password").get(b"@a:hs") == b"hash"
        assert s.tree("aaa_new").is_empty()
        allocated = {n: s.tree(n).prefix for n in TREES}
    finally:
        s.close()
    s = Store.open(tmp_path / "db")
    try:
        assert {n: s.tree(n).prefix for n in TREES} == allocated
    finally:
        s.close()


def test_tree_added_while_open(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = {n: store.tree(n).prefix for n in TREES}
    monkeypatch.setitem(TREES, "late_tree", "k -> v")
    late = store.tree("late_tree")
    late.put(b"k", b"v")
    assert late.prefix not in existing.values()
    assert {n: store.tree(n).prefix for n in existing} == existing


# ------------------------------------------------------------------ flush, stats, close


def test_flush_and_stats(store: Store) -> None:
    store.tree("userid_password").put(b"@a:hs", b"x" * 100)
    store.flush()
    stats = store.stats()
    assert stats["path"] == str(store.path)
    assert stats["schema_version"] == Store.SCHEMA_VERSION
    assert stats["counter"] == 0
    tree_bytes = stats["tree_bytes"]
    assert isinstance(tree_bytes, dict)
    assert set(tree_bytes) == set(TREES)
    assert isinstance(stats["disk_bytes"], int) and stats["disk_bytes"] > 0


def test_use_after_close_raises_store_error(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    t = s.tree("jobs_state")
    t.put(b"a", b"1")
    it = t.iter()
    s.close()
    s.close()  # idempotent
    assert s.closed
    calls: list[Callable[[], object]] = [
        lambda: t.get(b"a"),
        lambda: t.put(b"a", b"2"),
        lambda: t.delete(b"a"),
        lambda: t.increment(b"n"),
        lambda: list(t.iter()),
        lambda: next(it),
        lambda: s.tree("jobs_state"),
        lambda: s.next_count(),
        lambda: s.current_count(),
        lambda: s.flush(),
        lambda: s.stats(),
        lambda: s.batch().__enter__(),
        lambda: s.snapshot().__enter__(),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="closed"):
            call()


def test_reopen_after_close(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    s.tree("jobs_state").put(b"k", b"v")
    s.close()
    s = Store.open(tmp_path / "db")
    try:
        assert s.tree("jobs_state").get(b"k") == b"v"
    finally:
        s.close()
