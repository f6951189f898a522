"""``/.well-known/matrix/*``: discovery answers taken from ``[global.well_known]``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from conduwuit.errors import not_found

from .context import services
from .json import json_response

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/matrix/client")
async def client() -> Response:
    base_url = services().config.well_known.client
    if not base_url:
        raise not_found("This server has no client well-known (set well_known.client)")
    return json_response({"m.homeserver": {"base_url": base_url}})


@bp.get("/.well-known/matrix/server")
async def server() -> Response:
    delegated = services().config.well_known.server
    if not delegated:
        raise not_found("This server has no server well-known (set well_known.server)")
    return json_response({"m.server": delegated})


@bp.get("/.well-known/matrix/support")
async def support() -> Response:
    wk = services().config.well_known
    body: dict[str, Any] = {}
    if wk.support_email or wk.support_mxid:
        contact: dict[str, str] = {"role": wk.support_role or "m.role.admin"}
        if wk.support_email:
            contact["email_address"] = wk.support_email
        if wk.support_mxid:
            contact["matrix_id"] = wk.support_mxid
        body["contacts"] = [contact]
    if wk.support_page:
        body["support_page"] = wk.support_page
    if not body:
        raise not_found("This server publishes no support contacts")
    return json_response(body)
