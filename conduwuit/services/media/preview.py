"""URL previews: which URLs may be fetched, fetching them safely, OpenGraph parsing.

Off by default: a URL is previewed only when the ``url_preview_*`` allowlists let
it through (conduwuit's rules, with the denylist checked first). The page is
fetched with httpx through a network backend that resolves the host itself and
refuses to connect when any address it resolves to lies in ``ip_range_denylist``
(loopback, private ranges, ...), so neither a hostile DNS answer nor a redirect
reaches an internal service; every redirect must pass the allowlists again. At
most ``url_preview_max_spider_size`` bytes of a page are read. The page's
``og:*`` meta tags (with ``<title>`` and ``<meta name=description>`` as
fallbacks) are parsed with the standard library's HTMLParser; its ``og:image``
is downloaded and stored as local media. Results are cached per URL.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs
import httpcore
import httpx
import orjson
import trio

from conduwuit import __version__
from conduwuit.config import Config
from conduwuit.errors import MatrixError, forbidden, invalid_param
from conduwuit.store import Store

from .locks import KeyedLocks

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
CACHE_MS = 24 * 3600 * 1000  # a preview is fetched again after a day
FETCH_TIMEOUT_S = 30.0  # the whole preview, redirects and image included
HTTP_TIMEOUT = httpx.Timeout(10.0)
MAX_OG_PROPERTIES = 64
MAX_OG_VALUE = 2000
USER_AGENT = f"conduwuit/{__version__} (URL preview)"

# (async chunks, content type) -> (mxc URI, size, image dimensions or None)
StoreImage = Callable[[AsyncIterator[bytes], str | None],
                      Awaitable[tuple[str, int, tuple[int, int] | None]]]


def fetch_failed(error: str) -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", error)


# ----------------------------------------------------------------------- policy


def _clean_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _parents(host: str) -> Iterable[str]:
    """``a.b.example.org`` -> ``b.example.org``, ``example.org``, ``org``."""
    labels = host.split(".")
    for start in range(1, len(labels)):
        yield ".".join(labels[start:])


@attrs.frozen
class PreviewPolicy:
    """The ``url_preview_*`` allow/deny options; everything is denied by default."""

    domain_contains: tuple[str, ...] = ()
    domain_explicit: tuple[str, ...] = ()
    domain_denied: tuple[str, ...] = ()
    url_contains: tuple[str, ...] = ()
    check_root_domain: bool = False

    @classmethod
    def from_config(cls, config: Config) -> PreviewPolicy:
        def hosts(entries: Iterable[str]) -> tuple[str, ...]:
            return tuple(_clean_host(entry) for entry in entries)

        return cls(
            domain_contains=hosts(config.url_preview_domain_contains_allowlist),
            domain_explicit=hosts(config.url_preview_domain_explicit_allowlist),
            domain_denied=hosts(config.url_preview_domain_explicit_denylist),
            url_contains=tuple(config.url_preview_url_contains_allowlist),
            check_root_domain=config.url_preview_check_root_domain,
        )

    def denies_host(self, host: str) -> bool:
        """Explicitly denied (with its parent domains when ``check_root_domain``)."""
        host = _clean_host(host)
        if host in self.domain_denied:
            return True
        return self.check_root_domain and any(p in self.domain_denied for p in _parents(host))

    def allows(self, url: str, host: str) -> bool:
        host = _clean_host(host)
        if not host or self.denies_host(host):
            return False
        if "*" in self.domain_contains or "*" in self.domain_explicit or "*" in self.url_contains:
            return True
        if host in self.domain_explicit:
            return True
        if any(entry and entry in host for entry in self.domain_contains):
            return True
        if any(entry and entry in url for entry in self.url_contains):
            return True
        if self.check_root_domain:
            for parent in _parents(host):
                if parent in self.domain_explicit:
                    return True
                if any(entry and entry in parent for entry in self.domain_contains):
                    return True
        return False


def parse_url(url: str | None) -> tuple[str, str]:
    """``(url, host)`` of an http(s) URL a client asked to preview, or 400."""
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing the url parameter")
    if len(url) > MAX_URL_LENGTH:
        raise invalid_param(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise invalid_param("url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise invalid_param("url must be an http:// or https:// URL with a host")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise invalid_param("url must not contain spaces or control characters")
    return url, host


# ------------------------------------------------------------ address guard


class AddressDenied(Exception):
    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, which is in ip_range_denylist")


class AddressGuard:
    """``ip_range_denylist``: addresses outbound requests must never reach."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # ::ffff:127.0.0.1 is 127.0.0.1
        return not any(
            candidate.version == net.version and candidate in net
            for candidate in candidates
            for net in self._networks
        )


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's Trio backend, but it resolves names itself and checks every address.

    Connecting to the checked address (not the name) closes the window in which a
    second DNS answer could differ from the first. TLS still verifies the name: httpcore
    passes the URL's host as the server name when it starts TLS on the stream.
    """

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with trio.fail_after(float("inf") if timeout is None else timeout):
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if not self._guard.allows(address):
                raise AddressDenied(host, address)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("URL previews never use UNIX sockets")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def guarded_client(guard: AddressGuard, local_address: str | None) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through :class:`GuardedBackend`."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, local_address=local_address)
    # httpx (pinned) has no parameter for the network backend: swap the pool it built
    # for one with the same settings and our backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=4,
        local_address=local_address,
        network_backend=GuardedBackend(guard),
    )
    return httpx.AsyncClient(transport=transport, timeout=HTTP_TIMEOUT, follow_redirects=False,
                             trust_env=False, headers={"User-Agent": USER_AGENT})


# ------------------------------------------------------------------- parsing


class OpenGraphParser(HTMLParser):
    """Collects ``og:*`` meta properties, the ``<title>`` and the meta description."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.properties: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._title_parts: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            values = {name.lower(): value for name, value in attrs if value is not None}
            name = (values.get("property") or values.get("name") or "").strip()
            content = values.get("content")
            if not name or content is None:
                return
            content = content.strip()[:MAX_OG_VALUE]
            lowered = name.lower()
            if lowered.startswith("og:"):
                if lowered not in self.properties and len(self.properties) < MAX_OG_PROPERTIES:
                    self.properties[lowered] = content
            elif lowered == "description" and self.description is None:
                self.description = content
        elif tag == "title" and self.title is None and self._title_parts is None:
            self._title_parts = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title_parts is not None:
            self.title = " ".join("".join(self._title_parts).split())[:MAX_OG_VALUE]
            self._title_parts = None

    def handle_data(self, data: str) -> None:
        if self._title_parts is not None:
            self._title_parts.append(data)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)


def decode_html(body: bytes, content_type: str | None) -> str:
    """Decode with the header's charset, else a ``<meta charset>``, else UTF-8."""
    candidates: list[str] = []
    if content_type:
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset":
                candidates.append(value.strip().strip("\"'"))
    found = _META_CHARSET.search(body[:4096])
    if found:
        candidates.append(found.group(1).decode("ascii"))
    for charset in [*candidates, "utf-8"]:
        try:
            return body.decode(charset, errors="replace")
        except LookupError:
            continue
    return body.decode("utf-8", errors="replace")


def parse_html(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The OpenGraph fields of a page (``og:title``/``og:description`` with fallbacks)."""
    parser = OpenGraphParser()
    try:
        parser.feed(decode_html(body, content_type))
        parser.close()
    except Exception as exc:  # HTMLParser is lenient, but never let a page crash us
        log.debug("HTML parsing stopped early: %s", exc)
    og: dict[str, Any] = dict(parser.properties)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    return og


# -------------------------------------------------------------------- service


class UrlPreviews:
    """``GET /_matrix/client/v1/media/preview_url``: policy, fetch, parse and cache."""

    def __init__(self, config: Config, store: Store, store_image: StoreImage,
                 now_ms: Callable[[], int]) -> None:
        self.policy = PreviewPolicy.from_config(config)
        self.guard = AddressGuard(config.ip_range_denylist)
        self.max_spider_size = config.url_preview_max_spider_size
        self._local_address = _bind_address(config.url_preview_bound_interface)
        self._cache = store.tree("url_previews")
        self._store_image = store_image
        self._now_ms = now_ms
        self._locks = KeyedLocks()

    def check(self, url: str | None) -> str:
        """The URL if it may be previewed: 400 when malformed, 403 when not allowed."""
        checked, host = parse_url(url)
        if not self.policy.allows(checked, host):
            raise forbidden("URL is not allowed to be previewed")
        return checked

    def cached(self, url: str) -> dict[str, Any] | None:
        raw = self._cache.get(url.encode("utf-8"))
        if raw is None:
            return None
        entry = orjson.loads(raw)
        if self._now_ms() - int(entry["ts"]) > CACHE_MS:
            return None
        og: dict[str, Any] = entry["og"]
        return og

    async def preview(self, url: str | None) -> dict[str, Any]:
        checked = self.check(url)
        found = self.cached(checked)
        if found is not None:
            return found
        async with self._locks.hold(checked):
            found = self.cached(checked)  # fetched while we waited for the lock
            if found is not None:
                return found
            og = await self._fetch(checked)
            entry = {"ts": self._now_ms(), "og": og}
            self._cache.put(checked.encode("utf-8"), orjson.dumps(entry))
            return og

    def forget(self, url: str) -> None:
        self._cache.delete(url.encode("utf-8"))

    async def _fetch(self, url: str) -> dict[str, Any]:
        try:
            with trio.fail_after(FETCH_TIMEOUT_S):
                async with guarded_client(self.guard, self._local_address) as client:
                    return await self._fetch_with(client, url)
        except AddressDenied as exc:
            log.info("URL preview of %s refused: %s", url, exc)
            raise forbidden("URL preview of this address is not allowed") from None
        except trio.TooSlowError:
            raise fetch_failed("Timed out fetching the URL") from None
        except httpx.InvalidURL as exc:
            raise invalid_param(f"url cannot be fetched: {exc}") from None
        except httpx.HTTPError as exc:
            raise fetch_failed(f"Failed to fetch the URL: {type(exc).__name__}") from None

    async def _fetch_with(self, client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        response = await self._get(client, url, check_page=True)
        try:
            content_type = response.headers.get("Content-Type")
            kind = (content_type or "").split(";", 1)[0].strip().lower()
            if kind.startswith("image/"):
                return await self._image_fields(response, content_type)
            if kind not in ("text/html", "application/xhtml+xml"):
                raise fetch_failed(f"Cannot preview content of type {kind or 'unknown'}")
            body = await _read_capped(response, self.max_spider_size)
            page_url = str(response.url)
        finally:
            await response.aclose()
        og = parse_html(body, content_type)
        image = og.get("og:image") or og.get("og:image:url") or og.get("og:image:secure_url")
        # The page's own image fields describe its URL, not the copy we store.
        for key in ("og:image", "og:image:url", "og:image:secure_url", "og:image:width",
                    "og:image:height", "og:image:type"):
            og.pop(key, None)
        if image:
            og.update(await self._page_image(client, urljoin(page_url, image)))
        return og

    async def _page_image(self, client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        """The page's og:image stored as media, or nothing when it cannot be had."""
        try:
            parse_url(url)
            response = await self._get(client, url, check_page=False)
            try:
                content_type = response.headers.get("Content-Type")
                if not (content_type or "").lower().startswith("image/"):
                    return {}
                return await self._image_fields(response, content_type)
            finally:
                await response.aclose()
        except (MatrixError, AddressDenied, httpx.HTTPError) as exc:
            log.debug("og:image %s skipped: %s", url, exc)
            return {}

    async def _image_fields(self, response: httpx.Response,
                            content_type: str | None) -> dict[str, Any]:
        mxc, size, dims = await self._store_image(response.aiter_bytes(), content_type)
        fields: dict[str, Any] = {"og:image": mxc, "matrix:image:size": size}
        if content_type:
            fields["og:image:type"] = content_type.split(";", 1)[0].strip()
        if dims is not None:
            fields["og:image:width"], fields["og:image:height"] = dims
        return fields

    async def _get(self, client: httpx.AsyncClient, url: str, *,
                   check_page: bool) -> httpx.Response:
        """GET following redirects by hand; each hop is checked before it is requested.

        The page and its redirects must pass the allowlists; the page's image (a CDN,
        usually) must only not be explicitly denied. The address guard applies to all.
        """
        for _ in range(MAX_REDIRECTS + 1):
            _, host = parse_url(url)
            if check_page and not self.policy.allows(url, host):
                raise forbidden("URL is not allowed to be previewed")
            if self.policy.denies_host(host):
                raise forbidden("URL is not allowed to be previewed")
            request = client.build_request("GET", url)
            response = await client.send(request, stream=True)
            location = response.headers.get("Location")
            if response.is_redirect and location:
                await response.aclose()
                url = urljoin(url, location)
                continue
            if response.status_code != 200:
                await response.aclose()
                raise fetch_failed(f"The URL answered HTTP {response.status_code}")
            return response
        raise fetch_failed("Too many redirects")


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """At most ``cap`` bytes of the body; the rest is never read."""
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) >= cap:
            break
    return bytes(buffer[:cap])


def _bind_address(option: str | None) -> str | None:
    if not option:
        return None
    try:
        return str(ipaddress.ip_address(option))
    except ValueError:
        log.warning("url_preview_bound_interface %r is not an IP address; binding to a network "
                    "interface by name is not supported, so previews use the default route",
                    option)
        return None

