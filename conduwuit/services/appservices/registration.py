"""Application service registrations: the YAML format, checked and compiled.

The spec describes the registration as a YAML object (Application Service API,
"Registration"). Everything is checked here, once, so that the rest of the server
only meets valid registrations with their namespace regexes compiled.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import yaml  # type: ignore[import-untyped]

from conduwuit.protocol.ids import UserId, is_valid_localpart

MAX_YAML_BYTES = 64 * 1024
# MSC2409's unstable name, still written by bridges (mautrix among them).
MSC2409_EPHEMERAL = "de.sorunome.msc2409.push_ephemeral"
NAMESPACE_KINDS = ("users", "aliases", "rooms")


class RegistrationError(ValueError):
    """A registration the server refuses; the message says what to fix."""


@attrs.frozen
class Namespace:
    regex: str
    exclusive: bool
    pattern: re.Pattern[str] = attrs.field(eq=False, repr=False)

    def matches(self, value: str) -> bool:
        # Anchored at the start like Synapse; registrations usually anchor both ends.
        return self.pattern.match(value) is not None


@attrs.frozen
class AppserviceRegistration:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender_localpart: str
    users: tuple[Namespace, ...]
    aliases: tuple[Namespace, ...]
    rooms: tuple[Namespace, ...]
    rate_limited: bool
    protocols: tuple[str, ...]
    receive_ephemeral: bool
    yaml_text: str = attrs.field(eq=False, repr=False)

    def sender(self, server_name: str) -> str:
        return f"@{self.sender_localpart}:{server_name}"

    def is_user(self, user_id: str, server_name: str) -> bool:
        """A local user of this AS: its sender or one in a users namespace."""
        if not user_id.endswith(f":{server_name}"):
            return False
        return user_id == self.sender(server_name) or any(n.matches(user_id) for n in self.users)

    def exclusive_user(self, user_id: str) -> bool:
        return any(n.exclusive and n.matches(user_id) for n in self.users)

    def is_alias(self, alias: str) -> bool:
        return any(n.matches(alias) for n in self.aliases)

    def exclusive_alias(self, alias: str) -> bool:
        return any(n.exclusive and n.matches(alias) for n in self.aliases)

    def is_room(self, room_id: str) -> bool:
        return any(n.matches(room_id) for n in self.rooms)


def parse_registration(text: str) -> AppserviceRegistration:
    """Parse and check one registration; raises :class:`RegistrationError`."""
    if len(text.encode()) > MAX_YAML_BYTES:
        raise RegistrationError(f"registration is larger than {MAX_YAML_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistrationError(f"registration is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RegistrationError("registration must be a YAML mapping (id, url, as_token, ...)")
    reg_id = _required_str(data, "id")
    as_token = _required_str(data, "as_token")
    hs_token = _required_str(data, "hs_token")
    if "url" not in data:
        raise RegistrationError("'url' is required (use null for an AS that takes no traffic)")
    url = data["url"]
    if url is not None:
        if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
            raise RegistrationError("'url' must be null or an http(s):// URL")
        url = url.rstrip("/")
    sender_localpart = _required_str(data, "sender_localpart")
    if not is_valid_localpart(sender_localpart):
        raise RegistrationError(
            f"'sender_localpart' {sender_localpart!r} is not a valid user localpart")
    namespaces = data.get("namespaces")
    if not isinstance(namespaces, dict):
        raise RegistrationError("'namespaces' is required and must be a mapping")
    for kind in namespaces:
        if kind not in NAMESPACE_KINDS:
            raise RegistrationError(f"unknown namespace kind {kind!r} "
                                    f"(expected one of {', '.join(NAMESPACE_KINDS)})")
    compiled = {kind: _namespaces(namespaces.get(kind), kind) for kind in NAMESPACE_KINDS}
    protocols = data.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise RegistrationError("'protocols' must be a list of strings")
    ephemeral = _optional_bool(data, "receive_ephemeral")
    ephemeral = _optional_bool(data, MSC2409_EPHEMERAL) or ephemeral
    return AppserviceRegistration(
        id=reg_id, url=url, as_token=as_token, hs_token=hs_token,
        sender_localpart=sender_localpart, users=compiled["users"],
        aliases=compiled["aliases"], rooms=compiled["rooms"],
        rate_limited=_optional_bool(data, "rate_limited", default=True),
        protocols=tuple(protocols), receive_ephemeral=ephemeral, yaml_text=text)


def check_sender(reg: AppserviceRegistration, server_name: str) -> None:
    """The sender's user id must fit the server's id length limit."""
    try:
        UserId.parse(reg.sender(server_name))
    except ValueError as exc:
        raise RegistrationError(f"sender_localpart gives an invalid user id: {exc}") from None


def _required_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise RegistrationError(f"'{key}' is required")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # YAML turns an unquoted numeric token into a number
    if not isinstance(value, str) or not value.strip():
        raise RegistrationError(f"'{key}' must be a non-empty string")
    return value


def _optional_bool(data: dict[str, Any], key: str, *, default: bool = False) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RegistrationError(f"'{key}' must be true or false")
    return value


def _namespaces(value: Any, kind: str) -> tuple[Namespace, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RegistrationError(f"namespaces.{kind} must be a list")
    out = []
    for index, item in enumerate(value):
        where = f"namespaces.{kind}[{index}]"
        if not isinstance(item, dict):
            raise RegistrationError(f"{where} must be a mapping with regex and exclusive")
        regex = item.get("regex")
        if not isinstance(regex, str) or not regex:
            raise RegistrationError(f"{where}.regex must be a non-empty string")
        exclusive = item.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise RegistrationError(f"{where}.exclusive must be true or false")
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise RegistrationError(f"{where}.regex {regex!r} does not compile: {exc}") from None
        out.append(Namespace(regex, exclusive, pattern))
    return tuple(out)
