"""``/user/{userId}/[rooms/{roomId}/]account_data/{type}`` and ``.../rooms/{roomId}/tags``.

Only the owner may read or write; the service applies the spec's checks on room ids,
types and tags.
"""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import not_found
from conduwuit.handlers.auth import requester, require_self
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.account_data import check_room_id

bp = Blueprint("client_account_data", __name__)


@client_route(bp, "GET", "/user/<user_id>/account_data/<event_type>")
async def get_global(user_id: str, event_type: str) -> Response:
    await _owner(user_id)
    return _content_or_404(user_id, None, event_type)


@client_route(bp, "PUT", "/user/<user_id>/account_data/<event_type>")
async def put_global(user_id: str, event_type: str) -> Response:
    await _owner(user_id)
    content = await json_body()
    services().account_data.set_by_client(user_id, None, event_type, content)
    return json_response({})


@client_route(bp, "GET", "/user/<user_id>/rooms/<room_id>/account_data/<event_type>")
async def get_room(user_id: str, room_id: str, event_type: str) -> Response:
    await _owner(user_id)
    check_room_id(room_id)
    return _content_or_404(user_id, room_id, event_type)


@client_route(bp, "PUT", "/user/<user_id>/rooms/<room_id>/account_data/<event_type>")
async def put_room(user_id: str, room_id: str, event_type: str) -> Response:
    await _owner(user_id)
    content = await json_body()
    services().account_data.set_by_client(user_id, room_id, event_type, content)
    return json_response({})


@client_route(bp, "GET", "/user/<user_id>/rooms/<room_id>/tags")
async def get_tags(user_id: str, room_id: str) -> Response:
    await _owner(user_id)
    check_room_id(room_id)
    return json_response({"tags": services().account_data.tags(user_id, room_id)})


@client_route(bp, "PUT", "/user/<user_id>/rooms/<room_id>/tags/<tag>")
async def put_tag(user_id: str, room_id: str, tag: str) -> Response:
    await _owner(user_id)
    content = await json_body()
    services().account_data.set_tag(user_id, room_id, tag, content)
    return json_response({})


@client_route(bp, "DELETE", "/user/<user_id>/rooms/<room_id>/tags/<tag>")
async def delete_tag(user_id: str, room_id: str, tag: str) -> Response:
    await _owner(user_id)
    services().account_data.delete_tag(user_id, room_id, tag)
    return json_response({})


async def _owner(user_id: str) -> None:
    # Guests keep account data and tags too (spec, guest access).
    who = await requester(allow_guest=True)
    require_self(who, user_id, "the account data")


def _content_or_404(user_id: str, room_id: str | None, event_type: str) -> Response:
    content = services().account_data.get(user_id, room_id, event_type)
    if content is None:
        where = f" in {room_id}" if room_id is not None else ""
        raise not_found(f"No account data of type {event_type!r}{where}")
    return json_response(content)
