"""Media of other servers, fetched over federation (the :class:`~.remote.RemoteFetcher`).

The authenticated endpoint comes first: ``GET /_matrix/federation/v1/media/download/
{mediaId}`` (spec v1.11), signed with X-Matrix. Its answer is ``multipart/mixed``: a JSON
part (metadata, empty today), then either the file (with its ``Content-Type`` and
``Content-Disposition``) or a part with only a ``Location`` header, which we fetch
ourselves. A server that does not know the endpoint (``M_UNRECOGNIZED``, or a bare
404/405) is asked the legacy unauthenticated ``GET /_matrix/media/v3/download/
{serverName}/{mediaId}?allow_remote=false`` instead.

Every answer is capped at ``max_request_size``; the media service stores what comes
back as a cached copy. Errors become what a client should see: 404 ``M_NOT_FOUND``
when the remote has no such media, 413 ``M_TOO_LARGE`` past the cap, and (like
conduwuit, which maps every failed fetch to "not found") 404 as well when the remote
cannot be reached or answers nonsense, with the reason in the message and the log.
"""

from __future__ import annotations

import email.message
import logging
from collections.abc import AsyncIterator

import attrs
import httpx

from conduwuit.errors import MatrixError, not_found
from conduwuit.services.federation.client import (
    FederationClient,
    FederationError,
    RemoteError,
    ResponseTooLarge,
    disposition_filename,
    path_segment,
)
from conduwuit.services.federation.discovery import DiscoveryError

from .remote import RemoteFile

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_LOCATION_REDIRECTS = 3
MIN_TIMEOUT_S = 5.0


class MultipartError(ValueError):
    """The authenticated media answer is not the multipart the spec describes."""


@attrs.frozen
class Part:
    headers: email.message.Message
    body: bytes


def header_params(name: str, value: str) -> email.message.Message:
    message = email.message.Message()
    message[name] = value
    return message


def parse_multipart(content_type: str | None, body: bytes) -> list[Part]:
    """The parts of a ``multipart/*`` body (RFC 2046), parsed by hand.

    Binary-safe: a part's content ends at the next ``CRLF--boundary``; header lines
    are parsed with the stdlib ``email`` header parser.
    """
    if not content_type:
        raise MultipartError("no Content-Type")
    ctype = header_params("Content-Type", content_type)
    if ctype.get_content_maintype() != "multipart":
        raise MultipartError(f"Content-Type is {ctype.get_content_type()}, not multipart")
    boundary = ctype.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("multipart Content-Type without a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + body).split(delimiter)
    parts: list[Part] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            return parts  # the close delimiter
        line_end = piece.find(b"\r\n")
        if line_end < 0:
            raise MultipartError("truncated part")
        piece = piece[line_end + 2:]  # transport padding after the boundary
        if piece.startswith(b"\r\n"):
            raw_headers, content = b"", piece[2:]
        else:
            split = piece.find(b"\r\n\r\n")
            if split < 0:
                raise MultipartError("part headers without an end")
            raw_headers, content = piece[:split], piece[split + 4:]
        headers = email.message.Message()
        for line in raw_headers.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip()] = value.strip()
        parts.append(Part(headers, content))
    raise MultipartError("no closing boundary")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start:start + CHUNK])


@attrs.define
class FederationMediaFetcher:
    """Download remote media with :class:`FederationClient`; see the module docstring."""

    client: FederationClient
    max_bytes: int

    async def download(self, server_name: str, media_id: str, *,
                       timeout_s: float) -> RemoteFile:
        timeout = max(timeout_s, MIN_TIMEOUT_S)
        try:
            try:
                return await self._authenticated(server_name, media_id, timeout)
            except RemoteError as exc:
                if not _unrecognized(exc):
                    raise
                log.debug("%s has no authenticated media; trying the legacy endpoint",
                          server_name)
            return await self._legacy(server_name, media_id, timeout)
        except ResponseTooLarge:
            raise MatrixError(413, "M_TOO_LARGE",
                              f"Remote media is larger than the limit of {self.max_bytes} "
                              "bytes") from None
        except RemoteError as exc:
            if exc.status == 404:
                raise not_found("Remote media not found") from None
            log.info("remote media mxc://%s/%s: %s", server_name, media_id, exc)
            raise unavailable(server_name, f"it answered {exc.status} {exc.errcode}") from None
        except (FederationError, DiscoveryError, MultipartError, httpx.HTTPError,
                OSError) as exc:
            log.info("remote media mxc://%s/%s: %s", server_name, media_id, exc)
            raise unavailable(server_name, "it could not be reached") from None

    async def _authenticated(self, server_name: str, media_id: str,
                             timeout: float) -> RemoteFile:
        path = f"/_matrix/federation/v1/media/download/{path_segment(media_id)}"
        # The cap applies to the file; the multipart framing gets a little room on top.
        body, content_type, _ = await self.client.request_bytes(
            "GET", server_name, path, timeout=timeout, max_bytes=self.max_bytes + 64 * 1024)
        parts = parse_multipart(content_type, body)
        if len(parts) < 2:
            raise MultipartError(f"{len(parts)} parts instead of 2")
        file_part = parts[1]
        location = file_part.headers.get("Location")
        if location:
            data, ctype, filename = await self._follow(location, timeout)
            return RemoteFile(ctype, filename, _chunks(data))
        if len(file_part.body) > self.max_bytes:
            raise ResponseTooLarge(server_name, self.max_bytes)
        filename = disposition_filename(file_part.headers.get("Content-Disposition"))
        return RemoteFile(file_part.headers.get("Content-Type"), filename,
                          _chunks(file_part.body))

    async def _legacy(self, server_name: str, media_id: str, timeout: float) -> RemoteFile:
        path = (f"/_matrix/media/v3/download/{path_segment(server_name)}/"
                f"{path_segment(media_id)}")
        body, content_type, filename = await self.client.request_bytes(
            "GET", server_name, path, query={"allow_remote": "false"}, signed=False,
            timeout=timeout, max_bytes=self.max_bytes)
        return RemoteFile(content_type, filename, _chunks(body))

    async def _follow(self, url: str, timeout: float) -> tuple[bytes, str | None, str | None]:
        """GET the ``Location`` of a redirect part (a CDN, say), following a few redirects."""
        http = self.client.http
        for _ in range(MAX_LOCATION_REDIRECTS + 1):
            await self._check_not_denied(url)
            async with http.stream("GET", url, timeout=timeout) as response:
                if response.is_redirect and "Location" in response.headers:
                    url = str(response.url.join(response.headers["Location"]))
                    continue
                if response.status_code >= 400:
                    raise RemoteError(response.url.host, response.status_code, None)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise ResponseTooLarge(response.url.host, self.max_bytes)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise ResponseTooLarge(response.url.host, self.max_bytes)
                return (bytes(data), response.headers.get("Content-Type"),
                        disposition_filename(response.headers.get("Content-Disposition")))
        raise FederationError(url, "too many redirects")

    async def _check_not_denied(self, url: str) -> None:
        """A redirect part may point anywhere: refuse hosts in ``ip_range_denylist``.

        (The connection itself resolves the name again; a rebinding DNS answer could
        still differ, which the federation client's own pinned addresses avoid.)
        """
        await self.client.discovery.allowed_addresses(httpx.URL(url).host)


def unavailable(server_name: str, why: str) -> MatrixError:
    """conduwuit's answer to a failed fetch: 404, as if the media did not exist."""
    return not_found(f"Remote media is not available yet from {server_name} ({why})")


def _unrecognized(exc: RemoteError) -> bool:
    """The server does not know the authenticated media endpoint."""
    if exc.errcode == "M_UNRECOGNIZED":
        return True
    return exc.status in (404, 405) and not exc.body  # a bare 404/405 page, not Matrix JSON
