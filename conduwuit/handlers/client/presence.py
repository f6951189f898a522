"""``GET/PUT /presence/{userId}/status``."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import invalid_param
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.protocol.ids import UserId

bp = Blueprint("client_presence", __name__)


@client_route(bp, "PUT", "/presence/<user_id>/status")
async def set_presence(user_id: str) -> Response:
    who = await requester(allow_guest=True)
    body = await json_body()
    services().presence.set_status(who.user_id, user_id, body.get("presence"),
                                   body.get("status_msg"))
    return json_response({})


@client_route(bp, "GET", "/presence/<user_id>/status")
async def get_presence(user_id: str) -> Response:
    who = await requester(allow_guest=True)
    _check_user_id(user_id)
    return json_response(services().presence.get_status(who.user_id, user_id))


def _check_user_id(user_id: str) -> None:
    try:
        UserId.parse(user_id)
    except ValueError:
        raise invalid_param(f"{user_id!r} is not a valid user ID") from None
