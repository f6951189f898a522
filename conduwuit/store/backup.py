"""Online backup: copy a snapshot of the live database into a new LevelDB.

The copy runs in worker threads one chunk at a time, so the trio loop keeps serving,
cancellation takes effect between chunks, and ``Store.close`` waits at most one chunk.
A backup is built under a ``.partial-`` name and renamed when complete, so a crash
never leaves something that looks like a finished backup.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plyvel
import trio

from .errors import StoreError
from .tree import DB_ERRORS

if TYPE_CHECKING:
    from .db import Store

log = logging.getLogger(__name__)

CHUNK_KEYS = 10_000  # keys per thread hop: a few ms of work each
PARTIAL = ".partial-"
BACKUP_NAME = re.compile(r"^(\d+)-\d{8}T\d{6}Z$")  # <sequence>-<UTC time>


async def run_backup(store: Store, backup_root: Path, keep: int) -> Path:
    """Back ``store`` up into ``backup_root/<seq>-<time>``, then prune to ``keep``."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    root = backup_root.expanduser().resolve()
    if root == store.path:
        raise StoreError("the backup directory must not be the database directory itself")
    if store.backup_running:
        raise StoreError(f"a backup of {store.path} is already running")
    store.backup_running = True
    try:
        return await _run(store, _BackupJob(store, root, keep))
    finally:
        store.backup_running = False


async def _run(store: Store, job: _BackupJob) -> Path:
    started = time.monotonic()
    try:
        await store._in_thread(job.prepare)
        while not await store._in_thread(job.copy_chunk):
            pass
        await store._in_thread(job.finish)
    except BaseException:
        with trio.CancelScope(shield=True):
            store._under_guard(job.release_source)
            await trio.to_thread.run_sync(job.discard)
        raise
    log.info(
        "Backed up %d keys of %s to %s in %.1f s",
        job.copied,
        store.path,
        job.final,
        time.monotonic() - started,
    )
    return job.final


class _BackupJob:
    """The state of one backup, driven step by step from ``run_backup``."""

    def __init__(self, store: Store, root: Path, keep: int) -> None:
        self.store = store
        self.root = root
        self.keep = keep
        self.final = root
        self.partial = root
        self.copied = 0
        self._target: Any = None
        self._snap: Any = None
        self._iter: Any = None

    def prepare(self) -> None:
        """Take the snapshot first (it defines the backup's point in time)."""
        db = self.store._live()
        try:
            self._snap = db.snapshot()
            self._iter = self._snap.iterator()
        except DB_ERRORS as exc:
            raise self.store._failure(exc) from exc
        self._make_root()
        name = f"{_next_sequence(self.root):06d}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        self.final = self.root / name
        self.partial = self.root / f"{PARTIAL}{name}"
        opts = self.store.options
        try:
            self._target = plyvel.DB(
                str(self.partial),
                create_if_missing=True,
                error_if_exists=True,
                bloom_filter_bits=opts.bloom_filter_bits,
                compression=opts.compression,
            )
        except plyvel.Error as exc:
            raise StoreError(f"cannot create backup database {self.partial}: {exc}") from exc

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create backup directory {self.root}: {exc}") from exc
        # leftovers of a backup interrupted by a crash
        for entry in self.root.iterdir():
            if entry.name.startswith(PARTIAL) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def copy_chunk(self) -> bool:
        """Copy up to CHUNK_KEYS keys; True once the snapshot is exhausted."""
        wb = self._target.write_batch()
        n = 0
        try:
            for key, value in itertools.islice(self._iter, CHUNK_KEYS):
                wb.put(key, value)
                n += 1
        except DB_ERRORS as exc:
            raise self.store._failure(exc) from exc
        try:
            wb.write()
        except plyvel.Error as exc:
            raise StoreError(f"writing backup {self.partial} failed: {exc}") from exc
        self.copied += n
        return n < CHUNK_KEYS

    def finish(self) -> None:
        """Make the copy durable, publish it under its final name, prune old ones."""
        self.release_source()
        try:
            # compaction writes (and fsyncs) table files, so the copy needs no log replay
            self._target.compact_range()
            self._target.close()
            self._target = None
            os.rename(self.partial, self.final)
        except (plyvel.Error, OSError) as exc:
            raise StoreError(f"finishing backup {self.partial} failed: {exc}") from exc
        _fsync_dir(self.root)
        prune(self.root, self.keep)

    def release_source(self) -> None:
        """Drop the source iterator and snapshot (must not race with Store.close)."""
        for handle in (self._iter, self._snap):
            if handle is not None:
                with contextlib.suppress(*DB_ERRORS):
                    handle.close()
        self._iter = self._snap = None

    def discard(self) -> None:
        """After a failure or cancellation: close and delete the partial copy."""
        if self._target is not None:
            with contextlib.suppress(*DB_ERRORS):
                self._target.close()
            self._target = None
        if self.partial != self.root:
            shutil.rmtree(self.partial, ignore_errors=True)


def backups(root: Path) -> list[Path]:
    """Finished backups under ``root``, oldest first."""
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in root.iterdir():
            match = BACKUP_NAME.match(entry.name)
            if match and entry.is_dir():
                found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def prune(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest backups; only touches names we created."""
    for old in backups(root)[:-keep]:
        log.info("Removing old backup %s", old)
        shutil.rmtree(old, ignore_errors=True)


def _next_sequence(root: Path) -> int:
    existing = backups(root)
    if not existing:
        return 1
    match = BACKUP_NAME.match(existing[-1].name)
    assert match is not None
    return int(match.group(1)) + 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
