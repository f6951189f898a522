"""Pushers: where a user's notifications are pushed (``GET /pushers``, ``/pushers/set``).

Owns ``userpusher_pusher`` and ``apppushkey_userid``. A pusher is keyed by
(user, app_id, pushkey); the second tree answers "who else has this pushkey" for
``append: false``, which removes the other users' pushers of the same app and key.
Only ``http`` pushers exist here (the ``email`` kind needs a mailer we do not have).
The set of users having any pusher is kept in memory: the evaluation of every
event asks it for every notified reader.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson

from conduwuit.errors import invalid_param, missing_param
from conduwuit.store import SEP, Store, join

log = logging.getLogger(__name__)

_T_PUSHERS = "userpusher_pusher"
_T_BY_KEY = "apppushkey_userid"
NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
SHOWN = ("pushkey", "kind", "app_id", "app_display_name", "device_display_name",
         "profile_tag", "lang", "data")


@attrs.frozen
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    pushkey_ts: int  # seconds, when the pushkey was set
    data: dict[str, Any]  # as given, url included
    device_id: str | None
    record: dict[str, Any]  # the client's view (SHOWN fields)

    @property
    def url(self) -> str:
        return str(self.data["url"])

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user_id, self.app_id, self.pushkey)


@attrs.define
class Pushers:
    store: Store
    _users: set[str] | None = None  # users with at least one pusher; loaded on first use

    # --- reading -----------------------------------------------------------------------

    def for_user(self, user_id: str) -> list[Pusher]:
        prefix = join(user_id) + SEP
        return [_decode(user_id, raw) for _, raw in self.store.tree(_T_PUSHERS).iter(prefix)]

    def listed(self, user_id: str) -> list[dict[str, Any]]:
        """``GET /pushers``."""
        return [dict(p.record) for p in self.for_user(user_id)]

    def has_pushers(self, user_id: str) -> bool:
        if self._users is None:
            self._users = {key.split(SEP, 1)[0].decode()
                           for key in self.store.tree(_T_PUSHERS).keys(b"")}
        return user_id in self._users

    # --- writing -----------------------------------------------------------------------

    def set(self, user_id: str, device_id: str | None, body: dict[str, Any]) -> None:
        """``POST /pushers/set``: create, update or (``kind: null``) delete a pusher."""
        if "kind" not in body:
            raise missing_param("kind is required")
        app_id, pushkey = _identity(body)
        kind = body["kind"]
        if kind is None:
            self.remove(user_id, app_id, pushkey)
            return
        if not isinstance(kind, str):
            raise invalid_param("kind must be a string or null")
        if kind != "http":
            raise invalid_param(f"Unsupported pusher kind {kind!r}: only http is available")
        missing = [f for f in ("app_display_name", "device_display_name", "lang", "data")
                   if f not in body]
        if missing:
            raise missing_param(f"Missing parameters: {', '.join(missing)}")
        for field in ("app_display_name", "device_display_name", "lang"):
            if not isinstance(body[field], str):
                raise invalid_param(f"{field} must be a string")
        if "profile_tag" in body and not isinstance(body["profile_tag"], str):
            raise invalid_param("profile_tag must be a string")
        data = _check_data(body["data"])
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise invalid_param("append must be a boolean")
        record = {"pushkey": pushkey, "kind": kind, "app_id": app_id,
                  "app_display_name": body["app_display_name"],
                  "device_display_name": body["device_display_name"],
                  "lang": body["lang"], "data": data}
        if "profile_tag" in body:
            record["profile_tag"] = body["profile_tag"]
        key = join(user_id, app_id, pushkey)
        old = self.store.tree(_T_PUSHERS).get(key)
        stamp = orjson.loads(old).get("pushkey_ts") if old is not None else None
        stored = {**record, "pushkey_ts": stamp if isinstance(stamp, int) else int(time.time()),
                  "device_id": device_id}
        with self.store.batch() as batch:
            if not append:
                for other in self._holders(app_id, pushkey):
                    if other != user_id:
                        batch.delete(_T_PUSHERS, join(other, app_id, pushkey))
                        batch.delete(_T_BY_KEY, join(app_id, pushkey, other))
            batch.put(_T_PUSHERS, key, orjson.dumps(stored))
            batch.put(_T_BY_KEY, join(app_id, pushkey, user_id), b"")
        self._users = None  # other users may have lost their last pusher

    def remove(self, user_id: str, app_id: str, pushkey: str) -> bool:
        key = join(user_id, app_id, pushkey)
        if self.store.tree(_T_PUSHERS).get(key) is None:
            return False
        with self.store.batch() as batch:
            batch.delete(_T_PUSHERS, key)
            batch.delete(_T_BY_KEY, join(app_id, pushkey, user_id))
        self._users = None
        return True

    def remove_device(self, user_id: str, device_id: str) -> None:
        """``Devices.on_device_removed``: a logged-out device's pushers go with it."""
        for pusher in self.for_user(user_id):
            if pusher.device_id == device_id:
                self.remove(user_id, pusher.app_id, pusher.pushkey)

    async def remove_user(self, user_id: str) -> None:
        """``Accounts.on_deactivated``."""
        for pusher in self.for_user(user_id):
            self.remove(user_id, pusher.app_id, pusher.pushkey)

    def _holders(self, app_id: str, pushkey: str) -> list[str]:
        prefix = join(app_id, pushkey) + SEP
        return [k[len(prefix):].decode() for k in self.store.tree(_T_BY_KEY).keys(prefix)]


def _identity(body: dict[str, Any]) -> tuple[str, str]:
    for field in ("app_id", "pushkey"):
        if field not in body:
            raise missing_param(f"{field} is required")
    app_id, pushkey = body["app_id"], body["pushkey"]
    if not isinstance(app_id, str) or not app_id or len(app_id) > MAX_APP_ID_CHARS:
        raise invalid_param(f"app_id must be a string of 1 to {MAX_APP_ID_CHARS} characters")
    if not isinstance(pushkey, str) or not pushkey \
            or len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
        raise invalid_param(f"pushkey must be a string of 1 to {MAX_PUSHKEY_BYTES} bytes")
    return app_id, pushkey


def _check_data(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid_param("data must be an object")
    url = data.get("url")
    if url is None:
        raise missing_param("data.url is required for http pushers")
    if not isinstance(url, str):
        raise invalid_param("data.url must be a string")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise invalid_param("data.url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
            or parts.path != NOTIFY_PATH:
        raise invalid_param(f"data.url must be an http(s) URL with the path {NOTIFY_PATH}")
    if "format" in data and data["format"] != "event_id_only":
        raise invalid_param("data.format may only be event_id_only")
    return dict(data)


def _decode(user_id: str, raw: bytes) -> Pusher:
    stored = orjson.loads(raw)
    record = {k: stored[k] for k in SHOWN if k in stored}
    return Pusher(user_id, stored["app_id"], stored["pushkey"], int(stored["pushkey_ts"]),
                  dict(stored["data"]), stored.get("device_id"), record)


