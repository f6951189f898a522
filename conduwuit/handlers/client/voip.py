"""``GET /voip/turnServer``: TURN credentials for calls."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.handlers.auth import optional_requester, requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_voip", __name__)


@client_route(bp, "GET", "/voip/turnServer")
async def turn_server() -> Response:
    turn = services().turn
    if turn.allow_guests:
        # `turn_allow_guests` also admits clients without a token, as conduwuit does.
        who = await optional_requester()
        user_id = who.user_id if who is not None else None
    else:
        # Guests get the spec's 403 M_GUEST_ACCESS_FORBIDDEN, as from Synapse.
        user_id = (await requester()).user_id
    return json_response(turn.credentials(user_id))
