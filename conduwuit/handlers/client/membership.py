"""Joining, leaving, inviting, kicking, banning, knocking, forgetting."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route

bp = Blueprint("client_membership", __name__)


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "'reason' must be a string")
    return reason


def _target(body: dict[str, Any]) -> str:
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise MatrixError(400, "M_MISSING_PARAM" if user_id is None else "M_BAD_JSON",
                          "'user_id' must be given as a string")
    return user_id


def _via() -> list[str]:
    """Servers to join or knock through: ``via``, and the older ``server_name``."""
    return [*request.args.getlist("via"), *request.args.getlist("server_name")]


@client_route(bp, "POST", "/join/<room_id_or_alias>")
async def join_by_id_or_alias(room_id_or_alias: str) -> Response:
    return await _join(room_id_or_alias, allow_guest=False)


@client_route(bp, "POST", "/rooms/<room_id>/join")
async def join(room_id: str) -> Response:
    # Guests may join by room id (spec, guest access) where m.room.guest_access allows.
    return await _join(room_id, allow_guest=True)


async def _join(room_id_or_alias: str, *, allow_guest: bool) -> Response:
    who = await requester(allow_guest=allow_guest)
    body = await json_body()
    actions = services().rooms.actions
    room_id, servers = await actions.locate(room_id_or_alias, _via())
    room_id = await actions.join(room_id, who.user_id, _reason(body), servers)
    return json_response({"room_id": room_id})


@client_route(bp, "POST", "/rooms/<room_id>/leave")
async def leave(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    await services().rooms.actions.leave(room_id, who.user_id, _reason(await json_body()))
    return json_response({})


@client_route(bp, "POST", "/rooms/<room_id>/invite")
async def invite(room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    await services().rooms.actions.invite(room_id, who.user_id, _target(body), _reason(body))
    return json_response({})


@client_route(bp, "POST", "/rooms/<room_id>/kick")
async def kick(room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    await services().rooms.actions.kick(room_id, who.user_id, _target(body), _reason(body))
    return json_response({})


@client_route(bp, "POST", "/rooms/<room_id>/ban")
async def ban(room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    await services().rooms.actions.ban(room_id, who.user_id, _target(body), _reason(body))
    return json_response({})


@client_route(bp, "POST", "/rooms/<room_id>/unban")
async def unban(room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    await services().rooms.actions.unban(room_id, who.user_id, _target(body), _reason(body))
    return json_response({})


@client_route(bp, "POST", "/knock/<room_id_or_alias>")
async def knock(room_id_or_alias: str) -> Response:
    who = await requester()
    actions = services().rooms.actions
    room_id, servers = await actions.locate(room_id_or_alias, _via())
    await actions.knock(room_id, who.user_id, _reason(await json_body()), servers)
    return json_response({"room_id": room_id})


@client_route(bp, "POST", "/rooms/<room_id>/forget")
async def forget(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    services().rooms.actions.forget(room_id, who.user_id)
    return json_response({})
