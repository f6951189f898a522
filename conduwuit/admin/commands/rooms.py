"""``rooms``: the rooms this server knows, their bans, aliases and directory entries."""

from __future__ import annotations

import orjson
import trio

from conduwuit.errors import MatrixError
from conduwuit.services.rooms.membership import INVITE, JOIN, KNOCK
from conduwuit.services.rooms.state import CREATE, NAME, TOPIC

from ..context import AdminContext
from ..render import code_block
from ..tree import Arg, Args, CommandError, Group
from .common import bullet_list, known_room, room_id_of

group = Group("rooms", "Commands for managing rooms")
moderation = group.group("moderation", "Manage moderation of remote or local rooms")
alias = group.group("alias", "Manage rooms' aliases")
directory = group.group("directory", "Manage the room directory")

PAGE_SIZE = 100
MAX_LISTED_MEMBERS = 50


def _name(ctx: AdminContext, room_id: str) -> str:
    name = ctx.services.rooms.state.content(room_id, NAME).get("name")
    return name if isinstance(name, str) else ""


def _line(ctx: AdminContext, room_id: str) -> str:
    name = _name(ctx, room_id)
    count = ctx.services.rooms.membership.joined_count(room_id)
    return f"`{room_id}`{f' ({name})' if name else ''}: {count} joined member(s)"


@group.command("list-rooms", "List the rooms this server knows, with member counts",
               Arg("page", "page number, from 1", optional=True), aliases=("list",))
async def list_rooms(ctx: AdminContext, args: Args) -> str:
    try:
        page = max(1, int(args.get("page", 1)))
    except ValueError:
        raise CommandError("The page must be a number") from None
    room_ids = await trio.to_thread.run_sync(ctx.services.rooms.events.rooms)
    counted = sorted(((ctx.services.rooms.membership.joined_count(r), r) for r in room_ids),
                     reverse=True)
    shown = counted[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    return (f"Rooms ({len(room_ids)} in total, page {page}):\n\n"
            + bullet_list([_line(ctx, room_id) for _, room_id in shown]))


@group.command("info", "View information about a room", Arg("room", "room id or alias"))
async def info(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    room_id = await room_id_of(ctx, args["room"])
    known_room(ctx, room_id)
    rooms = svc.rooms
    version = rooms.events.room_version(room_id)
    create = rooms.state.get(room_id, CREATE)
    topic = rooms.state.content(room_id, TOPIC).get("topic")
    members = rooms.membership.joined_members(room_id)
    local = [m for m in members if svc.users.is_local(m)]
    lines = [
        f"**Room** `{room_id}`",
        "",
        f"- name: {_name(ctx, room_id) or '(none)'}",
        f"- topic: {topic if isinstance(topic, str) and topic else '(none)'}",
        f"- version: `{version.identifier if version else '?'}`",
        f"- creator: `{create.sender if create else '?'}`",
        f"- join rule: `{rooms.summaries.join_rule(room_id)}`",
        f"- joined members: {len(members)} ({len(local)} local)",
        f"- servers: {', '.join(f'`{s}`' for s in rooms.membership.servers(room_id))}",
        f"- aliases: {', '.join(f'`{a}`' for a in rooms.aliases.of_room(room_id)) or '(none)'}",
        f"- published: {rooms.directory.is_public(room_id)}",
        f"- banned: {rooms.moderation.is_banned(room_id)}",
        f"- incoming federation disabled: {rooms.moderation.federation_disabled(room_id)}",
        f"- admin room: {svc.admin_room.is_admin_room(room_id)}",
    ]
    if local:
        lines += ["", "Local members:", ""]
        lines += [f"- `{m}`" for m in local[:MAX_LISTED_MEMBERS]]
        if len(local) > MAX_LISTED_MEMBERS:
            lines.append(f"- ... and {len(local) - MAX_LISTED_MEMBERS} more")
    return "\n".join(lines)


@group.command("state", "Dump the current state of a room", Arg("room", "room id or alias"))
async def state(ctx: AdminContext, args: Args) -> str:
    room_id = await room_id_of(ctx, args["room"])
    known_room(ctx, room_id)
    rooms = ctx.services.rooms
    current = rooms.state.current(room_id)
    events = [rooms.events.get(event_id) for _, event_id in sorted(current.items())]
    dump = [e.pdu for e in events if e is not None]
    text = orjson.dumps(dump, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return f"{len(dump)} state event(s) of `{room_id}`:\n\n" + code_block(text, "json")


@group.command("exists", "Check whether this server knows a room", Arg("room_id", "the room"))
async def exists(ctx: AdminContext, args: Args) -> str:
    room_id = await room_id_of(ctx, args["room_id"])
    known = ctx.services.rooms.events.room_version(room_id) is not None
    return f"`{room_id}` is {'known' if known else 'not known'} to this server"


# --- moderation ---------------------------------------------------------------------------

async def _ban(ctx: AdminContext, room: str) -> tuple[str, list[str], list[str]]:
    """Ban a room: no more joins or invites, federation off, every local member out."""
    svc = ctx.services
    room_id = await room_id_of(ctx, room)
    if svc.admin_room.is_admin_room(room_id):
        raise CommandError("The admin room cannot be banned")
    moderation_service = svc.rooms.moderation
    moderation_service.set_banned(room_id, True)
    moderation_service.set_federation_disabled(room_id, True)
    svc.rooms.directory.publish(room_id, False)
    evicted: list[str] = []
    failed: list[str] = []
    for user_id, membership in svc.rooms.membership.members(room_id):
        if not svc.users.is_local(user_id) or membership not in (JOIN, INVITE, KNOCK):
            continue
        try:
            await svc.rooms.actions.leave(room_id, user_id, "this room is banned on this server")
            evicted.append(user_id)
        except MatrixError as error:
            failed.append(f"`{user_id}`: {error.error}")
    return room_id, evicted, failed


@moderation.command("ban-room", "Ban a room: local users are made to leave, and joins and "
                    "invites (local and remote) are refused", Arg("room", "room id or alias"))
async def ban_room(ctx: AdminContext, args: Args) -> str:
    room_id, evicted, failed = await _ban(ctx, args["room"])
    text = f"Room `{room_id}` is banned; {len(evicted)} local user(s) made to leave."
    if failed:
        text += "\n\nCould not remove:\n\n" + bullet_list(failed)
    return text


@moderation.command("ban-list-of-rooms", "Ban every room of a list, as ban-room does",
                    input_help="one room id or alias per line")
async def ban_list_of_rooms(ctx: AdminContext, args: Args) -> str:
    rooms = args.input_lines()
    if not rooms:
        raise CommandError("Give the rooms in a code block below the command")
    banned: list[str] = []
    problems: list[str] = []
    evicted = 0
    for room in rooms:
        try:
            room_id, gone, failed = await _ban(ctx, room)
            banned.append(f"`{room_id}`")
            evicted += len(gone)
            problems += failed
        except (CommandError, MatrixError) as error:
            problems.append(f"`{room}`: {error}")
    text = (f"Banned {len(banned)} of {len(rooms)} room(s); {evicted} local user(s) made to "
            f"leave.\n\n" + bullet_list(banned))
    if problems:
        text += "\n\nProblems:\n\n" + bullet_list(problems)
    return text


@moderation.command("unban-room", "Unban a room: local users may join it again",
                    Arg("room", "room id or alias"))
async def unban_room(ctx: AdminContext, args: Args) -> str:
    room_id = await room_id_of(ctx, args["room"])
    moderation_service = ctx.services.rooms.moderation
    if not moderation_service.is_banned(room_id):
        raise CommandError(f"`{room_id}` is not banned")
    moderation_service.set_banned(room_id, False)
    moderation_service.set_federation_disabled(room_id, False)
    return f"Room `{room_id}` is unbanned"


@moderation.command("list-banned-rooms", "List the banned rooms")
async def list_banned_rooms(ctx: AdminContext, args: Args) -> str:
    banned = ctx.services.rooms.moderation.banned_rooms()
    return f"{len(banned)} banned room(s):\n\n" + bullet_list([f"`{r}`" for r in banned])


# --- aliases -------------------------------------------------------------------------------

def _alias(ctx: AdminContext, localpart: str) -> str:
    server = ctx.services.config.server_name
    if localpart.startswith("#"):
        return localpart
    return f"#{localpart}:{server}"


@alias.command("set", "Make a local alias point to a room",
               Arg("room_id", "the room"), Arg("localpart", "the alias's name, e.g. lobby"),
               Arg("force", "replace an alias that points elsewhere", flag=True))
async def alias_set(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    room_id = await room_id_of(ctx, args["room_id"])
    known_room(ctx, room_id)
    name = _alias(ctx, args["localpart"])
    current = svc.rooms.aliases.resolve(name)
    if current is not None:
        if not args["force"]:
            raise CommandError(f"`{name}` already points to `{current}` (use --force)")
        svc.rooms.aliases.delete(name)
    svc.rooms.aliases.create(name, room_id, svc.admin_room.bot_id)  # forbidden_alias_names
    return f"`{name}` now points to `{room_id}`"


@alias.command("remove", "Remove a local alias", Arg("localpart", "the alias or its name"))
async def alias_remove(ctx: AdminContext, args: Args) -> str:
    name = _alias(ctx, args["localpart"])
    ctx.services.rooms.aliases.delete(name)
    return f"Removed `{name}`"


@alias.command("which", "Show which room an alias points to",
               Arg("localpart", "the alias or its name"))
async def alias_which(ctx: AdminContext, args: Args) -> str:
    name = _alias(ctx, args["localpart"])
    room_id = ctx.services.rooms.aliases.resolve(name)
    if room_id is None:
        raise CommandError(f"`{name}` does not exist")
    return f"`{name}` points to `{room_id}`"


@alias.command("list", "List local aliases, of one room or all",
               Arg("room_id", "only this room's aliases", optional=True))
async def alias_list(ctx: AdminContext, args: Args) -> str:
    aliases = ctx.services.rooms.aliases
    room = args.get("room_id")
    if room is not None:
        room_id = await room_id_of(ctx, room)
        names = aliases.of_room(room_id)
        return f"Aliases of `{room_id}`:\n\n" + bullet_list([f"`{a}`" for a in names])
    pairs = await trio.to_thread.run_sync(aliases.all)
    return f"{len(pairs)} local alias(es):\n\n" + bullet_list(
        [f"`{a}` -> `{r}`" for a, r in pairs])


# --- directory -----------------------------------------------------------------------------

@directory.command("publish", "Publish a room in the room directory",
                   Arg("room_id", "the room"))
async def directory_publish(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    room_id = await room_id_of(ctx, args["room_id"])
    known_room(ctx, room_id)
    if svc.admin_room.is_admin_room(room_id):
        raise CommandError("The admin room is never published")
    if svc.rooms.moderation.is_banned(room_id):
        raise CommandError("A banned room cannot be published")
    svc.rooms.directory.publish(room_id, True)
    return f"`{room_id}` is published"


@directory.command("unpublish", "Remove a room from the room directory",
                   Arg("room_id", "the room"))
async def directory_unpublish(ctx: AdminContext, args: Args) -> str:
    room_id = await room_id_of(ctx, args["room_id"])
    ctx.services.rooms.directory.publish(room_id, False)
    return f"`{room_id}` is no longer published"


@directory.command("list", "List the published rooms")
async def directory_list(ctx: AdminContext, args: Args) -> str:
    published = ctx.services.rooms.directory.public_rooms()
    return f"{len(published)} published room(s):\n\n" + bullet_list(
        [_line(ctx, r) for r in published])
