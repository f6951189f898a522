"""Server ACLs (``m.room.server_acl``): may a server take part in a room?

The spec's order (event schema ``m.room.server_acl``):

1. No ACL event in the room's state: allow.
2. The server name is an IP literal (v4, or v6 in brackets) and ``allow_ip_literals``
   is ``false``: deny.
3. The name matches a ``deny`` glob: deny (deny wins over allow).
4. The name matches an ``allow`` glob: allow.
5. Otherwise deny; so an ACL without ``allow`` denies every server.

Globs use ``*`` (zero or more characters) and ``?`` (exactly one), match the whole
name, and are case-insensitive. The port is never considered: ``evil.com:8448`` is
judged as ``evil.com``. Malformed fields fall back to their defaults, field by field,
as Synapse does: a non-boolean ``allow_ip_literals`` counts as ``true``, a list that is
not a list counts as empty, and entries that are not strings are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

EVENT_TYPE = "m.room.server_acl"


def host_of(server_name: str) -> str:
    """The server name without its port: ``[::1]:8448`` -> ``[::1]``, ``a.b:80`` -> ``a.b``."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[:end + 1] if end >= 0 else server_name
    host, _, _ = server_name.partition(":")
    return host


def is_ip_literal(host: str) -> bool:
    """An IPv4 address, or an IPv6 address in brackets (the server-name grammar's forms)."""
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def glob_matches(pattern: str, text: str) -> bool:
    """Whether the whole of ``text`` matches the glob ``pattern`` (case-insensitive).

    A linear scan that backtracks only to the last ``*``: O(len(pattern) x len(text))
    at worst, where a regex with many stars (globs come from room state, which anyone
    with the power level writes) could take exponential time.
    """
    glob, subject = pattern.lower(), text.lower()
    g = s = 0
    star, resume = -1, 0
    while s < len(subject):
        if g < len(glob) and glob[g] == "*":
            star, resume = g, s
            g += 1
        elif g < len(glob) and glob[g] in ("?", subject[s]):
            g += 1
            s += 1
        elif star >= 0:
            g, resume = star + 1, resume + 1
            s = resume
        else:
            return False
    while g < len(glob) and glob[g] == "*":
        g += 1
    return g == len(glob)


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(item for item in value if isinstance(item, str))


@attrs.frozen
class ServerAcl:
    """A parsed ACL: parse once (e.g. per inbound transaction), then ask ``allows``."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_ip_literals: bool = True

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> ServerAcl:
        literals = content.get("allow_ip_literals", True)
        return cls(allow=_strings(content.get("allow")), deny=_strings(content.get("deny")),
                   allow_ip_literals=literals if isinstance(literals, bool) else True)

    def allows(self, server_name: str) -> bool:
        host = host_of(server_name)
        if not self.allow_ip_literals and is_ip_literal(host):
            return False
        if any(glob_matches(pattern, host) for pattern in self.deny):
            return False
        return any(glob_matches(pattern, host) for pattern in self.allow)


def server_allowed(acl_content: Mapping[str, Any] | None, server_name: str) -> bool:
    """Whether ``server_name`` may take part in a room whose ACL content is given.

    ``acl_content`` is the content of the room's current ``m.room.server_acl`` event,
    or None when the room has none (then every server is allowed). Content that is not
    an object cannot come from a valid event; it is treated like a missing event.
    """
    if acl_content is None or not isinstance(acl_content, Mapping):
        return True
    return ServerAcl.from_content(acl_content).allows(server_name)
