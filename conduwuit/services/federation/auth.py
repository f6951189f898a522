"""The ``X-Matrix`` Authorization scheme (spec, "Request Authentication").

A request is signed by wrapping method, target (path and query, as sent), origin,
destination and the JSON body in an object and signing it with the origin's server
key. The signature travels in ``Authorization: X-Matrix origin=...,destination=...,
key=...,sig=...``. :class:`RequestVerifier` checks inbound requests: the header
parses (RFC 9110 auth-params: names case-insensitive, values quoted or bare tokens,
colons allowed unquoted for old senders), the destination is us, the origin is not
forbidden, its key is known (fetched if not) and valid now, and the signature matches.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import is_valid_server_name
from conduwuit.protocol.signing import SignatureError, SigningKey, key_id, sign_json, verify_json


def request_json(method: str, uri: str, origin: str, destination: str,
                 content: Any = None) -> dict[str, Any]:
    """The object whose signature authenticates a request (step 1 of the spec)."""
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin,
                           "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def authorization_header(origin: str, destination: str, key: SigningKey, method: str,
                         uri: str, content: Any = None) -> str:
    """``X-Matrix origin="..",destination="..",key="..",sig=".."`` for one request."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, key)
    kid = key_id(key)
    sig = signed["signatures"][origin][kid]
    return (f'X-Matrix origin="{_quote(origin)}",destination="{_quote(destination)}",'
            f'key="{_quote(kid)}",sig="{_quote(sig)}"')


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@attrs.frozen
class XMatrix:
    origin: str
    key: str
    sig: str
    destination: str | None


_SEPARATORS = " \t,"


def parse_x_matrix(header: str) -> XMatrix:
    """Parse an ``X-Matrix`` Authorization header; ValueError saying what is wrong."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise ValueError("the Authorization scheme is not X-Matrix")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in _SEPARATORS:
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise ValueError(f"parameter without a value: {rest[i:]!r}")
        name = rest[i:eq].strip().lower()
        if not name or any(c in name for c in ' \t,"'):
            raise ValueError(f"malformed parameter name {rest[i:eq]!r}")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            value, i = _quoted(rest, i + 1)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            value, i = rest[i:end].strip(), end
            if not value or any(c in value for c in ' \t"\\'):
                raise ValueError(f"malformed value for {name!r}")
        params.setdefault(name, value)
    for required in ("origin", "key", "sig"):
        if not params.get(required):
            raise ValueError(f"the X-Matrix header has no {required}")
    return XMatrix(params["origin"], params["key"], params["sig"], params.get("destination"))


def _quoted(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ValueError("unterminated quoted value")


# (server, key id) -> public key (unpadded base64) valid now for requests, or MatrixError.
KeyLookup = Callable[[str, str], Awaitable[str]]


def unauthorized(error: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", error)


@attrs.define
class RequestVerifier:
    server_name: str
    verify_key: KeyLookup
    is_forbidden: Callable[[str], bool]

    async def verify(self, method: str, uri: str, header: str | None, content: Any) -> str:
        """The authenticated origin of a request, or the spec's 401 / 403."""
        if header is None:
            raise unauthorized("Missing X-Matrix Authorization header")
        try:
            auth = parse_x_matrix(header)
        except ValueError as exc:
            raise unauthorized(f"Invalid X-Matrix Authorization header: {exc}") from None
        if not is_valid_server_name(auth.origin):
            raise unauthorized(f"Invalid origin server name {auth.origin!r}")
        if auth.destination is not None and auth.destination != self.server_name:
            raise unauthorized(
                f"This request is for {auth.destination}, not for this server ({self.server_name})"
            )
        if self.is_forbidden(auth.origin):
            raise MatrixError(403, "M_FORBIDDEN", "Federation with this server is not allowed")
        public_key = await self.verify_key(auth.origin, auth.key)
        signed = request_json(method, uri, auth.origin, auth.destination or self.server_name,
                              content)
        signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
        try:
            verify_json(signed, auth.origin, auth.key, public_key)
        except SignatureError as exc:
            raise unauthorized(f"Invalid request signature: {exc}") from None
        return auth.origin


_KEY_ID = re.compile(r"ed25519:[A-Za-z0-9_+/=.-]+")


def plausible_key_id(kid: str) -> bool:
    return bool(_KEY_ID.fullmatch(kid))
