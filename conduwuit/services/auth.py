"""Turning an access token into a :class:`Requester`."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from conduwuit.errors import MatrixError

from .devices import Devices, now_ms
from .requester import Requester
from .users import Users

# Given a token and the request's ``user_id`` and ``device_id`` parameters, an
# application service's identity for it, or None. The appservice service installs
# one; masquerading (identity assertion) and its 403s are its concern.
AppserviceLookup = Callable[[str, str | None, str | None], Requester | None]


@attrs.define
class Auth:
    users: Users
    devices: Devices
    appservice_lookup: AppserviceLookup | None = None

    async def authenticate(self, token: str, *, ip: str = "", user_id: str | None = None,
                           device_id: str | None = None) -> Requester:
        """``user_id``/``device_id`` (identity assertion) count only for an as_token."""
        if self.appservice_lookup is not None:
            appservice = self.appservice_lookup(token, user_id, device_id)
            if appservice is not None:
                return appservice
        owner = self.devices.owner_of_access_token(token)
        if owner is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
        if owner.expired(now_ms()):
            # The client may refresh and carry on: tell it this is a soft logout.
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired",
                              soft_logout=True)
        if self.users.is_deactivated(owner.user_id):
            # Deactivation removes tokens; this guards against any left behind.
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "This account has been deactivated",
                              soft_logout=False)
        self.devices.saw(owner.user_id, owner.device_id, ip)
        return Requester(owner.user_id, owner.device_id, self.users.is_guest(owner.user_id))
