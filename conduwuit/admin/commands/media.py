"""``media``: deleting stored files (uploads and cached remote media) and their stats."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from conduwuit.services.media import parse_mxc

from ..context import AdminContext
from ..tree import Arg, Args, CommandError, Group
from .common import bullet_list, human_bytes, human_duration, local_user, parse_duration

group = Group("media", "Commands for managing media")


def _mxcs_of(content: Mapping[str, Any]) -> list[str]:
    """The mxc URIs an event refers to: the file, an encrypted file, their thumbnails."""
    found: list[str] = []

    def take(value: object) -> None:
        if isinstance(value, str) and value.startswith("mxc://"):
            found.append(value)

    take(content.get("url"))
    file = content.get("file")
    if isinstance(file, Mapping):
        take(file.get("url"))
    info = content.get("info")
    if isinstance(info, Mapping):
        take(info.get("thumbnail_url"))
        thumb = info.get("thumbnail_file")
        if isinstance(thumb, Mapping):
            take(thumb.get("url"))
    return list(dict.fromkeys(found))


@group.command("delete", "Delete one file (and its thumbnails) by MXC URI, or the files an "
               "event refers to", Arg("target", "an mxc:// URI or an event id"))
async def delete(ctx: AdminContext, args: Args) -> str:
    media = ctx.services.media
    target = args["target"]
    if target.startswith("$"):
        event = ctx.services.rooms.events.get(target)
        if event is None:
            raise CommandError(f"Unknown event {target}")
        uris = _mxcs_of(event.content)
        if not uris:
            raise CommandError(f"Event {target} refers to no media (or was redacted)")
    else:
        parse_mxc(target)  # a clear 400-style error for a malformed URI
        uris = [target]
    deleted = [uri for uri in uris if await media.delete(*parse_mxc(uri))]
    if not deleted:
        raise CommandError("No such media is stored here: " + ", ".join(f"`{u}`" for u in uris))
    return f"Deleted {len(deleted)} file(s):\n\n" + bullet_list([f"`{u}`" for u in deleted])


@group.command("delete-list", "Delete a list of MXC URIs; unknown or malformed ones are "
               "skipped", input_help="one mxc:// URI per line")
async def delete_list(ctx: AdminContext, args: Args) -> str:
    uris = args.input_lines()
    if not uris:
        raise CommandError("Give the MXC URIs in a code block below the command")
    deleted = await ctx.services.media.delete_mxcs(uris)
    return f"Deleted {deleted} of {len(uris)} file(s)"


@group.command("delete-past-remote-media", "Delete cached remote media stored more than "
               "<duration> ago (or, with --after, within it)",
               Arg("duration", "e.g. 30s, 10m, 2h, 7d, 1w"),
               Arg("after", "delete what was stored within the duration instead", flag=True))
async def delete_past_remote_media(ctx: AdminContext, args: Args) -> str:
    seconds = parse_duration(args["duration"])
    cutoff = int((time.time() - seconds) * 1000)
    if args["after"]:
        deleted = await ctx.services.media.delete_remote_media(after_ms=cutoff)
        where = "within the last"
    else:
        deleted = await ctx.services.media.delete_remote_media(before_ms=cutoff)
        where = "more than"
    return (f"Deleted {deleted} remote file(s) stored {where} {human_duration(seconds)}"
            f"{' ago' if not args['after'] else ''}")


@group.command("delete-all-from-user", "Delete every file a local user uploaded",
               Arg("user_id", "localpart or full user id"))
async def delete_all_from_user(ctx: AdminContext, args: Args) -> str:
    user_id = local_user(ctx, args["user_id"])
    deleted = await ctx.services.media.delete_user_media(user_id)
    return f"Deleted {deleted} file(s) uploaded by `{user_id}`"


@group.command("stats", "Counts and sizes of stored media")
async def stats(ctx: AdminContext, args: Args) -> str:
    usage = await ctx.services.media.usage()
    return "\n".join([
        "Stored media:", "",
        f"- local: {usage['local_files']} file(s), {human_bytes(usage['local_bytes'])}",
        f"- remote (cached): {usage['remote_files']} file(s), "
        f"{human_bytes(usage['remote_bytes'])}",
        f"- thumbnails: {usage['thumbnails']}, {human_bytes(usage['thumbnail_bytes'])}",
    ])
