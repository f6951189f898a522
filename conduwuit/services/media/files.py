"""Media files on disk: one file per stored key, written atomically, read in chunks.

A file lives at ``<database_path>/media/<name>`` where ``name`` is the unpadded
URL-safe base64 of the SHA-256 of the file's key (as conduwuit names them), so a
long media id or file name can never make a path too long. A file is written
to a temporary name in the same directory, flushed to disk and renamed into
place, so a reader never sees half a file. Every filesystem call runs in a
worker thread; bytes move in chunks, so a big file is never held in memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

import attrs
import trio

READ_CHUNK = 256 * 1024  # bytes per read when streaming a file out
WRITE_BUFFER = 1024 * 1024  # bytes gathered before one write to disk
TEMP_PREFIX = ".tmp-"


class TooLarge(Exception):
    """The incoming bytes went past the limit; nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


def file_name(key: bytes) -> str:
    """The on-disk name of the file stored under ``key``."""
    return base64.urlsafe_b64encode(hashlib.sha256(key).digest()).rstrip(b"=").decode("ascii")


@attrs.frozen
class Received:
    """Bytes streamed into a temporary file that is not yet in place."""

    temp: Path
    size: int
    sha256: str


class OpenFile:
    """A media file opened for reading; :meth:`chunks` streams and then closes it."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self.size = size

    async def chunks(self, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        try:
            while True:
                data = await trio.to_thread.run_sync(self._handle.read, chunk_size)
                if not data:
                    return
                yield data
        finally:
            self._handle.close()

    async def read_all(self) -> bytes:
        try:
            return await trio.to_thread.run_sync(self._handle.read)
        finally:
            self._handle.close()

    def close(self) -> None:
        self._handle.close()


class MediaFiles:
    """The media directory of one server."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure_dir(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: bytes) -> Path:
        return self.root / file_name(key)

    async def receive(self, chunks: AsyncIterable[bytes], limit: int, *,
                      durable: bool = True) -> Received:
        """Stream ``chunks`` into a new temporary file; :class:`TooLarge` past ``limit``.

        The temporary file is removed on any failure (too large, a timeout, the
        client going away, cancellation). ``durable`` files are on disk (fsync)
        before this returns; files that can be made again (thumbnails) skip that.
        """
        temp = self.root / f"{TEMP_PREFIX}{secrets.token_hex(12)}"
        handle = await trio.to_thread.run_sync(_create, temp)
        hasher = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BUFFER:
                    data, pending, pending_size = b"".join(pending), [], 0
                    await trio.to_thread.run_sync(_write, handle, hasher, data)
            await trio.to_thread.run_sync(_finish, handle, hasher, b"".join(pending), durable)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_abandon, handle, temp)
            raise
        return Received(temp, size, hasher.hexdigest())

    async def receive_bytes(self, data: bytes, *, durable: bool = True) -> Received:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.receive(one(), len(data), durable=durable)

    async def commit(self, received: Received, key: bytes) -> Path:
        """Move a received file into place under ``key`` (atomic, replaces any old file)."""
        target = self.path(key)
        await trio.to_thread.run_sync(os.replace, received.temp, target)
        return target

    async def discard(self, received: Received) -> None:
        await trio.to_thread.run_sync(_unlink, received.temp)

    async def open(self, key: bytes) -> OpenFile | None:
        """The file under ``key`` opened for reading, or ``None`` when it is missing."""
        return await trio.to_thread.run_sync(_open, self.path(key))

    async def exists(self, key: bytes) -> bool:
        return await trio.to_thread.run_sync(self.path(key).is_file)

    async def delete(self, key: bytes) -> bool:
        """Remove the file under ``key``; ``False`` when there was none."""
        return await trio.to_thread.run_sync(_unlink, self.path(key))

    def leftover_temps(self) -> list[Path]:
        """Temporary files left by a crash mid-upload (blocking: call from a thread)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.name.startswith(TEMP_PREFIX)]


def _create(path: Path) -> BinaryIO:
    # exclusive create, owner-only: media is private to the server
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _write(handle: BinaryIO, hasher: hashlib._Hash, data: bytes) -> None:
    hasher.update(data)
    handle.write(data)


def _finish(handle: BinaryIO, hasher: hashlib._Hash, data: bytes, durable: bool) -> None:
    if data:
        _write(handle, hasher, data)
    handle.flush()
    if durable:
        # The data reaches the disk before the rename makes it visible.
        os.fsync(handle.fileno())
    handle.close()


def _abandon(handle: BinaryIO, temp: Path) -> None:
    with contextlib.suppress(OSError):
        handle.close()
    _unlink(temp)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _open(path: Path) -> OpenFile | None:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    return OpenFile(handle, os.fstat(handle.fileno()).st_size)
