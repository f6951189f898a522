"""``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`` and ``.../read_markers``."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import invalid_param
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_receipts", __name__)


@client_route(bp, "POST", "/rooms/<room_id>/receipt/<receipt_type>/<event_id>")
async def post_receipt(room_id: str, receipt_type: str, event_id: str) -> Response:
    who = await requester(allow_guest=True)
    body = await json_body()
    thread_id = body.get("thread_id")
    if "thread_id" in body and not isinstance(thread_id, str):
        raise invalid_param("thread_id must be a non-empty string")
    services().receipts.post_receipt(who.user_id, room_id, receipt_type, event_id, thread_id)
    return json_response({})


@client_route(bp, "POST", "/rooms/<room_id>/read_markers")
async def read_markers(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    services().receipts.set_read_markers(who.user_id, room_id, await json_body())
    return json_response({})
