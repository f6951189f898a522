"""``GET /_matrix/federation/v1/version``."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.services.diagnostics import SERVER_NAME

bp = Blueprint("federation_version", __name__)


@bp.before_request
async def require_federation() -> None:
    if not services().config.allow_federation:
        raise MatrixError(404, "M_NOT_FOUND", "Federation is disabled on this server")


@bp.get("/_matrix/federation/v1/version")
async def version() -> Response:
    return json_response(
        {"server": {"name": SERVER_NAME, "version": services().diagnostics.version}}
    )
