"""``/rooms/{roomId}/context/{eventId}`` and ``/rooms/{roomId}/timestamp_to_event``.

Tokens are positions between events as ``/messages`` reads them (token T = just after
the event with stream count T): ``start`` lies just before the oldest event returned,
``end`` just after the newest, so paginating from either continues without a gap.
Only events the user may see (history visibility) are returned or counted.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.handlers.routing import client_route
from conduwuit.protocol.events import Event
from conduwuit.protocol.filters import FilterError, event_allowed, validate_filter
from conduwuit.services.requester import Requester

bp = Blueprint("client_context", __name__)

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
SCAN_BUDGET = 500  # invisible or filtered-out events skipped on each side at most


@client_route(bp, "GET", "/rooms/<room_id>/context/<path:event_id>")
async def context(room_id: str, event_id: str) -> Response:
    who = await requester(allow_guest=True)
    rooms = services().rooms
    access = rooms.visibility.access(room_id, who.user_id)
    limit = _limit()
    event_filter = _filter()
    event = rooms.events.get(event_id)
    count = rooms.events.count_of(event_id)
    if event is None or count is None or event.room_id != room_id \
            or not rooms.visibility.can_see(who.user_id, event, count):
        raise MatrixError(404, "M_NOT_FOUND", "Event not found")
    before_wanted = limit // 2
    after_wanted = limit - before_wanted
    cap = access.until + 1 if access.until is not None else None

    def pick(page: Any, wanted: int) -> list[tuple[int, Event]]:
        found: list[tuple[int, Event]] = []
        for scanned, (position, candidate) in enumerate(page):
            if len(found) >= wanted or scanned >= wanted + SCAN_BUDGET:
                break
            if event_allowed(event_filter, candidate.type, candidate.sender,
                             contains_url=_has_url(candidate)) \
                    and rooms.visibility.can_see(who.user_id, candidate, position):
                found.append((position, candidate))
        return found

    before = pick(rooms.events.timeline(room_id, before=count, reverse=True), before_wanted)
    after = pick(rooms.events.timeline(room_id, after=count, before=cap), after_wanted)
    last = after[-1][1] if after else event
    state = rooms.state.after(last.event_id) or {}
    lazy = event_filter.get("lazy_load_members") is True
    shown_senders = {e.sender for _, e in (*before, *after)} | {event.sender}
    state_events = []
    for (event_type, state_key), state_id in state.items():
        if lazy and event_type == "m.room.member" and state_key not in shown_senders:
            continue
        state_event = rooms.events.get(state_id)
        if state_event is None or not event_allowed(event_filter, state_event.type,
                                                    state_event.sender):
            continue
        state_events.append(_serve(who, state_event))
    return json_response({
        "event": _serve(who, event),
        "events_before": [_serve(who, e) for _, e in before],
        "events_after": [_serve(who, e) for _, e in after],
        "start": str((before[-1][0] if before else count) - 1),
        "end": str(after[-1][0] if after else count),
        "state": state_events,
    })


@client_route(bp, "GET", "/org.matrix.msc3030/rooms/<room_id>/timestamp_to_event",
              ("unstable",))
@client_route(bp, "GET", "/rooms/<room_id>/timestamp_to_event", ("v1",))
async def timestamp_to_event(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    rooms = services().rooms
    access = rooms.visibility.access(room_id, who.user_id)
    raw_ts = request.args.get("ts")
    if raw_ts is None:
        raise MatrixError(400, "M_MISSING_PARAM", "ts is required")
    try:
        ts = int(raw_ts)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be an integer") from None
    direction = request.args.get("dir")
    if direction is None:
        raise MatrixError(400, "M_MISSING_PARAM", "dir is required")
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
    cap = access.until + 1 if access.until is not None else None
    forwards = direction == "f"
    page = rooms.events.timeline(room_id, before=cap, reverse=not forwards)
    for position, event in page:
        hit = event.origin_server_ts >= ts if forwards else event.origin_server_ts <= ts
        if hit and rooms.visibility.can_see(who.user_id, event, position):
            return json_response({"event_id": event.event_id,
                                  "origin_server_ts": event.origin_server_ts})
    way = "forward" if forwards else "backward"
    raise MatrixError(404, "M_NOT_FOUND", f"No event found from {ts} in the {way} direction")


def _serve(who: Requester, event: Event) -> dict[str, Any]:
    return services().rooms.serving.client(event, who.user_id, who.device_id)


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
    return max(0, min(MAX_LIMIT, value))


def _filter() -> dict[str, Any]:
    """The ``filter`` query parameter: a JSON RoomEventFilter."""
    raw = request.args.get("filter")
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
    try:
        validate_filter({"room": {"timeline": value}})
    except FilterError as exc:
        raise MatrixError(400, exc.errcode, exc.message) from None
    assert isinstance(value, dict)
    return value


def _has_url(event: Event) -> bool:
    return isinstance(event.content.get("url"), str)
