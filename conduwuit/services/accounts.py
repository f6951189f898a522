"""Account management: password changes, deactivation, and the UIA password stage."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from conduwuit.errors import MatrixError

from .devices import Devices
from .login import Login
from .passwords import Passwords, check_new_password
from .uia import StageCheck, UiaSession
from .users import Users

log = logging.getLogger(__name__)

PASSWORD_STAGE = "m.login.password"

# Called with the user id after deactivation: clearing the profile, leaving rooms, ...
Deactivated = Callable[[str], Awaitable[None]]


@attrs.define
class Accounts:
    users: Users
    devices: Devices
    passwords: Passwords
    login: Login
    on_deactivated: list[Deactivated] = attrs.field(factory=list)

    def password_stage(self, user_id: str) -> StageCheck:
        """The ``m.login.password`` UIA check: the requester's own password, again."""

        async def check(auth: Mapping[str, Any], session: UiaSession) -> None:
            named = self.login.resolve_user(auth.get("identifier"), auth.get("user"))
            if named != user_id:
                raise MatrixError(403, "M_FORBIDDEN", "That is not your account")
            await self.login.check_password(user_id, auth.get("password"))

        return check

    async def change_password(self, user_id: str, new_password: object, *,
                              logout_devices: bool, keep_device: str | None) -> None:
        new_password = check_new_password(new_password, "new_password")
        self.users.set_password_hash(user_id, await self.passwords.hash(new_password))
        if logout_devices:
            self.devices.delete_all(user_id, except_device=keep_device)
        log.info("%s changed their password", user_id)

    async def deactivate(self, user_id: str) -> None:
        """The account stays reserved but can no longer log in or act."""
        self.devices.delete_all(user_id)
        self.users.deactivate(user_id)
        for callback in self.on_deactivated:
            await callback(user_id)
        log.info("%s was deactivated", user_id)
