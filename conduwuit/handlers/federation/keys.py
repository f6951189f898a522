"""``/_matrix/key/v2/*``: our signing keys, and the notary for other servers' keys.

These endpoints are not authenticated (a server asks them before it can check
anything); every answer is signed by us instead.
"""

from __future__ import annotations

from quart import Response, request

from conduwuit.errors import bad_json, invalid_param, missing_param
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response

from .auth import federation_blueprint

bp = federation_blueprint("federation_keys", __name__)


@bp.get("/_matrix/key/v2/server")
@bp.get("/_matrix/key/v2/server/<key_id>")  # deprecated form: the key id is ignored
async def server_keys(key_id: str | None = None) -> Response:
    return json_response(services().federation.keys.own_response())


@bp.get("/_matrix/key/v2/query/<server_name>")
async def query_one(server_name: str) -> Response:
    minimum = _minimum(request.args.get("minimum_valid_until_ts"))
    keys = services().federation.keys
    answer = await keys.notary_query({server_name: (frozenset(), minimum)})
    return json_response({"server_keys": answer})


@bp.post("/_matrix/key/v2/query")
async def query_many() -> Response:
    body = await json_body()
    if "server_keys" not in body:
        raise missing_param("server_keys is required")
    criteria = body["server_keys"]
    if not isinstance(criteria, dict):
        raise bad_json("server_keys must map server names to key ids")
    now = services().federation.keys.clock_ms()
    wanted: dict[str, tuple[frozenset[str], int]] = {}
    for server, by_key in criteria.items():
        if not isinstance(by_key, dict):
            raise bad_json(f"server_keys.{server} must be an object")
        minimum = now
        for kid, wants in by_key.items():
            if not isinstance(wants, dict):
                raise bad_json(f"server_keys.{server}.{kid} must be an object")
            value = wants.get("minimum_valid_until_ts")
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise bad_json("minimum_valid_until_ts must be an integer")
                minimum = max(minimum, value)
        wanted[server] = (frozenset(by_key), minimum)
    answer = await services().federation.keys.notary_query(wanted)
    return json_response({"server_keys": answer})


def _minimum(text: str | None) -> int:
    now = services().federation.keys.clock_ms()
    if text is None:
        return now
    try:
        return int(text)
    except ValueError:
        raise invalid_param("minimum_valid_until_ts must be an integer") from None
