"""``/room_keys/...``: server-side backups of room keys."""

from __future__ import annotations

from quart import Blueprint, Response, request

from conduwuit.handlers.auth import requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.e2ee.backup import (
    check_session,
    parse_rooms,
    parse_sessions,
    unknown_version,
)

bp = Blueprint("client_backup", __name__)

VERSIONS = ("r0", "v3", "unstable")


@client_route(bp, "POST", "/room_keys/version", versions=VERSIONS)
async def create_version() -> Response:
    who = await requester()
    version = services().e2ee.backup.create(who.user_id, await json_body())
    return json_response({"version": version})


@client_route(bp, "GET", "/room_keys/version", versions=VERSIONS)
async def current_version() -> Response:
    who = await requester()
    current = services().e2ee.backup.current(who.user_id)
    if current is None:
        raise unknown_version()
    return json_response(current.info())


@client_route(bp, "GET", "/room_keys/version/<version>", versions=VERSIONS)
async def get_version(version: str) -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.get(who.user_id, version).info())


@client_route(bp, "PUT", "/room_keys/version/<version>", versions=VERSIONS)
async def update_version(version: str) -> Response:
    who = await requester()
    services().e2ee.backup.update(who.user_id, version, await json_body())
    return json_response({})


@client_route(bp, "DELETE", "/room_keys/version/<version>", versions=VERSIONS)
async def delete_version(version: str) -> Response:
    who = await requester()
    services().e2ee.backup.delete(who.user_id, version)
    return json_response({})


@client_route(bp, "PUT", "/room_keys/keys", versions=VERSIONS)
async def put_all_keys() -> Response:
    who = await requester()
    rooms = parse_rooms(await json_body())
    return json_response(services().e2ee.backup.put_keys(
        who.user_id, request.args.get("version"), rooms))


@client_route(bp, "PUT", "/room_keys/keys/<room_id>", versions=VERSIONS)
async def put_room_keys(room_id: str) -> Response:
    who = await requester()
    sessions = parse_sessions(await json_body(), room_id)
    return json_response(services().e2ee.backup.put_keys(
        who.user_id, request.args.get("version"), {room_id: sessions}))


@client_route(bp, "PUT", "/room_keys/keys/<room_id>/<session_id>", versions=VERSIONS)
async def put_session_key(room_id: str, session_id: str) -> Response:
    who = await requester()
    data = check_session(await json_body(), f"session {session_id!r}")
    return json_response(services().e2ee.backup.put_keys(
        who.user_id, request.args.get("version"), {room_id: {session_id: data}}))


@client_route(bp, "GET", "/room_keys/keys", versions=VERSIONS)
async def get_all_keys() -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.get_keys(who.user_id,
                                                         request.args.get("version")))


@client_route(bp, "GET", "/room_keys/keys/<room_id>", versions=VERSIONS)
async def get_room_keys(room_id: str) -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.get_keys(
        who.user_id, request.args.get("version"), room_id))


@client_route(bp, "GET", "/room_keys/keys/<room_id>/<session_id>", versions=VERSIONS)
async def get_session_key(room_id: str, session_id: str) -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.get_keys(
        who.user_id, request.args.get("version"), room_id, session_id))


@client_route(bp, "DELETE", "/room_keys/keys", versions=VERSIONS)
async def delete_all_keys() -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.delete_keys(who.user_id,
                                                            request.args.get("version")))


@client_route(bp, "DELETE", "/room_keys/keys/<room_id>", versions=VERSIONS)
async def delete_room_keys(room_id: str) -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.delete_keys(
        who.user_id, request.args.get("version"), room_id))


@client_route(bp, "DELETE", "/room_keys/keys/<room_id>/<session_id>", versions=VERSIONS)
async def delete_session_key(room_id: str, session_id: str) -> Response:
    who = await requester()
    return json_response(services().e2ee.backup.delete_keys(
        who.user_id, request.args.get("version"), room_id, session_id))
