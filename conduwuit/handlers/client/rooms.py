"""Rooms: create, send, state, members, single events, history, redactions."""

from __future__ import annotations

from collections.abc import Iterator
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
# Fetches from other servers one /messages page may wait for (history before our join).
MAX_BACKFILL_FETCHES = 3


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
    # "b<seq>" points into the backfilled history older than the whole timeline: just
    # before the backfilled event <seq> (seqs grow going back; "b0" = timeline start).
    start_b, end_b = _backfill_token("from"), _backfill_token("to")
    start = _token_arg("from") if start_b is None else None
    end = _token_arg("to") if end_b is None else None
    # A user who left reads up to their leave event and no further.
    cap = access.until
    chunk: list[dict[str, Any]] = []
    end_token: str | None = None
    if direction == "b" and start_b is not None:
        end_token = await _history_back(who, room_id, chunk, limit, start_b, end_b)
    elif direction == "b":
        newest = start if start is not None else services().store.current_count()
        if cap is not None:
            newest = min(newest, cap)
        page = rooms.events.timeline(room_id, before=newest + 1, after=end, reverse=True)
        exhausted, position = _fill_page(who, page, chunk, limit, direction, newest)
        if not exhausted or len(chunk) == limit:
            end_token = str(position)
        elif end is None:
            # The start of the timeline: what came before is backfilled history.
            end_token = await _history_back(who, room_id, chunk, limit, 0, end_b)
    else:
        into_timeline = True
        if start_b is not None:
            end_token, into_timeline = _history_forward(who, room_id, chunk, limit,
                                                        start_b, end_b)
        if into_timeline:
            newest_allowed = end if cap is None else min(end if end is not None else cap, cap)
            before = newest_allowed + 1 if newest_allowed is not None else None
            page = rooms.events.timeline(room_id, after=start, before=before)
            exhausted, position = _fill_page(who, page, chunk, limit, direction, start or 0)
            end_token = str(position) if not exhausted or len(chunk) == limit else None
    body: dict[str, Any] = {"chunk": chunk,
                            "start": request.args["from"] if start_b is not None else
                            str(start if start is not None else
                                (services().store.current_count()
                                 if direction == "b" else 0))}
    if end_token is not None:
        body["end"] = end_token
    return json_response(body)


def _fill_page(who: Requester, page: Iterator[tuple[int, Event]], chunk: list[dict[str, Any]],
               limit: int, direction: str, position: int) -> tuple[bool, int]:
    """Add the visible timeline events of ``page`` to ``chunk`` up to ``limit``;
    (whether the page ran out, the position reached)."""
    rooms = services().rooms
    for scanned, (count, event) in enumerate(page):
        if len(chunk) >= limit or scanned >= limit + SCAN_BUDGET:
            return False, position
        position = count - 1 if direction == "b" else count
        if rooms.visibility.can_see(who.user_id, event, count):
            chunk.append(_serve(who, event))
    return True, position


async def _history_back(who: Requester, room_id: str, chunk: list[dict[str, Any]],
                        limit: int, after: int, until: int | None) -> str | None:
    """Go on back into the backfilled history (seq > ``after``, <= ``until``), asking
    other servers for more when what we hold runs out. The end token; None at the
    start of the room, or if the user may not see history from before their join."""
    backfill = services().federation.backfill
    if not backfill.shows_history(room_id):
        return None
    events = services().rooms.events
    position = after
    fetches = 0
    while True:
        for seq, event in events.backfilled(room_id, after=position, until=until):
            if len(chunk) >= limit:
                return f"b{position}"
            chunk.append(_serve(who, event))
            position = seq
        if len(chunk) >= limit:
            return f"b{position}"
        if until is not None or backfill.is_done(room_id) or fetches >= MAX_BACKFILL_FETCHES \
                or not await backfill.fetch(room_id, limit - len(chunk)):
            break
        fetches += 1
    # Short of the room's start (no server answered): let the client try again later.
    more = until is None and not backfill.is_done(room_id) and position > after
    return f"b{position}" if more else None


def _history_forward(who: Requester, room_id: str, chunk: list[dict[str, Any]], limit: int,
                     start: int, until: int | None) -> tuple[str | None, bool]:
    """Go forward through the backfilled history from ``b<start>`` (down to
    ``b<until>``); (end token, whether to go on into the timeline)."""
    if not services().federation.backfill.shows_history(room_id):
        return None, until is None
    position = start
    for seq, event in services().rooms.events.backfilled(room_id, newer_than=start + 1,
                                                         after=until or 0):
        if len(chunk) >= limit:
            return f"b{position}", False
        chunk.append(_serve(who, event))
        position = seq - 1
    return None, until is None


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
    services().admin_room.check_state(room_id, event_type, content)  # never opened up
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
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name} token")
    return int(digits)


def _backfill_token(name: str) -> int | None:
    """``b<seq>``: a position in the backfilled history (see ``messages``)."""
    raw = request.args.get(name)
    if raw is None or not raw.startswith("b"):
        return None
    digits = raw[1:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name} token")
    return int(digits)
