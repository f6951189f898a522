"""Registering accounts: username rules, registration tokens, UIA flows, guests."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from conduwuit.config import Config
from conduwuit.errors import MatrixError
from conduwuit.protocol.ids import is_valid_localpart, user_id_length_ok

from .devices import Devices, IssuedTokens
from .first_run import FirstRun
from .passwords import Passwords, check_new_password
from .uia import Uia, UiaSession
from .users import Users

if TYPE_CHECKING:
    from .appservices import Appservices

log = logging.getLogger(__name__)

TOKEN_STAGE = "m.login.registration_token"
DUMMY_STAGE = "m.login.dummy"
APPSERVICE_TYPE = "m.login.application_service"

# Called with the new user's id and initial display name once the account exists:
# the profile stores the name; later, auto-join and the admin room hook in here.
Registered = Callable[[str, str], Awaitable[None]]


@attrs.frozen
class NewAccount:
    user_id: str
    device_id: str | None = None
    tokens: IssuedTokens | None = None


@attrs.define
class Registration:
    config: Config
    users: Users
    devices: Devices
    passwords: Passwords
    uia: Uia
    first_run: FirstRun
    on_registered: list[Registered] = attrs.field(factory=list)
    # Installed by the appservice service: exclusive namespaces, AS registrations.
    appservices: Appservices | None = None

    # --- what is offered -----------------------------------------------------------

    def flows(self) -> list[list[str]]:
        """The UIA flows of ``POST /register``; empty when registration is closed."""
        flows: list[list[str]] = []
        if self._first_run_token_pending() or (
            self.config.allow_registration and self._configured_tokens()
        ):
            # Synapse's shape: clients (matrix-nio's register_with_token, for one)
            # expect a dummy stage to follow the token stage.
            flows.append([TOKEN_STAGE, DUMMY_STAGE])
        if self.config.allow_registration and self._open_registration():
            flows.append([DUMMY_STAGE])
        return flows

    def offers_tokens(self) -> bool:
        return any(TOKEN_STAGE in flow for flow in self.flows())

    def token_is_valid(self, token: str) -> bool:
        if self.first_run.is_valid(token):
            return True
        return self.config.allow_registration and any(
            hmac.compare_digest(token.encode(), t.encode()) for t in self._configured_tokens()
        )

    # --- usernames -----------------------------------------------------------------

    def user_id_for(self, username: str) -> str:
        """Validate a wanted username; returns the full user id or raises the spec's error."""
        localpart = username.lower()
        if localpart.startswith("@") and localpart.endswith(f":{self.config.server_name}"):
            localpart = localpart[1 : -len(self.config.server_name) - 1]
        if not localpart or not is_valid_localpart(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "Usernames may only contain a-z, 0-9 and . _ = - / +")
        if not user_id_length_ok(localpart, self.config.server_name):
            raise MatrixError(400, "M_INVALID_USERNAME", "Username is too long")
        if self._forbidden(localpart):
            raise MatrixError(403, "M_FORBIDDEN", "This username is not allowed")
        user_id = f"@{localpart}:{self.config.server_name}"
        if self.appservices is not None:
            self.appservices.check_user_claim(user_id)  # exclusive appservice namespaces
        if self.users.exists(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "This username is taken")
        return user_id

    def warn_forbidden_existing(self) -> None:
        """At startup: existing accounts whose names a forbidden pattern now matches."""
        if not self.config.forbidden_usernames:
            return
        for user_id in self.users.local_user_ids():
            if self._forbidden(user_id[1:].split(":", 1)[0]):
                log.warning("existing user %s matches forbidden_usernames", user_id)

    def _forbidden(self, localpart: str) -> bool:
        return any(re.search(pattern, localpart) for pattern in self.config.forbidden_usernames)

    # --- registering ---------------------------------------------------------------

    async def register(self, body: Mapping[str, Any], *, kind: str, ip: str,
                       access_token: str | None = None) -> NewAccount:
        """Handle one ``POST /register`` body (UIA raises its 401s from here).

        ``access_token`` is the request's token: with ``type: m.login.application_service``
        it must be an application service's as_token.
        """
        if body.get("type") == APPSERVICE_TYPE:
            return await self._register_appservice_user(body, access_token, ip)
        if kind == "guest":
            return await self._register_guest(body, ip)
        if kind != "user":
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        flows = self.flows()
        if not flows:
            raise MatrixError(403, "M_FORBIDDEN", "Registration is disabled on this server")
        _check_login_fields(body)  # before UIA: a client should not finish UIA to learn this
        username = _optional_str(body, "username")
        password = body.get("password")
        if password is not None:
            password = check_new_password(password, "password")
        user_id = self.user_id_for(username) if username is not None else None
        session = await self.uia.authenticate(
            body.get("auth"), flows, {TOKEN_STAGE: self._check_token, DUMMY_STAGE: _accept}
        )
        # The name may have been taken while the client went through UIA.
        user_id = self.user_id_for(username) if username is not None else self._random_user_id()
        password_hash = await self.passwords.hash(password) if password else ""
        return await self._finish(user_id, password_hash, body, ip, session=session)

    async def _register_appservice_user(self, body: Mapping[str, Any], token: str | None,
                                        ip: str) -> NewAccount:
        """An AS creates a user of its namespaces: no UIA, no password (spec, "Server
        admin style permissions"); registration being closed does not matter."""
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN",
                              "Registering with m.login.application_service needs an as_token")
        reg = self.appservices.by_token(token) if self.appservices is not None else None
        if reg is None or self.appservices is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown application service token",
                              soft_logout=False)
        _check_login_fields(body)
        username = _optional_str(body, "username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'username'")
        server = self.config.server_name
        localpart = username[1:-len(server) - 1] \
            if username.startswith("@") and username.endswith(f":{server}") else username
        if not is_valid_localpart(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "Usernames may only contain a-z, 0-9 and . _ = - / +")
        if not user_id_length_ok(localpart, server):
            raise MatrixError(400, "M_INVALID_USERNAME", "Username is too long")
        user_id = f"@{localpart}:{server}"
        self.appservices.check_user_claim(user_id, reg.id)
        if self.users.exists(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "This username is taken")
        return await self._finish(user_id, "", body, ip, appservice=True)

    async def _register_guest(self, body: Mapping[str, Any], ip: str) -> NewAccount:
        if not self.config.allow_guest_registration:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest registration is disabled")
        _check_login_fields(body)  # before the account exists, not after
        if self.config.log_guest_registrations:
            log.info("guest registration from %s", ip or "unknown address")
        return await self._finish(self._random_user_id(numeric=True), "", body, ip, guest=True)

    async def _finish(self, user_id: str, password_hash: str, body: Mapping[str, Any], ip: str, *,
                session: UiaSession | None = None, guest: bool = False,
                appservice: bool = False) -> NewAccount:
        token = session.data.get("token") if session else None
        used_first_run = token is not None and self._consume_first_run(token)
        # The first account is the admin; so is whoever used the first-run token.
        # An application service's users never are.
        admin = not appservice and (used_first_run or not self.users.has_any())
        self.users.create(user_id, password_hash, admin=admin, guest=guest)
        suffix = self.config.new_user_displayname_suffix
        localpart = user_id[1:].split(":", 1)[0]
        display_name = f"{localpart} {suffix}" if suffix else localpart
        log.info("registered %s%s%s", user_id, " (guest)" if guest else "",
                 " as server admin" if admin else "")
        for callback in self.on_registered:
            await callback(user_id, display_name)
        if _optional_bool(body, "inhibit_login"):
            return NewAccount(user_id)
        device_id = self.devices.create(
            user_id, _optional_str(body, "device_id"),
            _optional_str(body, "initial_device_display_name"), ip)
        tokens = self.devices.issue(user_id, device_id,
                                    refreshable=_optional_bool(body, "refresh_token"))
        return NewAccount(user_id, device_id, tokens)

    def _consume_first_run(self, token: str) -> bool:
        """Use up the first-run token if that is the token given.

        Two clients may pass the token stage with it at once; only the first
        to get here registers, the other is refused.
        """
        if any(hmac.compare_digest(token.encode(), t.encode())
               for t in self._configured_tokens()) and self.config.allow_registration:
            return False
        if not self.first_run.consume(token):
            raise MatrixError(403, "M_FORBIDDEN", "This registration token has been used")
        return True

    async def _check_token(self, auth: Mapping[str, Any], session: UiaSession) -> None:
        token = auth.get("token")
        if not isinstance(token, str) or not self.token_is_valid(token):
            raise MatrixError(401, "M_FORBIDDEN", "Invalid registration token")
        session.data["token"] = token

    def _random_user_id(self, *, numeric: bool = False) -> str:
        while True:
            localpart = (str(secrets.randbelow(10**10)) if numeric
                         else secrets.token_hex(5))
            user_id = f"@{localpart}:{self.config.server_name}"
            if not self.users.exists(user_id):
                return user_id

    def _configured_tokens(self) -> list[str]:
        tokens = [self.config.registration_token] if self.config.registration_token else []
        if self.config.registration_token_file:
            # Read on each use so that rotating the file needs no restart.
            try:
                tokens += Path(self.config.registration_token_file).read_text().split()
            except OSError as exc:
                log.error("cannot read registration_token_file: %s", exc)
        return tokens

    def _open_registration(self) -> bool:
        config = self.config
        return config.yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse

    def _first_run_token_pending(self) -> bool:
        return self.first_run.pending()


async def _accept(auth: Mapping[str, Any], session: UiaSession) -> None:
    return None


def _check_login_fields(body: Mapping[str, Any]) -> None:
    for key in ("device_id", "initial_device_display_name"):
        _optional_str(body, key)
    for key in ("inhibit_login", "refresh_token"):
        _optional_bool(body, key)


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a string")
    return value


def _optional_bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a boolean")
    return value
