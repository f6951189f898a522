"""Store: the one LevelDB database of a server, split into named trees.

Layout of the LevelDB keyspace:

* ``00 00`` + ...          internal metadata (tree ids, flush marker); never a tree.
* ``<u16 tree id>`` + key  the keys of one tree; ids come from a stored name -> id map,
                           allocated once and never renumbered.

Opening is defensive because LevelDB is not: our own ``flock`` plus a process-wide
registry keep a database from being opened twice (a failed second open inside one
process silently drops LevelDB's own lock), and a sentinel key catches truncated tables
that would otherwise make scans quietly return nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import attrs
import plyvel
import trio

from . import trees
from .backup import run_backup
from .errors import (
    StoreCorruptError,
    StoreError,
    StoreInUseError,
    StoreSchemaError,
    leveldb_text,
)
from .keys import SEP, from_u64_be, successor, u64_be
from .tree import DB_ERRORS, Tree, TreeView

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_FILE = "conduwuit.lock"
META = b"\x00\x00"  # tree id 0: the internal keyspace
META_TREE_ID = META + b"tree" + SEP  # + name -> u16 id
META_NEXT_ID = META + b"next_tree_id"  # -> u64
META_FLUSH = META + b"flush"  # -> u64 ns timestamp of the last flush()
MAX_TREE_ID = 0xFFFE  # 0xFFFF would make the prefix all 0xFF (no scan upper bound)

# keys of the "global" tree owned by the store itself
VERSION_KEY = b"version"
COUNTER_KEY = b"c"
SENTINEL_KEY = b"sentinel"
SENTINEL_VALUE = b"conduwuit database"

TABLE_SUFFIXES = (".ldb", ".sst")
LEVELDB_SUFFIXES = (*TABLE_SUFFIXES, ".log")

# paths open in this process; guarded by _REGISTRY_LOCK (Store.open may run in a thread)
_REGISTRY_LOCK = threading.Lock()
_OPEN_PATHS: set[Path] = set()


@attrs.define(frozen=True)
class StoreOptions:
    """LevelDB tuning plus the two safety switches (create, repair)."""

    create_if_missing: bool = True
    repair: bool = False
    paranoid_checks: bool = False
    lru_cache_size: int | None = None
    write_buffer_size: int | None = None
    max_open_files: int | None = None
    bloom_filter_bits: int = 10
    compression: Literal["snappy"] | None = "snappy"

    def leveldb_kwargs(self) -> dict[str, Any]:
        """Options shared by ``plyvel.DB`` and ``plyvel.repair_db``."""
        kwargs: dict[str, Any] = {
            "paranoid_checks": self.paranoid_checks,
            "bloom_filter_bits": self.bloom_filter_bits,
            "compression": self.compression,
        }
        for name in ("lru_cache_size", "write_buffer_size", "max_open_files"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs


def tree_prefix(tree_id: int) -> bytes:
    return tree_id.to_bytes(2, "big")


class _LiveBackend:
    """Lets trees read and write the store's current DB handle (or fail cleanly)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def handle(self) -> Any:
        return self._store._live()

    def failure(self, exc: BaseException) -> StoreError:
        return self._store._failure(exc)


class WriteBatch:
    """Puts and deletes across trees, applied as one atomic LevelDB write."""

    __slots__ = ("_after", "_done", "_store", "_wb")

    def __init__(self, store: Store, wb: Any) -> None:
        self._store = store
        self._wb = wb
        self._done = False
        self._after: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the batch is written (never if it is dropped): for
        in-memory caches that must not run ahead of, or lag behind, the store."""
        self._after.append(callback)

    def put(self, tree: Tree | str, key: bytes, value: bytes) -> None:
        self._batch().put(self._prefix(tree) + key, value)

    def delete(self, tree: Tree | str, key: bytes) -> None:
        self._batch().delete(self._prefix(tree) + key)

    def _batch(self) -> Any:
        if self._done:
            raise StoreError("write batch used after its with-block ended")
        return self._wb

    def _prefix(self, tree: Tree | str) -> bytes:
        if isinstance(tree, str):
            return self._store.tree(tree).prefix
        if self._store._trees.get(tree.name) is not tree:
            raise ValueError(f"tree {tree.name!r} belongs to a different store")
        return tree.prefix

    def _finish(self, commit: bool) -> None:
        self._done = True
        if not commit:
            with contextlib.suppress(*DB_ERRORS):
                self._wb.clear()
            return
        self._store._live()
        try:
            self._wb.write()
        except DB_ERRORS as exc:
            raise self._store._failure(exc) from exc
        for callback in self._after:
            callback()


class Snapshot:
    """A consistent point-in-time, read-only view of every tree."""

    __slots__ = ("_snap", "_store")

    def __init__(self, store: Store, snap: Any) -> None:
        self._store = store
        self._snap: Any = snap

    def tree(self, name: str) -> TreeView:
        return TreeView(name, self._store._prefix_for(name), self)

    # Backend protocol for the views handed out above
    def handle(self) -> Any:
        self._store._live()
        if self._snap is None:
            raise StoreError("snapshot used after its with-block ended")
        return self._snap

    def failure(self, exc: BaseException) -> StoreError:
        return self._store._failure(exc)

    def _release(self) -> None:
        snap, self._snap = self._snap, None
        if snap is not None:
            with contextlib.suppress(*DB_ERRORS):
                snap.close()


class Store:
    """The open database. Create with ``Store.open``; close with ``close()``."""

    SCHEMA_VERSION: ClassVar[int] = 1

    path: Path
    _global: Tree  # set by _startup; the store's own keys live here

    def __init__(self, path: Path, options: StoreOptions) -> None:
        self.path = path
        self.options = options
        self._db: Any = None
        self._lock_fd: int | None = None
        self._registered = False
        self._trees: dict[str, Tree] = {}
        self._prefixes: dict[str, bytes] = {}
        self._backend = _LiveBackend(self)
        self._rmw_lock = threading.Lock()  # counters and tree-id allocation
        # threads using the DB (backup, compaction); close() waits for them
        self._guard = threading.Condition()
        self._busy = 0
        self._closing = False
        self.backup_running = False
        self._count = 0
        self.schema_version = self.SCHEMA_VERSION

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> Store:
        """Open (or create) the database at ``path``; raises a StoreError subclass.

        Blocking (tens of ms, much longer with ``repair``): from trio, call it through
        ``trio.to_thread.run_sync``.
        """
        store = cls(Path(path).expanduser().resolve(), options or StoreOptions())
        try:
            _make_dir(store.path)
            _register(store.path)
            store._registered = True
            store._lock_fd = _take_flock(store.path)
            existed = _has_leveldb_files(store.path)
            store._db = _open_leveldb(store.path, store.options, existed)
            store._startup(existed)
        except BaseException:
            store._teardown()
            raise
        return store

    def _startup(self, existed: bool) -> None:
        if not existed or not self._check_existing():
            self._initialise()
        self._load_tree_ids()
        self._global = self.tree("global")
        raw = self._global.get(COUNTER_KEY)
        self._count = 0 if raw is None else from_u64_be(raw)
        self.schema_version = from_u64_be(self._global.get(VERSION_KEY) or b"")

    def _initialise(self) -> None:
        """Write ids, sentinel, version and counter in one synced batch (all or none)."""
        wb = self._db.write_batch(sync=True)
        allocated = self._allocate(sorted(trees.TREES), wb)
        g = allocated["global"]
        wb.put(g + SENTINEL_KEY, SENTINEL_VALUE)
        wb.put(g + VERSION_KEY, u64_be(self.SCHEMA_VERSION))
        wb.put(g + COUNTER_KEY, u64_be(0))
        self._write(wb)
        self._prefixes.update(allocated)
        log.info("Created a new database at %s (schema %d)", self.path, self.SCHEMA_VERSION)

    def _check_existing(self) -> bool:
        """Sanity-check an existing database; False means "never finished creating"."""
        g = self._raw_get(META_TREE_ID + b"global")
        sentinel = None if g is None else self._raw_get(g + SENTINEL_KEY)
        if sentinel != SENTINEL_VALUE:
            if self._never_initialised():
                log.warning("Database at %s was never fully created; creating it", self.path)
                return False
            raise self._corrupt("the startup sentinel key is missing (lost or truncated table?)")
        assert g is not None
        # a truncated table can make scans return nothing while point reads work
        if self._first_key_from(g + SENTINEL_KEY) != g + SENTINEL_KEY:
            raise self._corrupt("iteration does not return the startup sentinel key")
        self._check_version(g)
        return True

    def _check_version(self, g: bytes) -> None:
        raw = self._raw_get(g + VERSION_KEY)
        if raw is None or len(raw) != 8:
            raise self._corrupt("the schema version key is missing or malformed")
        found = from_u64_be(raw)
        if found > self.SCHEMA_VERSION:
            raise StoreSchemaError(self.path, found, self.SCHEMA_VERSION)

    def _never_initialised(self) -> bool:
        """True only for a crash between LevelDB creating its files and our first batch.

        That leaves empty logs and no tables. Anything else without a sentinel has lost
        data (a repair moves damaged files to ``lost/``), and must not be re-created.
        """
        if self.options.repair:
            return False  # after a repair, "empty" may just mean "lost"
        for entry in self.path.iterdir():
            if entry.name == "lost" or entry.suffix in TABLE_SUFFIXES:
                return False
            if entry.suffix == ".log" and entry.stat().st_size > 0:
                return False
        return self._first_key_from(b"") is None

    # ---------------------------------------------------------------- tree ids

    def _load_tree_ids(self) -> None:
        """Read every catalogued tree's id; give new catalogue entries fresh ids."""
        missing = []
        for name in sorted(trees.TREES):
            if name in self._prefixes:
                continue
            prefix = self._raw_get(META_TREE_ID + name.encode())
            if prefix is None:
                missing.append(name)
            elif len(prefix) != 2 or prefix == META:
                raise self._corrupt(f"the id of tree {name!r} is malformed")
            else:
                self._prefixes[name] = prefix
        if missing:
            wb = self._db.write_batch(sync=True)
            allocated = self._allocate(missing, wb)
            self._write(wb)
            self._prefixes.update(allocated)  # only once the ids are on disk

    def _allocate(self, names: list[str], wb: Any) -> dict[str, bytes]:
        """Put the next free ids for ``names`` (in the given order) into ``wb``."""
        raw = self._raw_get(META_NEXT_ID)
        next_id = 1 if raw is None else from_u64_be(raw)
        allocated = {}
        for name in names:
            if next_id > MAX_TREE_ID:
                raise StoreError(f"database at {self.path} has run out of tree ids")
            allocated[name] = tree_prefix(next_id)
            wb.put(META_TREE_ID + name.encode(), allocated[name])
            next_id += 1
        wb.put(META_NEXT_ID, u64_be(next_id))
        return allocated

    def _prefix_for(self, name: str) -> bytes:
        prefix = self._prefixes.get(name)
        if prefix is None:
            trees.describe(name)  # KeyError for names not in the catalogue
            self._live()
            with self._rmw_lock:  # a name added to TREES after open
                self._load_tree_ids()
            prefix = self._prefixes[name]
        return prefix

    # ------------------------------------------------------------- public API

    def tree(self, name: str) -> Tree:
        """The (cached) tree called ``name``; KeyError if it is not in the catalogue."""
        self._live()
        tree = self._trees.get(name)
        if tree is None:
            tree = Tree(name, self._prefix_for(name), self._backend, self._rmw_lock)
            self._trees[name] = tree
        return tree

    @contextlib.contextmanager
    def batch(self, *, sync: bool = False) -> Iterator[WriteBatch]:
        """Collect writes; apply them atomically on clean exit, drop them on exception."""
        batch = WriteBatch(self, self._live().write_batch(sync=sync))
        try:
            yield batch
        except BaseException:
            batch._finish(commit=False)
            raise
        batch._finish(commit=True)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """Point-in-time reads; later writes are invisible inside the with-block."""
        db = self._live()
        try:
            snap = Snapshot(self, db.snapshot())
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc
        try:
            yield snap
        finally:
            snap._release()

    def next_count(self) -> int:
        """Advance and persist the global u64 counter (stream positions, short ids)."""
        with self._rmw_lock:
            new = self._count + 1
            self._global.put(COUNTER_KEY, u64_be(new))
            self._count = new
        return new

    def current_count(self) -> int:
        self._live()
        return self._count

    def flush(self) -> None:
        """Make all earlier writes durable: a synced write forces the log to disk."""
        db = self._live()
        try:
            db.put(META_FLUSH, u64_be(time.time_ns()), sync=True)
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        """Flush and close; waits for a running backup/compaction step. Idempotent."""
        with self._guard:
            if self._db is None:
                return
            self._closing = True
            while self._busy:
                self._guard.wait()
            try:
                self.flush()
            except StoreError as exc:
                log.error("Final flush of %s failed: %s", self.path, exc)
            finally:
                self._teardown()

    async def backup(self, backup_root: str | os.PathLike[str], keep: int) -> Path:
        """Copy a snapshot into a new LevelDB under ``backup_root``; keep the newest ``keep``."""
        return await run_backup(self, Path(backup_root), keep)

    async def compact(self) -> None:
        """Compact the whole keyspace in a worker thread (can take seconds)."""
        db = self._live()
        await self._in_thread(db.compact_range)

    def stats(self) -> dict[str, object]:
        """Approximate sizes and LevelDB counters for the admin room."""
        db = self._live()
        names = sorted(self._prefixes)
        ranges = [(self._prefixes[n], successor(self._prefixes[n])) for n in names]
        try:
            sizes = db.approximate_sizes(*ranges)
            memory = db.get_property(b"leveldb.approximate-memory-usage") or b"0"
            levels = [
                int(db.get_property(f"leveldb.num-files-at-level{n}".encode()) or b"0")
                for n in range(7)
            ]
            text = (db.get_property(b"leveldb.stats") or b"").decode("utf-8", "replace")
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "counter": self._count,
            "trees": len(names),
            "tree_bytes": dict(zip(names, sizes, strict=True)),
            "disk_bytes": _dir_size(self.path),
            "memory_bytes": int(memory),
            "files_per_level": levels,
            "backup_running": self.backup_running,
            "leveldb_stats": text,
        }

    # --------------------------------------------------------------- internals

    def _live(self) -> Any:
        """The plyvel DB, or StoreError once closed (instead of plyvel's RuntimeError)."""
        db = self._db
        if db is None:
            raise StoreError(f"database at {self.path} is closed")
        return db

    def _failure(self, exc: BaseException) -> StoreError:
        """Map a plyvel exception raised while running to the StoreError to raise."""
        if isinstance(exc, RuntimeError):
            return StoreError(f"database at {self.path} is closed ({exc})")
        text = leveldb_text(exc)
        if "No space left" in text:
            return StoreError(f"database at {self.path}: disk full: {text}")
        if isinstance(exc, plyvel.CorruptionError | plyvel.IOError):
            return StoreCorruptError(self.path, text, repair_attempted=self.options.repair)
        return StoreError(f"database at {self.path}: LevelDB error: {text}")

    def _corrupt(self, what: str) -> StoreCorruptError:
        return StoreCorruptError(
            self.path, what, repair_attempted=self.options.repair, source="startup check"
        )

    def _raw_get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc
        return value

    def _first_key_from(self, start: bytes) -> bytes | None:
        try:
            with self._db.iterator(start=start, include_value=False) as it:
                key: bytes | None = next(it, None)
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc
        return key

    def _write(self, wb: Any) -> None:
        try:
            wb.write()
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread that holds the close guard while it runs.

        The guard is taken and released inside the thread itself: ``close()`` may be
        blocking the trio loop while it waits, so the release cannot need the loop.
        """

        def guarded() -> T:
            with self._guard:
                if self._db is None or self._closing:
                    raise StoreError(f"database at {self.path} is closed")
                self._busy += 1
            try:
                return fn(*args)
            finally:
                with self._guard:
                    self._busy -= 1
                    self._guard.notify_all()

        # not abandoned on cancel: the DB must outlive the thread using it
        return await trio.to_thread.run_sync(guarded)

    def _under_guard(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` with close() excluded, if the DB is still open."""
        with self._guard:
            if self._db is not None:
                fn()

    def _teardown(self) -> None:
        """Close LevelDB, drop the flock and the registry entry (each if held)."""
        db, self._db = self._db, None
        try:
            if db is not None:
                db.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            if self._registered:
                _unregister(self.path)
                self._registered = False


# ------------------------------------------------------------------ open helpers


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the database directory {path}: {exc.strerror}. Check that "
            "`database_path` is right and writable by the user running conduwuit."
        ) from exc


def _register(path: Path) -> None:
    with _REGISTRY_LOCK:
        if path in _OPEN_PATHS:
            raise StoreInUseError(
                path,
                "it is already open in this process",
                advice="Close the open Store before opening the path again.",
            )
        _OPEN_PATHS.add(path)


def _unregister(path: Path) -> None:
    with _REGISTRY_LOCK:
        _OPEN_PATHS.discard(path)


def _take_flock(path: Path) -> int:
    """Hold an exclusive flock on PATH/conduwuit.lock for as long as the store is open."""
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot create the lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise StoreInUseError(path, f"{lock_path} is locked{holder}") from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"cannot lock {lock_path}: {exc.strerror}") from exc
    # record who holds it, so the next "in use" message can name the process
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _lock_holder(fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f" by process {pid}" if pid.isdigit() else ""


def _has_leveldb_files(path: Path) -> bool:
    """Does the directory already hold a LevelDB (even a damaged one)?"""
    return any(
        p.name == "CURRENT" or p.name.startswith("MANIFEST-") or p.suffix in LEVELDB_SUFFIXES
        for p in path.iterdir()
    )


def _open_leveldb(path: Path, options: StoreOptions, existed: bool) -> Any:
    if existed and not (path / "CURRENT").exists() and not options.repair:
        # LevelDB would start a new, empty database and delete the old tables
        raise StoreCorruptError(path, "the CURRENT file is missing but table files exist")
    if not existed and not options.create_if_missing:
        raise StoreError(f"there is no database at {path} and creating one is disabled")
    if options.repair and existed:
        _repair(path, options)
    try:
        return plyvel.DB(str(path), create_if_missing=not existed, **options.leveldb_kwargs())
    except plyvel.IOError as exc:
        raise _open_failure(path, exc, options.repair) from exc
    except plyvel.Error as exc:
        raise StoreCorruptError(path, leveldb_text(exc), repair_attempted=options.repair) from exc


def _open_failure(path: Path, exc: BaseException, repaired: bool) -> StoreError:
    text = leveldb_text(exc)
    if "lock" in text.lower() and ("unavailable" in text or "already held" in text):
        return StoreInUseError(path, f"LevelDB's own lock is held: {text}")
    if "Permission denied" in text:
        return StoreError(
            f"cannot open the database at {path}: {text}. Check that the directory and "
            "its files belong to the user running conduwuit."
        )
    return StoreCorruptError(path, text, repair_attempted=repaired)


def _repair(path: Path, options: StoreOptions) -> None:
    log.warning(
        "rocksdb_repair is set: running a LevelDB repair on %s; keys in damaged tables "
        "may be lost. Remove the setting once the server starts.",
        path,
    )
    started = time.monotonic()
    try:
        plyvel.repair_db(str(path), **options.leveldb_kwargs())
    except plyvel.Error as exc:
        raise StoreCorruptError(path, leveldb_text(exc), repair_attempted=True) from exc
    log.warning("Repair of %s finished in %.1f s", path, time.monotonic() - started)


def _dir_size(path: Path) -> int:
    total = 0
    for entry in os.scandir(path):
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total
