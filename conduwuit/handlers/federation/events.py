"""The federation read paths: events, state, auth chains, history and spaces of our rooms.

Each route authenticates the calling server first (``origin()``), then parses its
parameters (400 ``M_MISSING_PARAM``/``M_INVALID_PARAM``/``M_BAD_JSON``) and leaves the
rest to ``services/federation/serving.py``: the room's server ACL, whether the server
is in the room, history visibility.
"""

from __future__ import annotations

from typing import Any

from quart import Response, request

from conduwuit.errors import bad_json, invalid_param, missing_param
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.services.federation.serving import (
    MISSING_EVENTS_DEFAULT,
    FederationServing,
)

from .auth import federation_blueprint, origin

bp = federation_blueprint("federation_events", __name__)

PREFIX = "/_matrix/federation/v1"


def _serving() -> FederationServing:
    serving: FederationServing = services().federation.serving
    return serving


def _required(name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise missing_param(f"{name} is required")
    return value


def _integer(name: str, raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise invalid_param(f"{name} must be an integer") from None
    if not -(2**53) < value < 2**53:
        raise invalid_param(f"{name} is out of range")
    return value


@bp.get(f"{PREFIX}/event/<event_id>")
async def event(event_id: str) -> Response:
    server = await origin()
    return json_response(_serving().event(server, event_id))


@bp.get(f"{PREFIX}/state/<room_id>")
async def state(room_id: str) -> Response:
    server = await origin()
    return json_response(await _serving().state(server, room_id, _required("event_id")))


@bp.get(f"{PREFIX}/state_ids/<room_id>")
async def state_ids(room_id: str) -> Response:
    server = await origin()
    pdu_ids, chain = await _serving().state_ids(server, room_id, _required("event_id"))
    return json_response({"pdu_ids": pdu_ids, "auth_chain_ids": chain})


@bp.get(f"{PREFIX}/event_auth/<room_id>/<event_id>")
async def event_auth(room_id: str, event_id: str) -> Response:
    server = await origin()
    return json_response({"auth_chain": await _serving().event_auth(server, room_id, event_id)})


@bp.get(f"{PREFIX}/backfill/<room_id>")
async def backfill(room_id: str) -> Response:
    server = await origin()
    from_ids = request.args.getlist("v")
    if not from_ids:
        raise missing_param("v (the events to backfill from) is required")
    limit = _integer("limit", _required("limit"))
    if limit < 0:
        raise invalid_param("limit must not be negative")
    serving = _serving()
    return json_response(serving.transaction(
        await serving.backfill(server, room_id, from_ids, limit)))


def _id_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_json(f"{name} must be a list of event ids")
    return list(value)


def _body_integer(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_json(f"{name} must be an integer")
    if value < 0:
        raise invalid_param(f"{name} must not be negative")
    return value


@bp.post(f"{PREFIX}/get_missing_events/<room_id>")
async def get_missing_events(room_id: str) -> Response:
    server = await origin()
    body = await json_body()
    earliest, latest = _id_list(body, "earliest_events"), _id_list(body, "latest_events")
    limit = _body_integer(body, "limit", MISSING_EVENTS_DEFAULT)
    min_depth = _body_integer(body, "min_depth", 0)
    events = await _serving().missing_events(server, room_id, earliest, latest, limit,
                                             min_depth)
    return json_response({"events": events})


@bp.get(f"{PREFIX}/timestamp_to_event/<room_id>")
async def timestamp_to_event(room_id: str) -> Response:
    server = await origin()
    ts = _integer("ts", _required("ts"))
    direction = _required("dir")
    if direction not in ("f", "b"):
        raise invalid_param("dir must be 'f' or 'b'")
    return json_response(await _serving().timestamp_to_event(server, room_id, ts,
                                                             direction == "f"))


@bp.get(f"{PREFIX}/hierarchy/<room_id>")
async def hierarchy(room_id: str) -> Response:
    server = await origin()
    raw = request.args.get("suggested_only", "false")
    if raw not in ("true", "false"):
        raise invalid_param("suggested_only must be 'true' or 'false'")
    return json_response(_serving().hierarchy(server, room_id, raw == "true"))
