"""Matrix identifiers: server names, user, room and event ids, room aliases.

Follows the spec's identifier grammar (appendices). Room and event ids changed
shape with room versions (v3 event ids are hashes, v12 room ids too), so their
validators take an optional :class:`RoomVersion`.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from .room_versions import EventFormat, RoomVersion

_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# Characters a new user id's localpart may use (v1.8 added '+').
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")
# User ids from other servers may use any character but ':' and NUL (the spec asks
# servers to accept these "historical" localparts even though none may be created).
_HISTORICAL_LOCALPART = re.compile(r"[^:\x00\ud800-\udfff]+")

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


# -- room ids, event ids, room aliases (spec appendices, "Identifier Grammar") ----------------

# A sha256 reference hash in unpadded base64 is 43 characters.
_HASH_URLSAFE = re.compile(r"[A-Za-z0-9_-]{43}")
_HASH_STANDARD = re.compile(r"[A-Za-z0-9+/]{43}")
_SIGILS = frozenset("@!#$")


def _length_ok(text: str) -> bool:
    return len(text.encode("utf-8", "surrogatepass")) <= MAX_ID_LENGTH


def _is_opaque_localpart(localpart: str) -> bool:
    """Room id and alias localparts: any non-surrogate code point except ':' and NUL.

    The grammar allows control characters and spaces here (only ids we *make*
    should be alphanumeric), so ids from other servers are not rejected.
    """
    if not localpart or ":" in localpart or "\x00" in localpart:
        return False
    return not any("\ud800" <= c <= "\udfff" for c in localpart)


def _split_server(text: str) -> tuple[str, str] | None:
    """``&localpart:server`` -> (localpart, server) if both parts are valid."""
    localpart, sep, server_name = text[1:].partition(":")
    if not sep or not _is_opaque_localpart(localpart):
        return None
    if not is_valid_server_name(server_name):
        return None
    return localpart, server_name


def _is_domain_room_id(text: str) -> bool:
    return _split_server(text) is not None


def _is_hash_room_id(text: str) -> bool:
    return bool(_HASH_URLSAFE.fullmatch(text, 1))


def is_valid_room_id(text: str, version: RoomVersion | None = None) -> bool:
    """``!opaque:server`` (v1-v11) or ``!<url-safe reference hash>`` (v12), <= 255 bytes.

    Without ``version`` either form is accepted (e.g. for a room id in a URL,
    before we know the room). With it, only that version's form.
    """
    if not text.startswith("!") or not _length_ok(text):
        return False
    if version is None:
        return _is_hash_room_id(text) or _is_domain_room_id(text)
    if version.room_id_is_create_hash:
        return _is_hash_room_id(text)
    return _is_domain_room_id(text)


def is_valid_event_id(text: str, version: RoomVersion | None = None) -> bool:
    """``$opaque:server`` (v1/v2), ``$`` + 43 base64 chars (v3 standard, v4+ url-safe).

    Without ``version`` any of the three forms is accepted; event ids arrive in
    URLs and relations long before the room version is known.
    """
    if not text.startswith("$") or not _length_ok(text):
        return False
    event_format = version.event_format if version is not None else None
    if event_format is EventFormat.V1:
        return _split_server(text) is not None
    if event_format is EventFormat.V3:
        return bool(_HASH_STANDARD.fullmatch(text, 1))
    if event_format is EventFormat.V4:
        return bool(_HASH_URLSAFE.fullmatch(text, 1))
    return (
        bool(_HASH_STANDARD.fullmatch(text, 1) or _HASH_URLSAFE.fullmatch(text, 1))
        or _split_server(text) is not None
    )


def is_valid_room_alias(text: str) -> bool:
    """``#localpart:server``; the localpart is non-empty, without ':' or NUL; <= 255 bytes."""
    return RoomAlias.try_parse(text) is not None


@attrs.frozen
class RoomAlias:
    localpart: str
    server_name: str

    def __str__(self) -> str:
        return f"#{self.localpart}:{self.server_name}"

    @classmethod
    def parse(cls, text: str) -> RoomAlias:
        """Parse a room alias; raises ValueError naming what is wrong."""
        if not text.startswith("#"):
            raise ValueError("room alias must start with '#'")
        if not _length_ok(text):
            raise ValueError(f"room alias is longer than {MAX_ID_LENGTH} bytes")
        localpart, sep, server_name = text[1:].partition(":")
        if not sep or not localpart:
            raise ValueError("room alias must look like #localpart:server.name")
        if not _is_opaque_localpart(localpart):
            raise ValueError("room alias localpart has characters that are not allowed")
        if not is_valid_server_name(server_name):
            raise ValueError(f"room alias has an invalid server name {server_name!r}")
        return cls(localpart, server_name)

    @classmethod
    def try_parse(cls, text: str) -> RoomAlias | None:
        try:
            return cls.parse(text)
        except ValueError:
            return None


def server_name_of(identifier: str) -> str | None:
    """The server part of a user id, room id, alias or event id.

    None when the id has none: v12 room ids and v3+ event ids are hashes.
    Raises ValueError for text that is not an id with a known sigil, or whose
    part after the first ':' is not a valid server name. (Only a v1/v2 event
    id's domain names the server that *created* it; the others name where the
    user, room or alias was allocated.)
    """
    if not identifier or identifier[0] not in _SIGILS:
        raise ValueError(f"{identifier!r} is not a Matrix id (no @, !, # or $ sigil)")
    if ":" not in identifier:
        return None
    parts = _split_server(identifier)
    if parts is None:
        # User ids allow a wider localpart (historical); check only the server.
        server_name = identifier.partition(":")[2]
        if identifier[0] == "@" and is_valid_server_name(server_name):
            return server_name
        raise ValueError(f"{identifier!r} is not a valid Matrix id")
    return parts[1]
