"""``POST /search``: full-text search of the room events of the user's joined rooms."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError, bad_json, invalid_param, missing_param
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.protocol.filters import FilterError, validate_filter
from conduwuit.services.requester import Requester
from conduwuit.services.rooms.search import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    RANK,
    RECENT,
    SEARCH_KEYS,
    Page,
    Query,
    words,
)

from .rooms import _serve

bp = Blueprint("client_search", __name__)

GROUP_KEYS = ("room_id", "sender")
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 100


@client_route(bp, "POST", "/search")
async def search() -> Response:
    who = await requester()
    body = await json_body()
    if "search_categories" not in body:
        raise missing_param("Missing 'search_categories'")
    categories = _object(body["search_categories"], "search_categories")
    criteria = categories.get("room_events")
    if criteria is None:
        # room_events is the one category the spec defines; unknown ones are ignored.
        return json_response({"search_categories": {}})
    criteria = _object(criteria, "search_categories.room_events")
    query = _query(criteria)
    context = _context_options(criteria)
    include_state = _bool(criteria, "include_state")
    group_by = _group_by(criteria)
    page = await services().rooms.search.find(who.user_id, query,
                                              request.args.get("next_batch"))
    return json_response({"search_categories": {
        "room_events": _room_events(who, query, page, context, include_state, group_by)}})


def _room_events(who: Requester, query: Query, page: Page,
                 context: tuple[int, int, bool] | None, include_state: bool,
                 group_by: list[str]) -> dict[str, Any]:
    rooms = services().rooms
    results: list[dict[str, Any]] = []
    groups: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in group_by}
    room_ids: list[str] = []
    for hit in page.hits:
        event = rooms.events.get(hit.event_id)
        if event is None or not rooms.visibility.can_see(who.user_id, event, hit.count):
            continue  # history from before the user could see the room stays hidden
        result: dict[str, Any] = {"rank": hit.rank, "result": _serve(who, event)}
        if context is not None:
            before, after, include_profile = context
            found = rooms.search.context(hit.room_id, hit.count, before, after)
            shown: dict[str, Any] = {
                "start": str(found.start), "end": str(found.end),
                "events_before": [_serve(who, e) for c, e in found.before
                                  if rooms.visibility.can_see(who.user_id, e, c)],
                "events_after": [_serve(who, e) for c, e in found.after
                                 if rooms.visibility.can_see(who.user_id, e, c)],
            }
            if include_profile:
                senders = {event.sender} | {e.sender for _, e in found.before + found.after}
                shown["profile_info"] = rooms.search.profiles(event.event_id, senders)
            result["context"] = shown
        results.append(result)
        if hit.room_id not in room_ids:
            room_ids.append(hit.room_id)
        for key in group_by:
            value = hit.room_id if key == "room_id" else event.sender
            group = groups[key].setdefault(value, {"results": [],
                                                   "order": len(groups[key]) + 1})
            group["results"].append(event.event_id)
    answer: dict[str, Any] = {"count": page.total, "highlights": list(query.terms),
                              "results": results}
    if page.next_batch is not None:
        answer["next_batch"] = page.next_batch
    if include_state:
        answer["state"] = {
            room_id: [_serve(who, e) for e in
                      rooms.state.events_of(rooms.state.current(room_id)).values()]
            for room_id in room_ids}
    if group_by:
        answer["groups"] = groups
    return answer


# --- parsing the criteria ------------------------------------------------------------

def _query(criteria: dict[str, Any]) -> Query:
    if "search_term" not in criteria:
        raise missing_param("Missing 'search_term'")
    term = criteria["search_term"]
    if not isinstance(term, str):
        raise bad_json("'search_term' must be a string")
    keys = criteria.get("keys")
    if keys is None or keys == []:
        keys = list(SEARCH_KEYS)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise bad_json("'keys' must be a list of strings")
    unknown = [k for k in keys if k not in SEARCH_KEYS]
    if unknown:
        raise invalid_param(f"Unknown search key {unknown[0]!r}; expected one of "
                            + ", ".join(SEARCH_KEYS))
    order_by = criteria.get("order_by", RANK)
    if not isinstance(order_by, str):
        raise bad_json("'order_by' must be a string")
    if order_by not in (RANK, RECENT):
        raise invalid_param("'order_by' must be 'rank' or 'recent'")
    event_filter = _filter(criteria.get("filter"))
    limit = event_filter.get("limit", DEFAULT_LIMIT)
    return Query(terms=tuple(dict.fromkeys(words(term))), keys=frozenset(keys),
                 filter=event_filter, order_by=order_by,
                 limit=max(1, min(MAX_LIMIT, limit)) if limit else DEFAULT_LIMIT)


def _filter(value: object) -> dict[str, Any]:
    """A RoomEventFilter, checked by the same rules as stored and /sync filters."""
    if value is None:
        return {}
    try:
        validate_filter({"room": {"timeline": value}})
    except FilterError as exc:
        message = exc.message.replace("room.timeline", "filter")
        raise MatrixError(400, exc.errcode, f"Invalid filter: {message}") from None
    assert isinstance(value, dict)
    return value


def _context_options(criteria: dict[str, Any]) -> tuple[int, int, bool] | None:
    if criteria.get("event_context") is None:
        return None
    options = _object(criteria["event_context"], "event_context")
    before = _count(options, "before_limit")
    after = _count(options, "after_limit")
    return before, after, _bool(options, "include_profile")


def _group_by(criteria: dict[str, Any]) -> list[str]:
    if criteria.get("groupings") is None:
        return []
    groupings = _object(criteria["groupings"], "groupings")
    group_by = groupings.get("group_by", [])
    if not isinstance(group_by, list):
        raise bad_json("'groupings.group_by' must be a list")
    keys: list[str] = []
    for index, group in enumerate(group_by):
        key = _object(group, f"groupings.group_by[{index}]").get("key")
        if not isinstance(key, str):
            raise bad_json(f"'groupings.group_by[{index}].key' must be a string")
        if key not in GROUP_KEYS:
            raise invalid_param(f"Unknown group key {key!r}; expected 'room_id' or 'sender'")
        if key not in keys:
            keys.append(key)
    return keys


def _object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json(f"'{name}' must be a JSON object")
    return value


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise bad_json(f"'{key}' must be a boolean")
    return value


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, DEFAULT_CONTEXT)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"'{key}' must be an integer")
    if value < 0:
        raise invalid_param(f"'{key}' must not be negative")
    return min(value, MAX_CONTEXT)
