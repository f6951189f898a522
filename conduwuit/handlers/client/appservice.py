"""Client-Server API extensions for application services: ping and network directories."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_appservice", __name__)


@client_route(bp, "POST", "/appservice/<appservice_id>/ping", versions=("v1",))
async def ping(appservice_id: str) -> Response:
    who = await requester()
    body = await json_body()
    duration = await services().appservices.ping(appservice_id, who,
                                                 body.get("transaction_id"))
    return json_response({"duration_ms": duration})


@client_route(bp, "PUT", "/directory/list/appservice/<network_id>/<room_id>")
async def set_network_visibility(network_id: str, room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    services().admin_room.check_publish(room_id, body.get("visibility"))
    services().appservices.set_network_listing(who, network_id, room_id,
                                               body.get("visibility"))
    return json_response({})
