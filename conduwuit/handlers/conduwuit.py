"""``/_conduwuit/*``: server-specific endpoints, and the root page."""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.services.diagnostics import SERVER_NAME

from .context import services
from .json import json_response

bp = Blueprint("conduwuit", __name__)


@bp.get("/_conduwuit/server_version")
async def server_version() -> Response:
    return json_response({"name": SERVER_NAME, "version": services().diagnostics.version})


@bp.get("/")
async def root() -> Response:
    return Response("hewwo from conduwuit! this is a Matrix homeserver.\n",
                    content_type="text/plain")
