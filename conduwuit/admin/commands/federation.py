"""``federation``: rooms' incoming federation, other servers' support contacts and
well-knowns, remote users, and the state of our outbound queues."""

from __future__ import annotations

import httpx
import orjson

from conduwuit.services.federation.discovery import DiscoveryError

from ..context import AdminContext
from ..render import code_block
from ..tree import Arg, Args, CommandError, Group
from .common import any_user, bullet_list, room_id_of, when

group = Group("federation", "Commands for managing federation")


@group.command("incoming-federation", "List the rooms whose incoming federation is disabled")
async def incoming_federation(ctx: AdminContext, args: Args) -> str:
    rooms = ctx.services.rooms.moderation.disabled_rooms()
    return (f"{len(rooms)} room(s) with incoming federation disabled:\n\n"
            + bullet_list([f"`{r}`" for r in rooms]))


@group.command("disable-room", "Refuse every event other servers send for a room",
               Arg("room", "room id or alias"))
async def disable_room(ctx: AdminContext, args: Args) -> str:
    room_id = await room_id_of(ctx, args["room"])
    ctx.services.rooms.moderation.set_federation_disabled(room_id, True)
    return f"Incoming federation of `{room_id}` is disabled"


@group.command("enable-room", "Accept events from other servers for a room again",
               Arg("room", "room id or alias"))
async def enable_room(ctx: AdminContext, args: Args) -> str:
    room_id = await room_id_of(ctx, args["room"])
    ctx.services.rooms.moderation.set_federation_disabled(room_id, False)
    return f"Incoming federation of `{room_id}` is enabled"


@group.command("fetch-support-well-known", "Fetch /.well-known/matrix/support of a server",
               Arg("server_name", "the server"))
async def fetch_support_well_known(ctx: AdminContext, args: Args) -> str:
    server = args["server_name"]
    if ctx.services.federation.client.is_forbidden(server):
        raise CommandError(f"{server} is in forbidden_remote_server_names")
    discovery = ctx.services.federation.discovery
    try:
        url = httpx.URL(f"https://{server}/.well-known/matrix/support")
    except httpx.InvalidURL:
        raise CommandError(f"`{server}` is not a server name") from None
    try:
        # Through discovery's well-known client: ip_range_denylist, SNI and Host apply.
        response, body = await discovery._get(url)
    except (DiscoveryError, httpx.HTTPError, OSError) as error:
        raise CommandError(f"Could not fetch {url}: {error}") from None
    if response.status_code != 200:
        raise CommandError(f"{url} answered HTTP {response.status_code}")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CommandError(f"{url} did not answer JSON") from None
    if not isinstance(parsed, dict):
        raise CommandError(f"{url} did not answer a JSON object")
    shown = orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode()
    return f"Support well-known of `{server}`:\n\n" + code_block(shown, "json")


@group.command("remote-user-in-rooms", "List the rooms we share with a remote user",
               Arg("user_id", "a user of another server"))
async def remote_user_in_rooms(ctx: AdminContext, args: Args) -> str:
    user_id = any_user(args["user_id"])
    if ctx.services.users.is_local(user_id):
        raise CommandError(f"{user_id} is a local user; use `users list-joined-rooms`")
    rooms = ctx.services.rooms.membership.joined_rooms(user_id)
    return (f"`{user_id}` is joined to {len(rooms)} room(s) known here:\n\n"
            + bullet_list([f"`{r}`" for r in rooms]))


@group.command("destinations", "Outbound federation queues and their backoff state")
async def destinations(ctx: AdminContext, args: Args) -> str:
    found = await ctx.services.federation.sender.destinations()
    lines = []
    for d in found:
        state = "sending" if d.in_flight else "dormant" if d.dormant else \
            f"backing off {d.retry_in:.0f}s" if d.retry_in > 0 else "ready"
        line = (f"`{d.destination}`: {d.queued} queued, {state}, {d.failures} failure(s), "
                f"last success {when(d.last_success_ms)}")
        if d.last_error:
            line += f", last error: {d.last_error}"
        lines.append(line)
    return f"{len(found)} destination(s):\n\n" + bullet_list(lines)
