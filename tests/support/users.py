"""Accounts for tests, created through the services (no registration flow needed)."""

from __future__ import annotations

import attrs

from conduwuit.server import Server


@attrs.frozen
class LoggedIn:
    user_id: str
    device_id: str
    access_token: str
    password: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def make_user(server: Server, localpart: str, password: str = "password",
                    *, admin: bool = False) -> LoggedIn:
    """A local account with one logged-in device."""
    services = server.services
    assert services is not None
    user_id = f"@{localpart}:{server.config.server_name}"
    services.users.create(user_id, await services.passwords.hash(password), admin=admin)
    device_id = services.devices.create(user_id, None, "test device")
    tokens = services.devices.issue(user_id, device_id)
    return LoggedIn(user_id, device_id, tokens.access_token, password)
