"""Online backup: identical content, pruning, cancellation, close during a backup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from conduwuit.store import TREES, Store, StoreError, join
from conduwuit.store import backup as backup_mod

Content = dict[str, list[tuple[bytes, bytes]]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


def populate(store: Store, users: int = 300) -> None:
    with store.batch() as b:
        for i in range(users):
            user = f"@user{i:04d}:hs.test"
            b.put("userid_password", user.encode(), b"$argon2id$" + bytes([i % 256]) * 20)
            b.put("userid_displayname", user.encode(), f"User {i}".encode())
            b.put("userdeviceid_token", join(user, "DEV"), f"tok{i}".encode())
            b.put("token_userdeviceid", f"tok{i}".encode(), join(user, "DEV"))
    store.tree("server_signingkeys").put(b"remote.test", b'{"verify_keys": {}}')
    store.tree("jobs_state").increment(b"runs")
    for _ in range(7):
        store.next_count()


def content(store: Store) -> Content:
    return {name: list(store.tree(name).iter()) for name in TREES}


def prefixes(store: Store) -> dict[str, bytes]:
    return {name: store.tree(name).prefix for name in TREES}


async def test_backup_reopens_with_identical_content(store: Store, tmp_path: Path) -> None:
    populate(store)
    expected, expected_prefixes = content(store), prefixes(store)
    result = await store.backup(tmp_path / "backups", keep=3)
    assert result.parent == tmp_path / "backups"
    assert result.is_dir()
    copy = Store.open(result)
    try:
        assert content(copy) == expected
        assert prefixes(copy) == expected_prefixes
        assert copy.current_count() == store.current_count() == 7
        assert copy.next_count() == 8  # the copy is a normal, writable database
    finally:
        copy.close()


async def test_backup_is_a_point_in_time_copy(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes made while the backup runs do not leak into it."""
    populate(store, users=50)
    expected = content(store)
    monkeypatch.setattr(backup_mod, "CHUNK_KEYS", 10)
    started = trio.Event()
    original = backup_mod._BackupJob.copy_chunk

    def slow_chunk(job: backup_mod._BackupJob) -> bool:
        trio.from_thread.run_sync(started.set)  # the snapshot exists by now
        time.sleep(0.005)
        return original(job)

    monkeypatch.setattr(backup_mod._BackupJob, "copy_chunk", slow_chunk)
    async with trio.open_nursery() as nursery:
        results: list[Path] = []

        async def run() -> None:
            results.append(await store.backup(tmp_path / "backups", keep=1))

        nursery.start_soon(run)
        await started.wait()
        # the loop keeps running while the backup copies in threads
        for i in range(20):
            store.tree("userid_displayname").put(f"@late{i}:hs".encode(), b"late")
            store.tree("userid_password").delete(b"@user0000:hs.test")
            await trio.sleep(0.001)
    copy = Store.open(results[0])
    try:
        assert content(copy) == expected
    finally:
        copy.close()


@pytest.mark.parametrize("chunk", [1, 7, 10])
async def test_backup_chunk_boundaries(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    populate(store, users=5)
    monkeypatch.setattr(backup_mod, "CHUNK_KEYS", chunk)
    result = await store.backup(tmp_path / "backups", keep=1)
    copy = Store.open(result)
    try:
        assert content(copy) == content(store)
    finally:
        copy.close()


async def test_pruning_keeps_the_newest(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    foreign = root / "not-a-backup"
    foreign.mkdir()
    made = []
    for i in range(4):
        store.tree("jobs_state").put(b"generation", str(i).encode())
        made.append(await store.backup(root, keep=2))
    assert len(set(made)) == 4
    remaining = sorted(p for p in root.iterdir() if p != foreign)
    assert remaining == made[2:]
    assert foreign.is_dir()  # only our own backups are ever deleted
    newest = Store.open(made[-1])
    try:
        assert newest.tree("jobs_state").get(b"generation") == b"3"
    finally:
        newest.close()


async def test_keep_must_be_positive(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await store.backup(tmp_path / "backups", keep=0)


async def test_backup_into_database_dir_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.backup(store.path, keep=1)


async def test_cancelled_backup_leaves_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(store, users=50)
    monkeypatch.setattr(backup_mod, "CHUNK_KEYS", 5)
    started = trio.Event()
    original = backup_mod._BackupJob.copy_chunk

    def slow_chunk(job: backup_mod._BackupJob) -> bool:
        trio.from_thread.run_sync(started.set)
        time.sleep(0.01)
        return original(job)

    monkeypatch.setattr(backup_mod._BackupJob, "copy_chunk", slow_chunk)
    root = tmp_path / "backups"
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.backup, root, 1)
            await started.wait()
            scope.cancel()
    assert list(root.iterdir()) == []  # the partial copy was removed
    assert not store.backup_running
    # the store is fine and a later backup works
    store.tree("jobs_state").put(b"after", b"cancel")
    monkeypatch.setattr(backup_mod._BackupJob, "copy_chunk", original)
    assert (await store.backup(root, keep=1)).is_dir()


async def test_close_waits_for_backup_step_and_backup_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store.open(tmp_path / "db")
    populate(s, users=50)
    monkeypatch.setattr(backup_mod, "CHUNK_KEYS", 5)
    started = trio.Event()
    original = backup_mod._BackupJob.copy_chunk

    def slow_chunk(job: backup_mod._BackupJob) -> bool:
        if not job.copied:  # later chunks may run while close() blocks the loop
            trio.from_thread.run_sync(started.set)
        time.sleep(0.02)
        return original(job)

    monkeypatch.setattr(backup_mod._BackupJob, "copy_chunk", slow_chunk)
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await s.backup(tmp_path / "backups", keep=1)
        except StoreError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await started.wait()
        s.close()  # blocks until the running chunk ends, then closes
        assert s.closed
    assert len(errors) == 1
    assert "closed" in str(errors[0])
    assert list((tmp_path / "backups").iterdir()) == []
    Store.open(tmp_path / "db").close()  # the database itself is intact


async def test_only_one_backup_at_a_time(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(store, users=10)
    monkeypatch.setattr(backup_mod, "CHUNK_KEYS", 5)
    started = trio.Event()
    original = backup_mod._BackupJob.copy_chunk

    def slow_chunk(job: backup_mod._BackupJob) -> bool:
        trio.from_thread.run_sync(started.set)
        time.sleep(0.005)
        return original(job)

    monkeypatch.setattr(backup_mod._BackupJob, "copy_chunk", slow_chunk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.backup, tmp_path / "a", 1)
        await started.wait()
        assert store.stats()["backup_running"] is True
        with pytest.raises(StoreError, match="already running"):
            await store.backup(tmp_path / "b", 1)
    assert not store.backup_running


async def test_compact_keeps_content(store: Store) -> None:
    populate(store, users=100)
    before = content(store)
    await store.compact()
    assert content(store) == before
