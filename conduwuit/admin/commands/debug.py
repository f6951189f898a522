"""``debug``: logging, federation probes, events and auth chains, device lists, and a
read-only view of the database trees."""

from __future__ import annotations

import codecs
import time

import orjson
import trio

from conduwuit.log import log_control
from conduwuit.protocol import hashes
from conduwuit.protocol.room_versions import ROOM_VERSIONS
from conduwuit.services.federation import FederationError, RemoteError
from conduwuit.services.federation.discovery import DiscoveryError
from conduwuit.services.federation.ingest import PduRejected, parse_pdu
from conduwuit.store import TREES

from ..context import AdminContext
from ..render import code_block
from ..tree import Arg, Args, CommandError, Group
from .common import bullet_list

group = Group("debug", "Commands for debugging things")
database = group.group("database", "Read-only inspection of the database trees")

MAX_AUTH_CHAIN = 10_000
SHOWN_AUTH_EVENTS = 100
DEFAULT_ITEMS = 20
MAX_ITEMS = 200
MAX_VALUE_CHARS = 1000


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


@group.command("echo", "Answer with the message given", Arg("message", "any text", rest=True))
async def echo(ctx: AdminContext, args: Args) -> str:
    return str(args["message"])


@group.command("change-log-level", "Change the log filter now (like the `log` option)",
               Arg("filter", "e.g. debug or warn,conduwuit.store=debug", optional=True),
               Arg("reset", "go back to the configured `log` option", flag=True))
async def change_log_level(ctx: AdminContext, args: Args) -> str:
    wanted = ctx.services.config.log if args["reset"] else args.get("filter")
    if wanted is None:
        return f"The log filter is `{log_control.current}`"
    try:
        log_control.set_filter(wanted)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return f"The log filter is now `{wanted}`"


@group.command("ping", "Ask a server for its federation version and time the answer",
               Arg("server", "the server name"))
async def ping(ctx: AdminContext, args: Args) -> str:
    server = args["server"]
    if server == ctx.services.config.server_name:
        raise CommandError("That is this server")
    started = time.monotonic()
    try:
        answer = await ctx.services.federation.client.request(
            "GET", server, "/_matrix/federation/v1/version", signed=False)
    except (FederationError, RemoteError) as error:
        raise CommandError(f"{server} did not answer: {error}") from None
    elapsed = (time.monotonic() - started) * 1000
    return f"Got a response from `{server}` in {elapsed:.0f} ms:\n\n" + code_block(
        _json(answer), "json")


@group.command("get-pdu", "Show a stored event as a PDU", Arg("event_id", "the event"))
async def get_pdu(ctx: AdminContext, args: Args) -> str:
    rooms = ctx.services.rooms
    event_id = args["event_id"]
    event = rooms.events.get(event_id)
    if event is None:
        raise CommandError(f"No event {event_id} is stored here")
    kind = "timeline event" if rooms.events.count_of(event_id) is not None else "outlier"
    marks = [m for m, on in (("rejected", rooms.timeline.is_rejected(event_id)),
                             ("soft-failed", rooms.timeline.is_soft_failed(event_id))) if on]
    label = kind + (f" ({', '.join(marks)})" if marks else "")
    return f"`{event_id}`, {label}:\n\n" + code_block(_json(event.pdu), "json")


@group.command("get-auth-chain", "Walk the auth chain of a stored event",
               Arg("event_id", "the event"))
async def get_auth_chain(ctx: AdminContext, args: Args) -> str:
    events = ctx.services.rooms.events
    start = events.get(args["event_id"])
    if start is None:
        raise CommandError(f"No event {args['event_id']} is stored here")
    began = time.monotonic()
    seen: set[str] = set()
    missing: list[str] = []
    todo = list(start.auth_event_ids)
    while todo and len(seen) < MAX_AUTH_CHAIN:
        event_id = todo.pop()
        if event_id in seen:
            continue
        seen.add(event_id)
        event = events.get(event_id)
        if event is None:
            missing.append(event_id)
            continue
        todo.extend(event.auth_event_ids)
        if len(seen) % 500 == 0:
            await trio.sleep(0)
    elapsed = (time.monotonic() - began) * 1000
    shown = sorted(seen)[:SHOWN_AUTH_EVENTS]
    text = (f"Auth chain of `{start.event_id}`: {len(seen)} event(s), {len(missing)} missing, "
            f"walked in {elapsed:.1f} ms\n\n" + bullet_list([f"`{e}`" for e in shown]))
    if len(seen) > len(shown):
        text += f"\n- ... and {len(seen) - len(shown)} more"
    if missing:
        text += "\n\nMissing:\n\n" + bullet_list([f"`{e}`" for e in missing[:50]])
    return text


@group.command("parse-pdu", "Check a PDU (JSON in a code block): format, event id, content "
               "hash, and with --verify its signatures",
               Arg("room-version", "the room version (default: the room's, or the default)",
                   option=True),
               Arg("verify", "also verify the signatures (fetches keys)", flag=True),
               input_help="the PDU as JSON")
async def parse_pdu_command(ctx: AdminContext, args: Args) -> str:
    try:
        pdu = orjson.loads(args.input)
    except orjson.JSONDecodeError as error:
        raise CommandError(f"The input is not JSON: {error}") from None
    if not isinstance(pdu, dict):
        raise CommandError("The input must be a JSON object (the PDU)")
    wanted = args.get("room_version")
    version = ROOM_VERSIONS.get(wanted) if wanted is not None else None
    if wanted is not None and version is None:
        raise CommandError(f"Unknown room version `{wanted}`")
    if version is None and isinstance(pdu.get("room_id"), str):
        version = ctx.services.rooms.events.room_version(pdu["room_id"])
    version = version or ROOM_VERSIONS[ctx.services.config.default_room_version]
    try:
        event = parse_pdu(pdu, version)
    except PduRejected as bad:
        raise CommandError(f"Invalid PDU for room version {version.identifier}: "
                           f"{bad.reason}") from None
    event_id = hashes.event_id_for(pdu, version)
    lines = [f"Valid PDU for room version `{version.identifier}`:", "",
             f"- event id: `{event_id}`",
             f"- type: `{event.type}`, sender: `{event.sender}`",
             f"- content hash: {'valid' if hashes.has_valid_content_hash(pdu) else 'INVALID'}"]
    if args["verify"]:
        try:
            await ctx.services.federation.ingest.verify(pdu, version)
            lines.append("- signatures: valid")
        except PduRejected as bad:
            lines.append(f"- signatures: INVALID ({bad.reason})")
    return "\n".join(lines)


@group.command("force-device-list-updates", "Mark every local user's device list as changed, "
               "so that every client and server fetches keys again")
async def force_device_list_updates(ctx: AdminContext, args: Args) -> str:
    svc = ctx.services
    user_ids = await trio.to_thread.run_sync(svc.users.local_user_ids)
    for index, user_id in enumerate(user_ids):
        svc.e2ee.device_lists.keys_changed(user_id)
        if index % 100 == 99:
            await trio.sleep(0)
    return f"Marked the device lists of {len(user_ids)} local user(s) as changed"


@group.command("resolve-true-destination", "Run a server name through server discovery",
               Arg("server_name", "the server"),
               Arg("no-cache", "forget a cached well-known first", flag=True))
async def resolve_true_destination(ctx: AdminContext, args: Args) -> str:
    discovery = ctx.services.federation.discovery
    server = args["server_name"]
    if args["no_cache"]:
        discovery.forget_well_known(server.split(":", 1)[0])
    try:
        found = await discovery.resolve(server)
    except DiscoveryError as error:
        raise CommandError(f"Cannot resolve {server}: {error}") from None
    return "\n".join([
        f"Destination of `{server}`:", "",
        f"- addresses: {', '.join(f'`{a}`' for a in found.addresses)}",
        f"- port: {found.port}",
        f"- Host header: `{found.host_header}`",
        f"- TLS name (SNI): `{found.tls_name or '(none: IP literal)'}`",
        f"- URL: `{found.base_url(found.addresses[0])}`",
    ])


# --- database ---------------------------------------------------------------------------------

def _key_bytes(text: str) -> bytes:
    """A key as typed: UTF-8 with backslash escapes (``\\xff`` separates tuple parts)."""
    try:
        decoded: bytes = codecs.escape_decode(text.encode())[0]
        return decoded
    except ValueError as error:
        raise CommandError(f"Bad key `{text}`: {error}") from None


def _shown(raw: bytes) -> str:
    text = repr(raw)[2:-1]
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


@database.command("trees", "List the trees and what they map")
async def database_trees(ctx: AdminContext, args: Args) -> str:
    return f"{len(TREES)} trees:\n\n" + bullet_list(
        [f"`{name}`: {meaning}" for name, meaning in sorted(TREES.items())])


@database.command("get", "Show the value of one key of a tree",
                  Arg("tree", "the tree's name"), Arg("key", "the key (\\xff between parts)"))
async def database_get(ctx: AdminContext, args: Args) -> str:
    key = _key_bytes(args["key"])
    value = ctx.services.admin_room.db_get(args["tree"], key)
    if value is None:
        raise CommandError(f"`{args['tree']}` has no key `{_shown(key)}`")
    return code_block(_shown(value))


@database.command("iter", "Show the first items of a tree under a key prefix",
                  Arg("tree", "the tree's name"),
                  Arg("prefix", "the key prefix (\\xff between parts)", optional=True),
                  Arg("limit", f"at most this many (default {DEFAULT_ITEMS}, max {MAX_ITEMS})",
                      option=True))
async def database_iter(ctx: AdminContext, args: Args) -> str:
    try:
        limit = min(MAX_ITEMS, max(1, int(args.get("limit", DEFAULT_ITEMS))))
    except ValueError:
        raise CommandError("--limit must be a number") from None
    prefix = _key_bytes(args.get("prefix", ""))
    items = ctx.services.admin_room.db_iter(args["tree"], prefix, limit)
    body = "\n".join(f"{_shown(k)} => {_shown(v)}" for k, v in items)
    return (f"{len(items)} item(s) of `{args['tree']}` under `{_shown(prefix)}`:\n\n"
            + code_block(body or "(none)"))
