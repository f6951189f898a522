"""``PUT /_matrix/federation/v1/send/{txnId}``: PDUs and EDUs from another server."""

from __future__ import annotations

from quart import Response

from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_response

from .auth import federation_blueprint, origin, request_content

bp = federation_blueprint("federation_send", __name__)


@bp.put("/_matrix/federation/v1/send/<txn_id>")
async def send_transaction(txn_id: str) -> Response:
    server = await origin()
    answer = await services().federation.inbound.transaction(server, txn_id,
                                                             await request_content())
    return json_response(answer)
