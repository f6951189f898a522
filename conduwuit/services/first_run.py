"""The first-run registration token.

A fresh server has no users and registration is off by default, so nobody
could create the first (admin) account. On such a database we mint one random
token, print it in the log, and accept it exactly once for registration.
"""

from __future__ import annotations

import hmac
import logging
import secrets

import attrs

from conduwuit.store import Store

from .users import Users

log = logging.getLogger(__name__)

_KEY = b"first_run_registration_token"


@attrs.define
class FirstRun:
    store: Store
    users: Users
    allow_registration: bool

    def prepare(self) -> str | None:
        """Mint (or reuse) the token when it is needed, log it, and return it."""
        if self.allow_registration or self.users.has_any():
            return self._stored()
        token = self._stored()
        if token is None:
            token = secrets.token_urlsafe(24)
            self.store.tree("global").put(_KEY, token.encode())
            self.store.flush()
        log.warning(
            "No user exists yet and registration is closed. Register the first account "
            "(it becomes the server admin) with this one-time registration token: %s",
            token,
        )
        return token

    def consume(self, token: str) -> bool:
        """Accept the token once; afterwards it no longer works."""
        stored = self._stored()
        if stored is None or not hmac.compare_digest(stored.encode(), token.encode()):
            return False
        self.store.tree("global").delete(_KEY)
        self.store.flush()
        log.info("The first-run registration token has been used and is now invalid")
        return True

    def pending(self) -> bool:
        return self._stored() is not None

    def is_valid(self, token: str) -> bool:
        stored = self._stored()
        return stored is not None and hmac.compare_digest(stored.encode(), token.encode())

    def _stored(self) -> str | None:
        value = self.store.tree("global").get(_KEY)
        return value.decode() if value is not None else None
