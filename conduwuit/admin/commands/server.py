"""``server``: uptime, configuration, memory, caches, backups, notices, stopping, jobs."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from conduwuit.reload import current
from conduwuit.store import StoreError

from ..context import AdminContext
from ..render import code_block
from ..tree import Arg, Args, CommandError, Group
from .common import bullet_list, human_bytes, human_duration

group = Group("server", "Commands for managing the server")

# Option names whose values never leave the server, not even to admins.
_SECRET = re.compile(r"password|secret|token|private|(^|_)key$|sentry_endpoint", re.I)
REDACTED = "<redacted>"


def _config_lines(value: Any, prefix: str = "") -> list[str]:
    lines: list[str] = []
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        name = f"{prefix}{field.name}"
        if attrs.has(type(item)):
            lines += _config_lines(item, f"{name}.")
        elif item is not None and _SECRET.search(field.name):
            lines.append(f"{name} = {REDACTED}")
        else:
            lines.append(f"{name} = {item!r}")
    return lines


@group.command("uptime", "Time elapsed since startup")
async def uptime(ctx: AdminContext, args: Args) -> str:
    return f"Up for {human_duration(time.time() - ctx.started_at)}"


@group.command("show-config", "Show the configuration (secrets redacted)")
async def show_config(ctx: AdminContext, args: Args) -> str:
    config = current(ctx.services.config)
    return "Configuration:\n\n" + code_block("\n".join(_config_lines(config)), "toml")


def _proc_status() -> dict[str, str]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


@group.command("memory-usage", "Memory of the process and of the database")
async def memory_usage(ctx: AdminContext, args: Args) -> str:
    status = await trio.to_thread.run_sync(_proc_status)
    stats = await trio.to_thread.run_sync(ctx.services.store.stats)
    lines = ["Memory usage:", ""]
    for key, label in (("VmRSS", "resident (RSS)"), ("VmHWM", "peak resident"),
                       ("VmSize", "virtual")):
        lines.append(f"- {label}: {status.get(key, 'unknown')}")
    lines.append(f"- database (LevelDB memtables and cache): "
                 f"{human_bytes(int(str(stats.get('memory_bytes', 0))))}")
    return "\n".join(lines)


@group.command("clear-caches", "Clear the caches that can be rebuilt (DNS, well-knowns)")
async def clear_caches(ctx: AdminContext, args: Args) -> str:
    discovery = ctx.services.federation.discovery
    discovery.forget_well_known()
    cleared = ["well-known delegations"]
    clear = getattr(discovery.resolver, "clear", None)
    if callable(clear):
        clear()
        cleared.append("DNS answers")
    ctx.services.federation.client.reset_backoff()
    cleared.append("federation backoff")
    return "Cleared: " + ", ".join(cleared)


def _backup_dir(ctx: AdminContext) -> Path:
    path = ctx.services.config.database_backup_path
    if not path:
        raise CommandError("Backups are off: set `database_backup_path` in the configuration")
    return Path(path)


@group.command("list-backups", "List the database backups")
async def list_backups(ctx: AdminContext, args: Args) -> str:
    root = _backup_dir(ctx)

    def scan() -> list[str]:
        if not root.is_dir():
            return []
        return sorted(entry.name for entry in root.iterdir()
                      if entry.is_dir() and not entry.name.startswith("."))

    names = await trio.to_thread.run_sync(scan)
    return f"{len(names)} backup(s) in `{root}`:\n\n" + bullet_list([f"`{n}`" for n in names])


@group.command("backup-database", "Make an online backup of the database now")
async def backup_database(ctx: AdminContext, args: Args) -> str:
    root = _backup_dir(ctx)
    keep = ctx.services.config.database_backups_to_keep
    if keep < 1:
        raise CommandError("`database_backups_to_keep` is below 1: backups are off")
    started = time.monotonic()
    try:
        made = await ctx.services.store.backup(root, keep)
    except (StoreError, OSError, ValueError) as error:
        raise CommandError(f"The backup failed: {error}") from None
    return f"Backup `{made.name}` made in {time.monotonic() - started:.1f} s in `{root}`"


@group.command("list-database-files", "List the database's files and their sizes")
async def list_database_files(ctx: AdminContext, args: Args) -> str:
    path = ctx.services.store.path

    def scan() -> list[tuple[str, int]]:
        with os.scandir(path) as entries:
            return sorted((e.name, e.stat().st_size) for e in entries if e.is_file())

    files = await trio.to_thread.run_sync(scan)
    total = sum(size for _, size in files)
    return (f"{len(files)} file(s) in `{path}`, {human_bytes(total)}:\n\n"
            + bullet_list([f"`{name}`: {human_bytes(size)}" for name, size in files]))


@group.command("admin-notice", "Send a message to the admin room",
               Arg("message", "the text", rest=True))
async def admin_notice(ctx: AdminContext, args: Args) -> str:
    event = await ctx.services.admin_room.notice(args["message"])
    if event is None:
        raise CommandError("There is no admin room")
    return f"Notice sent (`{event.event_id}`)"


@group.command("reload-config", "Re-read the configuration")
async def reload_config(ctx: AdminContext, args: Args) -> str:
    if ctx.reload_config is None:
        raise CommandError("Reloading the configuration is not supported yet: restart the "
                           "server to apply changes")
    return await ctx.reload_config()


@group.command("shutdown", "Shut the server down gracefully")
async def shutdown(ctx: AdminContext, args: Args) -> str:
    ctx.after_reply.append(lambda: ctx.shutdown("admin room: server shutdown"))
    return "Shutting down the server (open requests are finished first)"


@group.command("restart", "Restart the server: a graceful shutdown, then the process starts "
               "again", Arg("force", "accepted for compatibility; restarts are always graceful",
                            flag=True))
async def restart(ctx: AdminContext, args: Args) -> str:
    restart_hook = ctx.restart
    if restart_hook is None:
        raise CommandError("Restarting from the admin room is not possible here (the server "
                           "runs inside another program, or cannot re-execute itself); use "
                           "`server shutdown` and your service manager")
    ctx.after_reply.append(restart_hook)
    return "Restarting the server"


@group.command("jobs", "Every named background job and its state")
async def jobs(ctx: AdminContext, args: Args) -> str:
    now = time.time()
    lines = []
    for status in sorted(ctx.job_statuses(), key=lambda s: s.full_name):
        line = (f"`{status.full_name}`: **{status.state.value}**, up "
                f"{human_duration(now - status.started_at)}, {status.restarts} restart(s)")
        if status.last_error:
            line += f", last error: {status.last_error}"
        lines.append(line)
    return f"{len(lines)} job(s):\n\n" + bullet_list(lines)
