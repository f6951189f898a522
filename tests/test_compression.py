"""HTTP compression: negotiated responses, decoded request bodies, bombs refused.

Everything but the negotiation unit tests runs through a real in-process Hypercorn
with httpx, which decodes gzip, br and zstd itself (brotli and zstandard installed).
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import httpx
import orjson
import pytest
import trio
import zstandard
from quart import Blueprint, Response, request

from conduwuit.handlers.compression import (
    BUFFER_LIMIT,
    MIN_SIZE,
    negotiate,
    parse_accept_encoding,
)
from conduwuit.handlers.context import MatrixApp
from conduwuit.handlers.json import json_body, json_response
from tests.support.config import make_config
from tests.support.inprocess import running_server
from tests.support.users import make_user

ALL_ON: dict[str, Any] = {"gzip_compression": True, "brotli_compression": True,
                          "zstd_compression": True}
CODINGS = ("gzip", "br", "zstd")
BIG = {"items": [{"n": i, "text": "the quick brown fox", "ok": i % 2 == 0}
                 for i in range(300)]}
SMALL = {"ok": True}
LIMIT = 1024 * 1024


def encode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "br":
        return bytes(brotli.compress(data))
    return zstandard.ZstdCompressor().compress(data)


def decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return bytes(brotli.decompress(data))
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def bomb(coding: str, size: int) -> bytes:
    """``size`` zero bytes compressed, built without holding them all."""
    block = bytes(1024 * 1024)
    if coding == "gzip":
        gz = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(gz.compress(block) for _ in range(size // len(block))) + gz.flush()
    if coding == "br":
        br = brotli.Compressor(quality=5)
        return b"".join(bytes(br.process(block))
                        for _ in range(size // len(block))) + bytes(br.finish())
    zs = zstandard.ZstdCompressor().compressobj()
    return b"".join(zs.compress(block) for _ in range(size // len(block))) + zs.flush()


def _routes(app: MatrixApp) -> None:
    bp = Blueprint("test_compression", __name__)

    @bp.get("/_test/big")
    async def big() -> Response:
        return json_response(BIG)

    @bp.get("/_test/small")
    async def small() -> Response:
        return json_response(SMALL)

    @bp.get("/_test/stream/<int:chunks>")
    async def stream(chunks: int) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                yield b"%08d" % i + b"x" * 65528
                await trio.sleep(0)

        return Response(body(), content_type="text/plain")

    @bp.get("/_test/binary")
    async def binary() -> Response:
        return Response(bytes(4096), content_type="application/octet-stream")

    @bp.post("/_test/echo")
    async def echo() -> Response:
        body = await json_body()
        return json_response({"body": body, "encoding": request.headers.get("Content-Encoding"),
                              "length": request.content_length})

    app.register_blueprint(bp)


@pytest.fixture
async def on(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = make_config(tmp_path, max_request_size=LIMIT, **ALL_ON)
    async with running_server(config, app_hooks=[_routes]) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client


async def raw_get(client: httpx.AsyncClient, path: str,
                  accept: str | None) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent on the wire (httpx decodes only on read)."""
    headers = {"Accept-Encoding": accept} if accept is not None else {}
    async with client.stream("GET", path, headers=headers) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    return r, raw


async def still_serving(client: httpx.AsyncClient) -> None:
    """After an answer sent before the body was read, the client's next request (on
    the same connection or a new one) is served promptly."""
    with trio.fail_after(10):
        r = await client.get("/_test/small")
    assert r.status_code == 200


# --------------------------------------------------------------- negotiation


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding("gzip, br;q=0.5, ZSTD ; Q=0.25, x-gzip;q=0") == {
        "gzip": 1.0, "br": 0.5, "zstd": 0.25}
    assert parse_accept_encoding("gzip;q=2, br;q=abc, zstd;q=nan, *;q=0.1, ,") == {"*": 0.1}


@pytest.mark.parametrize(("header", "enabled", "expected"), [
    (None, CODINGS, None),                                  # no header: as it is
    ("", CODINGS, None),
    ("identity", CODINGS, None),
    ("gzip", CODINGS, "gzip"),
    ("x-gzip", CODINGS, "gzip"),
    ("gzip, br, zstd", CODINGS, "zstd"),                    # ties: our preference
    ("gzip, br", CODINGS, "br"),
    ("gzip;q=0.5, br;q=0.9", CODINGS, "br"),               # q-values first
    ("zstd;q=0.1, gzip", CODINGS, "gzip"),
    ("gzip;q=0", CODINGS, None),
    ("br", ("gzip",), None),                                # only what is enabled
    ("gzip, br", (), None),
    ("*", CODINGS, "zstd"),
    ("*;q=0.5, gzip;q=0", ("gzip", "br"), "br"),
    ("*;q=0", CODINGS, None),
    ("gzip;q=0.4, identity;q=0.8", CODINGS, None),          # identity rated higher
    ("gzip;q=0.8, identity;q=0.4", CODINGS, "gzip"),
    ("gzip;q=0.8", CODINGS, "gzip"),                        # identity not rated: no veto
])
def test_negotiate(header: str | None, enabled: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(header, enabled) == expected


# --------------------------------------------------------------- responses


@pytest.mark.parametrize("coding", CODINGS)
async def test_each_encoding_round_trips_json(on: httpx.AsyncClient, coding: str) -> None:
    plain, plain_raw = await raw_get(on, "/_test/big", "identity")
    assert "content-encoding" not in plain.headers and plain_raw == orjson.dumps(BIG)
    assert len(plain_raw) > MIN_SIZE
    r, raw = await raw_get(on, "/_test/big", f"{coding}, identity;q=0.1")
    assert r.status_code == 200
    assert r.headers["content-encoding"] == coding
    assert r.headers["vary"] == "Accept-Encoding"
    assert int(r.headers["content-length"]) == len(raw) < len(plain_raw) // 4
    assert decode(coding, raw) == plain_raw
    # and httpx, as any client would, decodes it transparently
    r = await on.get("/_test/big", headers={"Accept-Encoding": coding})
    assert r.headers["content-encoding"] == coding and r.json() == BIG
    # the app's own headers survive
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["content-type"] == "application/json"


async def test_real_endpoint_compressed(tmp_path: Path) -> None:
    config = make_config(tmp_path, gzip_compression=True)
    async with running_server(config) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        url = f"/_matrix/client/v3/user/{alice.user_id}/account_data/org.example.big"
        r = await client.put(url, json=BIG, headers=alice.headers)
        assert r.status_code == 200, r.text
        r = await client.get(url, headers={**alice.headers, "Accept-Encoding": "gzip, br"})
        assert r.headers["content-encoding"] == "gzip"  # br is not enabled here
        assert r.json() == BIG


async def test_off_by_default(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path), app_hooks=[_routes]) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        r, raw = await raw_get(client, "/_test/big", "gzip, br, zstd, *")
        assert "content-encoding" not in r.headers and "vary" not in r.headers
        assert raw == orjson.dumps(BIG)
        # decoding compressed requests needs no option
        r = await client.post("/_test/echo", content=gzip.compress(orjson.dumps(BIG)),
                              headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200 and r.json()["body"] == BIG


async def test_small_bodies_untouched(on: httpx.AsyncClient) -> None:
    r, raw = await raw_get(on, "/_test/small", "gzip, br, zstd")
    assert "content-encoding" not in r.headers
    assert raw == orjson.dumps(SMALL)
    assert r.headers["vary"] == "Accept-Encoding"  # it could have been compressed
    # errors are small JSON too
    r, raw = await raw_get(on, "/_matrix/client/v3/nope", "gzip")
    assert r.status_code == 404 and "content-encoding" not in r.headers
    assert orjson.loads(raw)["errcode"] == "M_UNRECOGNIZED"


async def test_no_accept_encoding_is_uncompressed(on: httpx.AsyncClient) -> None:
    # httpx always sends Accept-Encoding unless told otherwise; strip it entirely
    req = on.build_request("GET", "/_test/big")
    del req.headers["Accept-Encoding"]
    r = await on.send(req)
    assert "content-encoding" not in r.headers and r.json() == BIG
    assert r.headers["vary"] == "Accept-Encoding"


async def test_other_content_types_and_head_untouched(on: httpx.AsyncClient) -> None:
    r, raw = await raw_get(on, "/_test/binary", "gzip")
    assert "content-encoding" not in r.headers and "vary" not in r.headers
    assert raw == bytes(4096)
    r = await on.head("/_test/big", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers


async def test_media_untouched(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, **ALL_ON)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        text = orjson.dumps(BIG)
        r = await client.post("/_matrix/media/v3/upload", content=text,
                              headers={**alice.headers, "Content-Type": "text/plain"})
        assert r.status_code == 200, r.text
        server_name, media_id = r.json()["content_uri"][len("mxc://"):].split("/")
        for path in (f"/_matrix/client/v1/media/download/{server_name}/{media_id}",
                     f"/_matrix/media/v3/download/{server_name}/{media_id}"):
            headers = {**alice.headers, "Accept-Encoding": "gzip, br, zstd"}
            async with client.stream("GET", path, headers=headers) as r:
                raw = b"".join([chunk async for chunk in r.aiter_raw()])
            assert r.status_code == 200, path
            assert "content-encoding" not in r.headers, path
            assert raw == text


@pytest.mark.parametrize("coding", CODINGS)
async def test_streamed_body_compressed_incrementally(on: httpx.AsyncClient,
                                                      coding: str) -> None:
    chunks = 8  # 512 KiB, past the buffer limit
    assert chunks * 65536 > BUFFER_LIMIT
    expected = b"".join(b"%08d" % i + b"x" * 65528 for i in range(chunks))
    r, raw = await raw_get(on, f"/_test/stream/{chunks}", coding)
    assert r.headers["content-encoding"] == coding
    assert "content-length" not in r.headers  # chunked: the size was not known in time
    assert decode(coding, raw) == expected and len(raw) < len(expected) // 10
    # a short stream arrives whole within the buffer: one body with its length
    r, raw = await raw_get(on, "/_test/stream/2", coding)
    assert r.headers["content-encoding"] == coding
    assert int(r.headers["content-length"]) == len(raw)
    assert decode(coding, raw) == expected[:2 * 65536]


# --------------------------------------------------------------- request bodies


@pytest.mark.parametrize("coding", [*CODINGS, "x-gzip", "identity"])
async def test_compressed_request_bodies_accepted(on: httpx.AsyncClient, coding: str) -> None:
    data = orjson.dumps(BIG)
    sent = data if coding == "identity" else encode("gzip" if coding == "x-gzip" else coding,
                                                      data)
    r = await on.post("/_test/echo", content=sent, headers={"Content-Encoding": coding,
                                                           "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    # the app sees the plain body and no trace of the coding
    assert r.json() == {"body": BIG, "encoding": None, "length": len(data)}


@pytest.mark.parametrize("coding", CODINGS)
async def test_compressed_request_streamed_in_chunks(on: httpx.AsyncClient,
                                                     coding: str) -> None:
    data = orjson.dumps({"copies": [BIG] * 20})
    sent = encode(coding, data)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(sent), 100):
            yield sent[i:i + 100]

    r = await on.post("/_test/echo", content=pieces(), headers={"Content-Encoding": coding})
    assert r.status_code == 200, r.text
    assert r.json()["length"] == len(data)


async def test_real_endpoint_accepts_compressed_body(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as server, \
            httpx.AsyncClient(base_url=server.bound[0]) as client:
        alice = await make_user(server, "alice")
        url = f"/_matrix/client/v3/user/{alice.user_id}/account_data/org.example.big"
        r = await client.put(url, content=encode("br", orjson.dumps(BIG)),
                             headers={**alice.headers, "Content-Encoding": "br"})
        assert r.status_code == 200, r.text
        r = await client.get(url, headers=alice.headers)
        assert r.json() == BIG


@pytest.mark.parametrize(("encoding", "status", "errcode"), [
    ("compress", 415, "M_UNRECOGNIZED"),
    ("deflate", 415, "M_UNRECOGNIZED"),
    ("gzip, br", 415, "M_UNRECOGNIZED"),  # stacked codings are not supported
])
async def test_unknown_request_encoding(on: httpx.AsyncClient, encoding: str, status: int,
                                        errcode: str) -> None:
    r = await on.post("/_test/echo", content=b"{}", headers={"Content-Encoding": encoding})
    assert r.status_code == status and r.json()["errcode"] == errcode
    assert r.headers["accept-encoding"] == "gzip, br, zstd"
    assert r.headers["access-control-allow-origin"] == "*"  # browsers can read it
    await still_serving(on)


@pytest.mark.parametrize("make_body", [
    lambda c: b"this is not compressed at all",
    lambda c: encode(c, orjson.dumps(BIG))[:-20],  # truncated
], ids=["garbage", "truncated"])
@pytest.mark.parametrize("coding", CODINGS)
async def test_corrupt_request_body(on: httpx.AsyncClient, coding: str,
                                    make_body: Callable[[str], bytes]) -> None:
    r = await on.post("/_test/echo", content=make_body(coding),
                      headers={"Content-Encoding": coding})
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == "M_UNKNOWN" and coding in r.json()["error"]


@pytest.mark.parametrize("coding", CODINGS)
async def test_bomb_refused_without_exhausting_memory(on: httpx.AsyncClient,
                                                      coding: str) -> None:
    payload = bomb(coding, 64 * LIMIT)  # 64 MiB of zeros
    assert len(payload) < LIMIT  # it passes the size check on what is sent
    tracemalloc.start()
    try:
        r = await on.post("/_test/echo", content=payload, headers={"Content-Encoding": coding})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413, r.text
    assert r.json()["errcode"] == "M_TOO_LARGE"
    await still_serving(on)
    # the decoded body up to the limit, plus one decoding step (up to 2 MiB for zstd)
    assert peak < 4 * LIMIT, f"peak {peak} bytes for a {LIMIT} byte limit"


async def test_decoded_size_limit_is_exact(on: httpx.AsyncClient) -> None:
    at_limit = b"[" + b" " * (LIMIT - 2) + b"]"
    r = await on.post("/_test/echo", content=gzip.compress(at_limit),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"  # decoded, parsed
    r = await on.post("/_test/echo", content=gzip.compress(at_limit + b" "),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"


async def test_compressed_body_over_limit_refused_early(on: httpx.AsyncClient) -> None:
    r = await on.post("/_test/echo", content=b"x" * (LIMIT + 1),
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    await still_serving(on)


async def test_slow_compressed_body_times_out(tmp_path: Path) -> None:
    config = make_config(tmp_path, client_receive_timeout=1)
    async with running_server(config, app_hooks=[_routes]) as server:
        host, port = server.bound[0].removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /_test/echo HTTP/1.1\r\nHost: test\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: 100\r\n\r\n" + gzip.compress(b"{}")[:5])
            reply = b""
            with trio.fail_after(10):
                while b"M_UNKNOWN" not in reply:
                    data = await stream.receive_some()
                    if not data:
                        break
                    reply += data
        assert reply.startswith(b"HTTP/1.1 408"), reply
