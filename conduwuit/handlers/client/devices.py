"""``/devices`` and ``/delete_devices``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.accounts import PASSWORD_STAGE
from conduwuit.services.requester import Requester

bp = Blueprint("client_devices", __name__)

MAX_DISPLAY_NAME = 100

_PUBLIC_FIELDS = ("device_id", "display_name", "last_seen_ip", "last_seen_ts")


def _public(device: dict[str, Any]) -> dict[str, Any]:
    return {k: device[k] for k in _PUBLIC_FIELDS if device.get(k) is not None}


@client_route(bp, "GET", "/devices")
async def list_devices() -> Response:
    who = await requester(allow_guest=True)
    devices = services().devices.for_user(who.user_id)
    return json_response({"devices": [_public(d) for d in devices]})


@client_route(bp, "GET", "/devices/<device_id>")
async def get_device(device_id: str) -> Response:
    who = await requester(allow_guest=True)
    device = services().devices.get(who.user_id, device_id)
    if device is None:
        raise MatrixError(404, "M_NOT_FOUND", "No such device")
    return json_response(_public(device))


@client_route(bp, "PUT", "/devices/<device_id>")
async def update_device(device_id: str) -> Response:
    who = await requester(allow_guest=True)
    body = await json_body()
    name = body.get("display_name")
    if name is not None and not isinstance(name, str):
        raise MatrixError(400, "M_BAD_JSON", "'display_name' must be a string")
    if name is not None and len(name) > MAX_DISPLAY_NAME:
        raise MatrixError(400, "M_TOO_LARGE",
                          f"Device names are limited to {MAX_DISPLAY_NAME} characters")
    if "display_name" in body and not services().devices.set_display_name(
            who.user_id, device_id, name):
        raise MatrixError(404, "M_NOT_FOUND", "No such device")
    if not services().devices.exists(who.user_id, device_id):
        raise MatrixError(404, "M_NOT_FOUND", "No such device")
    return json_response({})


@client_route(bp, "DELETE", "/devices/<device_id>")
async def delete_device(device_id: str) -> Response:
    who = await requester()
    if not services().devices.exists(who.user_id, device_id):
        raise MatrixError(404, "M_NOT_FOUND", "No such device")
    await _reauthenticate(who, await json_body())
    services().devices.delete(who.user_id, device_id)
    return json_response({})


@client_route(bp, "POST", "/delete_devices")
async def delete_devices() -> Response:
    who = await requester()
    body = await json_body()
    device_ids = body.get("devices")
    if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
        raise MatrixError(400, "M_BAD_JSON", "'devices' must be a list of device ids")
    await _reauthenticate(who, body)
    for device_id in device_ids:
        services().devices.delete(who.user_id, device_id)
    return json_response({})


async def _reauthenticate(who: Requester, body: dict[str, Any]) -> None:
    svc = services()
    await svc.uia.authenticate(body.get("auth"), [[PASSWORD_STAGE]],
                               {PASSWORD_STAGE: svc.accounts.password_stage(who.user_id)},
                               user_id=who.user_id)
