"""``/account/*``: who am I, password changes, deactivation."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.accounts import PASSWORD_STAGE

bp = Blueprint("client_account", __name__)


@client_route(bp, "GET", "/account/whoami")
async def whoami() -> Response:
    who = await requester(allow_guest=True)
    body: dict[str, object] = {"user_id": who.user_id, "is_guest": who.is_guest}
    if who.device_id is not None:
        body["device_id"] = who.device_id
    return json_response(body)


@client_route(bp, "POST", "/account/password")
async def change_password() -> Response:
    who = await requester()
    body = await json_body()
    logout_devices = body.get("logout_devices", True)
    if not isinstance(logout_devices, bool):
        raise MatrixError(400, "M_BAD_JSON", "'logout_devices' must be a boolean")
    svc = services()
    await svc.uia.authenticate(body.get("auth"), [[PASSWORD_STAGE]],
                               {PASSWORD_STAGE: svc.accounts.password_stage(who.user_id)},
                               user_id=who.user_id)
    await svc.accounts.change_password(who.user_id, body.get("new_password"),
                                       logout_devices=logout_devices, keep_device=who.device_id)
    return json_response({})


@client_route(bp, "POST", "/account/deactivate")
async def deactivate() -> Response:
    who = await requester()
    body = await json_body()
    svc = services()
    await svc.uia.authenticate(body.get("auth"), [[PASSWORD_STAGE]],
                               {PASSWORD_STAGE: svc.accounts.password_stage(who.user_id)},
                               user_id=who.user_id)
    await svc.accounts.deactivate(who.user_id)
    # No identity server is ever bound here, so there is nothing to unbind.
    return json_response({"id_server_unbind_result": "no-support"})
