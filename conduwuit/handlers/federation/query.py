"""``/_matrix/federation/v1/query/*``: profile and directory queries from other servers."""

from __future__ import annotations

from quart import Response, request

from conduwuit.errors import missing_param, unrecognized
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response

from .auth import federation_blueprint, origin

bp = federation_blueprint("federation_query", __name__)


@bp.get("/_matrix/federation/v1/query/profile")
async def profile() -> Response:
    await origin()
    user_id = request.args.get("user_id")
    if not user_id:
        raise missing_param("user_id is required")
    field = request.args.get("field") or None
    return json_response(services().federation.queries.answer_profile(user_id, field))


@bp.get("/_matrix/federation/v1/query/directory")
async def directory() -> Response:
    await origin()
    alias = request.args.get("room_alias")
    if not alias:
        raise missing_param("room_alias is required")
    return json_response(services().federation.queries.local_alias(alias))


@bp.get("/_matrix/federation/v1/query/<query_type>")
async def unknown_query(query_type: str) -> Response:
    await origin()
    # The spec's answer for an unsupported endpoint.
    raise unrecognized(f"Unknown query type {query_type!r}")
