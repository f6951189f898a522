"""Helpers shared by the command modules: ids from arguments, durations, formatting."""

from __future__ import annotations

import re
import time

from conduwuit.protocol.ids import UserId

from ..context import AdminContext
from ..tree import CommandError

_DURATION = re.compile(r"^(\d+)\s*(s|sec|secs|m|min|mins|h|hr|hours?|d|days?|w|weeks?)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def local_user(ctx: AdminContext, name: str) -> str:
    """``alice`` or ``@alice:server`` -> the id of an existing local user."""
    server = ctx.services.config.server_name
    user_id = name if name.startswith("@") else f"@{name.lower()}:{server}"
    if UserId.try_parse(user_id) is None:
        raise CommandError(f"`{name}` is not a valid user id")
    if not ctx.services.users.is_local(user_id):
        raise CommandError(f"{user_id} is not a user of this server")
    if not ctx.services.users.exists(user_id):
        raise CommandError(f"{user_id} does not exist")
    return user_id


def any_user(name: str) -> str:
    if UserId.try_parse(name) is None:
        raise CommandError(f"`{name}` is not a valid user id")
    return name


async def room_id_of(ctx: AdminContext, room: str) -> str:
    """A room id, or an alias (local, or remote through federation) -> the room id."""
    if room.startswith("!"):
        return room
    if not room.startswith("#"):
        raise CommandError(f"`{room}` is neither a room id (`!...`) nor an alias (`#...`)")
    room_id, _servers = await ctx.services.rooms.actions.locate(room)
    return room_id


def known_room(ctx: AdminContext, room_id: str) -> None:
    if ctx.services.rooms.events.room_version(room_id) is None:
        raise CommandError(f"This server does not know the room {room_id}")


def parse_duration(text: str) -> int:
    """``30s``, ``5m``, ``2h``, ``7d``, ``1w`` -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise CommandError(f"`{text}` is not a duration like 30s, 5m, 2h, 7d or 1w")
    return int(match.group(1)) * _UNITS[match.group(2)[0]]


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def bullet_list(items: list[str], empty: str = "(none)") -> str:
    return "\n".join(f"- {item}" for item in items) if items else empty
