"""``POST /user_directory/search``."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_user_directory", __name__)


@client_route(bp, "POST", "/user_directory/search")
async def search() -> Response:
    who = await requester()
    body = await json_body()
    return json_response(services().user_directory.search(
        who.user_id, body.get("search_term"), body.get("limit")))
