"""Other servers joining, leaving and knocking on our rooms, and inviting our users.

``make_*`` returns the event template to sign; ``send_*`` takes it back signed. The v1
forms of send_join, send_leave and invite answer ``[200, body]``, as old servers expect.
"""

from __future__ import annotations

from typing import Any

from quart import Response, request

from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.services.federation.inbound import Inbound
from conduwuit.services.rooms.membership import JOIN, KNOCK, LEAVE

from .auth import federation_blueprint, origin, request_content

bp = federation_blueprint("federation_membership", __name__)

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


def _inbound() -> Inbound:
    return services().federation.inbound


def _versions() -> list[str]:
    """The ``ver`` parameters; a server that sends none only knows version 1 (spec)."""
    return request.args.getlist("ver") or ["1"]


@bp.get(f"{V1}/make_join/<room_id>/<user_id>")
async def make_join(room_id: str, user_id: str) -> Response:
    server = await origin()
    return json_response(_inbound().make_membership(server, room_id, user_id, JOIN,
                                                    _versions()))


@bp.get(f"{V1}/make_leave/<room_id>/<user_id>")
async def make_leave(room_id: str, user_id: str) -> Response:
    server = await origin()
    return json_response(_inbound().make_membership(server, room_id, user_id, LEAVE, None))


@bp.get(f"{V1}/make_knock/<room_id>/<user_id>")
async def make_knock(room_id: str, user_id: str) -> Response:
    server = await origin()
    return json_response(_inbound().make_membership(server, room_id, user_id, KNOCK,
                                                    _versions()))


@bp.put(f"{V2}/send_join/<room_id>/<event_id>")
async def send_join(room_id: str, event_id: str) -> Response:
    server = await origin()
    return json_response(await _inbound().send_join(server, room_id, event_id,
                                                    await request_content()))


@bp.put(f"{V1}/send_join/<room_id>/<event_id>")
async def send_join_v1(room_id: str, event_id: str) -> Response:
    server = await origin()
    answer = await _inbound().send_join(server, room_id, event_id, await request_content())
    return json_response([200, {k: answer[k] for k in ("origin", "state", "auth_chain",
                                                       "event")}])


@bp.put(f"{V2}/send_leave/<room_id>/<event_id>")
async def send_leave(room_id: str, event_id: str) -> Response:
    server = await origin()
    await _inbound().send_leave(server, room_id, event_id, await request_content())
    return json_response({})


@bp.put(f"{V1}/send_leave/<room_id>/<event_id>")
async def send_leave_v1(room_id: str, event_id: str) -> Response:
    server = await origin()
    await _inbound().send_leave(server, room_id, event_id, await request_content())
    return json_response([200, {}])


@bp.put(f"{V1}/send_knock/<room_id>/<event_id>")
async def send_knock(room_id: str, event_id: str) -> Response:
    server = await origin()
    return json_response(await _inbound().send_knock(server, room_id, event_id,
                                                     await request_content()))


@bp.put(f"{V2}/invite/<room_id>/<event_id>")
async def invite(room_id: str, event_id: str) -> Response:
    server = await origin()
    body = await json_body()
    return json_response(await _inbound().invite(
        server, room_id, event_id, body.get("event"), body.get("room_version"),
        body.get("invite_room_state")))


@bp.put(f"{V1}/invite/<room_id>/<event_id>")
async def invite_v1(room_id: str, event_id: str) -> Response:
    """v1: the body is the event, its stripped state in ``unsigned``. Such servers only
    know rooms of version 1 or 2, which differ only in state resolution: taken as 1."""
    server = await origin()
    event: Any = await json_body()
    unsigned = event.get("unsigned")
    state = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
    answer = await _inbound().invite(server, room_id, event_id, event, "1", state)
    return json_response([200, answer])
