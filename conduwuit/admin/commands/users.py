"""``users``: accounts of this server, their rooms, tags and events."""

from __future__ import annotations

import secrets
import string

import trio

from conduwuit.errors import MatrixError
from conduwuit.services.rooms.state import NAME
from conduwuit.services.rooms.timeline import Draft

from ..context import AdminContext
from ..tree import Arg, Args, CommandError, Group
from .common import bullet_list, local_user, room_id_of

group = Group("users", "Commands for managing local users")

PASSWORD_LENGTH = 25
_ALPHABET = string.ascii_letters + string.digits
DEFAULT_REDACT_LIMIT = 100
SCAN_PER_ROOM = 5000  # events looked at per room by redact-user-events


def generate_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))


def _room_line(ctx: AdminContext, room_id: str) -> str:
    rooms = ctx.services.rooms
    name = rooms.state.content(room_id, NAME).get("name")
    label = f" ({name})" if isinstance(name, str) and name else ""
    return f"`{room_id}`{label}: {rooms.membership.joined_count(room_id)} joined"


@group.command("create-user", "Create a new user; without a password one of 25 characters "
               "is generated", Arg("username", "localpart or full user id"),
               Arg("password", "the password", optional=True), aliases=("create",))
async def create_user(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    user_id = svc.registration.user_id_for(args["username"])
    password = args.get("password") or generate_password()
    svc.users.create(user_id, await svc.passwords.hash(password))
    localpart = user_id[1:].split(":", 1)[0]
    suffix = svc.config.new_user_displayname_suffix
    display_name = f"{localpart} {suffix}" if suffix else localpart
    for callback in svc.registration.on_registered:  # profile, auto-join rooms
        await callback(user_id, display_name)
    return f"Created user `{user_id}` with password: `{password}`"


@group.command("reset-password", "Reset a user's password (generated when not given)",
               Arg("username", "localpart or full user id"),
               Arg("password", "the new password", optional=True))
async def reset_password(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    user_id = local_user(ctx, args["username"])
    if user_id == svc.admin_room.bot_id:
        raise CommandError("The server's bot account has no password; set "
                           "`emergency_password` in the configuration instead")
    if svc.users.is_deactivated(user_id):
        raise CommandError(f"{user_id} is deactivated")
    password = args.get("password") or generate_password()
    svc.users.set_password_hash(user_id, await svc.passwords.hash(password))
    return f"Password of `{user_id}` reset to: `{password}`"


async def _deactivate(ctx: AdminContext, user_id: str, leave_rooms: bool) -> None:
    svc = ctx.services
    if leave_rooms:
        await svc.accounts.deactivate(user_id)
        return
    # The account's own hooks (profile, pushers, keys) still run; only leaving is skipped.
    svc.devices.delete_all(user_id)
    svc.users.deactivate(user_id)
    for callback in svc.accounts.on_deactivated:
        if callback != svc.rooms.actions.leave_all:
            await callback(user_id)


def _check_deactivatable(ctx: AdminContext, user_id: str) -> None:
    if user_id == ctx.services.admin_room.bot_id:
        raise CommandError("The server's bot account cannot be deactivated")
    if ctx.services.users.is_deactivated(user_id):
        raise CommandError(f"{user_id} is already deactivated")


@group.command("deactivate", "Deactivate a user: devices logged out, rooms left",
               Arg("user_id", "localpart or full user id"),
               Arg("no-leave-rooms", "keep the user's room memberships", flag=True))
async def deactivate(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    _check_deactivatable(ctx, user_id)
    await _deactivate(ctx, user_id, not args["no_leave_rooms"])
    return f"User `{user_id}` has been deactivated"


@group.command("deactivate-all", "Deactivate a list of users (admins only with --force)",
               Arg("no-leave-rooms", "keep the users' room memberships", flag=True),
               Arg("force", "also deactivate server admins", flag=True),
               input_help="one user id or localpart per line")
async def deactivate_all(ctx: AdminContext, args: Args) -> str:
    names = args.input_lines()
    if not names:
        raise CommandError("Give the users in a code block below the command")
    done: list[str] = []
    problems: list[str] = []
    for name in names:
        try:
            user_id = local_user(ctx, name)
            _check_deactivatable(ctx, user_id)
            if ctx.services.users.is_admin(user_id) and not args["force"]:
                raise CommandError(f"{user_id} is an admin (use --force)")
            await _deactivate(ctx, user_id, not args["no_leave_rooms"])
            done.append(user_id)
        except (CommandError, MatrixError) as error:
            problems.append(f"`{name}`: {error}")
    text = f"Deactivated {len(done)} of {len(names)} users."
    if done:
        text += "\n\n" + bullet_list([f"`{u}`" for u in done])
    if problems:
        text += "\n\nSkipped:\n\n" + bullet_list(problems)
    return text


@group.command("list-users", "List local users", aliases=("list",))
async def list_users(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    user_ids = await trio.to_thread.run_sync(svc.users.local_user_ids)
    lines = []
    for user_id in user_ids:
        marks = [m for m, on in (("admin", svc.users.is_admin(user_id)),
                                 ("deactivated", svc.users.is_deactivated(user_id)),
                                 ("guest", svc.users.is_guest(user_id)),
                                 ("bot", user_id == svc.admin_room.bot_id)) if on]
        lines.append(f"`{user_id}`" + (f" ({', '.join(marks)})" if marks else ""))
    return f"Found {len(user_ids)} local user account(s):\n\n" + bullet_list(lines)


@group.command("list-joined-rooms", "List the rooms a user is joined to",
               Arg("user_id", "a local or remote user id"))
async def list_joined_rooms(ctx: AdminContext, args: Args) -> str:
    user_id = args["user_id"]
    if not user_id.startswith("@"):
        user_id = local_user(ctx, user_id)
    rooms = ctx.services.rooms.membership.joined_rooms(user_id)
    return (f"`{user_id}` is joined to {len(rooms)} room(s):\n\n"
            + bullet_list([_room_line(ctx, r) for r in rooms]))


@group.command("make-user-admin", "Grant server-admin privileges (and the admin room) to a user",
               Arg("user_id", "localpart or full user id"))
async def make_user_admin(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    await ctx.services.admin_room.make_admin(user_id)
    return f"`{user_id}` is now a server admin"


@group.command("revoke-user-admin", "Take server-admin privileges away from a user",
               Arg("user_id", "localpart or full user id"), aliases=("revoke-admin",))
async def revoke_user_admin(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    if user_id == ctx.services.admin_room.bot_id:
        raise CommandError("The server's bot account stays in the admin room")
    if not ctx.services.users.is_admin(user_id):
        raise CommandError(f"{user_id} is not a server admin")
    await ctx.services.admin_room.revoke_admin(user_id)
    return f"`{user_id}` is no longer a server admin"


@group.command("force-join-room", "Join a local user to a room",
               Arg("user_id", "localpart or full user id"), Arg("room", "room id or alias"))
async def force_join_room(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    room_id, servers = await ctx.services.rooms.actions.locate(args["room"])
    await ctx.services.rooms.actions.join(room_id, user_id, servers=servers)
    return f"`{user_id}` joined `{room_id}`"


@group.command("force-leave-room", "Make a local user leave a room",
               Arg("user_id", "localpart or full user id"), Arg("room", "room id or alias"))
async def force_leave_room(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    room_id = await room_id_of(ctx, args["room"])
    await ctx.services.rooms.actions.leave(room_id, user_id)
    return f"`{user_id}` left `{room_id}`"


@group.command("get-room-tags", "Show a user's tags on a room",
               Arg("user_id", "localpart or full user id"), Arg("room_id", "the room"))
async def get_room_tags(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    room_id = await room_id_of(ctx, args["room_id"])
    tags = ctx.services.account_data.tags(user_id, room_id)
    return (f"Tags of `{user_id}` on `{room_id}`:\n\n"
            + bullet_list([f"`{tag}`: `{content}`" for tag, content in sorted(tags.items())]))


@group.command("put-room-tag", "Put a tag on a room for a user",
               Arg("user_id", "localpart or full user id"), Arg("room_id", "the room"),
               Arg("tag", "the tag, e.g. m.favourite"))
async def put_room_tag(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    room_id = await room_id_of(ctx, args["room_id"])
    ctx.services.account_data.set_tag(user_id, room_id, args["tag"], {})
    return f"Tag `{args['tag']}` put on `{room_id}` for `{user_id}`"


@group.command("delete-room-tag", "Delete a user's tag on a room",
               Arg("user_id", "localpart or full user id"), Arg("room_id", "the room"),
               Arg("tag", "the tag"))
async def delete_room_tag(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    room_id = await room_id_of(ctx, args["room_id"])
    if ctx.services.account_data.delete_tag(user_id, room_id, args["tag"]) is None:
        raise CommandError(f"`{user_id}` has no tag `{args['tag']}` on `{room_id}`")
    return f"Tag `{args['tag']}` deleted from `{room_id}` for `{user_id}`"


async def _redact(ctx: AdminContext, event_id: str, reason: str) -> str:
    """Redact as the event's (local) sender, falling back to the bot if it may."""
    svc = ctx.services
    event = svc.rooms.events.get(event_id)
    if event is None or event.room_id is None:
        raise CommandError(f"Unknown event {event_id}")
    if not svc.users.is_local(event.sender):
        raise CommandError("Only events of local users can be redacted from here")
    content = {"reason": reason}
    try:
        redaction = await svc.rooms.timeline.send(event.room_id, Draft(
            event.sender, "m.room.redaction", content, redacts=event_id))
    except MatrixError:
        redaction = await svc.rooms.timeline.send(event.room_id, Draft(
            svc.admin_room.bot_id, "m.room.redaction", content, redacts=event_id))
    return redaction.event_id


@group.command("redact-event", "Redact an event of a local user (sent as that user)",
               Arg("event_id", "the event to redact"))
async def redact_event(ctx: AdminContext, args: Args) -> str:
    redaction = await _redact(ctx, args["event_id"], "redacted by a server admin")
    return f"Redacted `{args['event_id']}` with `{redaction}`"


@group.command("redact-user-events", "Redact the latest messages of a local user in every "
               "room they are in", Arg("user_id", "localpart or full user id"),
               Arg("limit", f"at most this many events (default {DEFAULT_REDACT_LIMIT})",
                   option=True))
async def redact_user_events(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    user_id = local_user(ctx, args["user_id"])
    try:
        limit = int(args.get("limit", DEFAULT_REDACT_LIMIT))
    except ValueError:
        raise CommandError("--limit must be a number") from None
    rooms = [room for room, _ in svc.rooms.membership.rooms_of(user_id)]

    # On the loop, not in a thread: the event cache is not shared across threads. The
    # scan is bounded per room, so a command cannot stall the server for long.
    event_ids: list[str] = []
    for room_id in rooms:
        for scanned, (_count, event) in enumerate(svc.rooms.events.timeline(room_id,
                                                                             reverse=True)):
            if len(event_ids) >= limit or scanned >= SCAN_PER_ROOM:
                break
            if event.sender == user_id and not event.is_state \
                    and event.type != "m.room.redaction" and event.content:
                event_ids.append(event.event_id)
        await trio.sleep(0)
    failed = []
    for event_id in event_ids:
        try:
            await _redact(ctx, event_id, "redacted by a server admin")
        except (MatrixError, CommandError) as error:
            failed.append(f"`{event_id}`: {error}")
    text = f"Redacted {len(event_ids) - len(failed)} event(s) of `{user_id}`."
    if failed:
        text += "\n\nFailed:\n\n" + bullet_list(failed)
    return text
