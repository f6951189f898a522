"""Registration: ``/register`` and its helper endpoints."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import access_token, client_ip
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_register", __name__)


@client_route(bp, "POST", "/register")
async def register() -> Response:
    body = await json_body()
    kind = request.args.get("kind", "user")
    account = await services().registration.register(body, kind=kind, ip=client_ip(),
                                                      access_token=access_token())
    reply: dict[str, Any] = {"user_id": account.user_id,
                             "home_server": services().config.server_name}
    if account.tokens is not None:
        reply.update(access_token=account.tokens.access_token, device_id=account.device_id)
        if account.tokens.refresh_token is not None:
            reply.update(refresh_token=account.tokens.refresh_token,
                         expires_in_ms=account.tokens.expires_in_ms)
    return json_response(reply)


@client_route(bp, "GET", "/register/available")
async def available() -> Response:
    username = request.args.get("username")
    if not username:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'username'")
    services().registration.user_id_for(username)
    return json_response({"available": True})


@client_route(bp, "GET", "/register/m.login.registration_token/validity", versions=("v1",))
async def token_validity() -> Response:
    token = request.args.get("token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'token'")
    registration = services().registration
    if not registration.offers_tokens():
        raise MatrixError(403, "M_FORBIDDEN", "Registration with tokens is not enabled")
    return json_response({"valid": registration.token_is_valid(token)})
