"""Opening the store: locking, corruption, repair, schema versions."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest

from conduwuit.store import (
    Store,
    StoreCorruptError,
    StoreError,
    StoreInUseError,
    StoreOptions,
    StoreSchemaError,
    u64_be,
)

REPO = Path(__file__).resolve().parent.parent
IN_USE = "is in use by another conduwuit process"
REPAIR_OPTION = "rocksdb_repair = true"
REPAIR_ENV = "CONDUWUIT_ROCKSDB_REPAIR=true"


def populated(path: Path, n: int = 50) -> None:
    s = Store.open(path)
    t = s.tree("userid_password")
    for i in range(n):
        t.put(f"@user{i:05d}:hs".encode(), b"hash" * 8)
    for _ in range(3):
        s.next_count()
    s.close()


def assert_intact(path: Path, n: int = 50, options: StoreOptions | None = None) -> None:
    s = Store.open(path, options)
    try:
        assert s.tree("userid_password").count() == n
        assert s.current_count() == 3
    finally:
        s.close()


# ------------------------------------------------------------------ locking


def test_second_open_in_same_process(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    try:
        with pytest.raises(StoreInUseError) as info:
            Store.open(tmp_path / "db")
        assert IN_USE in str(info.value)
        assert str(tmp_path / "db") in str(info.value)
        # the same directory through another spelling is still the same database
        with pytest.raises(StoreInUseError):
            Store.open(tmp_path / "db" / ".." / "db")
        # the failed attempt must not have broken the first store
        s.tree("jobs_state").put(b"k", b"v")
        assert s.tree("jobs_state").get(b"k") == b"v"
    finally:
        s.close()
    Store.open(tmp_path / "db").close()


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A second Python process holding the store open until its stdin closes."""
    code = (
        "import sys\n"
        "from conduwuit.store import Store\n"
        "s = Store.open(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "s.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)


def test_open_held_by_another_process(tmp_path: Path, other_process: subprocess.Popen[str]) -> None:
    with pytest.raises(StoreInUseError) as info:
        Store.open(tmp_path / "db")
    message = str(info.value)
    assert IN_USE in message
    assert f"process {other_process.pid}" in message
    # once the other process lets go, the database opens
    assert other_process.stdin is not None
    other_process.stdin.close()
    assert other_process.wait(timeout=10) == 0
    Store.open(tmp_path / "db").close()


def test_leveldb_lock_held_without_our_lock_file(tmp_path: Path) -> None:
    """A foreign tool holding LevelDB's LOCK is reported the same way."""
    populated(tmp_path / "db")
    code = (
        "import sys, plyvel\n"
        "db = plyvel.DB(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreInUseError, match=IN_USE):
            Store.open(tmp_path / "db")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    assert_intact(tmp_path / "db")


# ------------------------------------------------------------------ corruption


def assert_corrupt_message(exc: StoreCorruptError, path: Path) -> None:
    message = str(exc)
    assert str(path) in message
    assert REPAIR_OPTION in message
    assert REPAIR_ENV in message
    assert "backup" in message


def test_garbage_current_is_corruption_and_repair_recovers(tmp_path: Path) -> None:
    path = tmp_path / "db"
    populated(path)
    (path / "CURRENT").write_text("garbage\n")
    with pytest.raises(StoreCorruptError) as info:
        Store.open(path)
    assert_corrupt_message(info.value, path)
    assert "CURRENT points to a non-existent file" in str(info.value)
    # a failed open released its locks: trying again gives the same answer
    with pytest.raises(StoreCorruptError):
        Store.open(path)
    assert_intact(path, options=StoreOptions(repair=True))
    assert_intact(path)  # and it stays repaired


def test_truncated_table_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "db"
    populated(path, n=2000)
    db = plyvel.DB(str(path))  # push everything into .ldb tables
    db.compact_range()
    db.close()
    tables = sorted(path.glob("*.ldb"))
    assert tables
    for table in tables:
        size = table.stat().st_size
        with table.open("r+b") as fh:
            fh.truncate(size // 2)
    with pytest.raises(StoreCorruptError) as info:
        Store.open(path)
    assert_corrupt_message(info.value, path)
    # repair cannot bring back a truncated table: it must say so...
    with pytest.raises(StoreCorruptError, match="repair already ran"):
        Store.open(path, StoreOptions(repair=True))
    # ...and the emptied database must never be mistaken for a brand-new one
    with pytest.raises(StoreCorruptError, match="sentinel"):
        Store.open(path)


def test_missing_current_with_tables_is_not_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "db"
    populated(path)
    (path / "CURRENT").unlink()
    with pytest.raises(StoreCorruptError, match="CURRENT file is missing"):
        Store.open(path)
    assert_intact(path, options=StoreOptions(repair=True))


def test_missing_sentinel_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "db"
    populated(path)
    s = Store.open(path)
    s.tree("global").delete(b"sentinel")
    s.close()
    with pytest.raises(StoreCorruptError, match="sentinel") as info:
        Store.open(path)
    assert_corrupt_message(info.value, path)


def test_failed_repair_says_so(tmp_path: Path) -> None:
    path = tmp_path / "db"
    populated(path)
    s = Store.open(path)
    s.tree("global").delete(b"sentinel")
    s.close()
    with pytest.raises(StoreCorruptError, match="repair already ran"):
        Store.open(path, StoreOptions(repair=True))


def test_empty_leveldb_from_interrupted_creation_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "db"
    plyvel.DB(str(path), create_if_missing=True).close()
    s = Store.open(path)
    try:
        assert s.current_count() == 0
        s.tree("jobs_state").put(b"k", b"v")
    finally:
        s.close()
    Store.open(path).close()


def test_repair_on_healthy_database_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "db"
    populated(path)
    assert_intact(path, options=StoreOptions(repair=True))


# ------------------------------------------------------------------ schema and options


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    s = Store.open(path)
    s.tree("global").put(b"version", u64_be(Store.SCHEMA_VERSION + 1))
    s.close()
    with pytest.raises(StoreSchemaError) as info:
        Store.open(path)
    message = str(info.value)
    assert f"schema version {Store.SCHEMA_VERSION + 1}" in message
    assert f"schema version {Store.SCHEMA_VERSION}" in message
    assert str(path) in message
    # refused cleanly: nothing left locked
    with pytest.raises(StoreSchemaError):
        Store.open(path)


def test_schema_version_recorded_on_create(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db")
    try:
        assert s.tree("global").get(b"version") == u64_be(Store.SCHEMA_VERSION)
    finally:
        s.close()


def test_create_if_missing_false(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database"):
        Store.open(tmp_path / "db", StoreOptions(create_if_missing=False))
    populated(tmp_path / "db")
    assert_intact(tmp_path / "db", options=StoreOptions(create_if_missing=False))


def test_options_are_accepted(tmp_path: Path) -> None:
    options = StoreOptions(
        paranoid_checks=True,
        lru_cache_size=1 << 20,
        write_buffer_size=1 << 20,
        max_open_files=100,
        bloom_filter_bits=0,
        compression=None,
    )
    populated(tmp_path / "db")
    assert_intact(tmp_path / "db", options=options)


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the database directory"):
        Store.open(blocker / "db")
