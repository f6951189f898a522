"""``PUT /rooms/{roomId}/typing/{userId}``."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_typing", __name__)


@client_route(bp, "PUT", "/rooms/<room_id>/typing/<user_id>")
async def set_typing(room_id: str, user_id: str) -> Response:
    who = await requester(allow_guest=True)
    if who.user_id != user_id:
        raise MatrixError(403, "M_FORBIDDEN", "You cannot set the typing state of another user")
    body = await json_body()
    typing = body.get("typing")
    if not isinstance(typing, bool):
        raise MatrixError(400, "M_BAD_JSON", "'typing' must be true or false")
    timeout = body.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)):
        raise MatrixError(400, "M_BAD_JSON", "'timeout' must be an integer (milliseconds)")
    svc = services()
    svc.typing.set_typing(room_id, user_id, typing, timeout)
    svc.presence.ping(user_id)
    return json_response({})
