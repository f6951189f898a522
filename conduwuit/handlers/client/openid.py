"""``POST /user/{userId}/openid/request_token``: a token a third party can check with us."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.handlers.auth import requester, require_self
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_openid", __name__)


@client_route(bp, "POST", "/user/<user_id>/openid/request_token")
async def request_token(user_id: str) -> Response:
    who = await requester()
    require_self(who, user_id, "OpenID tokens")
    await json_body()  # the spec's body is an empty object; reject what is not JSON
    return json_response(services().federation.openid.issue(user_id))
