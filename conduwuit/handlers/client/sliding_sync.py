"""``POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`` (MSC4186).

``pos`` and ``timeout`` come as query parameters (Synapse, Element X, matrix-js-sdk) or
in the body (the MSC's newest text); the query wins when both are given.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response

bp = Blueprint("client_sliding_sync", __name__)

MAX_TIMEOUT_MS = 5 * 60 * 1000
PRESENCE = ("online", "offline", "unavailable")


@bp.post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync")
async def sliding_sync() -> Response:
    who = await requester(allow_guest=True)
    svc = services()
    body = await json_body()
    pos = request.args.get("pos", body.get("pos"))
    timeout = _timeout(request.args.get("timeout", body.get("timeout", 0)))
    presence: Any = request.args.get("set_presence", body.get("set_presence", "online"))
    if presence not in PRESENCE:
        raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or "
                          "unavailable")
    svc.presence.on_sync(who.user_id, presence)
    return json_response(await svc.sliding_sync.handle(who, body, pos, timeout))


def _timeout(raw: Any) -> int:
    if isinstance(raw, bool):
        raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer") from None
    return max(0, min(MAX_TIMEOUT_MS, value))
