"""JSON in and out of handlers, with orjson on both paths."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, request

from conduwuit.errors import bad_json, not_json


async def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or the spec's error for what is wrong with it."""
    raw = await request.get_data(cache=True)
    if not raw:
        # Clients may omit an empty body on endpoints whose fields are all optional.
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise not_json(f"Request body is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise bad_json("Request body must be a JSON object")
    return value


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")
