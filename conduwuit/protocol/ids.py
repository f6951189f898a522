"""Matrix identifiers: server names, user ids, localparts (the spec's identifier grammar)."""

from __future__ import annotations

import ipaddress
import re

import attrs

_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# Characters a new user id's localpart may use (v1.8 added '+').
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")
# Historical user ids (from other servers) may use any printable ASCII but ':'.
_HISTORICAL_LOCALPART = re.compile(r"[\x21-\x39\x3b-\x7e]+")

MAX_ID_LENGTH = 255  # bytes, for user, room, event and alias ids


def is_valid_server_name(name: str) -> bool:
    """True if ``name`` is a server name: DNS name, IPv4 or [IPv6] host, optional port."""
    host, port = name, ""
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return False
        host, port = name[1:end], name[end + 1 :]
        if port and not port.startswith(":"):
            return False
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    else:
        if name.count(":") > 1:
            return False
        host, colon, digits = name.partition(":")
        port = f":{digits}" if colon else ""
        labels = host.split(".")
        if not host or len(host) > 255 or not all(_DNS_LABEL.fullmatch(x) for x in labels):
            return False
    if port:
        digits = port[1:]
        return digits.isdigit() and len(digits) <= 5 and 1 <= int(digits) <= 65535
    return True


def is_valid_localpart(localpart: str) -> bool:
    """The rule for *new* local users: lowercase letters, digits and ``._=-/+``."""
    return bool(_LOCALPART.fullmatch(localpart))


@attrs.frozen
class UserId:
    localpart: str
    server_name: str

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.server_name}"

    @classmethod
    def parse(cls, text: str) -> UserId:
        """Parse any user id a server may meet (historical localparts allowed).

        Raises ValueError naming what is wrong.
        """
        if len(text.encode()) > MAX_ID_LENGTH:
            raise ValueError(f"user id is longer than {MAX_ID_LENGTH} bytes")
        if not text.startswith("@"):
            raise ValueError("user id must start with '@'")
        localpart, sep, server_name = text[1:].partition(":")
        if not sep or not localpart:
            raise ValueError("user id must look like @localpart:server.name")
        if not _HISTORICAL_LOCALPART.fullmatch(localpart):
            raise ValueError("user id localpart has characters that are not allowed")
        if not is_valid_server_name(server_name):
            raise ValueError(f"user id has an invalid server name {server_name!r}")
        return cls(localpart, server_name)

    @classmethod
    def try_parse(cls, text: str) -> UserId | None:
        try:
            return cls.parse(text)
        except ValueError:
            return None


def user_id_length_ok(localpart: str, server_name: str) -> bool:
    return len(f"@{localpart}:{server_name}".encode()) <= MAX_ID_LENGTH
