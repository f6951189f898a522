"""``GET /sync`` and the deprecated ``/events`` and ``/initialSync``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.sync import SyncRequest, make_token, parse_token

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
    """The deprecated event stream: timeline events of the user's rooms since ``from``."""
    who = await requester(allow_guest=True)
    svc = services()
    since = parse_token(request.args.get("from"))
    if since is None:
        token = make_token(svc.store.current_count())
        return json_response({"start": token, "end": token, "chunk": []})
    try:
        timeout = max(0, min(MAX_TIMEOUT_MS, int(request.args.get("timeout", "30000"))))
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer") from None
    body = await svc.sync.sync(who, SyncRequest(since, timeout, False, {}))
    chunk = [{**event, "room_id": room_id}
             for room_id, room in body["rooms"]["join"].items()
             for event in room["timeline"]["events"]]
    return json_response({"start": make_token(since), "end": body["next_batch"],
                          "chunk": chunk})


@client_route(bp, "GET", "/initialSync")
async def legacy_initial_sync() -> Response:
    """The deprecated snapshot of all rooms, built from an initial /sync."""
    who = await requester(allow_guest=True)
    svc = services()
    try:
        limit = max(1, min(100, int(request.args.get("limit", "10"))))
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
    archived = request.args.get("archived", "false") == "true"
    sync_filter = {"room": {"timeline": {"limit": limit}, "include_leave": archived}}
    body = await svc.sync.sync(who, SyncRequest(None, 0, False, sync_filter))
    rooms = []
    sections = (("join", "join"), ("invite", "invite"), *((("leave", "leave"),) if archived
                                                           else ()))
    for section, membership in sections:
        for room_id, room in body["rooms"][section].items():
            entry: dict[str, Any] = {"room_id": room_id, "membership": membership}
            if section == "invite":
                entry["invite"] = room["invite_state"]
            else:
                timeline = room["timeline"]
                entry["messages"] = {"chunk": [{**e, "room_id": room_id}
                                               for e in timeline["events"]],
                                     "start": timeline["prev_batch"],
                                     "end": body["next_batch"]}
                current = svc.rooms.state.events_of(svc.rooms.state.current(room_id))
                entry["state"] = [svc.rooms.serving.client(e, who.user_id, who.device_id)
                                  for e in current.values()]
                entry["account_data"] = room.get("account_data", {}).get("events", [])
                entry["visibility"] = ("public" if svc.rooms.directory.is_public(room_id)
                                       else "private")
            rooms.append(entry)
    return json_response({"end": body["next_batch"], "rooms": rooms,
                          "presence": body["presence"]["events"],
                          "account_data": body["account_data"]["events"]})
