"""The media repository: uploads, downloads, thumbnails, URL previews, deletion.

Files live in ``<database_path>/media/`` (see :mod:`.files`); their metadata in the
``mediaid_file`` tree, keyed ``(server_name, media_id)`` for local uploads and cached
remote media alike. Thumbnails are generated once per standard size, method and
animation flag (:mod:`.thumbnails`) and kept the same way in ``mediaid_thumbnail``.
An upload is streamed to a temporary file and renamed into place before its
metadata is written, so metadata never points at half a file.

Asynchronous uploads (``POST /_matrix/media/v1/create``) reserve a media id for
24 hours (``mediaid_pending``); a download of a reserved id waits up to its
``timeout_ms`` for the upload, then answers 504 ``M_NOT_YET_UPLOADED``.

Media of other servers comes from :attr:`Media.remote`, a
:class:`~.remote.RemoteFetcher`: with federation on, ``federation_fetcher.py`` fetches it
from the origin server and the copy is cached here; a fetch that fails answers 404.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import orjson
import trio

from conduwuit.config import Config, cpu_count
from conduwuit.errors import MatrixError, forbidden, invalid_param, not_found, too_large
from conduwuit.protocol.ids import is_valid_server_name
from conduwuit.store import SEP, Store, from_u64_be, join, u64_be

from . import thumbnails
from .files import MediaFiles, OpenFile, Received, TooLarge
from .locks import KeyedLocks
from .preview import UrlPreviews
from .remote import RemoteFetcher, RemoteFile
from .thumbnails import ThumbSize

__all__ = [
    "Media",
    "MediaInfo",
    "OpenFile",
    "RemoteFetcher",
    "RemoteFile",
    "ThumbSize",
    "ThumbnailInfo",
    "UrlPreviews",
    "parse_mxc",
]

log = logging.getLogger(__name__)

MEDIA_ID_LENGTH = 32
MEDIA_ID_ALPHABET = string.ascii_letters + string.digits
MAX_MEDIA_ID_LENGTH = 255
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]+")
PENDING_EXPIRY_MS = 24 * 3600 * 1000  # the spec's recommended lifetime of an unused mxc
MAX_PENDING_PER_USER = 5  # pending async uploads per user (Synapse's default)
DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
MAX_STORED_FILENAME = 1024
MAX_STORED_CONTENT_TYPE = 255

REMOTE_UNAVAILABLE = (
    "Remote media is not available yet: this server cannot fetch media from other servers"
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_mxc(server_name: str, media_id: str) -> None:
    """400 ``M_INVALID_PARAM`` unless both parts are what an ``mxc://`` URI allows."""
    if not is_valid_server_name(server_name):
        raise invalid_param(f"{server_name!r} is not a valid server name")
    if len(media_id) > MAX_MEDIA_ID_LENGTH or not _MEDIA_ID.fullmatch(media_id):
        raise invalid_param("Media ids consist of letters, digits, '-' and '_' only")


def parse_mxc(uri: str) -> tuple[str, str]:
    """``mxc://server/media_id`` -> ``(server, media_id)``; 400 when malformed."""
    if not uri.startswith("mxc://"):
        raise invalid_param(f"{uri!r} is not an mxc:// URI")
    server_name, slash, media_id = uri[len("mxc://"):].partition("/")
    if not slash:
        raise invalid_param(f"{uri!r} has no media id")
    check_mxc(server_name, media_id)
    return server_name, media_id


def media_key(server_name: str, media_id: str) -> bytes:
    return join(server_name, media_id)


def thumbnail_key(server_name: str, media_id: str, size: ThumbSize, animated: bool) -> bytes:
    return join(server_name, media_id, size.label, size.method, "a" if animated else "s")


def _clean_content_type(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if (not value or len(value) > MAX_STORED_CONTENT_TYPE or not value.isascii()
            or any(ch in value for ch in "\r\n\0")):
        return None
    return value


@attrs.frozen
class MediaInfo:
    """Metadata of one stored file (a local upload or a cached copy of remote media)."""

    server_name: str
    media_id: str
    content_type: str | None
    filename: str | None
    size: int
    sha256: str
    created_ms: int
    uploader: str | None = None

    @property
    def mxc(self) -> str:
        return f"mxc://{self.server_name}/{self.media_id}"

    def to_json(self) -> bytes:
        return orjson.dumps({
            "content_type": self.content_type, "filename": self.filename, "size": self.size,
            "sha256": self.sha256, "created_ms": self.created_ms, "uploader": self.uploader,
        })

    @classmethod
    def from_json(cls, server_name: str, media_id: str, raw: bytes) -> MediaInfo:
        data = orjson.loads(raw)
        return cls(server_name, media_id, data.get("content_type"), data.get("filename"),
                   int(data["size"]), data.get("sha256", ""), int(data["created_ms"]),
                   data.get("uploader"))


@attrs.frozen
class ThumbnailInfo:
    content_type: str
    width: int
    height: int
    size: int
    animated: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps(attrs.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> ThumbnailInfo:
        return cls(**orjson.loads(raw))


@attrs.frozen
class Pending:
    user_id: str
    expires_ms: int


class Media:
    """The media repository of one server."""

    def __init__(self, config: Config, store: Store, stopping: trio.Event, *,
                 remote: RemoteFetcher | None = None,
                 clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.store = store
        self.stopping = stopping
        self.server_name = config.server_name
        self.upload_limit = config.max_request_size
        # Set by the federation layer once it can fetch media from other servers.
        self.remote = remote
        self.clock = clock
        self.files = MediaFiles(store.path / "media")
        self.files.ensure_dir()
        self._files = store.tree("mediaid_file")
        self._thumbs = store.tree("mediaid_thumbnail")
        self._by_user = store.tree("userid_mediaid")
        self._pending = store.tree("mediaid_pending")
        self._pending_by_user = store.tree("userid_mediapending")
        self._blocked = [re.compile(p) for p in
                         (*config.prevent_media_downloads_from,
                          *config.forbidden_remote_server_names)]
        self._locks = KeyedLocks()
        self._uploading: set[str] = set()
        self._uploaded = trio.Event()  # set (and replaced) whenever an upload completes
        # Pillow work at once: more would only queue for the same cores.
        self.thumbnail_limiter = trio.CapacityLimiter(max(1, cpu_count()))
        self.previews = UrlPreviews(config, store, self._store_preview_image, clock)

    # ---------------------------------------------------------------- lookups

    def is_local(self, server_name: str) -> bool:
        return server_name == self.server_name

    def info(self, server_name: str, media_id: str) -> MediaInfo | None:
        raw = self._files.get(media_key(server_name, media_id))
        return None if raw is None else MediaInfo.from_json(server_name, media_id, raw)

    def is_blocked(self, server_name: str) -> bool:
        """``prevent_media_downloads_from`` / ``forbidden_remote_server_names``."""
        return not self.is_local(server_name) and any(p.search(server_name)
                                                      for p in self._blocked)

    # ---------------------------------------------------------------- uploads

    @staticmethod
    def new_media_id() -> str:
        return "".join(secrets.choice(MEDIA_ID_ALPHABET) for _ in range(MEDIA_ID_LENGTH))

    async def upload(self, chunks: AsyncIterable[bytes], *, user_id: str | None,
                     content_type: str | None, filename: str | None) -> MediaInfo:
        """Store a new local file; 413 ``M_TOO_LARGE`` past ``max_request_size``."""
        return await self._store_file(self.server_name, self.new_media_id(), chunks,
                                      content_type, filename, uploader=user_id)

    def create_pending(self, user_id: str) -> tuple[str, int]:
        """Reserve an mxc URI for a later upload: ``(uri, unused_expires_at)``."""
        now = self.clock()
        active: list[int] = []
        stale: list[str] = []
        prefix = join(user_id) + SEP
        for key, value in self._pending_by_user.iter(prefix):
            media_id = key[len(prefix):].decode("utf-8")
            expires = from_u64_be(value)
            if expires <= now:
                stale.append(media_id)
            else:
                active.append(expires)
        if stale:
            with self.store.batch() as batch:
                for media_id in stale:
                    self._drop_pending(batch, user_id, media_id)
        if len(active) >= MAX_PENDING_PER_USER:
            raise MatrixError(429, "M_LIMIT_EXCEEDED",
                              f"At most {MAX_PENDING_PER_USER} pending uploads per user",
                              retry_after_ms=max(0, min(active) - now))
        media_id = self.new_media_id()
        expires = now + PENDING_EXPIRY_MS
        with self.store.batch() as batch:
            batch.put(self._pending, media_id.encode(),
                      orjson.dumps({"user_id": user_id, "expires_ms": expires}))
            batch.put(self._pending_by_user, join(user_id, media_id), u64_be(expires))
        return f"mxc://{self.server_name}/{media_id}", expires

    def pending(self, media_id: str) -> Pending | None:
        raw = self._pending.get(media_id.encode())
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Pending(data["user_id"], int(data["expires_ms"]))

    async def upload_pending(self, server_name: str, media_id: str,
                             chunks: AsyncIterable[bytes], *, user_id: str,
                             content_type: str | None, filename: str | None) -> MediaInfo:
        """Upload the content of an mxc URI made by :meth:`create_pending`."""
        check_mxc(server_name, media_id)
        if not self.is_local(server_name):
            raise not_found("Unknown media ID: it was not created on this server")
        if self.info(server_name, media_id) is not None or media_id in self._uploading:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        pending = self.pending(media_id)
        if pending is None:
            raise not_found("Unknown media ID")
        if pending.user_id != user_id:
            raise forbidden("This media ID was created by another user")
        if pending.expires_ms <= self.clock():
            with self.store.batch() as batch:
                self._drop_pending(batch, pending.user_id, media_id)
            raise not_found("This media ID has expired")
        self._uploading.add(media_id)
        try:
            return await self._store_file(server_name, media_id, chunks, content_type,
                                          filename, uploader=user_id, pending=pending)
        finally:
            self._uploading.discard(media_id)

    def _drop_pending(self, batch: Any, user_id: str, media_id: str) -> None:
        batch.delete(self._pending, media_id.encode())
        batch.delete(self._pending_by_user, join(user_id, media_id))

    async def _store_file(self, server_name: str, media_id: str, chunks: AsyncIterable[bytes],
                          content_type: str | None, filename: str | None, *,
                          uploader: str | None, pending: Pending | None = None) -> MediaInfo:
        try:
            received = await self.files.receive(chunks, self.upload_limit)
        except TooLarge as exc:
            raise too_large(f"Content is larger than the limit of {exc.limit} bytes") from None
        info = MediaInfo(
            server_name=server_name, media_id=media_id,
            content_type=_clean_content_type(content_type),
            filename=(filename or None) and filename[:MAX_STORED_FILENAME],
            size=received.size, sha256=received.sha256, created_ms=self.clock(),
            uploader=uploader if self.is_local(server_name) else None,
        )
        await self._commit(received, info, pending)
        old, self._uploaded = self._uploaded, trio.Event()
        old.set()
        return info

    async def _commit(self, received: Received, info: MediaInfo, pending: Pending | None) -> None:
        key = media_key(info.server_name, info.media_id)
        # File first, metadata second, and both or neither once the file is complete.
        with trio.CancelScope(shield=True):
            try:
                await self.files.commit(received, key)
            except BaseException:
                await self.files.discard(received)
                raise
            with self.store.batch() as batch:
                batch.put(self._files, key, info.to_json())
                if info.uploader is not None:
                    batch.put(self._by_user, join(info.uploader, info.media_id), b"")
                if pending is not None:
                    self._drop_pending(batch, pending.user_id, info.media_id)

    # -------------------------------------------------------------- downloads

    async def get(self, server_name: str, media_id: str, *,
                  timeout_ms: int = DEFAULT_TIMEOUT_MS, allow_remote: bool = True) -> MediaInfo:
        """The metadata of a file we hold or can fetch; 404, or 504 for a pending upload."""
        check_mxc(server_name, media_id)
        if self.is_blocked(server_name):
            # conduwuit's answer: the client cannot tell it from missing media.
            log.info("refused media of blocked server: mxc://%s/%s", server_name, media_id)
            raise not_found("Media not found")
        info = self.info(server_name, media_id)
        if info is not None:
            return info
        if self.is_local(server_name):
            return await self._wait_for_upload(media_id, timeout_ms)
        return await self._fetch_remote(server_name, media_id, timeout_ms, allow_remote)

    async def open(self, info: MediaInfo) -> OpenFile:
        handle = await self.files.open(media_key(info.server_name, info.media_id))
        if handle is None:
            log.error("media file of %s is missing from %s", info.mxc, self.files.root)
            raise not_found("Media not found")
        return handle

    async def _wait_for_upload(self, media_id: str, timeout_ms: int) -> MediaInfo:
        pending = self.pending(media_id)
        if pending is None or pending.expires_ms <= self.clock():
            raise not_found("Media not found")
        with trio.move_on_after(min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000):
            while self.info(self.server_name, media_id) is None and not self.stopping.is_set():
                await _first_of(self._uploaded.wait, self.stopping.wait)
        info = self.info(self.server_name, media_id)
        if info is None:
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        return info

    async def _fetch_remote(self, server_name: str, media_id: str, timeout_ms: int,
                            allow_remote: bool) -> MediaInfo:
        if not allow_remote:
            raise not_found("Media not found (fetching remote media was not allowed)")
        if self.remote is None:
            raise not_found(REMOTE_UNAVAILABLE)
        async with self._locks.hold(("remote", server_name, media_id)):
            info = self.info(server_name, media_id)  # cached while we waited
            if info is not None:
                return info
            timeout_s = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
            remote = await self.remote.download(server_name, media_id, timeout_s=timeout_s)
            return await self._store_file(server_name, media_id, remote.chunks,
                                          remote.content_type, remote.filename, uploader=None)

    # ------------------------------------------------------------- thumbnails

    async def thumbnail(self, server_name: str, media_id: str, size: ThumbSize, *,
                        animated: bool = False, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                        allow_remote: bool = True) -> tuple[ThumbnailInfo, OpenFile]:
        """A stored thumbnail, made on first request; 400 for non-images, 413 for bombs."""
        original = await self.get(server_name, media_id, timeout_ms=timeout_ms,
                                  allow_remote=allow_remote)
        key = thumbnail_key(server_name, media_id, size, animated)
        found = await self._stored_thumbnail(key)
        if found is not None:
            return found
        async with self._locks.hold(key):
            found = await self._stored_thumbnail(key)
            if found is not None:
                return found
            info = await self._generate(original, key, size, animated)
        handle = await self.files.open(key)
        if handle is None:
            raise not_found("Thumbnail not found")
        return info, handle

    async def _stored_thumbnail(self, key: bytes) -> tuple[ThumbnailInfo, OpenFile] | None:
        raw = self._thumbs.get(key)
        if raw is None:
            return None
        handle = await self.files.open(key)
        if handle is None:
            return None  # made again below
        return ThumbnailInfo.from_json(raw), handle

    async def _generate(self, original: MediaInfo, key: bytes, size: ThumbSize,
                        animated: bool) -> ThumbnailInfo:
        source = self.files.path(media_key(original.server_name, original.media_id))
        try:
            thumb = await trio.to_thread.run_sync(thumbnails.render, source, size, animated,
                                                  limiter=self.thumbnail_limiter)
        except thumbnails.NotAnImage as exc:
            log.debug("no thumbnail for %s: %s", original.mxc, exc)
            raise MatrixError(400, "M_UNKNOWN",
                              "Cannot generate thumbnails for the requested content") from None
        except thumbnails.TooManyPixels as exc:
            log.info("refused to thumbnail %s: %s pixels", original.mxc, exc)
            raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail") from None
        except FileNotFoundError:
            raise not_found("Media not found") from None
        info = ThumbnailInfo(thumb.content_type, thumb.width, thumb.height, len(thumb.data),
                             thumb.animated)
        received = await self.files.receive_bytes(thumb.data, durable=False)
        with trio.CancelScope(shield=True):
            await self.files.commit(received, key)
            self._thumbs.put(key, info.to_json())
        return info

    # ------------------------------------------------------------ URL previews

    async def preview_url(self, url: str | None) -> dict[str, Any]:
        return await self.previews.preview(url)

    async def _store_preview_image(
        self, chunks: AsyncIterator[bytes], content_type: str | None
    ) -> tuple[str, int, tuple[int, int] | None]:
        info = await self.upload(chunks, user_id=None, content_type=content_type, filename=None)
        path = self.files.path(media_key(info.server_name, info.media_id))
        dims = await trio.to_thread.run_sync(thumbnails.probe, path,
                                             limiter=self.thumbnail_limiter)
        return info.mxc, info.size, dims

    # ---------------------------------------------------------------- deletion

    async def delete(self, server_name: str, media_id: str) -> bool:
        """Remove a file, its thumbnails and their metadata; ``False`` if nothing was there."""
        key = media_key(server_name, media_id)
        info = self.info(server_name, media_id)
        thumbs = list(self._thumbs.keys(key + SEP))
        if info is None and not thumbs:
            return False
        with self.store.batch() as batch:
            batch.delete(self._files, key)
            if info is not None and info.uploader is not None:
                batch.delete(self._by_user, join(info.uploader, media_id))
            for thumb in thumbs:
                batch.delete(self._thumbs, thumb)
        for file_key in (key, *thumbs):
            await self.files.delete(file_key)
        log.info("deleted media mxc://%s/%s and %d thumbnails", server_name, media_id,
                 len(thumbs))
        return True

    async def delete_mxcs(self, uris: Iterable[str]) -> int:
        """Delete every ``mxc://`` URI given; malformed or unknown ones are skipped."""
        deleted = 0
        for uri in uris:
            try:
                server_name, media_id = parse_mxc(uri.strip())
            except MatrixError:
                continue
            deleted += await self.delete(server_name, media_id)
        return deleted

    async def delete_user_media(self, user_id: str) -> int:
        """Delete everything a local user uploaded."""
        prefix = join(user_id) + SEP
        media_ids = [key[len(prefix):].decode("utf-8") for key in self._by_user.keys(prefix)]
        deleted = 0
        for media_id in media_ids:
            deleted += await self.delete(self.server_name, media_id)
        return deleted

    async def delete_remote_media(self, *, before_ms: int | None = None,
                                  after_ms: int | None = None) -> int:
        """Delete cached remote media stored before (or after) a time (ms since the epoch)."""
        def select() -> list[tuple[str, str]]:
            chosen = []
            for info in self._all_media():
                if self.is_local(info.server_name):
                    continue
                if before_ms is not None and info.created_ms >= before_ms:
                    continue
                if after_ms is not None and info.created_ms <= after_ms:
                    continue
                chosen.append((info.server_name, info.media_id))
            return chosen

        deleted = 0
        for server_name, media_id in await trio.to_thread.run_sync(select):
            deleted += await self.delete(server_name, media_id)
        return deleted

    async def usage(self) -> dict[str, int]:
        """Counts and bytes of local and cached remote media, and of thumbnails."""
        def count() -> dict[str, int]:
            stats = dict.fromkeys(("local_files", "local_bytes", "remote_files",
                                   "remote_bytes", "thumbnails", "thumbnail_bytes"), 0)
            for info in self._all_media():
                side = "local" if self.is_local(info.server_name) else "remote"
                stats[f"{side}_files"] += 1
                stats[f"{side}_bytes"] += info.size
            for _, raw in self._thumbs.iter():
                stats["thumbnails"] += 1
                stats["thumbnail_bytes"] += ThumbnailInfo.from_json(raw).size
            return stats

        return await trio.to_thread.run_sync(count)

    def _all_media(self) -> Iterable[MediaInfo]:
        for key, raw in self._files.iter():
            server, _, media_id = key.partition(SEP)
            yield MediaInfo.from_json(server.decode("utf-8"), media_id.decode("utf-8"), raw)

    # ----------------------------------------------------------- startup check

    async def startup_check(self) -> None:
        """``media_startup_check``: files and metadata agree; leftovers are removed.

        Temporary files of interrupted uploads and expired reservations of async
        uploads are deleted. Metadata of a thumbnail whose file is gone is dropped (it
        is made again on request); metadata of media whose file is gone is dropped only
        with ``prune_missing_media``, else reported.
        """
        now = self.clock()

        def scan() -> tuple[int, list[bytes], list[bytes], list[tuple[str, str]]]:
            temps = self.files.leftover_temps()
            for temp in temps:
                temp.unlink(missing_ok=True)
            missing_media = [key for key, _ in self._files.iter()
                             if not self.files.path(key).is_file()]
            missing_thumbs = [key for key in self._thumbs.keys(b"")
                              if not self.files.path(key).is_file()]
            expired = []
            for key, raw in self._pending.iter():
                entry = orjson.loads(raw)
                if entry["expires_ms"] <= now:
                    expired.append((entry["user_id"], key.decode("utf-8")))
            return len(temps), missing_media, missing_thumbs, expired

        temps, missing_media, missing_thumbs, expired = await trio.to_thread.run_sync(scan)
        with self.store.batch() as batch:
            for key in missing_thumbs:
                batch.delete(self._thumbs, key)
            for user_id, reserved in expired:
                self._drop_pending(batch, user_id, reserved)
        for key in missing_media:
            raw_server, _, raw_id = key.partition(SEP)
            server_name, media_id = raw_server.decode(), raw_id.decode()
            mxc = f"mxc://{server_name}/{media_id}"
            if self.config.prune_missing_media:
                await self.delete(server_name, media_id)
                log.warning("media file of %s is missing: its entry was pruned", mxc)
            else:
                log.warning("media file of %s is missing (prune_missing_media is off)", mxc)
        if temps or missing_media or missing_thumbs:
            log.info("media check: %d unfinished uploads removed, %d files missing, %d stale "
                     "thumbnail entries dropped", temps, len(missing_media), len(missing_thumbs))


async def _first_of(*waits: Callable[[], Any]) -> None:
    """Return as soon as any of the given wait functions returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            async def run(wait: Callable[[], Any] = wait) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
