"""``/user/{userId}/filter[/{filterId}]``: upload and download sync filters."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import not_found
from conduwuit.handlers.auth import requester, require_self
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_filters", __name__)


@client_route(bp, "POST", "/user/<user_id>/filter")
async def create_filter(user_id: str) -> Response:
    # Guests /sync too, so they may keep filters.
    who = await requester(allow_guest=True)
    require_self(who, user_id, "the filters")
    definition = await json_body()
    return json_response({"filter_id": services().filters.create(user_id, definition)})


@client_route(bp, "GET", "/user/<user_id>/filter/<filter_id>")
async def get_filter(user_id: str, filter_id: str) -> Response:
    who = await requester(allow_guest=True)
    require_self(who, user_id, "the filters")
    definition = services().filters.get(user_id, filter_id)
    if definition is None:
        raise not_found(f"No filter with id {filter_id!r}")
    return json_response(definition)
