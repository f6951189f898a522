"""Outbound federation requests: discovery, X-Matrix signing, TLS, pooling, backoff.

One :class:`FederationClient` per server. Its httpx client pools connections per
destination (:class:`PerDestinationTransport`: one httpcore pool per (address, port,
SNI name), so a connection made for one server's certificate is never reused for
another's, and ``federation_idle_per_host`` idle connections stay per server).
TLS is verified against the system's trust store unless the operator set the long
``allow_invalid_tls_certificates_...`` option, which earns a loud warning at startup.
Every request is signed as the spec's "Request Authentication" says, over the exact
path and query bytes that go on the wire.

A destination that cannot be reached is backed off: after n consecutive failures
requests fail at once for ``min(2**(n-1) * BACKOFF_BASE, sender_retry_backoff_limit)``
seconds. The state lives in this object, so it is shared by every caller.
"""

from __future__ import annotations

import email.message
import logging
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import httpx
import orjson
import trio

from conduwuit.config import Config
from conduwuit.protocol.signing import SigningKey

from .auth import authorization_header
from .discovery import Destination, Discovery, DiscoveryError

log = logging.getLogger(__name__)

BACKOFF_BASE = 2.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class FederationError(Exception):
    """The request did not get an HTTP answer: disabled, forbidden, unreachable, backed off."""

    def __init__(self, destination: str, reason: str) -> None:
        super().__init__(f"{destination}: {reason}")
        self.destination = destination
        self.reason = reason


class ResponseTooLarge(FederationError):
    """The answer was larger than the caller's limit (the remote is reachable: no backoff)."""

    def __init__(self, destination: str, limit: int) -> None:
        super().__init__(destination, f"answer is larger than {limit} bytes")
        self.limit = limit


class _TooLarge(httpx.DecodingError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"answer is larger than {limit} bytes")
        self.limit = limit


class RemoteError(Exception):
    """The remote server answered with an error status."""

    def __init__(self, destination: str, status: int, body: Any) -> None:
        self.destination = destination
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.errcode = str(self.body.get("errcode", "M_UNKNOWN"))
        self.error = str(self.body.get("error", ""))
        super().__init__(f"{destination} answered {status} {self.errcode}: {self.error}")


def path_segment(value: str) -> str:
    """A Matrix id or name as one URL path segment (``@a:b`` -> ``%40a%3Ab``)."""
    return quote(value, safe="")


def tls_context(config: Config) -> ssl.SSLContext:
    """Verification on (system trust store), or off with the operator's long option."""
    context = ssl.create_default_context()
    if config.allow_invalid_tls_certificates_yes_i_know_what_the_fuck_i_am_doing_with_this_and_i_know_this_is_insecure:  # noqa: E501
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class PerDestinationTransport(httpx.AsyncBaseTransport):
    """One connection pool per (address, port, SNI name); see the module docstring."""

    def __init__(self, factory: Callable[[], httpx.AsyncHTTPTransport]) -> None:
        self._factory = factory
        self._pools: dict[tuple[str, int | None, str], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sni = request.extensions.get("sni_hostname") or ""
        key = (request.url.host, request.url.port, str(sni))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._factory()
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def make_http_client(config: Config, *, user_agent: str, timeout: float, connect_timeout: float,
                     idle_timeout: float, idle_per_host: int) -> httpx.AsyncClient:
    context = tls_context(config)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(1, idle_per_host),
                          keepalive_expiry=idle_timeout)

    def pool() -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=context, limits=limits, trust_env=False)

    return httpx.AsyncClient(
        transport=PerDestinationTransport(pool),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        headers={"User-Agent": user_agent},
        follow_redirects=False,
        trust_env=False,
    )


@attrs.define
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0


@attrs.define
class FederationClient:
    config: Config
    server_name: str
    signing_key: Callable[[], SigningKey]
    discovery: Discovery
    http: httpx.AsyncClient
    clock: Callable[[], float] = trio.current_time
    _backoff: dict[str, _Backoff] = attrs.field(factory=dict)
    _forbidden: list[re.Pattern[str]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self._forbidden = [re.compile(p) for p in self.config.forbidden_remote_server_names]

    def is_forbidden(self, server_name: str) -> bool:
        return any(p.search(server_name) for p in self._forbidden)

    def check_destination(self, destination: str) -> None:
        """Raise FederationError unless a request to ``destination`` may be made at all."""
        if not self.config.allow_federation:
            raise FederationError(destination, "federation is disabled on this server")
        if destination == self.server_name and not self.config.federation_loopback:
            raise FederationError(destination, "that is this server (federation_loopback is off)")
        if self.is_forbidden(destination):
            raise FederationError(destination, "forbidden by forbidden_remote_server_names")

    def backing_off(self, destination: str) -> float:
        """Seconds until ``destination`` is tried again; 0 if it may be tried now."""
        state = self._backoff.get(destination)
        return max(0.0, state.retry_at - self.clock()) if state is not None else 0.0

    def reset_backoff(self, destination: str | None = None) -> None:
        if destination is None:
            self._backoff.clear()
        else:
            self._backoff.pop(destination, None)

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: Any = None,
        signed: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return its parsed JSON.

        ``path`` starts with ``/_matrix`` and has its ids escaped (:func:`path_segment`).
        Raises :class:`FederationError` without an answer, :class:`RemoteError` for an
        error status.
        """
        response, raw = await self._exchange(method, destination, path, query, body, signed,
                                             timeout, MAX_RESPONSE_BYTES)
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = None
        if response.status_code >= 400:
            raise RemoteError(destination, response.status_code, parsed)
        if parsed is None:
            raise RemoteError(destination, response.status_code, {"error": "answer is not JSON"})
        return parsed

    async def request_bytes(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        signed: bool = True,
        timeout: float | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> tuple[bytes, str | None, str | None]:
        """Send one request and return the raw answer: ``(body, content_type, filename)``.

        For media downloads: the body is not parsed, and may be at most ``max_bytes``
        long (:class:`ResponseTooLarge` past that, without backing the destination off).
        ``filename`` comes from a ``Content-Disposition`` header, if any. Error statuses
        raise :class:`RemoteError` like :meth:`request`.
        """
        response, raw = await self._exchange(method, destination, path, query, None, signed,
                                             timeout, max_bytes)
        if response.status_code >= 400:
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            raise RemoteError(destination, response.status_code, parsed)
        disposition = response.headers.get("Content-Disposition")
        return raw, response.headers.get("Content-Type"), disposition_filename(disposition)

    async def _exchange(self, method: str, destination: str, path: str,
                        query: Mapping[str, str | int] | None, body: Any, signed: bool,
                        timeout: float | None, max_bytes: int) -> tuple[httpx.Response, bytes]:
        self.check_destination(destination)
        wait = self.backing_off(destination)
        if wait > 0:
            raise FederationError(destination, f"backing off for another {wait:.0f} s")
        uri = path + ("?" + urlencode(query, quote_via=quote) if query else "")
        limit = timeout if timeout is not None else float(self.config.federation_timeout)
        try:
            with trio.fail_after(limit):
                target = await self.discovery.resolve(destination)
                response, raw = await self._send(target, method, uri, body, signed, max_bytes)
        except trio.TooSlowError:
            self._failed(destination)
            raise FederationError(destination, f"no answer within {limit:.0f} s") from None
        except _TooLarge as exc:
            self._backoff.pop(destination, None)
            raise ResponseTooLarge(destination, exc.limit) from None
        except (DiscoveryError, httpx.HTTPError, OSError, ssl.SSLError) as exc:
            self._failed(destination)
            raise FederationError(destination, f"{type(exc).__name__}: {exc}") from None
        self._backoff.pop(destination, None)
        return response, raw

    async def _send(self, target: Destination, method: str, uri: str, body: Any,
                    signed: bool, max_bytes: int = MAX_RESPONSE_BYTES,
                    ) -> tuple[httpx.Response, bytes]:
        content = orjson.dumps(body) if body is not None else None
        last: Exception | None = None
        for address in target.addresses:
            headers = {"Host": target.host_header}
            if content is not None:
                headers["Content-Type"] = "application/json"
            extensions = {"sni_hostname": target.tls_name} if target.tls_name else {}
            request = self.http.build_request(method, target.base_url(address) + uri,
                                              content=content, headers=headers,
                                              extensions=extensions)
            if signed:
                # Sign what goes on the wire: httpx's own encoding of path and query.
                request.headers["Authorization"] = authorization_header(
                    self.server_name, target.server_name, self.signing_key(), method,
                    request.url.raw_path.decode("ascii"), body,
                )
            try:
                response = await self.http.send(request, stream=True)
            except httpx.ConnectError as exc:
                last = exc
                continue  # the next address, if the name has several
            try:
                raw = await _read_limited(response, max_bytes)
            finally:
                await response.aclose()
            return response, raw
        assert last is not None
        raise last

    def _failed(self, destination: str) -> None:
        state = self._backoff.setdefault(destination, _Backoff())
        state.failures += 1
        delay = min(BACKOFF_BASE * 2 ** (state.failures - 1),
                    float(self.config.sender_retry_backoff_limit))
        state.retry_at = self.clock() + delay
        log.info("federation: %s unreachable (%d in a row); next try in %.0f s",
                 destination, state.failures, delay)


async def _read_limited(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge(limit)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _TooLarge(limit)
    return bytes(body)


def disposition_filename(disposition: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header (RFC 6266 / 2231), if any."""
    if not disposition:
        return None
    message = email.message.Message()
    message["Content-Disposition"] = disposition
    try:
        name = message.get_filename()
    except (ValueError, LookupError):
        return None
    return name or None
