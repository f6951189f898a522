"""``PUT /sendToDevice/{eventType}/{txnId}``."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_to_device", __name__)


@client_route(bp, "PUT", "/sendToDevice/<event_type>/<txn_id>")
async def send_to_device(event_type: str, txn_id: str) -> Response:
    who = await requester(allow_guest=True)
    body = await json_body()
    services().e2ee.to_device.send(who.user_id, who.device_id, event_type, txn_id,
                                   body.get("messages"))
    return json_response({})
