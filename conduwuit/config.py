"""Server configuration: conduwuit's option set, loaded from TOML, env and ``-O``.

The option names, types and defaults are conduwuit's (its ``[global]`` table
and the ``[global.tls]``, ``[global.well_known]`` and ``[global.blurhashing]``
sub-tables), so an existing conduwuit config file keeps working. Every option
is one attribute of the frozen :class:`Config`; the attribute's metadata
carries its group, type and a short description, and the reference in
``docs/configuration.md`` and ``packaging/conduwuit-example.toml`` are
generated from that metadata (``python -m conduwuit.config --write``) so the
docs cannot drift from the code.

Loading (:func:`load_config`) only parses and type-checks values and notes
unknown, deprecated and ineffective keys. Whether the result is fit to start a
server (open registration, listeners, server name) is :func:`check_config`'s
job, so tools such as the admin room can load a config without those rules.
"""

# Options are declared through _field(), a thin wrapper around attrs.field() that adds
# their metadata; ruff mistakes those calls for mutable dataclass defaults.
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import functools
import importlib.resources
import ipaddress
import json
import math
import os
import re
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import attrs

from conduwuit.protocol.ids import is_valid_server_name
from conduwuit.protocol.room_versions import DEFAULT_ROOM_VERSION, ROOM_VERSIONS

__all__ = [
    "BlurhashingConfig",
    "Config",
    "ConfigError",
    "LoadedConfig",
    "ProxyConfig",
    "ProxyRule",
    "TlsConfig",
    "WellKnownConfig",
    "check_config",
    "is_valid_server_name",
    "load_config",
    "render_example_toml",
    "render_markdown",
    "running_in_container",
]

EMBEDDED_DEFAULT = "embedded default"


class ConfigError(Exception):
    """A configuration the server must not start with.

    ``str(e)`` is always a single line naming the key, the offending value and
    what is allowed, because it is printed as-is before exiting with status 1.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", message))
        self.key = key


# ---------------------------------------------------------------------------
# Value kinds: how one option is typed, checked and shown.


class _Invalid(ValueError):
    """Raised by a kind's converter; the optional text details what was wrong."""


@attrs.frozen
class Kind:
    """The type of an option.

    ``name`` is shown in the docs, ``expected`` completes error messages
    ("expected ..."), ``convert`` turns a parsed TOML value into the attribute
    value or raises :class:`_Invalid`. ``prefer_text`` marks string-like kinds:
    for them a raw env/``-O`` value such as ``12345`` stays the text "12345"
    instead of becoming an integer.
    """

    name: str
    expected: str
    convert: Callable[[object], object]
    prefer_text: bool = False


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bool(value: object) -> object:
    if not isinstance(value, bool):
        raise _Invalid
    return value


def _int_kind(lo: int, hi: int) -> Kind:
    def convert(value: object) -> object:
        if not _is_int(value) or not lo <= value <= hi:
            raise _Invalid
        return value

    if hi >= 2**31:
        expected = f"an integer >= {lo}"
    elif lo < 0:
        expected = f"an integer from {lo} to {hi}"
    else:
        expected = f"an integer {lo}-{hi}"
    return Kind(expected.removeprefix("an "), expected, convert)


def _float_kind(lo: float, hi: float = math.inf) -> Kind:
    def convert(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise _Invalid
        return number

    bounds = f">= {lo}" if hi == math.inf else f"from {lo} to {hi}"
    return Kind("number", f"a number {bounds}", convert)


def _check_str(value: object) -> object:
    if not isinstance(value, str):
        raise _Invalid
    return value


def _list_of(check: Callable[[str], None]) -> Callable[[object], object]:
    """Build a converter for a list of strings, each passed through ``check``."""

    def convert(value: object) -> object:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Invalid
        for item in value:
            check(item)
        return list(value)

    return convert


def _any_text(item: str) -> None:
    del item


def _regex(item: str) -> None:
    try:
        re.compile(item)
    except re.error as e:
        raise _Invalid(f"{item!r}: {e}") from None


def _cidr(item: str) -> None:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _server_name(item: str) -> None:
    if not is_valid_server_name(item):
        raise _Invalid(f"{item!r} is not a server name")


def _choice_kind(*choices: str) -> Kind:
    def convert(value: object) -> object:
        if value not in choices:
            raise _Invalid
        return value

    shown = ", ".join(json.dumps(c) for c in choices)
    return Kind("string", f"one of {shown}", convert, prefer_text=True)


def _check_addresses(value: object) -> object:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise _Invalid
    result = []
    for item in items:
        bare = item[1:-1] if item.startswith("[") and item.endswith("]") else item
        if bare != "localhost":
            try:
                bare = str(ipaddress.ip_address(bare))
            except ValueError:
                raise _Invalid(f"{item!r} is not an IP address") from None
        result.append(bare)
    return result


def _check_ports(value: object) -> object:
    items = [value] if _is_int(value) else value
    if not isinstance(items, list) or not all(_is_int(p) and 1 <= p <= 65535 for p in items):
        raise _Invalid
    return list(items)


def _check_perms(value: object) -> object:
    if not _is_int(value) or not 0 <= value <= 777 or set(str(value)) - set("01234567"):
        raise _Invalid
    return value


def _check_room_version(value: object) -> object:
    if _is_int(value):
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-zA-Z.\-]{1,32}", value):
        raise _Invalid
    return value


def _check_url(value: object) -> object:
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
        raise _Invalid
    return value


def _check_opt_server_name(value: object) -> object:
    if not isinstance(value, str) or not is_valid_server_name(value):
        raise _Invalid
    return value


def _check_user_id(value: object) -> object:
    if not isinstance(value, str) or not re.fullmatch(r"@[^:\s]+:\S+", value):
        raise _Invalid
    return value


BOOL = Kind("boolean", "true or false", _check_bool)
STR = Kind("string", "a string", _check_str, prefer_text=True)
OPT_STR = Kind("string, optional", "a string", _check_str, prefer_text=True)
PATH = Kind("path, optional", "a path (string)", _check_str, prefer_text=True)
URL = Kind("URL, optional", "an http(s):// URL", _check_url, prefer_text=True)
SERVER = Kind("server name, optional", "a server name", _check_opt_server_name, True)
USER_ID = Kind("user ID, optional", "a user ID like \"@admin:example.com\"", _check_user_id, True)
STR_LIST = Kind("list of strings", "a list of strings", _list_of(_any_text))
REGEX_LIST = Kind(
    "list of regexes", "a list of regular expressions (strings)", _list_of(_regex)
)
CIDR_LIST = Kind("list of CIDR ranges", "a list of IP ranges like \"10.0.0.0/8\"", _list_of(_cidr))
SERVER_LIST = Kind("list of server names", "a list of server names", _list_of(_server_name))
ADDRESSES = Kind(
    "IP address or list",
    "an IP address or a list of them",
    _check_addresses,
    prefer_text=True,
)
PORTS = Kind("port or list", "an integer 1-65535 or a list of them", _check_ports)
PERMS = Kind("octal permissions", "octal permission digits such as 660", _check_perms)
ROOM_VERSION = Kind("room version", "a room version such as \"11\"", _check_room_version, True)
U8 = _int_kind(0, 2**8 - 1)
U16 = _int_kind(0, 2**16 - 1)
U32 = _int_kind(0, 2**32 - 1)
U64 = _int_kind(0, 2**64 - 1)
I16 = _int_kind(-(2**15), 2**15 - 1)
I32 = _int_kind(-(2**31), 2**31 - 1)
SECONDS = Kind("seconds", "a whole number of seconds >= 0", U64.convert)
MB = _float_kind(0.0)


def _proxy_rule(value: object) -> ProxyRule:
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise _Invalid
    if set(value) - {"url", "include", "exclude"}:
        raise _Invalid
    lists = [value.get(k, []) for k in ("include", "exclude")]
    if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in lists):
        raise _Invalid
    return ProxyRule(value["url"], tuple(lists[0]), tuple(lists[1]))


def _check_proxy(value: object) -> object:
    if value == "none":
        return ProxyConfig()
    if not isinstance(value, dict) or len(value) != 1:
        raise _Invalid
    if isinstance(value.get("global"), dict) and set(value["global"]) == {"url"}:
        url = value["global"]["url"]
        if isinstance(url, str):
            return ProxyConfig(global_url=url)
    by_domain = value.get("by_domain")
    if isinstance(by_domain, list):
        return ProxyConfig(by_domain=tuple(_proxy_rule(rule) for rule in by_domain))
    raise _Invalid


PROXY = Kind(
    "proxy",
    '"none", { global = { url = "..." } } or { by_domain = [{ url, include, exclude }] }',
    _check_proxy,
)


# ---------------------------------------------------------------------------
# Server names (used by check_config and by list validation).

# ---------------------------------------------------------------------------
# Option declaration.

_CPUS: int | None = None


def cpu_count() -> int:
    """CPUs this process may run on; the base of the "varies by system" defaults."""
    global _CPUS
    if _CPUS is None:
        try:
            _CPUS = max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            _CPUS = max(1, os.cpu_count() or 1)
    return _CPUS


def _scaled(base: int, per_cpu: int) -> Callable[[], int]:
    return lambda: min(2**32 - 1, base + per_cpu * cpu_count())


def _field(
    group: str,
    default: object,
    kind: Kind,
    doc: str,
    *,
    varies: str | None = None,
    example: str | None = None,
    inert: str | None = None,
    alias: str | None = None,
) -> Any:
    """Declare one option: an attrs field whose metadata drives loading and the docs.

    ``varies`` marks a default computed from the machine (``default`` is then a
    zero-argument callable) and describes the formula. ``inert`` is the reason
    the option does nothing here; setting it earns a startup note. ``alias`` is
    conduwuit's older name for the key.
    """
    meta = {
        "group": group,
        "kind": kind,
        "doc": doc,
        "varies": varies,
        "example": example,
        "inert": inert,
        "alias": alias,
    }
    if varies is not None:
        assert callable(default)
        return attrs.field(factory=default, metadata=meta)
    if isinstance(default, list):
        return attrs.field(factory=functools.partial(list, default), metadata=meta)
    return attrs.field(default=default, metadata=meta)


_LEVELDB = "with the LevelDB store"
_HERE = "in this implementation"


@attrs.frozen
class ProxyRule:
    """One ``by_domain`` proxy entry: ``url`` is used for hosts matching include, not exclude."""

    url: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@attrs.frozen
class ProxyConfig:
    """The ``proxy`` option: none, one proxy for everything, or per-domain rules."""

    global_url: str | None = None
    by_domain: tuple[ProxyRule, ...] = ()

    def to_toml(self) -> str:
        """Render back to the TOML form the option accepts."""
        if self.global_url is not None:
            return f"{{ global = {{ url = {json.dumps(self.global_url)} }} }}"
        if self.by_domain:
            rules = ", ".join(
                f"{{ url = {json.dumps(r.url)}, include = {_toml_value(list(r.include))}, "
                f"exclude = {_toml_value(list(r.exclude))} }}"
                for r in self.by_domain
            )
            return f"{{ by_domain = [{rules}] }}"
        return '"none"'


@attrs.frozen(kw_only=True)
class TlsConfig:
    """``[global.tls]``: serve HTTPS directly instead of behind a TLS-terminating proxy."""

    certs: str | None = _field(
        "tls",
        None,
        PATH,
        "PEM file with the TLS certificate chain. Set together with `key` to serve HTTPS "
        "on every listener.",
        example='"/etc/conduwuit/fullchain.pem"',
    )
    key: str | None = _field(
        "tls",
        None,
        PATH,
        "PEM file with the private key for `certs`.",
        example='"/etc/conduwuit/privkey.pem"',
    )
    dual_protocol: bool = _field(
        "tls",
        False,
        BOOL,
        "Accept plain HTTP as well as HTTPS on the same listeners. Insecure; meant only for "
        "testing.",
    )


@attrs.frozen(kw_only=True)
class WellKnownConfig:
    """``[global.well_known]``: what ``/.well-known/matrix/*`` answers, for delegation."""

    client: str | None = _field(
        "well_known",
        None,
        URL,
        "Base URL clients should use, served in `/.well-known/matrix/client`. An https:// URL "
        "without a path, e.g. where your reverse proxy serves this server.",
        example='"https://matrix.example.com"',
    )
    server: str | None = _field(
        "well_known",
        None,
        SERVER,
        "Host and port other servers should connect to, served in "
        "`/.well-known/matrix/server`. A host:port, not a URL.",
        example='"matrix.example.com:443"',
    )
    support_page: str | None = _field(
        "well_known",
        None,
        URL,
        "URL of a help page for this server, served in `/.well-known/matrix/support`.",
        example='"https://example.com/help"',
    )
    support_role: str | None = _field(
        "well_known",
        None,
        OPT_STR,
        "Role of the support contact below, e.g. \"m.role.admin\" or \"m.role.security\".",
        example='"m.role.admin"',
    )
    support_email: str | None = _field(
        "well_known",
        None,
        OPT_STR,
        "Email address of the support contact, served in `/.well-known/matrix/support`.",
        example='"admin@example.com"',
    )
    support_mxid: str | None = _field(
        "well_known",
        None,
        USER_ID,
        "Matrix user ID of the support contact, served in `/.well-known/matrix/support`.",
        example='"@admin:example.com"',
    )


@attrs.frozen(kw_only=True)
class BlurhashingConfig:
    """``[global.blurhashing]``: blurhash placeholders computed for uploaded images."""

    components_x: int = _field(
        "blurhashing",
        4,
        _int_kind(1, 9),
        "Horizontal detail of generated blurhashes (1-9).",
    )
    components_y: int = _field(
        "blurhashing",
        3,
        _int_kind(1, 9),
        "Vertical detail of generated blurhashes (1-9).",
    )
    blurhash_max_raw_size: int = _field(
        "blurhashing",
        33554432,
        U64,
        "Largest decoded image size (bytes of raw pixels) that gets a blurhash; bigger images "
        "are skipped. 0 turns blurhashing off.",
    )


_DENYLIST = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]

_EMOJI_FLAG = "\U0001f3f3\ufe0f\u200d\u26a7\ufe0f"


@attrs.frozen(kw_only=True)
class Config:
    """Every ``[global]`` option as an attribute of the same name, plus the three sub-tables.

    Build one with :func:`load_config`; constructing it directly (tests) skips
    value checks.
    """

    # --- global: identity, listeners, core behaviour -----------------------------------
    server_name: str = attrs.field(
        metadata={
            "group": "global",
            "kind": Kind("server name", "a server name such as \"example.com\"", _check_str, True),
            "doc": "The server's public name: the part after the colon in user IDs and room "
            "aliases. It cannot be changed once the database has data. To run the server on "
            "another host than this name, delegate with `[global.well_known]`. Required.",
            "varies": None,
            "example": '"example.com"',
            "inert": None,
            "alias": None,
        }
    )
    address: list[str] = _field(
        "global",
        ["127.0.0.1", "::1"],
        ADDRESSES,
        "IP address, or list of addresses, to accept HTTP connections on. Inside a container "
        'use "0.0.0.0" (and/or "::") so traffic from outside can reach the server. When '
        "`unix_socket_path` is set and this is not, only the socket is used.",
    )
    port: list[int] = _field(
        "global",
        [8008],
        PORTS,
        "TCP port, or list of ports, to listen on; every address is combined with every port. "
        "Behind a reverse proxy, this is the port the proxy forwards to.",
    )
    unix_socket_path: str | None = _field(
        "global",
        None,
        PATH,
        "Also (or only) listen on this UNIX socket, e.g. for a reverse proxy on the same "
        "machine. If `address` is set explicitly too, both kinds of listener are opened.",
        example='"/run/conduwuit/conduwuit.sock"',
    )
    unix_socket_perms: int = _field(
        "global",
        660,
        PERMS,
        "Permissions of the UNIX socket file, as octal digits. The reverse proxy needs read "
        "and write access (its user in the group, or 666).",
    )
    listening: bool = _field(
        "global",
        True,
        BOOL,
        "Open the HTTP listeners. Only for development and diagnostics; with false nothing "
        "can reach the server.",
    )
    new_user_displayname_suffix: str = _field(
        "global",
        _EMOJI_FLAG,
        STR,
        "Text added, after a space, to the display name of each newly registered user. "
        'Use "" for none.',
    )
    allow_check_for_updates: bool = _field(
        "global",
        False,
        BOOL,
        "Now and then fetch announcements from the conduwuit project and post new ones in the "
        "admin room. Despite the name this is not an update check.",
        alias="allow_announcements_check",
    )
    default_room_version: str = _field(
        "global",
        DEFAULT_ROOM_VERSION,
        ROOM_VERSION,
        "Room version for new rooms when the client does not ask for one (any of 1-12; the "
        "spec recommends 12). An integer is accepted too.",
    )
    allow_unstable_room_versions: bool = _field(
        "global",
        True,
        BOOL,
        "Allow creating and joining rooms of versions supported but not marked stable. All "
        "spec versions 1-12 are stable and always allowed; this only matters for "
        "experimental (MSC) versions, of which there are none yet.",
    )
    allow_room_creation: bool = _field(
        "global",
        True,
        BOOL,
        "Let ordinary local users create rooms. Admins and appservices always can.",
    )
    allow_encryption: bool = _field(
        "global",
        True,
        BOOL,
        "Allow end-to-end encrypted rooms. When false, turning on encryption in a room is "
        "refused.",
    )
    auto_join_rooms: list[str] = _field(
        "global",
        [],
        STR_LIST,
        "Room IDs or aliases every newly registered local user joins. The rooms must be "
        "public and known to this server.",
        example='["#welcome:example.com"]',
    )
    appservice_registration_files: list[str] = _field(
        "global",
        [],
        STR_LIST,
        "Paths of application service registration files (the spec's YAML format), "
        "loaded at startup next to those registered from the admin room "
        "(`appservices register`). A file that cannot be read or is invalid is logged "
        "and skipped; ids and as_tokens must be unique across all registrations.",
        example='["/etc/conduwuit/appservices/telegram.yaml"]',
    )
    config_reload_signal: bool = _field(
        "global",
        True,
        BOOL,
        "Reload the config file when the process receives SIGUSR1. `server_name` cannot "
        "change on reload.",
    )
    test: list[str] = _field(
        "global",
        [],
        STR_LIST,
        "Names of internal developer self-tests to enable. Leave empty.",
    )
    max_request_size: int = _field(
        "global",
        20971520,
        U64,
        "Largest request body accepted, in bytes; this is also the media upload limit. At "
        "least 10000000 is required for federation to work.",
    )

    # --- database: paths, backups, caches ----------------------------------------------
    database_path: str = _field(
        "database",
        "./conduwuit-db",
        STR,
        "Directory holding everything the server stores: the LevelDB database and media. "
        "Set it explicitly; the default is relative to the working directory.",
        example='"/var/lib/conduwuit"',
    )
    database_backup_path: str | None = _field(
        "database",
        None,
        PATH,
        "Directory for online backups of the database, made on request from the admin room. "
        "Unset: backups are disabled.",
        example='"/var/backups/conduwuit"',
    )
    database_backups_to_keep: int = _field(
        "database",
        1,
        I16,
        "How many backups to keep in `database_backup_path`; older ones are deleted after "
        "each new backup. 0 makes no backup and deletes all; a negative value makes none and "
        "deletes none.",
    )
    db_cache_capacity_mb: float = _field(
        "database",
        lambda: 128.0 + 64.0 * cpu_count(),
        MB,
        "Memory (MiB) for the database read cache. LevelDB: the block cache "
        "(`lru_cache_size`).",
        varies="128 + 64 per CPU core",
    )
    db_write_buffer_capacity_mb: float = _field(
        "database",
        lambda: 48.0 + 4.0 * cpu_count(),
        MB,
        "Memory (MiB) for writes buffered before they are flushed to disk. LevelDB: "
        "`write_buffer_size`.",
        varies="48 + 4 per CPU core",
    )
    db_pool_affinity: bool = _field(
        "database",
        True,
        BOOL,
        "conduwuit: fit its database thread pool to the detected storage hardware.",
        inert=_HERE,
    )
    db_pool_workers: int = _field(
        "database",
        lambda: min(1024, max(32, 4 * cpu_count())),
        U64,
        "Number of threads for blocking database work.",
        varies="4 per CPU core, between 32 and 1024",
    )
    db_pool_workers_limit: int = _field(
        "database",
        64,
        U64,
        "conduwuit: upper bound on a hardware-detected worker group.",
        inert=_HERE,
    )
    db_pool_queue_mult: int = _field(
        "database",
        4,
        U64,
        "conduwuit: database request queue length, as a multiple of the worker count.",
        inert=_HERE,
    )
    cache_capacity_modifier: float = _field(
        "database",
        1.0,
        _float_kind(0.0),
        "Multiplier for all the in-memory cache sizes below: raise it if memory is plentiful, "
        "lower it on small machines.",
        alias="conduit_cache_capacity_modifier",
    )
    pdu_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 10_000),
        U32,
        "Entries in the cache of recently used events (PDUs).",
        varies="100000 + 10000 per CPU core",
    )
    auth_chain_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 10_000),
        U32,
        "Entries in the cache of computed auth chains.",
        varies="100000 + 10000 per CPU core",
    )
    shorteventid_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 50_000),
        U32,
        "Entries in the cache mapping short event numbers to event IDs.",
        varies="100000 + 50000 per CPU core",
    )
    eventidshort_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 25_000),
        U32,
        "Entries in the cache mapping event IDs to short event numbers.",
        varies="100000 + 25000 per CPU core",
    )
    eventid_pdu_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 25_000),
        U32,
        "Entries in the cache mapping event IDs to stored events.",
        varies="100000 + 25000 per CPU core",
    )
    shortstatekey_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 10_000),
        U32,
        "Entries in the cache mapping short state keys to (type, state_key).",
        varies="100000 + 10000 per CPU core",
    )
    statekeyshort_cache_capacity: int = _field(
        "database",
        _scaled(100_000, 10_000),
        U32,
        "Entries in the cache mapping (type, state_key) to short state keys.",
        varies="100000 + 10000 per CPU core",
    )
    servernameevent_data_cache_capacity: int = _field(
        "database",
        _scaled(500_000, 100_000),
        U32,
        "Entries cached from the outgoing federation queue (destination, event).",
        varies="500000 + 100000 per CPU core",
    )
    stateinfo_cache_capacity: int = _field(
        "database",
        _scaled(0, 100),
        U32,
        "Room state snapshots (state groups) kept loaded in memory.",
        varies="100 per CPU core",
    )
    roomid_spacehierarchy_cache_capacity: int = _field(
        "database",
        _scaled(0, 1000),
        U32,
        "Rooms whose space-hierarchy summary is cached.",
        varies="1000 per CPU core",
    )
    stream_width_default: int = _field(
        "database",
        32,
        U64,
        "conduwuit: initial concurrency of database streams.",
        inert=_HERE,
    )
    stream_width_scale: float = _field(
        "database",
        1.0,
        _float_kind(0.0),
        "conduwuit: scale factor for database stream concurrency.",
        inert=_HERE,
    )
    stream_amplification: int = _field(
        "database",
        1024,
        U64,
        "conduwuit: batch size factor for database streams.",
        inert=_HERE,
    )

    # --- rocksdb: conduwuit's RocksDB tuning, mapped to LevelDB where possible ---------
    rocksdb_log_level: str = _field(
        "rocksdb",
        "error",
        _choice_kind("debug", "info", "warn", "error", "fatal", "header"),
        "Level of RocksDB's own LOG files.",
        inert=_LEVELDB,
    )
    rocksdb_log_stderr: bool = _field(
        "rocksdb", False, BOOL, "Send RocksDB's log to stderr.", inert=_LEVELDB
    )
    rocksdb_max_log_file_size: int = _field(
        "rocksdb",
        4194304,
        U64,
        "Size (bytes) at which a RocksDB LOG file is rotated.",
        inert=_LEVELDB,
    )
    rocksdb_log_time_to_roll: int = _field(
        "rocksdb",
        0,
        U64,
        "Seconds after which a RocksDB LOG file is rotated (0: never).",
        inert=_LEVELDB,
    )
    rocksdb_optimize_for_spinning_disks: bool = _field(
        "rocksdb",
        False,
        BOOL,
        "Tune RocksDB for hard disks instead of SSDs.",
        inert=_LEVELDB,
    )
    rocksdb_direct_io: bool = _field(
        "rocksdb",
        True,
        BOOL,
        "Let RocksDB bypass the page cache (direct I/O).",
        inert=_LEVELDB,
    )
    rocksdb_parallelism_threads: int = _field(
        "rocksdb",
        cpu_count,
        U64,
        "Background threads RocksDB uses for flushes and compaction.",
        varies="the number of CPU cores",
        inert=_LEVELDB,
    )
    rocksdb_max_log_files: int = _field(
        "rocksdb",
        3,
        _int_kind(1, 2**64 - 1),
        "Number of rotated RocksDB LOG files kept (at least 1).",
        inert=_LEVELDB,
    )
    rocksdb_compression_algo: str = _field(
        "rocksdb",
        "zstd",
        _choice_kind("zstd", "bz2", "lz4", "snappy", "none"),
        'Compression of stored data. LevelDB knows only snappy: "none" turns compression '
        "off, every other value means snappy.",
    )
    rocksdb_compression_level: int = _field(
        "rocksdb",
        32767,
        I32,
        "Compression level (32767: the library default).",
        inert=_LEVELDB,
    )
    rocksdb_bottommost_compression_level: int = _field(
        "rocksdb",
        32767,
        I32,
        "Compression level for the oldest data (32767: the library default).",
        inert=_LEVELDB,
    )
    rocksdb_bottommost_compression: bool = _field(
        "rocksdb",
        True,
        BOOL,
        "Compress the oldest data harder.",
        inert=_LEVELDB,
    )
    rocksdb_recovery_mode: int = _field(
        "rocksdb",
        1,
        _int_kind(0, 3),
        "How RocksDB recovers a damaged write-ahead log (0-3). For LevelDB use "
        "`rocksdb_repair` instead.",
        inert=_LEVELDB,
    )
    rocksdb_paranoid_file_checks: bool = _field(
        "rocksdb",
        False,
        BOOL,
        "Check data files more thoroughly, at some cost in speed. LevelDB: `paranoid_checks`.",
    )
    rocksdb_checksums: bool = _field(
        "rocksdb",
        True,
        BOOL,
        "Verify block checksums on every read. LevelDB always checksums its blocks.",
        inert=_LEVELDB,
    )
    rocksdb_atomic_flush: bool = _field(
        "rocksdb",
        False,
        BOOL,
        "Flush all column families atomically. LevelDB write batches are atomic anyway.",
        inert=_LEVELDB,
    )
    rocksdb_repair: bool = _field(
        "rocksdb",
        False,
        BOOL,
        "Repair the database before opening it, after corruption. LevelDB: runs its repair "
        "(`plyvel.repair_db`) at startup. Back up the directory first and turn this off again "
        "afterwards.",
    )
    rocksdb_read_only: bool = _field(
        "rocksdb", False, BOOL, "Open RocksDB read-only.", inert=_LEVELDB
    )
    rocksdb_secondary: bool = _field(
        "rocksdb", False, BOOL, "Open RocksDB as a secondary instance.", inert=_LEVELDB
    )
    rocksdb_compaction_prio_idle: bool = _field(
        "rocksdb",
        False,
        BOOL,
        "Run RocksDB compaction at idle CPU priority.",
        inert=_LEVELDB,
    )
    rocksdb_compaction_ioprio_idle: bool = _field(
        "rocksdb",
        True,
        BOOL,
        "Run RocksDB compaction at idle I/O priority.",
        inert=_LEVELDB,
    )
    rocksdb_compaction: bool = _field(
        "rocksdb",
        True,
        BOOL,
        "Let RocksDB compact its files. Never turn this off in production.",
        inert=_LEVELDB,
    )
    rocksdb_stats_level: int = _field(
        "rocksdb",
        1,
        _int_kind(0, 6),
        "How many statistics RocksDB collects (0-6).",
        inert=_LEVELDB,
    )

    # --- dns: resolver used for federation -------------------------------------------
    dns_cache_entries: int = _field(
        "dns",
        32768,
        U32,
        "Maximum number of DNS answers cached in memory.",
    )
    dns_min_ttl: int = _field(
        "dns",
        10800,
        SECONDS,
        "Shortest time (seconds) a DNS answer is cached, whatever its TTL says.",
    )
    dns_min_ttl_nxdomain: int = _field(
        "dns",
        259200,
        SECONDS,
        "Shortest time (seconds) a \"no such domain\" answer is cached. Such names rarely come "
        "back, so the default is three days.",
    )
    dns_attempts: int = _field(
        "dns",
        10,
        U16,
        "How often a DNS query is retried after a timeout or error.",
    )
    dns_timeout: int = _field(
        "dns",
        10,
        SECONDS,
        "Seconds to wait for a DNS answer.",
    )
    dns_tcp_fallback: bool = _field(
        "dns",
        True,
        BOOL,
        "Retry DNS queries over TCP when UDP fails.",
    )
    query_all_nameservers: bool = _field(
        "dns",
        True,
        BOOL,
        "Keep asking the other nameservers when one answers that a name does not exist.",
    )
    query_over_tcp_only: bool = _field(
        "dns",
        False,
        BOOL,
        "Send DNS queries over TCP only. Can help in containers with unreliable UDP.",
    )
    ip_lookup_strategy: int = _field(
        "dns",
        5,
        _int_kind(1, 5),
        "Which address records to look up: 1 IPv4 only, 2 IPv6 only, 3 both at once, "
        "4 IPv6 then IPv4, 5 IPv4 then IPv6.",
    )

    # --- timeouts (seconds unless stated) ----------------------------------------------
    request_conn_timeout: int = _field(
        "timeouts",
        10,
        SECONDS,
        "Connect timeout for general outbound requests (URL previews, announcements).",
    )
    request_timeout: int = _field(
        "timeouts",
        35,
        SECONDS,
        "Time to wait for more data on general outbound requests.",
    )
    request_total_timeout: int = _field(
        "timeouts",
        320,
        SECONDS,
        "Time limit for a whole general outbound request.",
    )
    request_idle_timeout: int = _field(
        "timeouts",
        5,
        SECONDS,
        "How long an idle pooled connection for general requests stays open.",
    )
    request_idle_per_host: int = _field(
        "timeouts",
        1,
        U16,
        "Idle pooled connections kept per host for general requests.",
    )
    well_known_conn_timeout: int = _field(
        "timeouts",
        6,
        SECONDS,
        "Connect timeout when fetching another server's `/.well-known/matrix/server`.",
    )
    well_known_timeout: int = _field(
        "timeouts",
        10,
        SECONDS,
        "Time limit for fetching another server's `/.well-known/matrix/server`.",
    )
    federation_timeout: int = _field(
        "timeouts",
        300,
        SECONDS,
        "Time limit for a federation request we make, such as a room join. Keep it generous "
        "for big rooms and slow servers.",
    )
    federation_idle_timeout: int = _field(
        "timeouts",
        25,
        SECONDS,
        "How long an idle pooled federation connection stays open.",
    )
    federation_idle_per_host: int = _field(
        "timeouts",
        1,
        U16,
        "Idle pooled federation connections kept per server.",
    )
    sender_timeout: int = _field(
        "timeouts",
        180,
        SECONDS,
        "Time limit for sending one federation transaction.",
    )
    sender_idle_timeout: int = _field(
        "timeouts",
        180,
        SECONDS,
        "How long an idle pooled connection of the federation sender stays open.",
    )
    sender_retry_backoff_limit: int = _field(
        "timeouts",
        86400,
        SECONDS,
        "Longest wait between retries to an unreachable server.",
    )
    appservice_timeout: int = _field(
        "timeouts",
        35,
        SECONDS,
        "Time limit for a request to an appservice.",
    )
    appservice_idle_timeout: int = _field(
        "timeouts",
        300,
        SECONDS,
        "How long an idle pooled appservice connection stays open.",
    )
    pusher_idle_timeout: int = _field(
        "timeouts",
        15,
        SECONDS,
        "How long an idle pooled push-gateway connection stays open.",
    )
    client_receive_timeout: int = _field(
        "timeouts",
        75,
        SECONDS,
        "Time allowed to receive a request from a client.",
    )
    client_request_timeout: int = _field(
        "timeouts",
        180,
        SECONDS,
        "Time allowed to handle one client request. Also the shutdown grace period: requests "
        "still running when the server stops get this long to finish before they are "
        "cancelled.",
    )
    client_response_timeout: int = _field(
        "timeouts",
        120,
        SECONDS,
        "Time allowed to send a response to a client.",
    )
    keep_alive_timeout: int = _field(
        "timeouts",
        20,
        SECONDS,
        "How long an idle HTTP keep-alive connection from a client stays open (our own option; "
        "conduwuit has none).",
    )
    client_shutdown_timeout: int = _field(
        "timeouts",
        10,
        SECONDS,
        "conduwuit's shutdown grace period for client requests. Here the grace period is "
        "`client_request_timeout`.",
        inert=_HERE,
    )
    sender_shutdown_timeout: int = _field(
        "timeouts",
        5,
        SECONDS,
        "Grace period at shutdown for federation transactions being sent.",
    )

    # --- network: proxy, compression, outbound safety ---------------------------------
    proxy: ProxyConfig = _field(
        "network",
        ProxyConfig(),
        PROXY,
        'Proxy for outbound requests. "none"; or `{ global = { url = "socks5h://host:port" } '
        "}` for everything; or `{ by_domain = [{ url = ..., include = [...], exclude = [...] "
        "}] }` where include/exclude are domain patterns like \"*.onion\" (an empty include "
        "means all) and the more specific match wins. Can also be written as a "
        "`[global.proxy]` table.",
    )
    ip_range_denylist: list[str] = _field(
        "network",
        _DENYLIST,
        CIDR_LIST,
        "IP ranges outbound requests must never go to (private, loopback, link-local, "
        "documentation and multicast ranges by default). Guards against SSRF, but use a "
        "firewall too. [] allows everything.",
    )
    zstd_compression: bool = _field(
        "network",
        False,
        BOOL,
        "Compress HTTP responses with zstd when the client accepts it. Compression over TLS "
        "can leak secrets (BREACH).",
    )
    gzip_compression: bool = _field(
        "network",
        False,
        BOOL,
        "Compress HTTP responses with gzip when the client accepts it. Same BREACH caveat.",
    )
    brotli_compression: bool = _field(
        "network",
        False,
        BOOL,
        "Compress HTTP responses with brotli when the client accepts it. Same BREACH caveat.",
    )
    allow_invalid_tls_certificates_yes_i_know_what_the_fuck_i_am_doing_with_this_and_i_know_this_is_insecure: bool = _field(  # noqa: E501
        "network",
        False,
        BOOL,
        "Skip TLS certificate checks on all outbound requests. Dangerous; for test networks "
        "only.",
    )

    # --- registration, login, tokens ---------------------------------------------------
    allow_registration: bool = _field(
        "registration",
        False,
        BOOL,
        "Let new users register. Needs `registration_token` or `registration_token_file`, "
        "or else the long `yes_i_am_...` option below to allow open registration.",
    )
    yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse: bool = _field(
        "registration",
        False,
        BOOL,
        "Allow registration without any token. Open servers attract spam and abuse.",
    )
    registration_token: str | None = _field(
        "registration",
        None,
        OPT_STR,
        "A token new users must present to register.",
        example='"a long random string"',
    )
    registration_token_file: str | None = _field(
        "registration",
        None,
        PATH,
        "File holding more registration tokens, separated by whitespace. It must be readable "
        "and not empty.",
        example='"/etc/conduwuit/registration_tokens"',
    )
    allow_guest_registration: bool = _field(
        "registration",
        False,
        BOOL,
        "Allow guest accounts. Some clients register guests without asking.",
    )
    log_guest_registrations: bool = _field(
        "registration",
        False,
        BOOL,
        "Report guest registrations in the admin room.",
    )
    allow_guests_auto_join_rooms: bool = _field(
        "registration",
        False,
        BOOL,
        "Let guests join the `auto_join_rooms` too.",
    )
    openid_token_ttl: int = _field(
        "registration",
        3600,
        SECONDS,
        "Lifetime (seconds) of OpenID tokens handed to integrations (not OIDC login).",
    )
    login_via_existing_session: bool = _field(
        "registration",
        True,
        BOOL,
        "Let a logged-in client mint a login token for another device (after "
        "re-authenticating).",
    )
    login_token_ttl: int = _field(
        "registration",
        120000,
        U64,
        "Lifetime of those login tokens, in milliseconds.",
    )
    emergency_password: str | None = _field(
        "registration",
        None,
        OPT_STR,
        "Password for logging in as the server's bot account to regain the admin room. "
        "Remove it when done; all of the bot's sessions are then logged out.",
        example='"a long random string"',
    )

    # --- federation and signing keys ----------------------------------------------------
    allow_federation: bool = _field(
        "federation",
        True,
        BOOL,
        "Talk to other Matrix servers. Turning it off later can break rooms shared with them.",
    )
    federation_loopback: bool = _field(
        "federation",
        False,
        BOOL,
        "Allow federation requests to this server itself. For development.",
    )
    trusted_servers: list[str] = _field(
        "federation",
        ["matrix.org"],
        SERVER_LIST,
        "Notary servers asked for other servers' signing keys.",
        example='["matrix.org", "example.org"]',
    )
    query_trusted_key_servers_first: bool = _field(
        "federation",
        False,
        BOOL,
        "Ask `trusted_servers` for keys before the key's own server. Faster, but trusts the "
        "notaries more.",
    )
    query_trusted_key_servers_first_on_join: bool = _field(
        "federation",
        True,
        BOOL,
        "Ask `trusted_servers` first only while joining a room, where many keys are needed "
        "at once.",
    )
    only_query_trusted_key_servers: bool = _field(
        "federation",
        False,
        BOOL,
        "Never ask a key's own server, only `trusted_servers`. For special deployments.",
    )
    trusted_server_batch_size: int = _field(
        "federation",
        1024,
        U64,
        "Most keys requested from a notary in one query.",
    )
    max_fetch_prev_events: int = _field(
        "federation",
        192,
        U16,
        "Most missing earlier events fetched when an incoming event refers to unknown ones.",
    )
    allow_device_name_federation: bool = _field(
        "federation",
        False,
        BOOL,
        "Show our users' device names to other servers.",
    )
    allow_inbound_profile_lookup_federation_requests: bool = _field(
        "federation",
        True,
        BOOL,
        "Answer other servers' profile queries about our users. Off improves privacy but "
        "some invites then show unknown users.",
        alias="allow_profile_lookup_federation_requests",
    )
    allow_public_room_directory_over_federation: bool = _field(
        "federation",
        False,
        BOOL,
        "Let other servers read our public room directory.",
    )
    startup_netburst: bool = _field(
        "federation",
        True,
        BOOL,
        "At startup, resend federation traffic that was queued or failed before.",
    )
    startup_netburst_keep: int = _field(
        "federation",
        50,
        _int_kind(-1, 2**63 - 1),
        "Queued events kept per server for that resend; older ones are dropped. -1 keeps "
        "all, 0 drops all.",
    )
    sender_workers: int = _field(
        "federation",
        0,
        U64,
        "Parallel federation sender workers. 0 picks a number automatically.",
    )
    notification_push_path: str = _field(
        "federation",
        "/_matrix/push/v1/notify",
        STR,
        "Path appended to a push gateway's address when sending push notifications.",
    )

    # --- moderation and privacy -------------------------------------------------------
    forget_forced_upon_leave: bool = _field(
        "moderation",
        False,
        BOOL,
        "Forget rooms for users as soon as they leave them (MSC4267).",
    )
    require_auth_for_profile_requests: bool = _field(
        "moderation",
        False,
        BOOL,
        "Require an access token to read profiles, against profile scraping.",
    )
    allow_public_room_directory_without_auth: bool = _field(
        "moderation",
        False,
        BOOL,
        "Let clients read the public room directory without logging in.",
    )
    lockdown_public_room_directory: bool = _field(
        "moderation",
        False,
        BOOL,
        "Only admins may publish rooms to the directory; anyone may still unpublish.",
    )
    auto_deactivate_banned_room_attempts: bool = _field(
        "moderation",
        False,
        BOOL,
        "Deactivate local users who try to join a banned room or a room on a forbidden "
        "server or alias.",
    )
    block_non_admin_invites: bool = _field(
        "moderation",
        False,
        BOOL,
        "Only admins may send invites, and only admins receive invites from other servers.",
    )
    forbidden_alias_names: list[str] = _field(
        "moderation",
        [],
        REGEX_LIST,
        "Regexes; room aliases and custom room IDs matching any of them cannot be created.",
        example='["badword", "b[a4]d"]',
    )
    forbidden_usernames: list[str] = _field(
        "moderation",
        [],
        REGEX_LIST,
        "Regexes; usernames matching any of them cannot be registered.",
        example='["^admin", "b[a4]d"]',
    )
    forbidden_remote_server_names: list[str] = _field(
        "moderation",
        [],
        REGEX_LIST,
        "Regexes of server names we refuse to federate with in either direction, and whose "
        "rooms our users cannot join.",
        example='["badserver\\\\.example$"]',
    )
    forbidden_remote_room_directory_server_names: list[str] = _field(
        "moderation",
        [],
        REGEX_LIST,
        "Regexes of server names whose room directories our users may not browse.",
    )
    prevent_media_downloads_from: list[str] = _field(
        "moderation",
        [],
        REGEX_LIST,
        "Regexes of server names we never download remote media from.",
    )

    # --- presence, typing, receipts ---------------------------------------------------
    allow_local_presence: bool = _field(
        "presence",
        True,
        BOOL,
        "Track presence of local users. Needed for outgoing presence.",
    )
    allow_incoming_presence: bool = _field(
        "presence",
        True,
        BOOL,
        "Accept presence updates from other servers.",
    )
    allow_outgoing_presence: bool = _field(
        "presence",
        True,
        BOOL,
        "Send our users' presence to other servers. Requires `allow_local_presence`.",
    )
    presence_idle_timeout_s: int = _field(
        "presence",
        300,
        SECONDS,
        "Seconds without activity before a user shows as idle.",
    )
    presence_offline_timeout_s: int = _field(
        "presence",
        1800,
        SECONDS,
        "Seconds without activity before a user shows as offline.",
    )
    presence_timeout_remote_users: bool = _field(
        "presence",
        True,
        BOOL,
        "Apply those timeouts to remote users too. Off saves work but can leave them shown "
        "online.",
    )
    allow_incoming_read_receipts: bool = _field(
        "presence",
        True,
        BOOL,
        "Accept read receipts from other servers.",
    )
    allow_outgoing_read_receipts: bool = _field(
        "presence",
        True,
        BOOL,
        "Send read receipts to other servers.",
    )
    allow_outgoing_typing: bool = _field(
        "presence",
        True,
        BOOL,
        "Send typing notifications to other servers.",
    )
    allow_incoming_typing: bool = _field(
        "presence",
        True,
        BOOL,
        "Accept typing notifications from other servers.",
    )
    typing_federation_timeout_s: int = _field(
        "presence",
        30,
        SECONDS,
        "Longest a remote user shows as typing without an update.",
    )
    typing_client_timeout_min_s: int = _field(
        "presence",
        15,
        SECONDS,
        "Shortest typing period a local client can ask for (an explicit stop still ends it).",
    )
    typing_client_timeout_max_s: int = _field(
        "presence",
        45,
        SECONDS,
        "Longest typing period a local client can ask for.",
    )

    # --- TURN / VoIP ---------------------------------------------------------------------
    turn_username: str = _field(
        "turn",
        "",
        STR,
        "Static TURN username handed to clients. Prefer `turn_secret`.",
    )
    turn_password: str = _field(
        "turn",
        "",
        STR,
        "Static TURN password handed to clients. Prefer `turn_secret`.",
    )
    turn_uris: list[str] = _field(
        "turn",
        [],
        STR_LIST,
        "TURN server URIs handed to clients; use turns: for TURN over TLS.",
        example='["turn:turn.example.com?transport=udp", "turn:turn.example.com?transport=tcp"]',
    )
    turn_secret: str = _field(
        "turn",
        "",
        STR,
        "Shared secret (coturn's static-auth-secret) used to create short-lived TURN "
        "credentials.",
    )
    turn_secret_file: str | None = _field(
        "turn",
        None,
        PATH,
        "File holding the TURN shared secret; used instead of `turn_secret` when readable.",
        example='"/etc/conduwuit/turn_secret"',
    )
    turn_ttl: int = _field(
        "turn",
        86400,
        SECONDS,
        "Lifetime of generated TURN credentials.",
    )
    turn_allow_guests: bool = _field(
        "turn",
        False,
        BOOL,
        "Hand TURN credentials to guests and unauthenticated clients too.",
    )

    # --- media and URL previews ---------------------------------------------------------
    allow_legacy_media: bool = _field(
        "media",
        True,
        BOOL,
        "Serve the old unauthenticated `/_matrix/media/*` endpoints. The authenticated ones "
        "are always on.",
    )
    freeze_legacy_media: bool = _field(
        "media",
        True,
        BOOL,
        "Legacy endpoints serve only media already stored; they fetch nothing new from other "
        "servers.",
    )
    media_startup_check: bool = _field(
        "media",
        True,
        BOOL,
        "At startup, check that media files and their database entries match.",
    )
    media_compat_file_link: bool = _field(
        "media",
        False,
        BOOL,
        "Keep Conduit-style links to media files, for switching back to Conduit. Conduit "
        "cannot read this server's database, so there is nothing to switch back to.",
        inert=_HERE,
    )
    prune_missing_media: bool = _field(
        "media",
        False,
        BOOL,
        "During the startup check, delete database entries whose media file is gone. Careful "
        "if the media directory could be missing by accident.",
    )
    url_preview_bound_interface: str | None = _field(
        "media",
        None,
        OPT_STR,
        "Source IP address (or, on Linux, network interface) for URL preview requests.",
        example='"192.0.2.10"',
    )
    url_preview_domain_contains_allowlist: list[str] = _field(
        "media",
        [],
        STR_LIST,
        'Domains allowed for URL previews by substring match; "*" allows every URL (risky).',
    )
    url_preview_domain_explicit_allowlist: list[str] = _field(
        "media",
        [],
        STR_LIST,
        'Domains allowed for URL previews by exact match; "*" allows every URL (risky).',
    )
    url_preview_domain_explicit_denylist: list[str] = _field(
        "media",
        [],
        STR_LIST,
        "Domains never previewed (exact match); checked before the allowlists.",
    )
    url_preview_url_contains_allowlist: list[str] = _field(
        "media",
        [],
        STR_LIST,
        'URLs allowed for previews when they contain one of these strings; "*" allows all.',
    )
    url_preview_max_spider_size: int = _field(
        "media",
        256000,
        U64,
        "Most bytes read from a page to build its preview.",
    )
    url_preview_check_root_domain: bool = _field(
        "media",
        False,
        BOOL,
        "Match the domain allowlists against the root domain too, so allowing example.org "
        "allows its subdomains.",
    )

    # --- logging, tracing, telemetry ----------------------------------------------------
    log: str = _field(
        "logging",
        "info",
        STR,
        'Log filter: a level ("debug", "info", "warn", "error") or comma-separated '
        'directives like "warn,conduwuit.store=debug".',
    )
    log_colors: bool = _field(
        "logging",
        True,
        BOOL,
        "Colour log output with ANSI codes.",
        alias="log_colours",
    )
    log_span_events: str = _field(
        "logging",
        "none",
        STR,
        "Which tracing span events to log (conduwuit/tracing terms).",
    )
    log_filter_regex: bool = _field(
        "logging",
        True,
        BOOL,
        "Treat values in `log` directives as regular expressions.",
    )
    log_thread_ids: bool = _field(
        "logging",
        False,
        BOOL,
        "Include thread IDs in log lines.",
    )
    allow_jaeger: bool = _field(
        "logging", False, BOOL, "Export traces to Jaeger.", inert=_HERE
    )
    jaeger_filter: str = _field(
        "logging", "info", STR, "Filter for traces sent to Jaeger.", inert=_HERE
    )
    tracing_flame: bool = _field(
        "logging",
        False,
        BOOL,
        "Write a folded stack profile of tracing spans (flame graphs).",
        inert=_HERE,
    )
    tracing_flame_filter: str = _field(
        "logging", "info", STR, "Filter for the flame profile.", inert=_HERE
    )
    tracing_flame_output_path: str = _field(
        "logging",
        "./tracing.folded",
        STR,
        "File the flame profile is written to.",
        inert=_HERE,
    )
    sentry: bool = _field(
        "logging",
        False,
        BOOL,
        "Send error reports (and a share of request traces) to Sentry at `sentry_endpoint`. "
        "Needs the optional `sentry-sdk` package (`pip install 'conduwuit[sentry]'`); without "
        "it the server starts with a warning and reports nothing.",
    )
    sentry_endpoint: str | None = _field(
        "logging",
        None,
        URL,
        "Sentry DSN to report to. (conduwuit defaults to its own project; there is no default "
        "here, so `sentry = true` without a DSN reports nothing.)",
        example='"https://public_key@sentry.example.com/1"',
    )
    sentry_send_server_name: bool = _field(
        "logging", False, BOOL, "Include `server_name` in Sentry reports."
    )
    sentry_traces_sample_rate: float = _field(
        "logging",
        0.15,
        _float_kind(0.0, 1.0),
        "Share of requests traced to Sentry for performance data (0.0-1.0).",
    )
    sentry_attach_stacktrace: bool = _field(
        "logging", False, BOOL, "Attach stack traces to Sentry reports of log messages too."
    )
    sentry_send_panic: bool = _field(
        "logging", True, BOOL, "Report uncaught exceptions (crashes) to Sentry."
    )
    sentry_send_error: bool = _field(
        "logging", True, BOOL, "Report log lines at level error to Sentry as events."
    )
    sentry_filter: str = _field(
        "logging",
        "info",
        STR,
        'Lowest log level kept as breadcrumbs on Sentry events ("debug", "info", "warn", '
        '"error").',
    )
    allow_metrics: bool = _field(
        "logging",
        False,
        BOOL,
        "Serve Prometheus metrics at `/metrics` on a listener of its own (`metrics_address` "
        "and `metrics_port`), never on the client/federation listeners: request counts and "
        "latencies per route, sync waiters, jobs, federation queues, database sizes.",
    )
    metrics_address: list[str] = _field(
        "logging",
        ["127.0.0.1"],
        ADDRESSES,
        "IP address, or list of addresses, of the metrics listener. Keep it on loopback or a "
        "private network: the metrics show activity and need no login.",
    )
    metrics_port: int = _field(
        "logging",
        9167,
        _int_kind(1, 65535),
        "TCP port of the metrics listener.",
    )
    tokio_console: bool = _field(
        "logging", False, BOOL, "Enable tokio-console (a Rust runtime debugger).", inert=_HERE
    )

    # --- admin room and console ---------------------------------------------------------
    admin_escape_commands: bool = _field(
        "admin",
        True,
        BOOL,
        "Let admins run commands in any room by starting a message with \"\\!admin\"; the "
        "reply is visible to the room.",
    )
    admin_console_automatic: bool = _field(
        "admin",
        False,
        BOOL,
        "Open the admin console on the terminal at startup (like `--console`).",
    )
    admin_execute: list[str] = _field(
        "admin",
        [],
        STR_LIST,
        "Admin commands to run at startup (like `--execute`).",
        example='["server show-config"]',
    )
    admin_execute_errors_ignore: bool = _field(
        "admin",
        False,
        BOOL,
        "Keep starting when one of the `admin_execute` commands fails.",
    )
    admin_signal_execute: list[str] = _field(
        "admin",
        [],
        STR_LIST,
        "Admin commands to run when the process receives SIGUSR2.",
    )
    admin_log_capture: str = _field(
        "admin",
        "info",
        STR,
        "Lowest level of log lines captured into admin command replies.",
    )
    admin_room_tag: str = _field(
        "admin",
        "m.server_notice",
        STR,
        "Tag put on the admin room for admins; m.server_notice pins it in Element.",
    )
    admin_room_notices: bool = _field(
        "admin",
        True,
        BOOL,
        "Post notices (registrations, password changes, deactivations, directory changes) in "
        "the admin room.",
    )

    # --- sub-tables -------------------------------------------------------------------------
    tls: TlsConfig = attrs.field(factory=TlsConfig)
    well_known: WellKnownConfig = attrs.field(factory=WellKnownConfig)
    blurhashing: BlurhashingConfig = attrs.field(factory=BlurhashingConfig)

    def listen_addresses(self) -> list[tuple[str, int]]:
        """Every ``(address, port)`` pair to bind: each address with each port."""
        return [(address, port) for address in self.address for port in self.port]

    @property
    def unix_socket_mode(self) -> int:
        """``unix_socket_perms`` read as octal digits, ready for ``os.chmod``."""
        return int(str(self.unix_socket_perms), 8)

    def cache_capacity(self, name: str) -> int:
        """A ``*_cache_capacity`` option scaled by ``cache_capacity_modifier``."""
        return max(0, int(getattr(self, name) * self.cache_capacity_modifier))

    def leveldb_options(self) -> dict[str, Any]:
        """Keyword arguments for ``plyvel.DB`` derived from the RocksDB-era options."""
        compression = None if self.rocksdb_compression_algo == "none" else "snappy"
        return {
            "lru_cache_size": int(self.db_cache_capacity_mb * 1024 * 1024),
            "write_buffer_size": int(self.db_write_buffer_capacity_mb * 1024 * 1024),
            "paranoid_checks": self.rocksdb_paranoid_file_checks,
            "compression": compression,
        }


@attrs.frozen
class LoadedConfig:
    """A loaded :class:`Config` with the notes gathered while loading it.

    ``source`` is the file path, or ``"embedded default"``; ``explicit`` holds
    the dotted names of the options the user set (file, env or ``-O``).
    """

    config: Config
    warnings: list[str]
    source: str
    explicit: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------
# Option catalogue.

_SUBTABLES: dict[str, type[Any]] = {
    "tls": TlsConfig,
    "well_known": WellKnownConfig,
    "blurhashing": BlurhashingConfig,
}

GROUPS: list[tuple[str, str, str]] = [
    ("global", "Global", "Identity, listeners and core behaviour."),
    ("database", "Database", "Where data lives, backups, and memory for caches."),
    (
        "rocksdb",
        "RocksDB options (LevelDB store)",
        "conduwuit's RocksDB tuning. The store here is LevelDB: options with a LevelDB "
        "counterpart are mapped as noted; the rest are accepted and ignored, with a note at "
        "startup when set.",
    ),
    ("dns", "DNS", "The resolver used to find other servers."),
    ("timeouts", "Timeouts", "All in seconds unless stated."),
    ("network", "Network", "Outbound proxy and safety, HTTP compression."),
    ("registration", "Registration and login", "Who may register and how sessions start."),
    ("federation", "Federation", "Talking to other servers and fetching their keys."),
    ("moderation", "Moderation and privacy", "Limits on users, rooms and remote servers."),
    ("presence", "Presence, typing and receipts", "Ephemeral status shared with others."),
    ("turn", "TURN / VoIP", "Relay servers handed to clients for calls."),
    ("media", "Media and URL previews", "The media repository and link previews."),
    ("logging", "Logging and telemetry",
     "Log output, Prometheus metrics and Sentry; the tracing exporters are not built in."),
    ("admin", "Admin room and console", "The #admins room and its commands."),
    ("tls", "[global.tls]", "Serve HTTPS directly."),
    ("well_known", "[global.well_known]", "Answers for `/.well-known/matrix/*` (delegation)."),
    ("blurhashing", "[global.blurhashing]", "Blurhash placeholders for images."),
]

_ALIASES = {
    a.metadata["alias"]: a.name
    for a in attrs.fields(Config)
    if a.metadata.get("alias") is not None
}

_DEPRECATED_IGNORED = {
    "cache_capacity": "use cache_capacity_modifier and db_cache_capacity_mb",
    "max_concurrent_requests": "it no longer has any effect",
}

_DEPRECATED_MOVED = {
    f"well_known_{name}": f"well_known.{name}"
    for name in (
        "client", "server", "support_page", "support_role", "support_email", "support_mxid"
    )
}


def _options(cls: type[Any], prefix: str = "") -> Iterable[tuple[str, attrs.Attribute[Any]]]:
    """Yield ``(dotted name, attribute)`` for every option, sub-table options included."""
    for a in attrs.fields(cls):
        if a.name in _SUBTABLES and cls is Config:
            yield from _options(_SUBTABLES[a.name], f"{a.name}.")
        else:
            yield prefix + a.name, a


OPTIONS: dict[str, attrs.Attribute[Any]] = dict(_options(Config))


# ---------------------------------------------------------------------------
# Loading.


@attrs.frozen
class _Setting:
    """One value set by the user, with where it came from (for messages)."""

    value: object
    source: str


def _read_toml(path: str) -> dict[str, Any]:
    """Read a TOML file, turning every failure into one-line ConfigError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None


def _read_embedded() -> dict[str, Any]:
    text = importlib.resources.files("conduwuit").joinpath("default.toml").read_text("utf-8")
    return tomllib.loads(text)


def _parse_text(text: str) -> tuple[bool, object]:
    """Parse an env/``-O`` value as a TOML value; ``(False, None)`` if it is not one."""
    if "\n" in text or "\r" in text:
        return False, None
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return False, None
    if set(parsed) != {"v"}:
        return False, None
    return True, parsed["v"]


def _text_value(dotted: str, text: str) -> object:
    """The value of a textual setting: TOML if it parses, else the plain string.

    String-typed options keep the raw text when the TOML reading is not a
    string, so ``CONDUWUIT_REGISTRATION_TOKEN=1234`` is the token "1234".
    """
    ok, parsed = _parse_text(text)
    attribute = OPTIONS.get(dotted)
    prefer_text = attribute is not None and attribute.metadata["kind"].prefer_text
    if not ok or (prefer_text and not isinstance(parsed, str | list)):
        return text
    return parsed


class _Collector:
    """Merges settings from all sources in order, later ones winning."""

    def __init__(self) -> None:
        self.settings: dict[str, _Setting] = {}
        self.warnings: list[str] = []

    def resolve(self, parts: Sequence[str], source: str) -> str | None:
        """Map a key path to an option's dotted name, applying aliases; warn if unknown."""
        name = ".".join(parts)
        if len(parts) == 1:
            key = _ALIASES.get(parts[0], parts[0])
            if key in _DEPRECATED_MOVED:
                new = _DEPRECATED_MOVED[key]
                self.warnings.append(
                    f"config option '{key}' {source} is deprecated; use '{new}' "
                    f"([global.well_known]) instead (applied for now)"
                )
                return new
            if key in _DEPRECATED_IGNORED:
                why = _DEPRECATED_IGNORED[key]
                self.warnings.append(
                    f"config option '{key}' {source} is deprecated and ignored; {why}"
                )
                return None
            name = key
        if name in OPTIONS:
            return name
        self.warnings.append(f"unknown config option '{name}' {source}; ignored")
        return None

    def put(self, parts: Sequence[str], value: object, source: str) -> None:
        """Record one value; a whole sub-table value is spread into its keys."""
        if len(parts) == 1 and parts[0] in _SUBTABLES:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"invalid value for '{parts[0]}': {_show(value)} "
                    f"(expected a table, [global.{parts[0]}]) {source}",
                    key=parts[0],
                )
            for key, item in value.items():
                self.put([parts[0], key], item, source)
            return
        dotted = self.resolve(parts, source)
        if dotted is not None:
            self.settings[dotted] = _Setting(value, source)

    def put_text(self, parts: Sequence[str], text: str, source: str) -> None:
        """Record a value given as text (env or ``-O``)."""
        if len(parts) == 1 and parts[0] in _SUBTABLES:
            self.put(parts, _text_value("", text), source)
            return
        dotted = ".".join(parts)
        key = _DEPRECATED_MOVED.get(parts[0], dotted) if len(parts) == 1 else dotted
        self.put(parts, _text_value(_ALIASES.get(key, key), text), source)


def _add_file(collector: _Collector, doc: Mapping[str, Any], path: str) -> None:
    """Add a parsed file: options live in ``[global]``; anything else is reported."""
    source = f"in {path}"
    for key, value in doc.items():
        if key == "global":
            continue
        what = "table" if isinstance(value, dict) else "key"
        collector.warnings.append(
            f"unknown top-level {what} '{key}' {source}; ignored "
            "(options belong in the [global] table)"
        )
    table = doc.get("global", {})
    if not isinstance(table, dict):
        raise ConfigError(f"invalid value for 'global' {source}: expected the [global] table")
    for key, value in table.items():
        collector.put([key], value, source)


_ENV_PREFIXES = ("CONDUIT_", "CONDUWUIT_")  # applied in this order: CONDUWUIT_ wins


def _add_env(collector: _Collector, env: Mapping[str, str]) -> None:
    """Add ``CONDUIT_*`` then ``CONDUWUIT_*`` variables; ``__`` separates nesting levels."""
    for prefix in _ENV_PREFIXES:
        for name in sorted(env):
            if not name.upper().startswith(prefix):
                continue
            rest = name[len(prefix) :].lower()
            if rest == "config":
                continue
            parts = rest.split("__")
            collector.put_text(parts, env[name], f"from environment variable {name}")


def _add_overrides(collector: _Collector, overrides: Sequence[str]) -> None:
    """Add ``-O key=value`` overrides; dots separate nesting levels."""
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().lower().split(".")
        if parts[:1] == ["global"] and len(parts) > 1:
            parts = parts[1:]
        if not sep or not all(parts):
            raise ConfigError(f"invalid -O override {override!r} (expected key=value)")
        collector.put_text(parts, text.strip(), f"from -O {override!r}")


def _show(value: object) -> str:
    """A value as it would appear in TOML, shortened for one-line messages."""
    try:
        text = _toml_value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(dotted: str, setting: _Setting) -> object:
    kind: Kind = OPTIONS[dotted].metadata["kind"]
    try:
        return kind.convert(setting.value)
    except _Invalid as e:
        detail = f": {e}" if str(e) else ""
        raise ConfigError(
            f"invalid value for '{dotted}': {_show(setting.value)} "
            f"(expected {kind.expected}{detail}) {setting.source}",
            key=dotted,
        ) from None


def _build(settings: Mapping[str, _Setting]) -> Config:
    """Construct the Config (and sub-tables) from checked settings; unset keys keep defaults."""
    values: dict[str, dict[str, Any]] = {"": {}, **{name: {} for name in _SUBTABLES}}
    for dotted, setting in settings.items():
        table, _, key = dotted.rpartition(".")
        values[table][key] = _convert(dotted, setting)
    subtables = {name: cls(**values[name]) for name, cls in _SUBTABLES.items()}
    return Config(**values[""], **subtables)


def _choose_source(path: str | None, env: Mapping[str, str]) -> str | None:
    if path is not None:
        return path
    return env.get("CONDUWUIT_CONFIG") or env.get("CONDUIT_CONFIG") or None


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> LoadedConfig:
    """Load the configuration: file, then ``CONDUIT_*``/``CONDUWUIT_*`` env, then ``-O``.

    The file is ``path`` (``-c``), else ``$CONDUWUIT_CONFIG``, else
    ``$CONDUIT_CONFIG``, else the embedded first-run default. Raises
    :class:`ConfigError` for unreadable files and invalid values; returns
    warnings for unknown, deprecated and ineffective keys.
    """
    env = os.environ if env is None else env
    chosen = _choose_source(path, env)
    source = EMBEDDED_DEFAULT if chosen is None else chosen
    doc = _read_embedded() if chosen is None else _read_toml(chosen)

    collector = _Collector()
    _add_file(collector, doc, source)
    _add_env(collector, env)
    _add_overrides(collector, overrides)
    settings = collector.settings

    if "server_name" not in settings:
        hint = " (it must be inside the [global] table)" if "server_name" in doc else ""
        raise ConfigError(
            f"server_name is required in {source}{hint}; set server_name = \"example.com\" "
            "under [global] (or CONDUWUIT_SERVER_NAME)",
            key="server_name",
        )
    config = _build(settings)
    warnings = collector.warnings
    if "database_path" not in settings:
        warnings.append(
            f"database_path is not set in {source}; using {config.database_path!r} "
            "relative to the working directory"
        )
    if config.unix_socket_path is not None and "address" not in settings:
        config = attrs.evolve(config, address=[])
    warnings.extend(_inert_notes(config, settings))
    return LoadedConfig(config, warnings, source, frozenset(settings))


def _inert_notes(config: Config, settings: Mapping[str, _Setting]) -> list[str]:
    """Notes for options the user set that do nothing (or less) here."""
    notes = []
    for dotted in settings:
        reason = OPTIONS[dotted].metadata["inert"]
        if reason is not None:
            notes.append(f"'{dotted}' has no effect {reason}")
    if "rocksdb_compression_algo" in settings and config.rocksdb_compression_algo not in (
        "snappy",
        "none",
    ):
        notes.append(
            f"rocksdb_compression_algo = {json.dumps(config.rocksdb_compression_algo)}: "
            "LevelDB offers only snappy or none; using snappy"
        )
    return notes


# ---------------------------------------------------------------------------
# Startup checks.

# Every spec room version (1-12) is stable; unstable ones would be MSC versions, none yet.
_STABLE_ROOM_VERSIONS = set(ROOM_VERSIONS)
_UNSTABLE_ROOM_VERSIONS: set[str] = set()
_EXAMPLE_EMERGENCY_PASSWORD = "F670$2CP@Hw8mG7RY1$%!#Ic7YA"
_OPEN_REGISTRATION_KEY = "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse"


def running_in_container(
    environ: Mapping[str, str] | None = None,
    markers: Sequence[str] = ("/.dockerenv", "/run/.containerenv"),
) -> bool:
    """Best guess whether we run in a container (Docker/Podman marker file, or ``$container``)."""
    environ = os.environ if environ is None else environ
    return "container" in environ or any(os.path.exists(m) for m in markers)


def check_config(config: Config, *, in_container: bool | None = None) -> list[str]:
    """Refuse configurations the server must not start with; return non-fatal warnings.

    Raises :class:`ConfigError` (one line) for the first refusal found.
    ``in_container`` overrides :func:`running_in_container` (for tests).
    """
    _check_identity(config)
    _check_listeners(config)
    _check_registration(config)
    _check_misc(config)
    if in_container is None:
        in_container = running_in_container()
    warnings = _container_warning(config) if in_container else []
    return warnings + _risk_warnings(config)


def _check_identity(config: Config) -> None:
    if not is_valid_server_name(config.server_name):
        raise ConfigError(
            f"invalid value for 'server_name': {_show(config.server_name)} (expected a server "
            "name: a host name, IPv4 address or [IPv6] address, optionally with :port)",
            key="server_name",
        )
    if config.server_name == "your.server.name":
        raise ConfigError(
            "server_name is still the placeholder \"your.server.name\"; set your real domain",
            key="server_name",
        )
    allowed = set(_STABLE_ROOM_VERSIONS)
    if config.allow_unstable_room_versions:
        allowed |= _UNSTABLE_ROOM_VERSIONS
    if config.default_room_version not in allowed:
        ordered = ", ".join(sorted(allowed, key=int))
        raise ConfigError(
            f"invalid value for 'default_room_version': {_show(config.default_room_version)} "
            f"(expected one of the available room versions: {ordered})",
            key="default_room_version",
        )


def _check_listeners(config: Config) -> None:
    if sys.platform == "win32" and config.unix_socket_path is not None:
        raise ConfigError(
            "unix_socket_path is set but UNIX sockets are not available on this platform",
            key="unix_socket_path",
        )
    if (config.tls.certs is None) != (config.tls.key is None):
        given, missing = ("certs", "key") if config.tls.key is None else ("key", "certs")
        raise ConfigError(
            f"tls.{given} is set but tls.{missing} is not; set both (to serve HTTPS) or neither",
            key=f"tls.{missing}",
        )
    if not config.listening or config.unix_socket_path is not None:
        return
    if not config.address or not config.port:
        empty = "address" if not config.address else "port"
        raise ConfigError(
            f"nothing to listen on: '{empty}' is empty and 'unix_socket_path' is not set "
            "(set address and port, or unix_socket_path)",
            key=empty,
        )


def _check_registration(config: Config) -> None:
    if config.registration_token == "":
        raise ConfigError(
            "registration_token is set to an empty string; remove it or set a real token",
            key="registration_token",
        )
    token_file = config.registration_token_file
    if token_file is not None:
        try:
            content = Path(token_file).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"cannot read registration_token_file {token_file}: {e}",
                key="registration_token_file",
            ) from None
        if not content.split():
            raise ConfigError(
                f"registration_token_file {token_file} is empty; put at least one token in it",
                key="registration_token_file",
            )
    has_token = config.registration_token is not None or token_file is not None
    if config.allow_registration and not has_token and not getattr(
        config, _OPEN_REGISTRATION_KEY
    ):
        raise ConfigError(
            "allow_registration = true without registration_token or registration_token_file "
            "would let anyone register; set one of those to require a token, or set "
            f"{_OPEN_REGISTRATION_KEY} = true if you really want open registration",
            key="allow_registration",
        )


def _check_misc(config: Config) -> None:
    if config.emergency_password in ("", _EXAMPLE_EMERGENCY_PASSWORD):
        raise ConfigError(
            "emergency_password is empty or the publicly known example; unset it or choose a "
            "real password",
            key="emergency_password",
        )
    if config.max_request_size < 10_000_000:
        raise ConfigError(
            f"invalid value for 'max_request_size': {config.max_request_size} (expected at "
            "least 10000000 bytes; less breaks federation)",
            key="max_request_size",
        )
    if config.allow_outgoing_presence and not config.allow_local_presence:
        raise ConfigError(
            "allow_outgoing_presence = true needs allow_local_presence = true; enable local "
            "presence or disable outgoing presence",
            key="allow_local_presence",
        )
    interface = config.url_preview_bound_interface
    if interface is not None and not sys.platform.startswith("linux"):
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise ConfigError(
                f"invalid value for 'url_preview_bound_interface': {_show(interface)} "
                f"(expected an IP address; interface names work only on Linux)",
                key="url_preview_bound_interface",
            ) from None


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    return ipaddress.ip_address(address).is_loopback


def _container_warning(config: Config) -> list[str]:
    listeners = config.listen_addresses()
    if not config.listening or not listeners:
        return []
    if not all(_is_loopback(address) for address, _ in listeners):
        return []
    shown = ", ".join(f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in listeners)
    return [
        f"running in a container but listening only on loopback ({shown}): clients outside "
        'the container won\'t reach the server; set address = ["0.0.0.0", "::"] to listen '
        "on all interfaces"
    ]


def _risk_warnings(config: Config) -> list[str]:
    warnings = []
    if config.allow_registration and config.registration_token is None and (
        config.registration_token_file is None
    ):
        warnings.append(
            "open registration is enabled without a token: anyone can create accounts here"
        )
    for key in (
        "url_preview_domain_contains_allowlist",
        "url_preview_domain_explicit_allowlist",
        "url_preview_url_contains_allowlist",
    ):
        if "*" in getattr(config, key):
            warnings.append(f'{key} contains "*": URL previews may be fetched from any site')
    if config.allow_invalid_tls_certificates_yes_i_know_what_the_fuck_i_am_doing_with_this_and_i_know_this_is_insecure:  # noqa: E501
        warnings.append("TLS certificate validation of outbound requests is DISABLED")
    return warnings


# ---------------------------------------------------------------------------
# Generated documentation: docs/configuration.md reference and example config.

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_value(value: object) -> str:
    """Render a value in TOML syntax (strings JSON-escaped, which TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{k if _BARE_KEY.fullmatch(k) else json.dumps(k)} = {_toml_value(v)}"
            for k, v in value.items()
        )
        return "{ " + ", ".join(items) + " }"
    if isinstance(value, ProxyConfig):
        return value.to_toml()
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _default_of(attribute: attrs.Attribute[Any]) -> object:
    default = attribute.default
    factory = getattr(default, "factory", None)
    return factory() if callable(factory) else default


def _default_toml(dotted: str, attribute: attrs.Attribute[Any]) -> str | None:
    """The default as TOML text; ``None`` for unset options and machine-dependent ones."""
    if attribute.metadata["varies"] is not None:
        return None
    default = _default_of(attribute)
    if default is attrs.NOTHING or default is None:
        return None
    if dotted == "port":
        assert isinstance(default, list)
        return _toml_value(default[0]) if len(default) == 1 else _toml_value(default)
    return _toml_value(default)


def _doc_text(attribute: attrs.Attribute[Any], *, formula: bool) -> str:
    """The option's description plus the generated notes (formula, alias, no effect)."""
    meta = attribute.metadata
    parts = [meta["doc"]]
    if formula and meta["varies"] is not None:
        parts.append(f"Default: {meta['varies']}.")
    if meta["alias"] is not None:
        parts.append(f"Also accepted as `{meta['alias']}`.")
    if meta["inert"] is not None:
        parts.append(f"Has no effect {meta['inert']}.")
    return " ".join(parts)


def _options_in(group: str) -> list[tuple[str, attrs.Attribute[Any]]]:
    return [(d, a) for d, a in OPTIONS.items() if a.metadata["group"] == group]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_default(dotted: str, attribute: attrs.Attribute[Any]) -> str:
    if attribute.metadata["varies"] is not None:
        return f"varies: {attribute.metadata['varies']}"
    shown = _default_toml(dotted, attribute)
    if shown is None:
        return "required" if attribute.default is attrs.NOTHING else "unset"
    return f"`{shown}`"


def _md_description(attribute: attrs.Attribute[Any]) -> str:
    text = _doc_text(attribute, formula=False)
    example = attribute.metadata["example"]
    return text if example is None else f"{text} Example: `{example}`."


def render_markdown() -> str:
    """The option reference section of docs/configuration.md, generated from the metadata."""
    out = [
        "## Option reference",
        "",
        "<!-- Generated by `python -m conduwuit.config --write`; do not edit by hand. -->",
        "",
        f"{len(OPTIONS)} options. Groups below are only for reading: every option except the "
        "last three tables goes directly in `[global]`.",
    ]
    for group, title, intro in GROUPS:
        out += ["", f"### {title}", "", intro, ""]
        out += ["| Option | Type | Default | Description |", "|---|---|---|---|"]
        for dotted, attribute in _options_in(group):
            key = dotted.rpartition(".")[2]
            kind: Kind = attribute.metadata["kind"]
            cells = [
                f"`{key}`",
                kind.name,
                _md_default(dotted, attribute),
                _md_description(attribute),
            ]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


_EXAMPLE_HEADER = """\
# conduwuit example configuration
#
# Every option is listed, commented out, with its default value. Copy this file,
# uncomment what you want to change, and start the server with
# `conduwuit -c /path/to/conduwuit.toml`. At least set server_name and
# database_path. Options marked "varies by system" are computed from the CPU count.
#
# Environment variables override the file: CONDUWUIT_<OPTION> (for example
# CONDUWUIT_PORT=8448), with __ for sub-tables (CONDUWUIT_WELL_KNOWN__CLIENT).
# See docs/configuration.md for the loading rules.
#
# Generated by `python -m conduwuit.config --write`; edit the option metadata in
# conduwuit/config.py instead of this file.
"""


def _comment_lines(text: str) -> list[str]:
    lines = textwrap.wrap(text, 76, break_long_words=False, break_on_hyphens=False)
    return ["# " + line for line in lines]


def _example_entry(dotted: str, attribute: attrs.Attribute[Any]) -> list[str]:
    key = dotted.rpartition(".")[2]
    lines = _comment_lines(_doc_text(attribute, formula=True))
    example = attribute.metadata["example"]
    if example is not None:
        lines += ["#", f"# example: {example}"]
    shown = _default_toml(dotted, attribute)
    if attribute.metadata["varies"] is not None:
        lines.append(f"#{key} = varies by system")
    elif shown is None:
        lines.append(f"#{key} =")
    elif len(key) + len(shown) > 76 and shown.startswith("["):
        items = _default_of(attribute)
        assert isinstance(items, list)
        lines.append(f"#{key} = [")
        lines += [f"#    {_toml_value(item)}," for item in items]
        lines.append("#]")
    else:
        lines.append(f"#{key} = {shown}")
    return lines


def render_example_toml() -> str:
    """packaging/conduwuit-example.toml: every option commented out with its default."""
    out = [_EXAMPLE_HEADER.rstrip("\n"), "", "[global]"]
    for group, title, intro in GROUPS:
        if group in _SUBTABLES:
            out += ["", f"[global.{group}]", "", *_comment_lines(intro)]
        else:
            bar = "#" * 78
            out += ["", bar, f"# {title}", "#", *_comment_lines(intro), bar]
        for dotted, attribute in _options_in(group):
            out += ["", *_example_entry(dotted, attribute)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Writing the generated files.

_ROOT = Path(__file__).resolve().parent.parent
DOCS_PATH = _ROOT / "docs" / "configuration.md"
EXAMPLE_PATH = _ROOT / "packaging" / "conduwuit-example.toml"
REFERENCE_MARKER = "## Option reference\n"


def docs_reference_section(text: str) -> str:
    """The generated part of docs/configuration.md: from the reference heading to the end."""
    index = text.find(REFERENCE_MARKER)
    return "" if index < 0 else text[index:]


def write_generated_files() -> None:
    """Regenerate the reference part of the docs and the example config in the source tree."""
    docs = DOCS_PATH.read_text("utf-8")
    index = docs.find(REFERENCE_MARKER)
    intro = docs if index < 0 else docs[:index]
    DOCS_PATH.write_text(intro + render_markdown(), "utf-8")
    EXAMPLE_PATH.write_text(render_example_toml(), "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m conduwuit.config``: print or write the generated documentation."""
    parser = argparse.ArgumentParser(prog="python -m conduwuit.config")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the option reference")
    group.add_argument("--example", action="store_true", help="print the example config")
    group.add_argument(
        "--write", action="store_true", help="rewrite docs/configuration.md and the example"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(render_markdown())
    elif args.example:
        sys.stdout.write(render_example_toml())
    else:
        write_generated_files()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
