"""URL previews: the allow/deny policy, the address guard, OpenGraph parsing, and the route.

Every fetch goes to a small HTTP server the test starts on 127.0.0.1; configs that let
the server reach it empty ``ip_range_denylist`` (loopback is denied by default).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conduwuit.errors import MatrixError
from conduwuit.server import Server
from conduwuit.services.media.preview import (
    AddressGuard,
    PreviewPolicy,
    decode_html,
    parse_html,
    parse_url,
)
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user
from tests.test_thumbnails import image_bytes

PREVIEW = "/_matrix/client/v1/media/preview_url"
DEFAULT_DENYLIST = ["127.0.0.0/8", "::1/128"]

PAGE = b"""<!doctype html><html><head>
<meta charset="utf-8">
<title>Ignored when og:title exists</title>
<meta property="og:title" content="A &amp; B: caf\xc3\xa9">
<meta property="og:description" content="What this page is about">
<meta property="og:type" content="article">
<meta property="og:image" content="/img.png">
<meta property="og:image:width" content="9999">
</head><body><p>hello</p></body></html>"""

PLAIN_PAGE = b"""<html><head><title>  Plain
   title </title><meta name="description" content="Meta description"></head></html>"""


# ------------------------------------------------------------------ pure


def test_policy_denies_everything_by_default() -> None:
    policy = PreviewPolicy()
    assert not policy.allows("https://example.org/", "example.org")


def test_policy_rules() -> None:
    explicit = PreviewPolicy(domain_explicit=("example.org",))
    assert explicit.allows("https://example.org/a", "Example.ORG")
    assert not explicit.allows("https://www.example.org/a", "www.example.org")
    contains = PreviewPolicy(domain_contains=("example",))
    assert contains.allows("https://www.example.org/", "www.example.org")
    assert not contains.allows("https://other.org/example", "other.org")
    by_url = PreviewPolicy(url_contains=("/allowed/",))
    assert by_url.allows("https://x.org/allowed/page", "x.org")
    assert not by_url.allows("https://x.org/other", "x.org")
    everything = PreviewPolicy(domain_explicit=("*",), domain_denied=("bad.org",))
    assert everything.allows("https://any.net/", "any.net")
    assert not everything.allows("https://bad.org/", "bad.org")  # the denylist comes first
    assert everything.allows("https://sub.bad.org/", "sub.bad.org")
    roots = PreviewPolicy(domain_explicit=("*", "example.org"), domain_denied=("bad.org",),
                          check_root_domain=True)
    assert roots.allows("https://a.b.example.org/", "a.b.example.org")
    assert not roots.allows("https://sub.bad.org/", "sub.bad.org")
    rooted = PreviewPolicy(domain_explicit=("example.org",), check_root_domain=True)
    assert rooted.allows("https://a.b.example.org/", "a.b.example.org")
    assert not rooted.allows("https://example.com/", "example.com")


def test_address_guard() -> None:
    guard = AddressGuard(["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fe80::/10"])
    for address in ("127.0.0.1", "10.1.2.3", "::1", "::ffff:127.0.0.1", "fe80::1%eth0", "junk"):
        assert not guard.allows(address), address
    for address in ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"):
        assert guard.allows(address), address
    assert AddressGuard([]).allows("127.0.0.1")


def test_parse_url() -> None:
    assert parse_url("https://example.org/x?y=1") == ("https://example.org/x?y=1", "example.org")
    for bad, errcode in ((None, "M_MISSING_PARAM"), ("", "M_MISSING_PARAM"),
                         ("ftp://example.org/", "M_INVALID_PARAM"),
                         ("https:///nohost", "M_INVALID_PARAM"),
                         ("https://example.org:99999/", "M_INVALID_PARAM"),
                         ("https://exa mple.org/", "M_INVALID_PARAM"),
                         ("https://example.org/" + "x" * 3000, "M_INVALID_PARAM")):
        with pytest.raises(MatrixError) as info:
            parse_url(bad)
        assert info.value.errcode == errcode, bad


def test_parse_html() -> None:
    og = parse_html(PAGE, "text/html")
    assert og["og:title"] == "A & B: café"
    assert og["og:description"] == "What this page is about"
    assert og["og:image"] == "/img.png" and og["og:type"] == "article"
    assert parse_html(PLAIN_PAGE, None) == {"og:title": "Plain title",
                                            "og:description": "Meta description"}
    assert parse_html(b"<html><title>caf\xe9</title>", "text/html; charset=latin-1") == {
        "og:title": "café"}
    assert decode_html(b"caf\xe9", "text/html; charset=no-such-codec") == "caf\ufffd"
    assert parse_html(b"<<<>>> not html \x00\xff", None) == {}


# ---------------------------------------------------------------- the site


@contextmanager
def site(pages: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving ``pages``; yields its base URL and the paths hit."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            status, headers, body = pages.get(self.path, (404, {}, b"not here"))
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value.replace("{base}", base).replace(
                        "{localhost}", base.replace("127.0.0.1", "localhost")))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the previewer stops reading at url_preview_max_spider_size

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield base, seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


IMAGE = image_bytes("PNG", (120, 60))
PAGES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/page": (200, {"Content-Type": "text/html; charset=utf-8"}, PAGE),
    "/plain": (200, {"Content-Type": "text/html"}, PLAIN_PAGE),
    "/img.png": (200, {"Content-Type": "image/png"}, IMAGE),
    "/zip": (200, {"Content-Type": "application/zip"}, b"PK\x03\x04"),
    "/to-page": (302, {"Location": "/page"}, b""),
    "/to-localhost": (302, {"Location": "{localhost}/page"}, b""),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/big": (200, {"Content-Type": "text/html"},
             b"<html><head><title>Big</title>" + b"<!-- padding -->" * 20_000
             + b'<meta property="og:description" content="too far down"></head></html>'),
    "/remote-image": (200, {"Content-Type": "text/html"},
                      b'<html><head><meta property="og:title" content="Elsewhere">'
                      b'<meta property="og:image" content="http://127.0.0.2:9/x.png">'
                      b"</head></html>"),
}


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    with site(PAGES) as served:
        yield served


@asynccontextmanager
async def previewing(tmp_path: Path, **options: Any) -> AsyncIterator[
        tuple[httpx.AsyncClient, LoggedIn, Server]]:
    async with running_server(make_config(tmp_path, **options)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client, await make_user(server, "alice"), server


LOOPBACK_ALLOWED: dict[str, Any] = {"url_preview_domain_explicit_allowlist": ["127.0.0.1"],
                                    "ip_range_denylist": []}


def assert_error(r: httpx.Response, status: int, errcode: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["errcode"] == errcode, r.text


async def test_previews_are_denied_by_default(tmp_path: Path,
                                              web: tuple[str, list[str]]) -> None:
    base, seen = web
    async with previewing(tmp_path) as (client, alice, _):
        r = await client.get(PREVIEW, params={"url": f"{base}/page"}, headers=alice.headers)
        assert_error(r, 403, "M_FORBIDDEN")
        r = await client.get(PREVIEW, params={"url": f"{base}/page"})
        assert_error(r, 401, "M_MISSING_TOKEN")
    assert seen == []


async def test_preview_of_an_allowed_page(tmp_path: Path, web: tuple[str, list[str]]) -> None:
    base, seen = web
    async with previewing(tmp_path, **LOOPBACK_ALLOWED) as (client, alice, server):
        r = await client.get(PREVIEW, params={"url": f"{base}/page", "ts": 1},
                             headers=alice.headers)
        assert r.status_code == 200, r.text
        og = r.json()
        assert og["og:title"] == "A & B: café"
        assert og["og:description"] == "What this page is about"
        assert og["og:type"] == "article"
        assert og["matrix:image:size"] == len(IMAGE)
        assert (og["og:image:width"], og["og:image:height"]) == (120, 60)  # measured, not 9999
        assert og["og:image:type"] == "image/png"
        assert og["og:image"].startswith("mxc://test.local/")
        # the image is stored as local media
        r = await client.get(f"/_matrix/client/v1/media/download/{og['og:image'][6:]}",
                             headers=alice.headers)
        assert r.status_code == 200 and r.content == IMAGE
        assert seen == ["/page", "/img.png"]
        # cached: asking again (also through the legacy route) fetches nothing
        r = await client.get(PREVIEW, params={"url": f"{base}/page"}, headers=alice.headers)
        assert r.json() == og
        r = await client.get("/_matrix/media/v3/preview_url", params={"url": f"{base}/page"},
                             headers=alice.headers)
        assert r.status_code == 200 and r.json() == og
        assert seen == ["/page", "/img.png"]

        r = await client.get(PREVIEW, params={"url": f"{base}/plain"}, headers=alice.headers)
        assert r.json() == {"og:title": "Plain title", "og:description": "Meta description"}
        r = await client.get(PREVIEW, params={"url": f"{base}/img.png"}, headers=alice.headers)
        og = r.json()
        assert og["og:image"].startswith("mxc://") and og["matrix:image:size"] == len(IMAGE)
        # only the first url_preview_max_spider_size bytes of a page are read
        r = await client.get(PREVIEW, params={"url": f"{base}/big"}, headers=alice.headers)
        assert r.status_code == 200 and r.json() == {"og:title": "Big"}
        # redirects are followed when they stay allowed
        r = await client.get(PREVIEW, params={"url": f"{base}/to-page"}, headers=alice.headers)
        assert r.status_code == 200 and r.json()["og:title"] == "A & B: café"
        # an image on a denied address is left out, the rest of the preview stays
        assert server.services is not None
        server.services.media.previews.guard = AddressGuard(["127.0.0.2/32"])
        r = await client.get(PREVIEW, params={"url": f"{base}/remote-image"},
                             headers=alice.headers)
        assert r.status_code == 200 and r.json() == {"og:title": "Elsewhere"}


async def test_preview_failures(tmp_path: Path, web: tuple[str, list[str]]) -> None:
    base, seen = web
    async with previewing(tmp_path, **LOOPBACK_ALLOWED) as (client, alice, _):
        cases = [
            ({"url": f"{base}/missing"}, 502, "M_UNKNOWN"),
            ({"url": f"{base}/zip"}, 502, "M_UNKNOWN"),
            ({"url": f"{base}/loop"}, 502, "M_UNKNOWN"),
            ({"url": f"{base}/to-localhost"}, 403, "M_FORBIDDEN"),  # not in the allowlist
            ({}, 400, "M_MISSING_PARAM"),
            ({"url": "ftp://127.0.0.1/x"}, 400, "M_INVALID_PARAM"),
            ({"url": f"{base}/page", "ts": "yesterday"}, 400, "M_INVALID_PARAM"),
        ]
        for params, status, errcode in cases:
            r = await client.get(PREVIEW, params=params, headers=alice.headers)
            assert_error(r, status, errcode)
        assert "/page" not in seen


async def test_denied_addresses_are_refused_after_resolution(
        tmp_path: Path, web: tuple[str, list[str]]) -> None:
    base, seen = web
    port = base.rsplit(":", 1)[1]
    # allowed by name, but the default ip_range_denylist covers loopback: the name is
    # resolved and every address checked before connecting
    options = {"url_preview_domain_explicit_allowlist": ["127.0.0.1", "localhost"]}
    async with previewing(tmp_path, **options) as (client, alice, _):
        for url in (f"{base}/page", f"http://localhost:{port}/page"):
            r = await client.get(PREVIEW, params={"url": url}, headers=alice.headers)
            assert_error(r, 403, "M_FORBIDDEN")
    assert seen == []
