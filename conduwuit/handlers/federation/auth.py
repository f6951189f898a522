"""Inbound federation: the switch and the authentication every handler goes through.

:func:`federation_blueprint` makes a blueprint whose routes answer 403 ``M_FORBIDDEN``
while ``allow_federation`` is off (the one answer for every federation and key
endpoint, ``/_matrix/federation/v1/version`` included). :func:`origin` is the
dependency each authenticated handler awaits first: it checks the ``X-Matrix``
signature over the method, the target exactly as sent, and the JSON body, and
returns the authenticated server name; a request that fails never reaches the rest
of the handler.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart import Blueprint, g, request

from conduwuit.errors import MatrixError, not_json
from conduwuit.handlers.context import services


def federation_disabled() -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", "Federation is disabled on this server")


async def _require_federation() -> None:
    if not services().config.allow_federation:
        raise federation_disabled()


def federation_blueprint(name: str, import_name: str) -> Blueprint:
    """A blueprint for federation (or key) endpoints: off when federation is."""
    bp = Blueprint(name, import_name)
    bp.before_request(_require_federation)
    return bp


def request_uri() -> str:
    """The request target as the sender signed it: the raw path and query, undecoded."""
    scope = request.scope
    raw = scope.get("raw_path") or request.path.encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    query = scope.get("query_string") or b""
    return path + ("?" + query.decode("latin-1") if query else "")


async def request_content() -> Any:
    raw = await request.get_data(cache=True)
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise not_json(f"Request body is not valid JSON: {exc.msg}") from None


async def origin() -> str:
    """The server that signed this request, or the spec's 401 (403 for a forbidden one)."""
    if not services().config.allow_federation:
        raise federation_disabled()
    content = await request_content()
    server = await services().federation.verifier.verify(
        request.method, request_uri(), request.headers.get("Authorization"), content
    )
    g.origin = server
    return server
