"""The media repository: upload, download, async upload, legacy routes, remote media, deletion.

Thumbnails are in test_thumbnails.py and URL previews in test_url_preview.py.
"""

from __future__ import annotations

import io
import json
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from PIL import Image

from conduwuit.errors import MatrixError
from conduwuit.server import Server
from conduwuit.services.media import Media, RemoteFile, media_key, now_ms, parse_mxc
from conduwuit.services.media.disposition import (
    content_disposition,
    is_inline,
    sanitise_filename,
    served_content_type,
)
from conduwuit.services.media.files import TEMP_PREFIX, MediaFiles, TooLarge, file_name
from conduwuit.services.media.thumbnails import ThumbSize
from conduwuit.store import Store
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import LoggedIn, make_user

LIMIT = 200_000
AUTHED = "/_matrix/client/v1/media"
MEDIA = "/_matrix/media/v3"
MEDIA_CSP = ("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
             "style-src 'unsafe-inline'; object-src 'self';")


def png(size: tuple[int, int] = (64, 48), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


# ------------------------------------------------------------ pure helpers


def test_sanitise_filename() -> None:
    assert sanitise_filename("photo.png") == "photo.png"
    assert sanitise_filename("../../etc/pa\x00ss\r\nwd") == "etcpasswd"
    assert sanitise_filename("a\\b/c.txt") == "abc.txt"
    assert sanitise_filename("invoice\u202egnp.exe") == "invoicegnp.exe"
    assert sanitise_filename("  .hidden  ") == "hidden"
    assert sanitise_filename("🏳️‍⚧️ flag.png") == "🏳️‍⚧️ flag.png"  # ZWJ sequences survive
    assert sanitise_filename("..") is None and sanitise_filename("") is None
    assert sanitise_filename(None) is None
    long = sanitise_filename("x" * 400 + ".jpeg")
    assert long is not None and len(long) == 255 and long.endswith(".jpeg")


def test_content_disposition_encoding() -> None:
    assert content_disposition(True, None) == "inline"
    assert content_disposition(False, "a b.pdf") == 'attachment; filename="a b.pdf"'
    assert content_disposition(True, "ünï.png") == "inline; filename*=utf-8''%C3%BCn%C3%AF.png"
    assert content_disposition(False, 'say "hi".txt') == (
        "attachment; filename*=utf-8''say%20%22hi%22.txt")


def test_inline_types_and_served_type() -> None:
    for kind in ("image/png", "IMAGE/JPEG", "video/mp4", "audio/ogg", "text/plain; charset=utf-8"):
        assert is_inline(kind), kind
    for other in ("text/html", "image/svg+xml", "application/pdf", "application/json", None, ""):
        assert not is_inline(other), other
    assert served_content_type(None) == "application/octet-stream"
    assert served_content_type("nonsense") == "application/octet-stream"
    assert served_content_type("text/plain; charset=utf-8") == "text/plain; charset=utf-8"


def test_parse_mxc() -> None:
    assert parse_mxc("mxc://example.org/abc_DEF-1") == ("example.org", "abc_DEF-1")
    for bad in ("http://example.org/abc", "mxc://example.org", "mxc://exa mple/abc",
                "mxc://example.org/a/b", "mxc://example.org/a.b", "mxc:///abc"):
        with pytest.raises(MatrixError) as info:
            parse_mxc(bad)
        assert info.value.errcode == "M_INVALID_PARAM", bad


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_files_atomic_receive_and_too_large(tmp_path: Path) -> None:
    files = MediaFiles(tmp_path / "media")
    files.ensure_dir()
    received = await files.receive(_chunks(b"abc", b"", b"def"), limit=6)
    assert received.size == 6 and received.temp.name.startswith(TEMP_PREFIX)
    path = await files.commit(received, b"key")
    assert path.name == file_name(b"key") and path.read_bytes() == b"abcdef"
    assert "=" not in path.name and "/" not in path.name and len(path.name) == 43
    with pytest.raises(TooLarge):
        await files.receive(_chunks(b"abc", b"defg"), limit=6)
    assert files.leftover_temps() == []  # the refused upload left nothing behind
    handle = await files.open(b"key")
    assert handle is not None and handle.size == 6
    assert [c async for c in handle.chunks(4)] == [b"abcd", b"ef"]
    assert await files.delete(b"key") and not await files.delete(b"key")
    assert await files.open(b"key") is None


# ------------------------------------------------------------------ HTTP


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(make_config(tmp_path, max_request_size=LIMIT)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


@pytest.fixture
async def alice(server: Server) -> LoggedIn:
    return await make_user(server, "alice")


@pytest.fixture
async def bob(server: Server) -> LoggedIn:
    return await make_user(server, "bob")


def media_of(server: Server) -> Media:
    assert server.services is not None
    return server.services.media


async def upload(client: httpx.AsyncClient, who: LoggedIn, data: bytes,
                 content_type: str | None = "image/png", filename: str | None = None,
                 prefix: str = MEDIA) -> tuple[str, str]:
    headers = dict(who.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    params = {"filename": filename} if filename is not None else {}
    r = await client.post(f"{prefix}/upload", content=data, headers=headers, params=params)
    assert r.status_code == 200, r.text
    uri = r.json()["content_uri"]
    server_name, media_id = parse_mxc(uri)
    return server_name, media_id


def assert_error(r: httpx.Response, status: int, errcode: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert body["errcode"] == errcode, body
    return body


async def test_upload_download_round_trip_with_headers(
        client: httpx.AsyncClient, server: Server, alice: LoggedIn) -> None:
    data = png()
    server_name, media_id = await upload(client, alice, data, filename="cat.png")
    assert server_name == "test.local" and len(media_id) == 32

    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}", headers=alice.headers)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Content-Disposition"] == 'inline; filename="cat.png"'
    assert r.headers["Content-Security-Policy"] == MEDIA_CSP
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert r.headers["Cache-Control"] == "private, max-age=31536000, immutable"

    # the access token may come in the query, as older clients send it
    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}",
                         params={"access_token": alice.access_token})
    assert r.status_code == 200 and r.content == data

    # legacy unauthenticated routes, all three versions
    for version in ("v3", "r0", "v1"):
        r = await client.get(f"/_matrix/media/{version}/download/{server_name}/{media_id}")
        assert r.status_code == 200 and r.content == data, version
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert r.headers["Content-Security-Policy"] == MEDIA_CSP

    # stored under the database directory, named by a hash, with metadata
    info = media_of(server).info(server_name, media_id)
    assert info is not None and info.uploader == alice.user_id and info.size == len(data)
    assert (Path(server.config.database_path) / "media").is_dir()
    assert media_of(server).files.leftover_temps() == []


async def test_filename_override_unicode_and_sanitising(
        client: httpx.AsyncClient, alice: LoggedIn) -> None:
    server_name, media_id = await upload(client, alice, b"hello", "text/plain",
                                         filename="../secret/pa\x00ss\r\nwd.txt")
    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}", headers=alice.headers)
    assert r.headers["Content-Disposition"] == 'inline; filename="secretpasswd.txt"'
    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}/r%C3%A9sum%C3%A9.txt",
                         headers=alice.headers)
    assert r.status_code == 200 and r.content == b"hello"
    assert r.headers["Content-Disposition"] == "inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt"
    # an encoded slash stays inside the file name segment and is then removed
    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}/..%2F..%2Fx.txt",
                         headers=alice.headers)
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == 'inline; filename="x.txt"'
    r = await client.get(f"{MEDIA}/download/{server_name}/{media_id}/other.txt")
    assert r.headers["Content-Disposition"] == 'inline; filename="other.txt"'


@pytest.mark.parametrize(("content_type", "served", "disposition"), [
    ("text/html", "text/html", "attachment"),
    ("image/svg+xml", "image/svg+xml", "attachment"),
    ("application/pdf", "application/pdf", "attachment"),
    (None, "application/octet-stream", "attachment"),
    ("video/mp4", "video/mp4", "inline"),
    ("audio/ogg", "audio/ogg", "inline"),
])
async def test_disposition_by_type(client: httpx.AsyncClient, alice: LoggedIn,
                                   content_type: str | None, served: str,
                                   disposition: str) -> None:
    server_name, media_id = await upload(client, alice, b"<script>alert(1)</script>",
                                         content_type)
    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}", headers=alice.headers)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == served
    assert r.headers["Content-Disposition"] == disposition
    assert r.headers["Content-Security-Policy"] == MEDIA_CSP


async def test_bad_mxc_parts_and_unknown_media(client: httpx.AsyncClient,
                                               alice: LoggedIn) -> None:
    for path in ("download/test.local/bad!id", "download/bad%20server/abc",
                 "thumbnail/test.local/bad.id?width=32&height=32",
                 "download/test.local/" + "a" * 300):
        r = await client.get(f"{AUTHED}/{path}", headers=alice.headers)
        assert_error(r, 400, "M_INVALID_PARAM")
    r = await client.get(f"{MEDIA}/download/test.local/bad!id")
    assert_error(r, 400, "M_INVALID_PARAM")
    for path in (f"{AUTHED}/download/test.local/nosuchmedia",
                 f"{AUTHED}/download/test.local/nosuchmedia/name.txt",
                 f"{AUTHED}/thumbnail/test.local/nosuchmedia?width=32&height=32"):
        assert_error(await client.get(path, headers=alice.headers), 404, "M_NOT_FOUND")
    assert_error(await client.get(f"{MEDIA}/download/test.local/nosuchmedia"), 404,
                 "M_NOT_FOUND")
    r = await client.get(f"{AUTHED}/download/test.local/x", headers=alice.headers,
                         params={"timeout_ms": "soon"})
    assert_error(r, 400, "M_INVALID_PARAM")


async def test_authenticated_routes_refuse_anonymous(client: httpx.AsyncClient,
                                                     alice: LoggedIn) -> None:
    server_name, media_id = await upload(client, alice, png())
    requests = [
        ("GET", f"{AUTHED}/config"),
        ("GET", f"{AUTHED}/download/{server_name}/{media_id}"),
        ("GET", f"{AUTHED}/download/{server_name}/{media_id}/x.png"),
        ("GET", f"{AUTHED}/thumbnail/{server_name}/{media_id}?width=32&height=32"),
        ("GET", f"{AUTHED}/preview_url?url=https://example.org/"),
        ("GET", "/_matrix/client/unstable/org.matrix.msc3916/media/config"),
        ("POST", f"{MEDIA}/upload"),
        ("POST", "/_matrix/media/r0/upload"),
        ("POST", "/_matrix/media/v1/create"),
        ("PUT", f"{MEDIA}/upload/{server_name}/{media_id}"),
        ("GET", f"{MEDIA}/config"),
        ("GET", f"{MEDIA}/preview_url?url=https://example.org/"),
    ]
    for method, path in requests:
        r = await client.request(method, path, content=b"x" if method != "GET" else None)
        assert_error(r, 401, "M_MISSING_TOKEN")
        r = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert_error(r, 401, "M_UNKNOWN_TOKEN")
    r = await client.get(f"{AUTHED}/config", headers=alice.headers)
    assert r.status_code == 200 and r.json() == {"m.upload.size": LIMIT}
    for version in ("v3", "r0", "v1"):
        r = await client.get(f"/_matrix/media/{version}/config", headers=alice.headers)
        assert r.status_code == 200 and r.json() == {"m.upload.size": LIMIT}


async def test_oversized_uploads_are_refused(client: httpx.AsyncClient, server: Server,
                                             alice: LoggedIn) -> None:
    # exactly at the limit is fine
    await upload(client, alice, b"x" * LIMIT, "application/octet-stream")
    before = set(media_of(server).files.root.iterdir())
    # announced by Content-Length: refused before reading the body
    r = await client.post(f"{MEDIA}/upload", content=b"x" * (LIMIT + 1), headers=alice.headers)
    assert_error(r, 413, "M_TOO_LARGE")

    # chunked, no length: refused as soon as the count passes the limit
    async def body() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 10_000 + 5):
            yield b"y" * 10_000

    r = await client.post(f"{MEDIA}/upload", content=body(), headers=alice.headers)
    assert_error(r, 413, "M_TOO_LARGE")
    # nothing was kept: no temporary file, no new media file
    assert set(media_of(server).files.root.iterdir()) == before
    # the server still answers on the same client afterwards
    r = await client.get(f"{AUTHED}/config", headers=alice.headers)
    assert r.status_code == 200


async def test_uploads_stream_to_disk(tmp_path: Path) -> None:
    """A big upload is written as it arrives: memory does not grow by the body's size."""
    size = 24_000_000
    config = make_config(tmp_path, max_request_size=40_000_000)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0], timeout=120) as client:
        alice = await make_user(server, "alice")
        chunk = b"z" * 65_536

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // len(chunk)):
                yield chunk

        tracemalloc.start()
        try:
            r = await client.post(f"{MEDIA}/upload", content=body(), headers=alice.headers)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert r.status_code == 200, r.text
        # measured at about 4 MB (the 1 MiB write buffer and what arrives meanwhile)
        assert peak < size // 2, f"peak {peak} bytes while receiving {size}"
        info = media_of(server).info(*parse_mxc(r.json()["content_uri"]))
        assert info is not None and info.size == size // len(chunk) * len(chunk)


async def test_guests_download_but_cannot_upload(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_registration=True, allow_guest_registration=True,
                         registration_token="unused-token")
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        server_name, media_id = await upload(client, alice, png())
        r = await client.post("/_matrix/client/v3/register", params={"kind": "guest"}, json={})
        assert r.status_code == 200, r.text
        guest = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await client.post(f"{MEDIA}/upload", content=b"x", headers=guest)
        assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
        r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}", headers=guest)
        assert r.status_code == 200


# -------------------------------------------------------------- async upload


async def test_async_upload_flow(client: httpx.AsyncClient, server: Server,
                                 alice: LoggedIn, bob: LoggedIn) -> None:
    r = await client.post("/_matrix/media/v1/create", headers=alice.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    server_name, media_id = parse_mxc(body["content_uri"])
    assert body["unused_expires_at"] > media_of(server).clock()

    url = f"{AUTHED}/download/{server_name}/{media_id}"
    r = await client.get(url, headers=alice.headers, params={"timeout_ms": 0})
    assert_error(r, 504, "M_NOT_YET_UPLOADED")
    put = f"{MEDIA}/upload/{server_name}/{media_id}"
    r = await client.put(put, content=b"later",
                         headers={**bob.headers, "Content-Type": "text/plain"})
    assert_error(r, 403, "M_FORBIDDEN")
    r = await client.put(f"{MEDIA}/upload/{server_name}/neverCreated", content=b"x",
                         headers=alice.headers)
    assert_error(r, 404, "M_NOT_FOUND")
    r = await client.put(f"{MEDIA}/upload/other.example/{media_id}", content=b"x",
                         headers=alice.headers)
    assert_error(r, 404, "M_NOT_FOUND")
    r = await client.put(put, content=b"later", params={"filename": "l.txt"},
                         headers={**alice.headers, "Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json() == {}
    r = await client.put(put, content=b"again", headers=alice.headers)
    assert_error(r, 409, "M_CANNOT_OVERWRITE_MEDIA")
    r = await client.get(url, headers=alice.headers)
    assert r.status_code == 200 and r.content == b"later"
    assert r.headers["Content-Disposition"] == 'inline; filename="l.txt"'
    # uploading through the normal route cannot target an id either
    assert media_of(server).pending(media_id) is None


async def test_download_waits_for_async_upload(client: httpx.AsyncClient,
                                               alice: LoggedIn) -> None:
    r = await client.post("/_matrix/media/v1/create", headers=alice.headers)
    server_name, media_id = parse_mxc(r.json()["content_uri"])
    got: list[httpx.Response] = []

    async def download() -> None:
        got.append(await client.get(f"{AUTHED}/download/{server_name}/{media_id}",
                                    headers=alice.headers, params={"timeout_ms": 30_000}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(download)
        await trio.sleep(0)
        r = await client.put(f"{MEDIA}/upload/{server_name}/{media_id}", content=b"arrived",
                             headers=alice.headers)
        assert r.status_code == 200
    assert got[0].status_code == 200 and got[0].content == b"arrived"


async def test_pending_upload_limit_and_expiry(client: httpx.AsyncClient, server: Server,
                                               alice: LoggedIn) -> None:
    uris = []
    for _ in range(5):
        r = await client.post("/_matrix/media/v1/create", headers=alice.headers)
        assert r.status_code == 200
        uris.append(r.json()["content_uri"])
    r = await client.post("/_matrix/media/v1/create", headers=alice.headers)
    body = assert_error(r, 429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] > 0
    # a day later every reservation has expired: uploads to them are refused, and new
    # reservations are possible again
    media = media_of(server)
    real_clock = media.clock
    media.clock = lambda: real_clock() + 25 * 3600 * 1000
    server_name, media_id = parse_mxc(uris[0])
    r = await client.put(f"{MEDIA}/upload/{server_name}/{media_id}", content=b"x",
                         headers=alice.headers)
    assert_error(r, 404, "M_NOT_FOUND")
    r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}", headers=alice.headers)
    assert_error(r, 404, "M_NOT_FOUND")
    r = await client.post("/_matrix/media/v1/create", headers=alice.headers)
    assert r.status_code == 200


# --------------------------------------------------------------- legacy off


async def test_legacy_media_disabled(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_request_size=LIMIT, allow_legacy_media=False)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        # uploading through v3 is not legacy: it still works
        server_name, media_id = await upload(client, alice, png())
        for path in (f"/_matrix/media/v3/download/{server_name}/{media_id}",
                     f"/_matrix/media/r0/download/{server_name}/{media_id}/x.png",
                     f"/_matrix/media/v1/download/{server_name}/{media_id}",
                     f"/_matrix/media/v3/thumbnail/{server_name}/{media_id}?width=32&height=32",
                     "/_matrix/media/v3/config"):
            r = await client.get(path, headers=alice.headers)
            body = assert_error(r, 403, "M_FORBIDDEN")
            assert body["error"] == "Unauthenticated media is disabled"
        r = await client.post("/_matrix/media/v1/upload", content=b"x", headers=alice.headers)
        assert_error(r, 403, "M_FORBIDDEN")
        r = await client.get("/_matrix/media/v3/preview_url",
                             params={"url": "https://example.org/"})
        assert r.status_code == 307
        assert r.headers["Location"] == (
            "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.org%2F")
        r = await client.get(f"{AUTHED}/download/{server_name}/{media_id}",
                             headers=alice.headers)
        assert r.status_code == 200


# -------------------------------------------------------------- remote media


class FakeFetcher:
    """Stands in for the federation media client until there is one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def download(self, server_name: str, media_id: str, *,
                       timeout_s: float) -> RemoteFile:
        self.calls.append((server_name, media_id))
        if media_id == "missing":
            raise MatrixError(404, "M_NOT_FOUND", "Remote media not found")

        async def chunks() -> AsyncIterator[bytes]:
            yield b"remote "
            yield b"bytes"

        return RemoteFile("text/plain", "r.txt", chunks())


async def test_unreachable_or_blocked_remote_media_is_404(tmp_path: Path) -> None:
    config = make_config(tmp_path, prevent_media_downloads_from=["^blocked\\.example$"])
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        for path in (f"{AUTHED}/download/remote.example/abc",
                     f"{AUTHED}/thumbnail/remote.example/abc?width=32&height=32",
                     f"{MEDIA}/download/remote.example/abc"):
            body = assert_error(await client.get(path, headers=alice.headers), 404,
                                "M_NOT_FOUND")
            assert "not available yet" in body["error"] or "not allowed" in body["error"], body
        body = assert_error(await client.get(f"{AUTHED}/download/blocked.example/abc",
                                             headers=alice.headers), 404, "M_NOT_FOUND")
        assert body["error"] == "Media not found"


async def test_remote_fetcher_plugs_in_and_caches(tmp_path: Path) -> None:
    config = make_config(tmp_path, prevent_media_downloads_from=["blocked"],
                         forbidden_remote_server_names=["^evil\\."])
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        fetcher = FakeFetcher()
        media_of(server).remote = fetcher
        url = f"{AUTHED}/download/remote.example/abc"
        for _ in range(2):
            r = await client.get(url, headers=alice.headers)
            assert r.status_code == 200 and r.content == b"remote bytes"
            assert r.headers["Content-Disposition"] == 'inline; filename="r.txt"'
        assert fetcher.calls == [("remote.example", "abc")]  # fetched once, then cached
        info = media_of(server).info("remote.example", "abc")
        assert info is not None and info.uploader is None
        # blocked servers never reach the fetcher
        for server_name in ("blocked.example", "evil.example"):
            r = await client.get(f"{AUTHED}/download/{server_name}/abc", headers=alice.headers)
            assert_error(r, 404, "M_NOT_FOUND")
        assert_error(await client.get(f"{AUTHED}/download/remote.example/missing",
                                      headers=alice.headers), 404, "M_NOT_FOUND")
        # legacy routes serve the cached copy, but freeze_legacy_media (the default) stops
        # them from fetching anything new; allow_remote=false does too
        r = await client.get(f"{MEDIA}/download/remote.example/abc")
        assert r.status_code == 200 and r.content == b"remote bytes"
        calls = len(fetcher.calls)
        assert_error(await client.get(f"{MEDIA}/download/remote.example/new"), 404,
                     "M_NOT_FOUND")
        r = await client.get(f"{AUTHED}/download/remote.example/new2", headers=alice.headers,
                             params={"allow_remote": "false"})  # ignored off legacy routes
        assert r.status_code == 200
        assert fetcher.calls[calls:] == [("remote.example", "new2")]


async def test_unfrozen_legacy_media_fetches(tmp_path: Path) -> None:
    config = make_config(tmp_path, freeze_legacy_media=False)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        fetcher = FakeFetcher()
        media_of(server).remote = fetcher
        r = await client.get(f"{MEDIA}/download/remote.example/abc",
                             params={"allow_remote": "false"})
        assert_error(r, 404, "M_NOT_FOUND")
        r = await client.get(f"{MEDIA}/download/remote.example/abc")
        assert r.status_code == 200 and fetcher.calls == [("remote.example", "abc")]


# ------------------------------------------------------ deletion and checks


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db")
    yield s
    s.close()


def make_media(tmp_path: Path, store: Store, **options: Any) -> Media:
    config = make_config(tmp_path, database_path=str(store.path), **options)
    return Media(config, store, trio.Event())


async def test_delete_removes_files_thumbnails_and_metadata(tmp_path: Path,
                                                            store: Store) -> None:
    media = make_media(tmp_path, store)
    a = await media.upload(_chunks(png()), user_id="@alice:test.local", content_type="image/png",
                           filename="a.png")
    b = await media.upload(_chunks(b"b"), user_id="@alice:test.local", content_type=None,
                           filename=None)
    c = await media.upload(_chunks(b"c"), user_id="@bob:test.local", content_type=None,
                           filename=None)
    await media.thumbnail(a.server_name, a.media_id, ThumbSize(32, 32, "crop"))
    usage = await media.usage()
    assert usage["local_files"] == 3 and usage["thumbnails"] == 1
    files_before = len(list(media.files.root.iterdir()))
    assert files_before == 4

    assert await media.delete(a.server_name, a.media_id)
    assert media.info(a.server_name, a.media_id) is None
    assert not await media.delete(a.server_name, a.media_id)
    assert len(list(media.files.root.iterdir())) == 2  # the file and its thumbnail are gone
    with pytest.raises(MatrixError) as info:
        await media.get(a.server_name, a.media_id, timeout_ms=0)
    assert info.value.errcode == "M_NOT_FOUND"

    assert await media.delete_user_media("@alice:test.local") == 1
    assert media.info(b.server_name, b.media_id) is None
    assert await media.delete_mxcs([c.mxc, "not an mxc", "mxc://test.local/unknown"]) == 1
    assert list(media.files.root.iterdir()) == []


async def test_delete_remote_media_by_age(tmp_path: Path, store: Store) -> None:
    media = make_media(tmp_path, store)
    times = iter([1_000, 2_000, 3_000])
    media.clock = lambda: next(times)
    fetcher = FakeFetcher()
    media.remote = fetcher
    await media.get("remote.example", "old")
    await media.get("remote.example", "new")
    local = await media.upload(_chunks(b"x"), user_id=None, content_type=None, filename=None)
    assert await media.delete_remote_media(before_ms=1_500) == 1
    assert media.info("remote.example", "old") is None
    assert media.info("remote.example", "new") is not None
    assert await media.delete_remote_media(after_ms=0) == 1
    assert media.info(local.server_name, local.media_id) is not None
    assert (await media.usage())["remote_files"] == 0


async def test_startup_check(tmp_path: Path, store: Store) -> None:
    media = make_media(tmp_path, store)
    a = await media.upload(_chunks(png()), user_id=None, content_type="image/png", filename=None)
    b = await media.upload(_chunks(b"b"), user_id=None, content_type=None, filename=None)
    await media.thumbnail(a.server_name, a.media_id, ThumbSize(96, 96, "crop"))
    (media.files.root / f"{TEMP_PREFIX}crashed").write_bytes(b"half an upload")
    keep = media.files.path(media_key(a.server_name, a.media_id))
    for path in media.files.root.iterdir():
        if not path.name.startswith(TEMP_PREFIX) and path != keep:
            path.unlink()  # b's file and the thumbnail vanish
    await media.startup_check()
    assert media.files.leftover_temps() == []
    assert media.info(b.server_name, b.media_id) is not None  # kept: prune is off
    assert (await media.usage())["thumbnails"] == 0  # thumbnails are made again on demand

    pruning = make_media(tmp_path, store, prune_missing_media=True)
    await pruning.startup_check()
    assert pruning.info(b.server_name, b.media_id) is None
    assert pruning.info(a.server_name, a.media_id) is not None

    # expired reservations of async uploads are dropped, live ones kept
    _, live_id = parse_mxc(media.create_pending("@alice:test.local")[0])
    media.clock = lambda: now_ms() - 25 * 3600 * 1000
    _, old_id = parse_mxc(media.create_pending("@alice:test.local")[0])
    media.clock = now_ms
    await media.startup_check()
    assert media.pending(live_id) is not None and media.pending(old_id) is None


async def test_startup_check_runs_as_a_job(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as server:
        with trio.fail_after(10):
            while server.supervisor.status("media/startup-check").state.value != "finished":
                await trio.sleep(0.01)
    async with running_server(make_config(tmp_path, media_startup_check=False)) as server:
        assert "media/startup-check" not in {s.full_name for s in server.supervisor.statuses()}


# ------------------------------------------------------------------ nio


NIO_SCRIPT = """
import asyncio, io, json, sys
from nio import AsyncClient, ResizingMethod

async def main(homeserver, user_id, device_id, token, data_hex):
    data = bytes.fromhex(data_hex)
    client = AsyncClient(homeserver, user_id, device_id=device_id)
    client.access_token = token
    client.user_id = user_id
    out = {}
    try:
        up, _ = await client.upload(io.BytesIO(data), content_type="image/png",
                                    filename="nio.png", filesize=len(data))
        out["upload"] = type(up).__name__
        uri = up.content_uri
        down = await client.download(mxc=uri)
        out["download"] = [type(down).__name__, down.body == data, down.content_type,
                           down.filename]
        server, media_id = uri[len("mxc://"):].split("/")
        thumb = await client.thumbnail(server, media_id, 32, 32, ResizingMethod.crop)
        out["thumbnail"] = [type(thumb).__name__, thumb.content_type, thumb.body.hex()]
    finally:
        await client.close()
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_matrix_nio_round_trip(client: httpx.AsyncClient, server: Server,
                                     alice: LoggedIn) -> None:
    data = png((200, 100), "blue")
    result = await trio.run_process(
        [sys.executable, "-c", NIO_SCRIPT, server.bound[0], alice.user_id, alice.device_id,
         alice.access_token, data.hex()], capture_stdout=True, capture_stderr=True)
    out = json.loads(result.stdout)
    assert out["upload"] == "UploadResponse"
    assert out["download"] == ["MemoryDownloadResponse", True, "image/png", "nio.png"]
    kind, content_type, body = out["thumbnail"]
    assert kind == "ThumbnailResponse" and content_type == "image/png"
    with Image.open(io.BytesIO(bytes.fromhex(body))) as thumb:
        assert thumb.size == (32, 32)
