"""HTTP compression as ASGI middleware: compressed responses, decoded request bodies.

Responses are compressed only with the encodings the operator enabled
(``gzip_compression``, ``brotli_compression``, ``zstd_compression``, all off by
default because compression over TLS can leak secrets: BREACH), negotiated with
``Accept-Encoding``, and only where it pays: JSON and text of at least
:data:`MIN_SIZE` bytes, never media (already compressed, and streamed). A body
that arrives whole within :data:`BUFFER_LIMIT` is sent with its new
``Content-Length``; a longer streamed body is compressed chunk by chunk.

Request bodies sent with ``Content-Encoding: gzip``, ``br`` or ``zstd`` are
decoded before the app sees them, whatever the options say (decoding leaks
nothing). Decoding stops as soon as the output passes ``max_request_size``, so a
"zip bomb" costs at most that much memory and gets 413 ``M_TOO_LARGE``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import brotli  # type: ignore[import-untyped]
import orjson
import trio
import zstandard

from conduwuit.config import Config
from conduwuit.errors import MatrixError, too_large

from .app import CORS_HEADERS, SECURITY_HEADERS
from .middleware import ASGIApp, Message, Receive, Scope, Send

# Server preference among encodings the client accepts equally.
PREFERENCE = ("zstd", "br", "gzip")
# Smaller bodies are sent as they are: the saving would not pay for the headers and CPU.
MIN_SIZE = 1024
# A body that arrives whole within this many bytes is compressed in one go, with a
# Content-Length; past it the response is compressed as it streams (chunked).
BUFFER_LIMIT = 256 * 1024
# Compressing or decoding at least this much at once runs in a worker thread.
THREAD_MIN = 128 * 1024
# Media is already compressed (images, video) and streamed from disk.
UNCOMPRESSED_PREFIXES = ("/_matrix/media/", "/_matrix/client/v1/media/",
                         "/_matrix/federation/v1/media/")
COMPRESSIBLE_TYPES = frozenset({"application/json", "application/javascript",
                                "application/xml", "image/svg+xml"})
# Levels for dynamic content: most of the gain of the top levels at a fraction of
# their CPU (brotli's default, 11, is meant for static files compressed once).
GZIP_LEVEL = 6
BROTLI_QUALITY = 4
ZSTD_LEVEL = 3
# RFC 9659: HTTP zstd decoders need not accept windows above 8 MiB; larger ones are
# refused rather than allocated.
ZSTD_MAX_WINDOW = 8 * 1024 * 1024
# zstd's decompressobj has no output limit, and zstd expands at most ~32,800x, so it
# is fed this many compressed bytes at a time: at most ~2 MiB of output per step.
ZSTD_STEP = 64
# brotli is asked for at most this much output at a time (it may give up to twice that).
DECODE_STEP = 256 * 1024


# --- negotiation ----------------------------------------------------------------------


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Codings and their q-values (RFC 9110 §12.5.3); malformed entries are ignored."""
    prefs: dict[str, float] = {}
    for item in value.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = -1.0
        if not 0.0 <= q <= 1.0:  # also false for NaN
            continue
        prefs.setdefault("gzip" if name == "x-gzip" else name, q)
    return prefs


def negotiate(header: str | None, enabled: Iterable[str]) -> str | None:
    """The enabled coding the client prefers, or None for the body as it is.

    A coding not named gets the q of ``*``; no header means no compression (old
    clients send none). Identity wins only when the client rates it higher.
    """
    if header is None:
        return None
    prefs = parse_accept_encoding(header)
    star = prefs.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in PREFERENCE:
        if coding in enabled:
            q = prefs.get(coding, star)
            if q > best_q:
                best, best_q = coding, q
    if best is not None and prefs.get("identity", 0.0) > best_q:
        return None
    return best


# --- encoders and decoders ------------------------------------------------------------


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def finish(self) -> bytes: ...


class _GzipEncoder:
    def __init__(self) -> None:
        self._c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class _BrotliEncoder:
    def __init__(self) -> None:
        self._c = brotli.Compressor(quality=BROTLI_QUALITY)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.process(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush())

    def finish(self) -> bytes:
        return bytes(self._c.finish())


class _ZstdEncoder:
    def __init__(self) -> None:
        self._c = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


ENCODERS: dict[str, Callable[[], Encoder]] = {
    "gzip": _GzipEncoder, "br": _BrotliEncoder, "zstd": _ZstdEncoder,
}


def compress(coding: str, data: bytes) -> bytes:
    """One whole body in one coding."""
    if coding == "zstd":  # the one-shot API also records the size in the frame header
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    encoder = ENCODERS[coding]()
    return encoder.compress(data) + encoder.finish()


class DecodeError(Exception):
    """The request body is not valid in its declared coding."""


class Decoder(Protocol):
    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        """Decode ``data`` onto ``out``; may stop early (input left unprocessed) once
        ``len(out) > limit``, which the caller treats as "too large"."""
        ...

    def finished(self) -> bool: ...


class _GzipDecoder:
    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        while data and len(out) <= limit:
            if self._d.eof:  # a further gzip member (RFC 1952 allows several)
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                # max_length is at least 1 here (0 would mean unlimited)
                out += self._d.decompress(data, limit + 1 - len(out))
            except zlib.error as exc:
                raise DecodeError(f"invalid gzip data ({exc})") from None
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def finished(self) -> bool:
        return self._d.eof


class _BrotliDecoder:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        # brotli may overshoot its output limit up to twice, so it is asked for small
        # steps and drained with empty input, as its documentation requires.
        try:
            out += self._d.process(data, output_buffer_limit=DECODE_STEP)
            while len(out) <= limit:
                more = self._d.process(b"", output_buffer_limit=DECODE_STEP)
                if not more:
                    break
                out += more
        except brotli.error as exc:
            raise DecodeError(f"invalid brotli data ({exc})") from None

    def finished(self) -> bool:
        return bool(self._d.is_finished())


class _ZstdDecoder:
    def __init__(self) -> None:
        self._dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._d = self._dctx.decompressobj()

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        pos = 0
        try:
            while pos < len(data) and len(out) <= limit:
                piece = data[pos:pos + ZSTD_STEP]
                pos += ZSTD_STEP
                while piece:
                    if self._d.eof:  # a further frame
                        self._d = self._dctx.decompressobj()
                    out += self._d.decompress(piece)
                    piece = self._d.unused_data if self._d.eof else b""
        except zstandard.ZstdError as exc:
            raise DecodeError(f"invalid zstd data ({exc})") from None

    def finished(self) -> bool:
        return self._d.eof


DECODERS: dict[str, Callable[[], Decoder]] = {
    "gzip": _GzipDecoder, "x-gzip": _GzipDecoder, "br": _BrotliDecoder, "zstd": _ZstdDecoder,
}


# --- the middleware -------------------------------------------------------------------


class Compression:
    """Decode compressed request bodies; compress responses as negotiated."""

    def __init__(self, app: ASGIApp, *, encodings: Sequence[str], max_request_size: int,
                 receive_timeout: float) -> None:
        self.app = app
        self.encodings = frozenset(encodings)
        self.max_request_size = max_request_size
        self.receive_timeout = receive_timeout

    @classmethod
    def from_config(cls, app: ASGIApp, config: Config) -> Compression:
        enabled = [coding for coding, on in (("zstd", config.zstd_compression),
                                             ("br", config.brotli_compression),
                                             ("gzip", config.gzip_compression)) if on]
        return cls(app, encodings=enabled, max_request_size=config.max_request_size,
                   receive_timeout=config.client_receive_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_encoding = _header(scope["headers"], b"content-encoding")
        if content_encoding is not None:
            decoded = await self._decode_request(scope, receive, send, content_encoding)
            if decoded is None:
                return  # answered with an error, or the client went away
            scope, receive = decoded
        if self.encodings and scope["method"] != "HEAD" \
                and not scope["path"].startswith(UNCOMPRESSED_PREFIXES):
            coding = negotiate(_header(scope["headers"], b"accept-encoding"), self.encodings)
            send = _CompressingSend(send, coding)
        await self.app(scope, receive, send)

    async def _decode_request(self, scope: Scope, receive: Receive, send: Send,
                              content_encoding: str) -> tuple[Scope, Receive] | None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in DECODERS):
            await _send_error(send, MatrixError(
                415, "M_UNRECOGNIZED",
                f"Unsupported Content-Encoding {content_encoding!r}: use gzip, br or zstd"),
                [(b"accept-encoding", b"gzip, br, zstd")])
            return None
        if not codings:  # identity: nothing to undo
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-encoding"]
            return {**scope, "headers": headers}, receive
        headers = [(k, v) for k, v in scope["headers"]
                   if k.lower() not in (b"content-encoding", b"content-length",
                                        b"transfer-encoding")]
        limit = self.max_request_size
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _send_error(send, too_large(
                f"Request body is larger than the limit of {limit} bytes"))
            return None
        decoder = DECODERS[codings[0]]()
        body = bytearray()
        received = 0
        more = True
        error: MatrixError | None = None
        with trio.move_on_after(self.receive_timeout) as timer:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                if message["type"] != "http.request":
                    continue
                chunk = bytes(message.get("body", b""))
                more = bool(message.get("more_body", False))
                received += len(chunk)
                try:
                    if len(chunk) >= THREAD_MIN:
                        await trio.to_thread.run_sync(decoder.feed, chunk, body, limit)
                    else:
                        decoder.feed(chunk, body, limit)
                except DecodeError as exc:
                    error = MatrixError(400, "M_UNKNOWN", f"Request body: {exc}")
                    break
                if len(body) > limit or received > limit:
                    error = too_large(f"Request body is larger than the limit of {limit} "
                                      f"bytes once decoded")
                    break
            else:
                if received and not decoder.finished():
                    error = MatrixError(400, "M_UNKNOWN",
                                        f"Request body: truncated {codings[0]} data")
        if timer.cancelled_caught:
            error = MatrixError(408, "M_UNKNOWN", "Timed out waiting for the request body")
        if error is not None:
            await _send_error(send, error)
            return None
        headers.append((b"content-length", str(len(body)).encode()))
        return {**scope, "headers": headers}, _Replay(bytes(body), receive)


class _Replay:
    """``receive`` for the app: the decoded body once, then the client's own events."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


class _CompressingSend:
    """``send`` for the app: holds the response start until it knows the body's size.

    ``coding`` None still marks compressible responses ``Vary: Accept-Encoding``,
    so that caches never hand a compressed body to a client that did not ask.
    """

    def __init__(self, send: Send, coding: str | None) -> None:
        self._send = send
        self._coding = coding
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._encoder: Encoder | None = None
        self._passthrough = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if self._passthrough:
            await self._send(message)
        elif kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body" and self._encoder is not None:
            await self._stream(message)
        elif kind == "http.response.body":
            await self._buffer(message)
        else:  # anything else (trailers, path sends): stop holding back, keep the order
            if self._start is not None and self._encoder is None:
                await self._flush_uncompressed(more_body=True)
            await self._send(message)

    async def _on_start(self, message: Message) -> None:
        headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
        if not _compressible(message["status"], headers):
            self._passthrough = True
            await self._send(message)
            return
        headers = _add_vary(headers)
        length = _header(headers, b"content-length")
        if self._coding is None or (length is not None and length.strip().isdigit()
                                    and int(length) < MIN_SIZE):
            self._passthrough = True
            await self._send({**message, "headers": headers})
            return
        self._start = {**message, "headers": headers}

    async def _buffer(self, message: Message) -> None:
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        self._chunks.append(chunk)
        self._size += len(chunk)
        if not more:
            body = b"".join(self._chunks)
            self._chunks = []
            if len(body) < MIN_SIZE:
                await self._flush_uncompressed(more_body=False, body=body)
                return
            assert self._coding is not None
            coded = await _run(compress, self._coding, body)
            await self._send(self._start_message(len(coded)))
            await self._send({"type": "http.response.body", "body": coded, "more_body": False})
        elif self._size >= BUFFER_LIMIT:
            # A long streamed body: compress as it comes instead of holding it.
            assert self._coding is not None
            self._encoder = ENCODERS[self._coding]()
            body = b"".join(self._chunks)
            self._chunks = []
            await self._send(self._start_message(None))
            await self._stream({"type": "http.response.body", "body": body, "more_body": True})

    async def _stream(self, message: Message) -> None:
        assert self._encoder is not None
        encoder = self._encoder
        chunk = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))

        def step() -> bytes:
            out = encoder.compress(chunk)
            # Flushing each chunk keeps a slow stream flowing at a tiny cost in ratio.
            return out + (encoder.flush() if more else encoder.finish())

        coded = await trio.to_thread.run_sync(step) if len(chunk) >= THREAD_MIN else step()
        await self._send({"type": "http.response.body", "body": coded, "more_body": more})

    async def _flush_uncompressed(self, *, more_body: bool, body: bytes | None = None) -> None:
        assert self._start is not None
        self._passthrough = True
        await self._send(self._start)
        if body is None:
            body = b"".join(self._chunks)
            self._chunks = []
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})

    def _start_message(self, length: int | None) -> Message:
        assert self._start is not None and self._coding is not None
        headers = [(k, v) for k, v in self._start["headers"]
                   if k.lower() != b"content-length"]
        headers.append((b"content-encoding", self._coding.encode()))
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        # The compressed bytes are another representation: a strong validator must change.
        headers = [(k, b"W/" + v if k.lower() == b"etag" and not v.startswith(b"W/") else v)
                   for k, v in headers]
        return {**self._start, "headers": headers}


async def _run(fn: Callable[[str, bytes], bytes], coding: str, data: bytes) -> bytes:
    if len(data) >= THREAD_MIN:
        return await trio.to_thread.run_sync(fn, coding, data)
    return fn(coding, data)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """One header's value; repeated fields joined with commas as RFC 9110 allows."""
    values = [v.decode("latin-1") for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def _compressible(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    if status < 200 or status in (204, 206, 304):
        return False
    if _header(headers, b"content-encoding") is not None:
        return False
    cache_control = _header(headers, b"cache-control")
    if cache_control is not None and "no-transform" in cache_control.lower():
        return False
    content_type = _header(headers, b"content-type")
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (media_type in COMPRESSIBLE_TYPES or media_type.startswith("text/")
            or media_type.endswith(("+json", "+xml")))


def _add_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    vary = _header(headers, b"vary")
    if vary is None:
        return [*headers, (b"vary", b"Accept-Encoding")]
    names = {v.strip().lower() for v in vary.split(",")}
    if "*" in names or "accept-encoding" in names:
        return headers
    return [(k, v) for k, v in headers if k.lower() != b"vary"] + [
        (b"vary", f"{vary}, Accept-Encoding".encode("latin-1"))]


async def _send_error(send: Send, error: MatrixError,
                      extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer without the app, with the headers the app would have added."""
    body = orjson.dumps(error.to_json())
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *extra]
    headers += [(k.lower().encode(), v.encode())
                for k, v in {**CORS_HEADERS, **SECURITY_HEADERS}.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
