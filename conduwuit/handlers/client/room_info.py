"""Upgrades, summaries, space hierarchies, reports and mutual rooms."""

from __future__ import annotations

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import optional_requester, requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.protocol.ids import UserId
from conduwuit.services.rooms.hierarchy import HierarchyRequest

bp = Blueprint("client_room_info", __name__)

MUTUAL_ROOMS_PAGE = 100


@client_route(bp, "POST", "/rooms/<room_id>/upgrade")
async def upgrade(room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    new_room = await services().rooms.upgrade.upgrade(
        room_id, who.user_id, body.get("new_version"), body.get("additional_creators"))
    return json_response({"replacement_room": new_room})


# --- summaries and spaces -------------------------------------------------------------

@client_route(bp, "GET", "/room_summary/<room_id_or_alias>", ("v1",))
async def room_summary(room_id_or_alias: str) -> Response:
    who = await optional_requester()
    rooms = services().rooms
    room_id = _resolve(room_id_or_alias)
    return json_response(rooms.summaries.user_summary(
        room_id, who.user_id if who is not None else None,
        is_guest=who is not None and who.is_guest))


@client_route(bp, "GET", "/im.nheko.summary/rooms/<room_id_or_alias>/summary", ("unstable",))
async def room_summary_nheko(room_id_or_alias: str) -> Response:
    return await room_summary(room_id_or_alias)


@client_route(bp, "GET", "/im.nheko.summary/summary/<room_id_or_alias>", ("unstable",))
async def room_summary_nheko_short(room_id_or_alias: str) -> Response:
    return await room_summary(room_id_or_alias)


@client_route(bp, "GET", "/org.matrix.msc2946/rooms/<room_id>/hierarchy", ("unstable",))
@client_route(bp, "GET", "/rooms/<room_id>/hierarchy", ("v1",))
async def hierarchy(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    suggested = request.args.get("suggested_only", "false")
    if suggested not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "suggested_only must be true or false")
    body = services().rooms.hierarchy.hierarchy(HierarchyRequest(
        user_id=who.user_id, room_id=room_id, is_guest=who.is_guest,
        limit=_int_arg("limit"), max_depth=_int_arg("max_depth"),
        suggested_only=suggested == "true", since=request.args.get("from") or None))
    return json_response(body)


# --- reports ------------------------------------------------------------------------

@client_route(bp, "POST", "/rooms/<room_id>/report/<path:event_id>")
async def report_event(room_id: str, event_id: str) -> Response:
    who = await requester()
    await services().reports.report_event(who.user_id, room_id, event_id, await json_body())
    return json_response({})


@client_route(bp, "POST", "/org.matrix.msc4151/rooms/<room_id>/report", ("unstable",))
@client_route(bp, "POST", "/rooms/<room_id>/report", ("v3",))
async def report_room(room_id: str) -> Response:
    who = await requester()
    await services().reports.report_room(who.user_id, room_id, await json_body())
    return json_response({})


@client_route(bp, "POST", "/users/<user_id>/report", ("v3",))
async def report_user(user_id: str) -> Response:
    who = await requester()
    await services().reports.report_user(who.user_id, user_id, await json_body())
    return json_response({})


# --- mutual rooms (spec v1.19; conduwuit's MSC2666 path) ------------------------------

@client_route(bp, "GET", "/mutual_rooms", ("v1",))
async def mutual_rooms() -> Response:
    who = await requester()
    rooms = _mutual_rooms(who.user_id)
    offset = 0
    raw_from = request.args.get("from")
    if raw_from:
        if not raw_from.startswith("m") or not raw_from[1:].isdigit():
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid from token")
        offset = int(raw_from[1:])
    page = rooms[offset:offset + MUTUAL_ROOMS_PAGE]
    body: dict[str, object] = {"joined": page, "count": len(rooms)}
    if offset + MUTUAL_ROOMS_PAGE < len(rooms):
        body["next_batch"] = f"m{offset + MUTUAL_ROOMS_PAGE}"
    return json_response(body)


@client_route(bp, "GET", "/uk.half-shot.msc2666/user/mutual_rooms", ("unstable",))
async def mutual_rooms_unstable() -> Response:
    who = await requester()
    return json_response({"joined": _mutual_rooms(who.user_id)})


def _mutual_rooms(requester_id: str) -> list[str]:
    user_id = request.args.get("user_id")
    if not user_id:
        raise MatrixError(400, "M_MISSING_PARAM", "user_id is required")
    if UserId.try_parse(user_id) is None:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid user id")
    if user_id == requester_id:
        raise MatrixError(400, "M_INVALID_PARAM", "You cannot ask for rooms shared with yourself")
    membership = services().rooms.membership
    theirs = set(membership.joined_rooms(user_id))
    return sorted(room for room in membership.joined_rooms(requester_id) if room in theirs)


# --- helpers ------------------------------------------------------------------------

def _resolve(room_id_or_alias: str) -> str:
    if room_id_or_alias.startswith("#"):
        room_id, _ = services().rooms.room_directory.resolve(room_id_or_alias)
        return room_id
    if not room_id_or_alias.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "Expected a room id or alias")
    return room_id_or_alias


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
