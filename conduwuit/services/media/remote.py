"""The seam where fetching media from other servers plugs into the media service.

:class:`~conduwuit.services.media.Media` starts without a fetcher and answers requests
for uncached media of other servers with 404 ``M_NOT_FOUND`` ("remote media is not
available yet"). With ``allow_federation`` on, the services wiring sets ``Media.remote``
to :class:`~.federation_fetcher.FederationMediaFetcher` (authenticated federation media
first, the legacy endpoint as fallback); the service then applies
``prevent_media_downloads_from`` before calling it, stores what it returns as a cached
copy and serves it like local media.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import attrs


@attrs.frozen
class RemoteFile:
    """What a remote server sent: its metadata and a stream of the bytes."""

    content_type: str | None
    filename: str | None
    chunks: AsyncIterator[bytes]


class RemoteFetcher(Protocol):
    async def download(self, server_name: str, media_id: str, *,
                       timeout_s: float) -> RemoteFile:
        """The file, or a ``MatrixError`` (404 when the remote has none or fails, 413 too big)."""
        ...

