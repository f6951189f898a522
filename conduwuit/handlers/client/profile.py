"""``/profile/{userId}[/{keyName}]``: read anyone's profile, change your own.

``displayname`` and ``avatar_url`` are served by the generic ``{keyName}`` routes, which
is how the spec has described them since v1.16.
"""

from __future__ import annotations

from quart import Blueprint, Response

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester, require_self
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.profile import DISPLAYNAME

bp = Blueprint("client_profile", __name__)


@client_route(bp, "GET", "/profile/<user_id>")
async def get_profile(user_id: str) -> Response:
    await _reader_check()
    await services().appservices.query_user(user_id)  # an appservice may create the user
    # Users of other servers are asked over federation.
    return json_response(await services().federation.queries.lookup_profile(user_id))


@client_route(bp, "GET", "/profile/<user_id>/<key_name>")
async def get_profile_field(user_id: str, key_name: str) -> Response:
    await _reader_check()
    await services().appservices.query_user(user_id)
    return json_response(await services().federation.queries.lookup_profile(user_id, key_name))


@client_route(bp, "PUT", "/profile/<user_id>/<key_name>")
async def set_profile_field(user_id: str, key_name: str) -> Response:
    await _writer_check(user_id, key_name)
    body = await json_body()
    await services().profile.set_field(user_id, key_name, body)
    return json_response({})


@client_route(bp, "DELETE", "/profile/<user_id>/<key_name>")
async def delete_profile_field(user_id: str, key_name: str) -> Response:
    await _writer_check(user_id, key_name)
    await services().profile.delete_field(user_id, key_name)
    return json_response({})


async def _reader_check() -> None:
    """Profiles are public unless the operator asked for a token (against scraping)."""
    if services().config.require_auth_for_profile_requests:
        await requester(allow_guest=True)


async def _writer_check(user_id: str, key_name: str) -> None:
    # Guests may set a display name (spec, guest access) but nothing else.
    who = await requester(allow_guest=True)
    require_self(who, user_id, "the profile")
    if who.is_guest and key_name != DISPLAYNAME:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests can only set a display name")
