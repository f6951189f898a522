"""Room aliases and the published room directory."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from conduwuit.errors import MatrixError
from conduwuit.handlers.auth import optional_requester, requester
from conduwuit.handlers.context import services
from conduwuit.handlers.json import json_body, json_response
from conduwuit.handlers.routing import client_route
from conduwuit.services.federation.client import FederationError, RemoteError
from conduwuit.services.rooms.room_directory import PublicRoomsQuery

bp = Blueprint("client_directory", __name__)


# --- aliases ------------------------------------------------------------------------

@client_route(bp, "GET", "/directory/room/<room_alias>")
async def get_alias(room_alias: str) -> Response:
    svc = services()
    if not room_alias.endswith(f":{svc.config.server_name}") and svc.config.allow_federation:
        # Another server's alias: ask that server (federation query/directory).
        return json_response(await svc.federation.queries.resolve_alias(room_alias))
    await svc.rooms.aliases.resolve_asking(room_alias)  # an appservice may create it
    room_id, servers = svc.rooms.room_directory.resolve(room_alias)
    return json_response({"room_id": room_id, "servers": servers})


@client_route(bp, "PUT", "/directory/room/<room_alias>")
async def put_alias(room_alias: str) -> Response:
    who = await requester()
    body = await json_body()
    services().rooms.room_directory.create_alias(room_alias, body.get("room_id"), who.user_id)
    return json_response({})


@client_route(bp, "DELETE", "/directory/room/<room_alias>")
async def delete_alias(room_alias: str) -> Response:
    who = await requester()
    await services().rooms.room_directory.delete_alias(room_alias, who.user_id)
    return json_response({})


@client_route(bp, "GET", "/org.matrix.msc2432/rooms/<room_id>/aliases", ("unstable",))
@client_route(bp, "GET", "/rooms/<room_id>/aliases")
async def room_aliases(room_id: str) -> Response:
    who = await requester(allow_guest=True)
    return json_response(
        {"aliases": services().rooms.room_directory.room_aliases(room_id, who.user_id)})


# --- the published room directory ---------------------------------------------------

@client_route(bp, "GET", "/directory/list/room/<room_id>")
async def get_visibility(room_id: str) -> Response:
    public = services().rooms.room_directory.is_published(room_id)
    return json_response({"visibility": "public" if public else "private"})


@client_route(bp, "PUT", "/directory/list/room/<room_id>")
async def set_visibility(room_id: str) -> Response:
    who = await requester()
    body = await json_body()
    services().admin_room.check_publish(room_id, body.get("visibility"))
    services().rooms.room_directory.set_published(room_id, who.user_id, body.get("visibility"))
    return json_response({})


@client_route(bp, "GET", "/publicRooms")
async def public_rooms() -> Response:
    await _directory_reader()
    query = PublicRoomsQuery(limit=_limit(request.args.get("limit")),
                             since=request.args.get("since") or None)
    return await _list(request.args.get("server"), query)


@client_route(bp, "POST", "/publicRooms")
async def public_rooms_filtered() -> Response:
    await _directory_reader()
    body = await json_body()
    limit = body.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise MatrixError(400, "M_BAD_JSON", "'limit' must be an integer")
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_BAD_JSON", "'since' must be a string")
    search, room_types = _filter(body.get("filter"))
    query = PublicRoomsQuery(limit=limit, since=since or None, search=search,
                             room_types=room_types, room_ids=_network_rooms(body))
    return await _list(request.args.get("server"), query)


async def _list(server: str | None, query: PublicRoomsQuery) -> Response:
    svc = services()
    directory = svc.rooms.room_directory
    if not directory.is_remote(server or None):
        return json_response(directory.public_rooms(query))
    assert server is not None
    # Another server's directory, read over federation (POST carries the filter).
    body: dict[str, Any] = {}
    if query.limit is not None:
        body["limit"] = query.limit
    if query.since is not None:
        body["since"] = query.since
    if query.search:
        body["filter"] = {"generic_search_term": query.search}
    try:
        answer = await svc.federation.client.request(
            "POST", server, "/_matrix/federation/v1/publicRooms", body=body)
    except (FederationError, RemoteError) as exc:
        raise MatrixError(502, "M_UNKNOWN",
                          f"Could not read the room directory of {server}: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
        raise MatrixError(502, "M_UNKNOWN", f"{server} sent a broken room directory")
    return json_response(answer)


async def _directory_reader() -> None:
    """A token is needed unless ``allow_public_room_directory_without_auth``; one given
    is always checked."""
    if services().config.allow_public_room_directory_without_auth:
        await optional_requester()
    else:
        await requester(allow_guest=True)


def _network_rooms(body: dict[str, Any]) -> list[str] | None:
    """Application service directories: ``third_party_instance_id`` lists one network,
    ``include_all_networks`` adds every network to the main directory."""
    instance = body.get("third_party_instance_id")
    everything = body.get("include_all_networks", False)
    if instance is not None and not isinstance(instance, str):
        raise MatrixError(400, "M_BAD_JSON", "'third_party_instance_id' must be a string")
    if not isinstance(everything, bool):
        raise MatrixError(400, "M_BAD_JSON", "'include_all_networks' must be a boolean")
    if instance is not None and everything:
        raise MatrixError(400, "M_INVALID_PARAM",
                          "third_party_instance_id cannot be used with include_all_networks")
    appservices = services().appservices
    if instance is not None:
        return appservices.network_rooms(instance, False)
    if everything:
        main = services().rooms.directory.public_rooms()
        return sorted(set(main) | set(appservices.network_rooms(None, True)))
    return None


def _limit(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None


def _filter(value: Any) -> tuple[str | None, list[str | None] | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "'filter' must be an object")
    search = value.get("generic_search_term")
    if search is not None and not isinstance(search, str):
        raise MatrixError(400, "M_BAD_JSON", "'generic_search_term' must be a string")
    room_types = value.get("room_types")
    if room_types is not None and (not isinstance(room_types, list) or not all(
            t is None or isinstance(t, str) for t in room_types)):
        raise MatrixError(400, "M_BAD_JSON", "'room_types' must be a list of strings or nulls")
    # An empty list filters nothing out, as in conduwuit.
    return search or None, room_types or None
