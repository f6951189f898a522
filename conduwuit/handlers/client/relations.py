"""Relations and threads: ``/relations`` pagination and the ``/threads`` list (v1)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.rooms.relations import RECURSION_DEPTH

from .rooms import _int_arg, _require_member, _serve, _token_arg

bp = Blueprint("client_relations", __name__)

RELATIONS_VERSIONS = ("v1", "unstable")
DEFAULT_LIMIT = 30
MAX_LIMIT = 100


@client_route(bp, "GET", "/rooms/<room_id>/relations/<event_id>", RELATIONS_VERSIONS)
async def relations(room_id: str, event_id: str) -> Response:
    return await _relations(room_id, event_id, None, None)


@client_route(bp, "GET", "/rooms/<room_id>/relations/<event_id>/<rel_type>",
              RELATIONS_VERSIONS)
async def relations_of_type(room_id: str, event_id: str, rel_type: str) -> Response:
    return await _relations(room_id, event_id, rel_type, None)


@client_route(bp, "GET", "/rooms/<room_id>/relations/<event_id>/<rel_type>/<event_type>",
              RELATIONS_VERSIONS)
async def relations_of_type_and_event_type(room_id: str, event_id: str, rel_type: str,
                                           event_type: str) -> Response:
    return await _relations(room_id, event_id, rel_type, event_type)


async def _relations(room_id: str, event_id: str, rel_type: str | None,
                     event_type: str | None) -> Response:
    who = await requester(allow_guest=True)
    _require_member(who, room_id)
    direction = request.args.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    start, end = _token_arg("from"), _token_arg("to")
    recurse = _bool_arg("recurse")
    rooms = services().rooms
    parent = rooms.events.get(event_id)
    if parent is None or parent.room_id != room_id:
        raise MatrixError(404, "M_NOT_FOUND", "Event not found")
    depth = RECURSION_DEPTH if recurse else 1
    chunk: list[dict[str, Any]] = []
    last: int | None = None
    more = False
    for related in rooms.relations.relating(room_id, event_id, rel_type=rel_type,
                                            event_type=event_type, start=start, end=end,
                                            forward=direction == "f", depth=depth):
        if len(chunk) >= limit:
            more = True
            break
        last = related.count
        if rooms.visibility.can_see(who.user_id, related.event, related.count):
            chunk.append(_serve(who, related.event))
    body: dict[str, Any] = {"chunk": chunk}
    if more and last is not None:
        body["next_batch"] = str(last)
    if start is not None:
        body["prev_batch"] = str(start)
    if recurse is not None:
        body["recursion_depth"] = depth
    return json_response(body)


@client_route(bp, "GET", "/rooms/<room_id>/threads", ("v1",))
@client_route(bp, "GET", "/org.matrix.msc3856/rooms/<room_id>/threads", ("unstable",))
async def threads(room_id: str) -> Response:
    who = await requester()
    _require_member(who, room_id)
    include = request.args.get("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    start = _token_arg("from")
    rooms = services().rooms
    chunk: list[dict[str, Any]] = []
    last: int | None = None
    more = False
    for activity, root in rooms.relations.threads(room_id, who.user_id, before=start,
                                                  participated_only=include == "participated"):
        if len(chunk) >= limit:
            more = True
            break
        last = activity
        if rooms.visibility.can_see(who.user_id, root):
            chunk.append(_serve(who, root))
    body: dict[str, Any] = {"chunk": chunk}
    if more and last is not None:
        body["next_batch"] = str(last)
    return json_response(body)


def _bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be 'true' or 'false'")
    return raw == "true"
