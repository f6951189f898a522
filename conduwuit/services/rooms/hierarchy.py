"""Spaces: ``GET /rooms/{roomId}/hierarchy`` over the ``m.space.child`` state of local rooms.

The tree is walked depth first from the requested room: a space's children in the
spec's order ("Ordering of children within a space": valid ``order`` strings first,
then by the child event's timestamp, then by room id). Only rooms this server knows
are listed (rooms of other servers need federation); rooms the user may not see are
skipped along with everything below them. Loops are cut by never visiting a room twice.

Pages are slices of that walk: ``next_batch`` carries the offset and the two settings
that shaped the walk, which the spec says must not change while paginating.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from conduwuit.errors import MatrixError

from .state import RoomState
from .summary import RoomSummaries

SPACE = "m.space"
SPACE_CHILD = "m.space.child"
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 3
MAX_MAX_DEPTH = 10
MAX_ROOMS = 2000  # rooms walked per request, whatever the tree holds
_MAX_ORDER_LENGTH = 50


@attrs.frozen
class HierarchyRequest:
    user_id: str
    room_id: str
    is_guest: bool = False
    limit: int | None = None
    max_depth: int | None = None
    suggested_only: bool = False
    since: str | None = None


@attrs.define
class SpaceHierarchy:
    state: RoomState
    summaries: RoomSummaries

    def hierarchy(self, request: HierarchyRequest) -> dict[str, Any]:
        limit = DEFAULT_LIMIT if request.limit is None else request.limit
        if limit <= 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must be greater than zero")
        limit = min(limit, MAX_LIMIT)
        max_depth = DEFAULT_MAX_DEPTH if request.max_depth is None else request.max_depth
        if max_depth < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "max_depth must not be negative")
        max_depth = min(max_depth, MAX_MAX_DEPTH)
        offset = _parse_token(request.since, max_depth, request.suggested_only)
        root = request.room_id
        if not self.summaries.known(root) or not self.summaries.accessible(
                root, request.user_id, is_guest=request.is_guest):
            raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to view this room")
        walk = self._walk(request, max_depth)
        if request.since is not None and offset >= len(walk):
            raise MatrixError(400, "M_INVALID_PARAM", "The from token is past the end")
        rooms = [self._entry(room_id, request.suggested_only)
                 for room_id in walk[offset:offset + limit]]
        body: dict[str, Any] = {"rooms": rooms}
        if offset + limit < len(walk):
            body["next_batch"] = _make_token(offset + limit, max_depth, request.suggested_only)
        return body

    def _walk(self, request: HierarchyRequest, max_depth: int) -> list[str]:
        order: list[str] = []
        seen = {request.room_id}
        stack: list[tuple[str, int]] = [(request.room_id, 0)]
        while stack and len(order) < MAX_ROOMS:
            room_id, depth = stack.pop()
            order.append(room_id)
            if depth >= max_depth or self.summaries.room_type(room_id) != SPACE:
                continue
            children = []
            for child, _ in self.children(room_id, request.suggested_only):
                if child in seen or not self.summaries.known(child):
                    continue
                if not self.summaries.accessible(child, request.user_id,
                                                 is_guest=request.is_guest):
                    continue
                seen.add(child)
                children.append(child)
            stack.extend((child, depth + 1) for child in reversed(children))
        return order

    def children(self, room_id: str, suggested_only: bool) -> list[tuple[str, dict[str, Any]]]:
        """The valid ``m.space.child`` events of a room, ordered, as (child, stripped)."""
        found: list[tuple[tuple[int, str, int, str], str, dict[str, Any]]] = []
        for (event_type, state_key), event_id in self.state.current(room_id).items():
            if event_type != SPACE_CHILD:
                continue
            event = self.state.events.get(event_id)
            if event is None or not _valid_child(event.content):
                continue
            if suggested_only and event.content.get("suggested") is not True:
                continue
            order = event.content.get("order")
            ordered = isinstance(order, str) and _valid_order(order)
            key = (0 if ordered else 1, str(order) if ordered else "", event.origin_server_ts,
                   state_key)
            stripped = {"type": SPACE_CHILD, "state_key": state_key,
                        "content": dict(event.content), "sender": event.sender,
                        "origin_server_ts": event.origin_server_ts}
            found.append((key, state_key, stripped))
        found.sort(key=lambda item: item[0])
        return [(child, stripped) for _, child, stripped in found]

    def _entry(self, room_id: str, suggested_only: bool) -> dict[str, Any]:
        body = self.summaries.summary(room_id)
        is_space = body.get("room_type") == SPACE
        body["children_state"] = [stripped for _, stripped in
                                  self.children(room_id, suggested_only)] if is_space else []
        return body


def _valid_child(content: Mapping[str, Any]) -> bool:
    via = content.get("via")
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def _valid_order(order: str) -> bool:
    return len(order) <= _MAX_ORDER_LENGTH and all(" " <= c <= "~" for c in order)


def _make_token(offset: int, max_depth: int, suggested_only: bool) -> str:
    return f"h{offset}_{max_depth}_{int(suggested_only)}"


def _parse_token(token: str | None, max_depth: int, suggested_only: bool) -> int:
    if token is None:
        return 0
    parts = token[1:].split("_") if token.startswith("h") else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise MatrixError(400, "M_INVALID_PARAM", "Unknown from token")
    offset, depth, suggested = (int(p) for p in parts)
    if depth != max_depth or bool(suggested) != suggested_only:
        raise MatrixError(400, "M_INVALID_PARAM",
                          "suggested_only and max_depth cannot change on paginated requests")
    return offset
