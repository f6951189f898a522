"""Rooms: create, send, state, members, single events, history, redactions."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.protocol.canonical import CanonicalJsonError, check_strict
from conduwuit.protocol.events import Event
from conduwuit.services.requester import Requester
from conduwuit.services.rooms.state import StateMap
from conduwuit.services.rooms.timeline import Draft

bp = Blueprint("client_rooms", __name__)

MAX_PAGE = 1000
# Events a /messages page may skip as invisible before it answers with what it has
# (and an ``end`` token to go on from).
SCAN_BUDGET = 500


@client_route(bp, "POST", "/createRoom")
async def create_room() -> Response:
    who = await requester()
    room_id = await services().rooms.creation.create(who.user_id, await json_body())
    return json_response({"room_id": room_id})


@client_route(bp, "GET", "/joined_rooms")
async def joined_rooms() -> Response:
    who = await requester(allow_guest=True)
    return json_response({"joined_rooms": services().rooms.membership.joined_rooms(who.user_id)})


@client_route(bp, "PUT", "/rooms/<room_id>/send/<event_type>/<txn_id>")
async def send_message(room_id: str, event_type: str, txn_id: str) -> Response:
    who = await requester(allow_guest=True)
    content = _content(await json_body())
    if event_type == "m.call.invite" and _is_public(room_id):
        # conduwuit: a call invite would ring everyone in a public room.
        raise MatrixError(403, "M_FORBIDDEN", "Call invites are not allowed in public rooms")
    txn = (who.device_id or "", txn_id)
    event = await services().rooms.timeline.send(
        room_id, Draft(who.user_id, event_type, content, txn=txn))
    return json_response({"event_id": event.event_id})


@client_route(bp, "PUT", "/rooms/<room_id>/state/<event_type>/<path:state_key>")
async def set_state(room_id: str, event_type: str, state_key: str = "") -> Response:
    who = await requester()
    content = _content(await json_body())
    _check_state_content(room_id, event_type, content)
    event = await services().rooms.timeline.send(
        room_id, Draft(who.user_id, event_type, content, state_key))
    if event_type == "m.room.guest_access" and state_key == "":
        await services().rooms.actions.enforce_guest_access(room_id)
    return json_response({"event_id": event.event_id})


@client_route(bp, "PUT", "/rooms/<room_id>/state/<event_type>")
async def set_state_no_key(room_id: str, event_type: str) -> Response:
    return await set_state(room_id, event_type, "")


@client_route(bp, "GET", "/rooms/<room_id>/state/<event_type>/<path:state_key>")
async def get_state_event(room_id: str, event_type: str, state_key: str = "") -> Response:
    who = await requester(allow_guest=True)
    state = _visible_state(who, room_id)
    event_id = state.get((event_type, state_key))
    event = services().rooms.events.get(event_id) if event_id is not None else None
    if event is None:
        raise MatrixError(404, "M_NOT_FOUND", "No such state event")
    if request.args.get("format") == "event":
        return json_response(_serve(who, event))
    return json_response(dict(event.content))


@client_route(bp, "GET", "/rooms/<room_id>/state/<event_type>")
async def get_state_event_no_key(room_id: str, event_type: str) -> Response:
    return await get_state_event(room_id, event_type, "")


@client_route(bp, "GET", "/rooms/<room_id>/state")
async def get_state(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    state = _visible_state(who, room_id)
    events = services().rooms.state.events_of(state)
    return json_response([_serve(who, e) for e in events.values()])


@client_route(bp, "GET", "/rooms/<room_id>/members")
async def members(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    state = _visible_state(who, room_id)
    rooms = services().rooms
    membership = request.args.get("membership")
    not_membership = request.args.get("not_membership")
    chunk = []
    for (event_type, _), event_id in state.items():
        if event_type != "m.room.member":
            continue
        event = rooms.events.get(event_id)
        if event is None:
            continue
        if membership and event.membership != membership:
            continue
        if not_membership and event.membership == not_membership:
            continue
        chunk.append(_serve(who, event))
    return json_response({"chunk": chunk})


@client_route(bp, "GET", "/rooms/<room_id>/joined_members")
async def joined_members(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    _require_member(who, room_id)
    rooms = services().rooms
    joined: dict[str, Any] = {}
    for user_id in rooms.membership.joined_members(room_id):
        event = rooms.state.get(room_id, ("m.room.member", user_id))
        content = event.content if event is not None else {}
        joined[user_id] = {"display_name": content.get("displayname"),
                           "avatar_url": content.get("avatar_url")}
    return json_response({"joined": joined})


@client_route(bp, "GET", "/rooms/<room_id>/event/<event_id>")
async def get_event(room_id: str, event_id: str) -> Response:
    who = await requester(allow_guest=True)
    rooms = services().rooms
    rooms.visibility.access(room_id, who.user_id)
    event = rooms.events.get(event_id)
    if event is None or event.room_id != room_id or not rooms.visibility.can_see(who.user_id,
                                                                               event):
        raise MatrixError(404, "M_NOT_FOUND", "Event not found")
    return json_response(_serve(who, event))


@client_route(bp, "GET", "/rooms/<room_id>/messages")
async def messages(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    rooms = services().rooms
    access = rooms.visibility.access(room_id, who.user_id)
    direction = request.args.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    limit = _int_arg("limit", 10, 0, MAX_PAGE)
    # Tokens are positions between events: token T means "just after the event with
    # stream count T", whichever way one paginates from it (sync tokens are the same).
    start = _token_arg("from")
    end = _token_arg("to")
    # A user who left reads up to their leave event and no further.
    cap = access.until
    if direction == "b":
        newest = start if start is not None else services().store.current_count()
        if cap is not None:
            newest = min(newest, cap)
        page = rooms.events.timeline(room_id, before=newest + 1, after=end, reverse=True)
        position = newest
    else:
        newest_allowed = end if cap is None else min(end if end is not None else cap, cap)
        before = newest_allowed + 1 if newest_allowed is not None else None
        page = rooms.events.timeline(room_id, after=start, before=before)
        position = start or 0
    chunk: list[dict[str, Any]] = []
    exhausted = True
    for scanned, (count, event) in enumerate(page):
        if len(chunk) >= limit or scanned >= limit + SCAN_BUDGET:
            exhausted = False
            break
        position = count - 1 if direction == "b" else count
        if rooms.visibility.can_see(who.user_id, event, count):
            chunk.append(_serve(who, event))
    body: dict[str, Any] = {"chunk": chunk,
                            "start": str(start if start is not None else
                                         (services().store.current_count()
                                          if direction == "b" else 0))}
    if not exhausted or len(chunk) == limit:
        body["end"] = str(position)
    return json_response(body)


@client_route(bp, "PUT", "/rooms/<room_id>/redact/<event_id>/<txn_id>")
async def redact(room_id: str, event_id: str, txn_id: str) -> Response:
    who = await requester()
    body = await json_body()
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "'reason' must be a string")
    content = {"reason": reason} if reason else {}
    event = await services().rooms.timeline.send(room_id, Draft(
        who.user_id, "m.room.redaction", content, redacts=event_id,
        txn=(who.device_id or "", txn_id)))
    return json_response({"event_id": event.event_id})


# --- helpers ------------------------------------------------------------------------

def _serve(who: Requester, event: Event) -> dict[str, Any]:
    return services().rooms.serving.client(event, who.user_id, who.device_id)


def _content(body: dict[str, Any]) -> dict[str, Any]:
    try:
        check_strict(body)
    except CanonicalJsonError as exc:
        raise MatrixError(400, "M_BAD_JSON", f"Event content is not valid: {exc}") from None
    return body


def _check_state_content(room_id: str, event_type: str, content: dict[str, Any]) -> None:
    """Content checks for state the auth rules depend on, before building the event."""
    if event_type == "m.room.member" and not isinstance(content.get("membership"), str):
        raise MatrixError(400, "M_BAD_JSON", "m.room.member content needs a membership")
    if event_type == "m.room.encryption" and not services().config.allow_encryption:
        raise MatrixError(403, "M_FORBIDDEN", "Encryption is disabled on this server")
    if event_type == "m.room.canonical_alias":
        # Every alias named must exist and point here (spec: M_BAD_ALIAS otherwise).
        services().rooms.room_directory.check_canonical_alias(room_id, content)


def _is_public(room_id: str) -> bool:
    rooms = services().rooms
    return rooms.directory.is_public(room_id) or rooms.summaries.join_rule(room_id) == "public"


def _visible_state(who: Requester, room_id: str) -> StateMap:
    """The state the user may read: current, or as it was when they left."""
    rooms = services().rooms
    access = rooms.visibility.access(room_id, who.user_id)
    if access.state_at is not None:
        return rooms.state.after(access.state_at) or {}
    return rooms.state.current(room_id)


def _require_member(who: Requester, room_id: str) -> None:
    rooms = services().rooms
    if rooms.events.room_version(room_id) is None:
        raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
    if rooms.membership.is_joined(room_id, who.user_id):
        return
    visibility = rooms.state.content(room_id, ("m.room.history_visibility", ""))
    if visibility.get("history_visibility") == "world_readable":
        return
    raise MatrixError(403, "M_FORBIDDEN", "You are not in this room")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
    return max(low, min(high, value))


def _token_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    digits = raw.lstrip("st")
    if not digits.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name} token")
    return int(digits)
