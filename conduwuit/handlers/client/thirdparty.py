"""Third-party identifiers (email, phone): answered as a server without email, SMS or
identity server support, which ``m.3pid_changes: false`` in /capabilities announces.

* ``GET /account/3pid`` lists nothing.
* Adding or binding is refused with 403 ``M_FORBIDDEN``.
* Deleting or unbinding can only be about an identifier we do not have; the spec's
  answer for "no identity server known" is ``id_server_unbind_result: no-support``.
* ``requestToken``: for adding to an account the spec lists 400
  ``M_THREEPID_MEDIUM_NOT_SUPPORTED``; for registration and password resets it lists
  403 ``M_THREEPID_DENIED`` ("does not permit the address to be bound").
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from conduwuit.errors import MatrixError, bad_json, forbidden, invalid_param, missing_param
from conduwuit.handlers.auth import requester
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_thirdparty", __name__)

MEDIA = ("email", "msisdn")
_NO_3PID_CHANGES = "This server does not support third-party identifiers (email, phone)"


@client_route(bp, "GET", "/account/3pid")
async def list_threepids() -> Response:
    await requester()
    return json_response({"threepids": []})


@client_route(bp, "POST", "/account/3pid")
@client_route(bp, "POST", "/account/3pid/add")
async def add_threepid() -> Response:
    await requester()
    await json_body()
    raise forbidden(_NO_3PID_CHANGES)


@client_route(bp, "POST", "/account/3pid/bind")
async def bind_threepid() -> Response:
    await requester()
    await json_body()
    raise forbidden("This server does not bind identifiers through identity servers")


@client_route(bp, "POST", "/account/3pid/delete")
@client_route(bp, "POST", "/account/3pid/unbind")
async def remove_threepid() -> Response:
    await requester()
    _check_threepid(await json_body())
    # Nothing is ever added or bound here, so there is no identity server to ask.
    return json_response({"id_server_unbind_result": "no-support"})


@client_route(bp, "POST", "/account/3pid/email/requestToken")
@client_route(bp, "POST", "/account/3pid/msisdn/requestToken")
async def account_request_token() -> Response:
    await json_body()
    raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", _NO_3PID_CHANGES)


@client_route(bp, "POST", "/register/email/requestToken")
@client_route(bp, "POST", "/register/msisdn/requestToken")
@client_route(bp, "POST", "/account/password/email/requestToken")
@client_route(bp, "POST", "/account/password/msisdn/requestToken")
async def denied_request_token() -> Response:
    await json_body()
    raise MatrixError(403, "M_THREEPID_DENIED", _NO_3PID_CHANGES)


def _check_threepid(body: dict[str, Any]) -> None:
    """The body of delete/unbind: ``medium``, ``address`` and an optional ``id_server``."""
    for key in ("medium", "address"):
        if key not in body:
            raise missing_param(f"Missing '{key}'")
        if not isinstance(body[key], str):
            raise bad_json(f"'{key}' must be a string")
    if body["medium"] not in MEDIA:
        raise invalid_param("'medium' must be 'email' or 'msisdn'")
    if not isinstance(body.get("id_server", ""), str):
        raise bad_json("'id_server' must be a string")
