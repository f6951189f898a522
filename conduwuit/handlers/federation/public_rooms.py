"""``/_matrix/federation/v1/publicRooms``: our room directory, for other servers."""

from __future__ import annotations

from quart import Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.services.rooms.room_directory import PublicRoomsQuery

from .auth import federation_blueprint, origin

bp = federation_blueprint("federation_public_rooms", __name__)


def _require_open_directory() -> None:
    if not services().config.allow_public_room_directory_over_federation:
        raise MatrixError(403, "M_FORBIDDEN",
                          "This server does not publish its room directory over federation")


@bp.get("/_matrix/federation/v1/publicRooms")
async def public_rooms() -> Response:
    await origin()
    _require_open_directory()
    raw_limit = request.args.get("limit")
    if raw_limit is not None and not raw_limit.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    query = PublicRoomsQuery(limit=int(raw_limit) if raw_limit else None,
                             since=request.args.get("since") or None)
    return json_response(services().rooms.room_directory.public_rooms(query))


@bp.post("/_matrix/federation/v1/publicRooms")
async def public_rooms_filtered() -> Response:
    await origin()
    _require_open_directory()
    body = await json_body()
    limit, since, search_filter = body.get("limit"), body.get("since"), body.get("filter")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise MatrixError(400, "M_BAD_JSON", "'limit' must be an integer")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_BAD_JSON", "'since' must be a string")
    term = search_filter.get("generic_search_term") if isinstance(search_filter, dict) \
        else None
    query = PublicRoomsQuery(limit=limit, since=since,
                             search=term if isinstance(term, str) else None)
    return json_response(services().rooms.room_directory.public_rooms(query))
