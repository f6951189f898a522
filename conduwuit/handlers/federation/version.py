"""``GET /_matrix/federation/v1/version``."""

from __future__ import annotations

from quart import Response

from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response
from conduwuit.services.diagnostics import SERVER_NAME

from .auth import federation_blueprint

bp = federation_blueprint("federation_version", __name__)


@bp.get("/_matrix/federation/v1/version")
async def version() -> Response:
    return json_response(
        {"server": {"name": SERVER_NAME, "version": services().diagnostics.version}}
    )
