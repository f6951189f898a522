"""Logging in and out, refreshing tokens, and login tokens for other devices."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import access_token, client_ip, requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.accounts import PASSWORD_STAGE

bp = Blueprint("client_login", __name__)


@client_route(bp, "GET", "/login")
async def login_flows() -> Response:
    return json_response({"flows": services().login.flows()})


@client_route(bp, "POST", "/login")
async def login() -> Response:
    body = await json_body()
    appservice = None
    if body.get("type") == "m.login.application_service" and access_token() is not None:
        appservice = await requester()
    session = await services().login.login(body, ip=client_ip(), appservice=appservice)
    reply: dict[str, Any] = {
        "user_id": session.user_id,
        "access_token": session.tokens.access_token,
        "device_id": session.device_id,
        "home_server": services().config.server_name,
    }
    if session.tokens.refresh_token is not None:
        reply.update(refresh_token=session.tokens.refresh_token,
                     expires_in_ms=session.tokens.expires_in_ms)
    base_url = services().config.well_known.client
    if base_url:
        reply["well_known"] = {"m.homeserver": {"base_url": base_url}}
    return json_response(reply)


@client_route(bp, "POST", "/logout")
async def logout() -> Response:
    who = await requester(allow_guest=True)
    if who.device_id is not None:
        services().devices.delete(who.user_id, who.device_id)
    return json_response({})


@client_route(bp, "POST", "/logout/all")
async def logout_all() -> Response:
    who = await requester(allow_guest=True)
    services().devices.delete_all(who.user_id)
    return json_response({})


@client_route(bp, "POST", "/refresh", versions=("v1", "v3"))
async def refresh() -> Response:
    body = await json_body()
    token = body.get("refresh_token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'refresh_token'")
    if not isinstance(token, str):
        raise MatrixError(400, "M_BAD_JSON", "'refresh_token' must be a string")
    refreshed = services().devices.refresh(token)
    if refreshed is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token", soft_logout=False)
    _, tokens = refreshed
    return json_response({"access_token": tokens.access_token,
                          "refresh_token": tokens.refresh_token,
                          "expires_in_ms": tokens.expires_in_ms})


@client_route(bp, "POST", "/login/get_token", versions=("v1",))
async def get_login_token() -> Response:
    who = await requester()
    svc = services()
    if not svc.config.login_via_existing_session:
        raise MatrixError(403, "M_FORBIDDEN", "Logging in via an existing session is disabled")
    body = await json_body()
    await svc.uia.authenticate(body.get("auth"), [[PASSWORD_STAGE]],
                               {PASSWORD_STAGE: svc.accounts.password_stage(who.user_id)},
                               user_id=who.user_id)
    ttl = svc.config.login_token_ttl
    return json_response({"login_token": svc.devices.issue_login_token(who.user_id, ttl),
                          "expires_in_ms": ttl})
