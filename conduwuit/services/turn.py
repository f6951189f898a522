"""TURN credentials for VoIP clients (``GET /voip/turnServer``).

With a shared secret we follow the TURN REST API convention that coturn checks
with ``use-auth-secret``/``static-auth-secret``: the username is
``"<expiry unix seconds>:<user id>"`` and the password is the base64 of
HMAC-SHA1(secret, username). coturn recomputes the HMAC and refuses usernames
whose expiry has passed, so nothing has to be shared but the secret. Without a
secret the static ``turn_username``/``turn_password`` are handed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from conduwuit.config import Config

log = logging.getLogger(__name__)


def turn_password(secret: str, username: str) -> str:
    """coturn's ``use-auth-secret`` password: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def read_secret(config: Config) -> str:
    """The shared secret: ``turn_secret_file`` when readable, else ``turn_secret``.

    Read once (at startup or reload), like conduwuit, so no request touches the
    disk. Surrounding whitespace is dropped: a secret file written with ``echo``
    ends in a newline that coturn's config line would not have.
    """
    if config.turn_secret_file:
        try:
            secret = Path(config.turn_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("Cannot read turn_secret_file %s (%s); using turn_secret instead",
                      config.turn_secret_file, exc)
        else:
            if secret:
                return secret
            log.error("turn_secret_file %s is empty; using turn_secret instead",
                      config.turn_secret_file)
    return config.turn_secret


@attrs.define
class Turn:
    """Hands out TURN credentials as configured; replace it to apply a reloaded config."""

    uris: list[str]
    ttl: int
    allow_guests: bool
    secret: str
    username: str
    password: str
    server_name: str
    clock: Callable[[], float] = time.time

    @classmethod
    def from_config(cls, config: Config) -> Turn:
        return cls(uris=list(config.turn_uris), ttl=config.turn_ttl,
                   allow_guests=config.turn_allow_guests, secret=read_secret(config),
                   username=config.turn_username, password=config.turn_password,
                   server_name=config.server_name)

    def credentials(self, user_id: str | None) -> dict[str, Any]:
        """The ``/voip/turnServer`` answer; ``{}`` when no TURN server is configured.

        ``user_id`` is None for an unauthenticated client (allowed only with
        ``turn_allow_guests``); it gets a random throwaway user id so that the
        username keeps coturn's ``expiry:name`` shape.
        """
        if not self.uris:
            # What Synapse answers, and what clients (Element) treat as "no TURN".
            return {}
        if self.secret:
            if user_id is None:
                user_id = f"@{secrets.token_hex(8)}:{self.server_name}"
            expiry = int(self.clock()) + self.ttl
            username = f"{expiry}:{user_id}"
            password = turn_password(self.secret, username)
        else:
            username, password = self.username, self.password
        return {"username": username, "password": password, "ttl": self.ttl,
                "uris": list(self.uris)}
