"""Who is making a request, once their access token has been checked."""

from __future__ import annotations

import attrs


@attrs.frozen
class Requester:
    user_id: str
    device_id: str | None
    is_guest: bool = False
    # Set when an application service makes the request (possibly masquerading as user_id).
    appservice_id: str | None = None
