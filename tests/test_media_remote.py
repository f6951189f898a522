"""The federation media fetcher: multipart parsing, redirects, legacy fallback, errors.

The fetcher runs here against a stand-in for the federation client (canned answers
per path) and an httpx mock transport for ``Location`` redirects; the real exchange
with a real Synapse is ``tests/test_federation_synapse.py::test_remote_media_from_synapse``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import httpx
import pytest

from conduwuit.errors import MatrixError
from conduwuit.services.federation.client import (
    FederationClient,
    FederationError,
    RemoteError,
    ResponseTooLarge,
    disposition_filename,
)
from conduwuit.services.federation.discovery import DiscoveryError
from conduwuit.services.media.federation_fetcher import (
    FederationMediaFetcher,
    MultipartError,
    parse_multipart,
)
from conduwuit.services.media.remote import RemoteFile

BOUNDARY = "6067d4698f8d40a0a794ea7d7ff8d7ee"
MULTIPART = f"multipart/mixed; boundary={BOUNDARY}"
AUTH_PATH = "/_matrix/federation/v1/media/download/abc"
LEGACY_PATH = "/_matrix/media/v3/download/remote.example/abc"


def multipart(*parts: tuple[dict[str, str], bytes]) -> bytes:
    out = b"preamble to ignore\r\n"
    for headers, body in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        out += b"\r\n" + body + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


JSON_PART = ({"Content-Type": "application/json"}, b"{}")
# Binary content that looks like framing: CRLF, dashes, a near-miss boundary.
AWKWARD = b"\x00\r\n--" + BOUNDARY[:-1].encode() + b"\r\n\r\n\xff" * 100


def test_parse_multipart() -> None:
    body = multipart(JSON_PART, ({"Content-Type": "image/png",
                                  "Content-Disposition": "inline; filename=\"a b.png\""},
                                 AWKWARD))
    first, second = parse_multipart(MULTIPART, body)
    assert first.headers.get_content_type() == "application/json" and first.body == b"{}"
    assert second.body == AWKWARD
    assert second.headers["Content-Type"] == "image/png"
    # A part without headers, and a quoted boundary parameter.
    raw = f"--{BOUNDARY}\r\n\r\nplain\r\n--{BOUNDARY}--".encode()
    [part] = parse_multipart(f'multipart/mixed; boundary="{BOUNDARY}"', raw)
    assert part.body == b"plain" and not part.headers.keys()


@pytest.mark.parametrize(("content_type", "body"), [
    (None, b""),
    ("application/json", b"{}"),
    ("multipart/mixed", b"--x\r\n\r\nbody\r\n--x--"),
    (MULTIPART, f"--{BOUNDARY}\r\n\r\nno end".encode()),
    (MULTIPART, f"--{BOUNDARY}\r\nContent-Type: a/b".encode()),
])
def test_parse_multipart_refuses_nonsense(content_type: str | None, body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse_multipart(content_type, body)


def test_disposition_filename() -> None:
    assert disposition_filename('inline; filename="cat.png"') == "cat.png"
    assert disposition_filename("attachment; filename*=utf-8''%C3%BCber.txt") == "über.txt"
    assert disposition_filename("inline") is None
    assert disposition_filename(None) is None


Answer = tuple[bytes, str | None, str | None] | Exception


class FakeDiscovery:
    """Hosts resolve to a public address, except ``denied.example`` (on the denylist)."""

    async def allowed_addresses(self, host: str) -> tuple[str, ...]:
        if host == "denied.example":
            raise DiscoveryError("denied.example resolves only to denied addresses")
        return ("93.184.216.34",)


class FakeClient:
    """Canned answers for ``request_bytes`` by path; records what was asked."""

    discovery = FakeDiscovery()

    def __init__(self, answers: dict[str, Answer], http: httpx.AsyncClient | None = None) -> None:
        self.answers = answers
        self.calls: list[tuple[str, bool, dict[str, Any] | None, int]] = []
        self.http = http or httpx.AsyncClient()

    async def request_bytes(self, method: str, destination: str, path: str, *,
                            query: Mapping[str, str | int] | None = None, signed: bool = True,
                            timeout: float | None = None,
                            max_bytes: int = 0) -> tuple[bytes, str | None, str | None]:
        assert method == "GET" and destination == "remote.example"
        self.calls.append((path, signed, dict(query) if query else None, max_bytes))
        answer = self.answers.get(path, RemoteError(destination, 404, None))
        if isinstance(answer, Exception):
            raise answer
        return answer


def fetcher(client: FakeClient, max_bytes: int = 1000) -> FederationMediaFetcher:
    return FederationMediaFetcher(cast(FederationClient, client), max_bytes)


async def read(remote: RemoteFile) -> bytes:
    return b"".join([chunk async for chunk in remote.chunks])


async def test_authenticated_download() -> None:
    body = multipart(JSON_PART, ({"Content-Type": "image/png",
                                  "Content-Disposition": "inline; filename=x.png"}, AWKWARD))
    client = FakeClient({AUTH_PATH: (body, MULTIPART, None)})
    remote = await fetcher(client).download("remote.example", "abc", timeout_s=1)
    assert (remote.content_type, remote.filename) == ("image/png", "x.png")
    assert await read(remote) == AWKWARD
    [(path, signed, query, _)] = client.calls
    assert (path, signed, query) == (AUTH_PATH, True, None)


async def test_location_part_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/first":
            return httpx.Response(302, headers={"Location": "/file"})
        assert request.url.path == "/file"
        return httpx.Response(200, content=b"from the CDN", headers={
            "Content-Type": "text/plain", "Content-Disposition": "inline; filename=c.txt"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    body = multipart(JSON_PART, ({"Location": "https://cdn.example/first"}, b""))
    client = FakeClient({AUTH_PATH: (body, MULTIPART, None)}, http)
    remote = await fetcher(client).download("remote.example", "abc", timeout_s=1)
    assert (remote.content_type, remote.filename) == ("text/plain", "c.txt")
    assert await read(remote) == b"from the CDN"
    # ...and capped like everything else.
    with pytest.raises(MatrixError) as caught:
        await fetcher(client, max_bytes=5).download("remote.example", "abc", timeout_s=1)
    assert (caught.value.status, caught.value.errcode) == (413, "M_TOO_LARGE")


async def test_location_part_to_a_denied_host_is_refused() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, content=b"internal")

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    body = multipart(JSON_PART, ({"Location": "http://denied.example/secret"}, b""))
    client = FakeClient({AUTH_PATH: (body, MULTIPART, None)}, http)
    with pytest.raises(MatrixError) as caught:
        await fetcher(client).download("remote.example", "abc", timeout_s=1)
    assert caught.value.status == 404 and asked == []


@pytest.mark.parametrize("refusal", [
    RemoteError("remote.example", 404, {"errcode": "M_UNRECOGNIZED", "error": "?"}),
    RemoteError("remote.example", 400, {"errcode": "M_UNRECOGNIZED", "error": "?"}),
    RemoteError("remote.example", 404, None),  # a bare 404 page: an old server
])
async def test_legacy_fallback(refusal: RemoteError) -> None:
    client = FakeClient({AUTH_PATH: refusal,
                         LEGACY_PATH: (b"old bytes", "text/plain", "old.txt")})
    remote = await fetcher(client).download("remote.example", "abc", timeout_s=1)
    assert (remote.content_type, remote.filename) == ("text/plain", "old.txt")
    assert await read(remote) == b"old bytes"
    assert [c[:3] for c in client.calls] == [
        (AUTH_PATH, True, None), (LEGACY_PATH, False, {"allow_remote": "false"})]
    assert client.calls[1][3] == 1000  # the legacy answer is capped at max_request_size


@pytest.mark.parametrize(("answer", "status", "errcode"), [
    (RemoteError("remote.example", 404, {"errcode": "M_NOT_FOUND"}), 404, "M_NOT_FOUND"),
    (RemoteError("remote.example", 500, {"errcode": "M_UNKNOWN"}), 404, "M_NOT_FOUND"),
    (FederationError("remote.example", "unreachable"), 404, "M_NOT_FOUND"),
    (ResponseTooLarge("remote.example", 1000), 413, "M_TOO_LARGE"),
    ((b"not multipart", "application/json", None), 404, "M_NOT_FOUND"),
    ((multipart(JSON_PART), MULTIPART, None), 404, "M_NOT_FOUND"),
])
async def test_errors(answer: Answer, status: int, errcode: str) -> None:
    client = FakeClient({AUTH_PATH: answer})
    with pytest.raises(MatrixError) as caught:
        await fetcher(client).download("remote.example", "abc", timeout_s=1)
    assert (caught.value.status, caught.value.errcode) == (status, errcode)
    assert [c[0] for c in client.calls] == [AUTH_PATH]  # no legacy retry for real errors


async def test_file_part_over_the_cap() -> None:
    body = multipart(JSON_PART, ({"Content-Type": "a/b"}, b"x" * 1001))
    client = FakeClient({AUTH_PATH: (body, MULTIPART, None)})
    with pytest.raises(MatrixError) as caught:
        await fetcher(client).download("remote.example", "abc", timeout_s=1)
    assert caught.value.status == 413
