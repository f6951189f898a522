"""``GET /sync`` and the deprecated ``/events`` and ``/initialSync``."""

from __future__ import annotations

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.sync import SyncRequest, parse_token

bp = Blueprint("client_sync", __name__)

MAX_TIMEOUT_MS = 5 * 60 * 1000


@client_route(bp, "GET", "/sync")
async def sync() -> Response:
    who = await requester(allow_guest=True)
    svc = services()
    try:
        timeout = int(request.args.get("timeout", "0"))
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer") from None
    full_state = request.args.get("full_state", "false")
    if full_state not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "full_state must be true or false")
    presence = request.args.get("set_presence", "online")
    if presence not in ("online", "offline", "unavailable"):
        raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or "
                          "unavailable")
    svc.presence.on_sync(who.user_id, presence)
    sync_request = SyncRequest(
        since=parse_token(request.args.get("since")),
        timeout_ms=max(0, min(MAX_TIMEOUT_MS, timeout)),
        full_state=full_state == "true",
        filter=svc.sync.resolve_filter(who.user_id, request.args.get("filter")),
    )
    return json_response(await svc.sync.sync(who, sync_request))


@client_route(bp, "GET", "/events")
async def legacy_events() -> Response:
    await requester(allow_guest=True)
    raise MatrixError(404, "M_UNRECOGNIZED",
                      "The deprecated /events stream is not served here; use /sync")


@client_route(bp, "GET", "/initialSync")
async def legacy_initial_sync() -> Response:
    await requester(allow_guest=True)
    raise MatrixError(404, "M_UNRECOGNIZED",
                      "The deprecated /initialSync is not served here; use /sync")
