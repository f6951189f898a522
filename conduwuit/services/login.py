"""Logging in: password, login token, and the flows ``GET /login`` offers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError

from .devices import Devices, IssuedTokens
from .passwords import Passwords
from .requester import Requester
from .users import Users

if TYPE_CHECKING:
    from .appservices import Appservices

log = logging.getLogger(__name__)

PASSWORD = "m.login.password"
TOKEN = "m.login.token"
APPSERVICE = "m.login.application_service"

_BAD_LOGIN = "Invalid username or password"


@attrs.frozen
class Session:
    user_id: str
    device_id: str
    tokens: IssuedTokens


@attrs.define
class Login:
    config: Config
    users: Users
    devices: Devices
    passwords: Passwords
    appservices: Appservices | None = None  # installed by the appservice service

    def flows(self) -> list[dict[str, Any]]:
        flows: list[dict[str, Any]] = [{"type": PASSWORD}]
        if self.config.login_via_existing_session:
            flows.append({"type": TOKEN, "get_login_token": True})
        flows.append({"type": APPSERVICE})
        return flows

    async def login(self, body: Mapping[str, Any], *, ip: str,
                    appservice: Requester | None = None) -> Session:
        kind = body.get("type")
        # Every field is checked before anything happens: a malformed request must not
        # use up a login token, nor leave a device without tokens behind.
        wanted_device = _string(body, "device_id")
        display_name = _string(body, "initial_device_display_name")
        refreshable = body.get("refresh_token", False)
        if not isinstance(refreshable, bool):
            raise MatrixError(400, "M_BAD_JSON", "'refresh_token' must be a boolean")
        if kind == PASSWORD:
            user_id = await self._password_user(body)
        elif kind == TOKEN and self.config.login_via_existing_session:
            user_id = self._token_user(body)
        elif kind == APPSERVICE:
            user_id = self._appservice_user(body, appservice)
        else:
            raise MatrixError(400, "M_UNKNOWN", f"Unsupported login type {kind!r}")
        device_id = self.devices.create(user_id, wanted_device, display_name, ip)
        tokens = self.devices.issue(user_id, device_id, refreshable=refreshable)
        log.info("%s logged in on device %s", user_id, device_id)
        return Session(user_id, device_id, tokens)

    def resolve_user(self, identifier: Mapping[str, Any] | None, legacy_user: object) -> str:
        """The local user id a login names, by ``m.id.user`` identifier or legacy ``user``."""
        if identifier is not None:
            if not isinstance(identifier, Mapping):
                raise MatrixError(400, "M_BAD_JSON", "'identifier' must be an object")
            if identifier.get("type") != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN",
                                  "Only m.id.user identifiers are supported here")
            name = identifier.get("user")
        else:
            name = legacy_user
        if name is None or name == "":
            raise MatrixError(400, "M_MISSING_PARAM", "Missing user identifier")
        if not isinstance(name, str):
            raise MatrixError(400, "M_BAD_JSON", "The user identifier must be a string")
        return self._local_user_id(name)

    async def check_password(self, user_id: str, password: object) -> None:
        """Raise 403 unless ``password`` is this account's; upgrades old hash parameters."""
        if not isinstance(password, str):
            raise MatrixError(400, "M_BAD_JSON", "'password' must be a string")
        if not self.users.exists(user_id):
            raise MatrixError(403, "M_FORBIDDEN", _BAD_LOGIN)
        if self.users.is_deactivated(user_id):
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        stored = self.users.password_hash(user_id) or ""
        if not await self.passwords.verify(stored, password):
            raise MatrixError(403, "M_FORBIDDEN", _BAD_LOGIN)
        if self.passwords.needs_rehash(stored):
            self.users.set_password_hash(user_id, await self.passwords.hash(password))

    async def _password_user(self, body: Mapping[str, Any]) -> str:
        user_id = self.resolve_user(body.get("identifier"), body.get("user"))
        await self.check_password(user_id, body.get("password"))
        return user_id

    def _token_user(self, body: Mapping[str, Any]) -> str:
        token = body.get("token")
        if token is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'token'")
        if not isinstance(token, str):
            raise MatrixError(400, "M_BAD_JSON", "'token' must be a string")
        user_id = self.devices.consume_login_token(token)
        if user_id is None:
            raise MatrixError(403, "M_FORBIDDEN", "Invalid or expired login token")
        if not self.users.is_active(user_id):
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        return user_id

    def _appservice_user(self, body: Mapping[str, Any], appservice: Requester | None) -> str:
        if appservice is None:
            raise MatrixError(401, "M_MISSING_TOKEN",
                              "Appservice login needs the appservice's access token")
        if appservice.appservice_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN",
                              "That access token is not an application service's as_token",
                              soft_logout=False)
        user_id = self.resolve_user(body.get("identifier"), body.get("user"))
        if self.appservices is not None and \
                not self.appservices.owns_user(appservice.appservice_id, user_id):
            raise MatrixError(400, "M_EXCLUSIVE",
                              f"{user_id} is not in the application service's namespaces")
        if not self.users.is_active(user_id):
            raise MatrixError(403, "M_FORBIDDEN", "Unknown user")
        return user_id

    def _local_user_id(self, name: str) -> str:
        server = self.config.server_name
        if name.startswith("@"):
            if not name.endswith(f":{server}"):
                raise MatrixError(403, "M_FORBIDDEN", "That user is not on this server")
            localpart = name[1 : -len(server) - 1]
        else:
            localpart = name
        user_id = f"@{localpart}:{server}"
        if not self.users.exists(user_id):
            # Localparts are lowercase for new accounts; people type them otherwise.
            user_id = f"@{localpart.lower()}:{server}"
        return user_id


def _string(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a string")
    return value
