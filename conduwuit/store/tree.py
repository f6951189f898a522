"""Tree: one named keyspace inside the single LevelDB database.

Every key of a tree is stored as ``tree prefix + key``; callers never see the prefix.
A ``TreeView`` reads through a "backend" (the live DB, or a snapshot), so the same
range logic serves normal reads and point-in-time snapshot reads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import plyvel

from .errors import StoreError
from .keys import from_u64_be, successor, u64_be

# plyvel raises its own Error family for LevelDB failures and RuntimeError once the
# DB/snapshot/iterator is closed; both are turned into StoreError subclasses.
DB_ERRORS: tuple[type[BaseException], ...] = (plyvel.Error, RuntimeError)


class Backend(Protocol):
    """What a tree view needs from its owner."""

    def handle(self) -> Any:
        """The plyvel DB or Snapshot to read from; raises StoreError once it is gone."""
        ...

    def failure(self, exc: BaseException) -> StoreError:
        """Translate a plyvel exception into the StoreError to raise instead."""
        ...


class TreeView:
    """Read-only access to one tree; the base of ``Tree`` and of snapshot views."""

    __slots__ = ("_backend", "name", "prefix")

    def __init__(self, name: str, prefix: bytes, backend: Backend) -> None:
        self.name = name
        self.prefix = prefix  # fixed-length, from the stored name -> id mapping
        self._backend = backend

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} prefix={self.prefix.hex()}>"

    def get(self, key: bytes) -> bytes | None:
        """Point read; ``None`` when absent."""
        reader = self._backend.handle()
        try:
            value: bytes | None = reader.get(self.prefix + key)
        except DB_ERRORS as exc:
            raise self._backend.failure(exc) from exc
        return value

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def iter(
        self, prefix: bytes = b"", *, reverse: bool = False, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order (or reversed).

        ``start`` is the first key to yield going forward, or the key at/below which to
        begin going backward. Keys come back without the tree prefix.
        """
        return self._scan(prefix, reverse, start, include_value=True)

    def keys(self, prefix: bytes = b"", *, reverse: bool = False) -> Iterator[bytes]:
        """Like ``iter`` but keys only, which skips copying values out of LevelDB."""
        return self._scan(prefix, reverse, None, include_value=False)

    def count(self, prefix: bytes = b"") -> int:
        """Number of keys under ``prefix``. O(n): use a thread for big trees."""
        return sum(1 for _ in self.keys(prefix))

    def is_empty(self) -> bool:
        return next(self.keys(), None) is None

    def _scan(
        self, prefix: bytes, reverse: bool, start: bytes | None, *, include_value: bool
    ) -> Iterator[Any]:
        full_start = None if start is None else self.prefix + start
        bounds = scan_bounds(self.prefix + prefix, reverse, full_start)
        if bounds is None:
            return iter(())
        return self._generate(bounds, reverse, include_value)

    def _generate(
        self, bounds: dict[str, Any], reverse: bool, include_value: bool
    ) -> Iterator[Any]:
        reader = self._backend.handle()
        strip = len(self.prefix)
        try:
            it = reader.iterator(reverse=reverse, include_value=include_value, **bounds)
        except DB_ERRORS as exc:
            raise self._backend.failure(exc) from exc
        try:
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    return
                except DB_ERRORS as exc:
                    raise self._backend.failure(exc) from exc
                if include_value:
                    yield item[0][strip:], item[1]
                else:
                    yield item[strip:]
        finally:
            # the DB may already be closed; closing its iterator is then moot
            with contextlib.suppress(*DB_ERRORS):
                it.close()


def scan_bounds(lower: bytes, reverse: bool, start: bytes | None) -> dict[str, Any] | None:
    """plyvel iterator bounds for "keys under ``lower`` beginning at ``start``".

    plyvel cannot combine ``prefix=`` with ``start=``, so the prefix is expressed as the
    half-open range [lower, successor(lower)). ``None`` means the range is empty.
    """
    upper = successor(lower)
    if start is None:
        return {"start": lower, "stop": upper}
    if not reverse:
        return {"start": max(lower, start), "stop": upper}
    if start < lower:
        return None
    if upper is not None and start >= upper:
        return {"start": lower, "stop": upper}
    return {"start": lower, "stop": start, "include_stop": True}


class Tree(TreeView):
    """A writable tree on the live database. Get one with ``Store.tree(name)``."""

    __slots__ = ("_rmw_lock",)

    def __init__(
        self, name: str, prefix: bytes, backend: Backend, rmw_lock: threading.Lock
    ) -> None:
        super().__init__(name, prefix, backend)
        # shared by all read-modify-write ops of one store (counters)
        self._rmw_lock = rmw_lock

    def put(self, key: bytes, value: bytes) -> None:
        db = self._backend.handle()
        try:
            db.put(self.prefix + key, value)
        except DB_ERRORS as exc:
            raise self._backend.failure(exc) from exc

    def delete(self, key: bytes) -> None:
        db = self._backend.handle()
        try:
            db.delete(self.prefix + key)
        except DB_ERRORS as exc:
            raise self._backend.failure(exc) from exc

    def increment(self, key: bytes) -> int:
        """Atomically add one to the big-endian u64 at ``key`` (absent = 0)."""
        with self._rmw_lock:
            old = self.get(key)
            try:
                new = (0 if old is None else from_u64_be(old)) + 1
                encoded = u64_be(new)
            except ValueError as exc:
                raise StoreError(
                    f"counter {key!r} in tree {self.name!r} cannot be incremented: {exc}"
                ) from exc
            self.put(key, encoded)
        return new
