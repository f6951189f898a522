"""User profiles: display name, avatar and the custom fields of spec v1.16 (MSC4133).

Owns ``userid_displayname``, ``userid_avatarurl``, ``userid_blurhash`` and
``useridprofilekey_value``. ``displayname`` and ``avatar_url`` keep their own trees
(they are read on every membership change); every other field, ``m.tz`` included,
is a JSON value under ``(user_id, key)``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError, invalid_param, missing_param, not_found
from conduwuit.protocol.ids import UserId
from conduwuit.store import SEP, Store, join

from .users import Users

DISPLAYNAME = "displayname"
AVATAR_URL = "avatar_url"
TIMEZONE = "m.tz"
# Not a profile field of the spec: conduwuit's MSC2448 blurhash of the avatar.
BLURHASH = "xyz.amorgan.blurhash"

MAX_PROFILE_BYTES = 64 * 1024  # whole profile as canonical JSON (spec, setProfileField)
MAX_KEY_BYTES = 255  # spec: M_KEY_TOO_LARGE above this
MAX_DISPLAYNAME_CHARS = 256  # as Synapse; the spec sets no limit of its own
MAX_AVATAR_URL_CHARS = 1000
MAX_BLURHASH_CHARS = 100

# The spec's keyName pattern (profile.yaml).
KEY_NAME = re.compile(r"avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
# mxc://<server name>/<media id>; media ids are [A-Za-z0-9_-] (spec, content repository).
MXC_URI = re.compile(r"mxc://[^/\s]+/[A-Za-z0-9_-]+")

# Awaited after every change with (user_id, key, new value or None when removed).
ProfileHook = Callable[[str, str, Any], Awaitable[None]]

_T_DISPLAYNAME = "userid_displayname"
_T_AVATAR = "userid_avatarurl"
_T_BLURHASH = "userid_blurhash"
_T_FIELDS = "useridprofilekey_value"


@attrs.define
class Profile:
    store: Store
    users: Users
    server_name: str
    # Awaited after each change; rooms/profile_updates.py shows names and avatars in rooms.
    on_profile_change: list[ProfileHook] = attrs.field(factory=list)

    # ------------------------------------------------------------------ reads

    def displayname(self, user_id: str) -> str | None:
        raw = self.store.tree(_T_DISPLAYNAME).get(user_id.encode())
        return raw.decode() if raw is not None else None

    def avatar_url(self, user_id: str) -> str | None:
        raw = self.store.tree(_T_AVATAR).get(user_id.encode())
        return raw.decode() if raw is not None else None

    def blurhash(self, user_id: str) -> str | None:
        raw = self.store.tree(_T_BLURHASH).get(user_id.encode())
        return raw.decode() if raw is not None else None

    def fields(self, user_id: str) -> dict[str, Any]:
        """The whole profile as the spec shows it (without the blurhash extension)."""
        profile: dict[str, Any] = {}
        prefix = user_id.encode() + SEP
        for key, raw in self.store.tree(_T_FIELDS).iter(prefix):
            profile[key[len(prefix) :].decode()] = orjson.loads(raw)
        for name, value in ((DISPLAYNAME, self.displayname(user_id)),
                            (AVATAR_URL, self.avatar_url(user_id))):
            if value is not None:
                profile[name] = value
        return profile

    def has_field(self, user_id: str, key: str) -> bool:
        if key == DISPLAYNAME:
            return self.displayname(user_id) is not None
        if key == AVATAR_URL:
            return self.avatar_url(user_id) is not None
        return join(user_id, key) in self.store.tree(_T_FIELDS)

    def field(self, user_id: str, key: str) -> Any:
        """One field's value (custom fields may hold ``null``); ``None`` when unset."""
        if key == DISPLAYNAME:
            return self.displayname(user_id)
        if key == AVATAR_URL:
            return self.avatar_url(user_id)
        raw = self.store.tree(_T_FIELDS).get(join(user_id, key))
        return orjson.loads(raw) if raw is not None else None

    # ------------------------------------------- lookups answering HTTP errors

    def lookup(self, user_id: str) -> dict[str, Any]:
        """``GET /profile/{userId}``: the profile, or the spec's 400/404."""
        self._check_visible(user_id)
        profile = self.fields(user_id)
        blurhash = self.blurhash(user_id)
        if blurhash is not None and AVATAR_URL in profile:
            profile[BLURHASH] = blurhash
        return profile

    def lookup_field(self, user_id: str, key: str) -> dict[str, Any]:
        """``GET /profile/{userId}/{keyName}``: ``{key: value}`` or 404."""
        self._check_visible(user_id)
        if not self.has_field(user_id, key):
            raise not_found(f"{user_id} has no profile field {key!r}")
        return {key: self.field(user_id, key)}

    def _check_visible(self, user_id: str) -> None:
        parsed = UserId.try_parse(user_id)
        if parsed is None:
            raise invalid_param(f"{user_id!r} is not a valid user id")
        if parsed.server_name != self.server_name:
            # Remote users are asked over federation by federation.queries.lookup_profile.
            raise not_found("Profile not found: the user is not on this server")
        if not self.users.exists(user_id) or self.users.is_deactivated(user_id):
            raise not_found("Profile not found")

    # ----------------------------------------------------------------- writes

    async def set_field(self, user_id: str, key: str, body: dict[str, Any]) -> None:
        """``PUT /profile/{userId}/{keyName}`` with its request body (owner already checked).

        ``displayname`` and ``avatar_url`` follow their historical rules: ``null`` or
        ``""`` clears them. Custom fields store ``null`` as a value, as the spec asks.
        """
        check_key_name(key)
        if key not in body:
            raise missing_param(f"The request body must have the key {key!r}")
        value = body[key]
        if key == DISPLAYNAME:
            await self.set_displayname(user_id, value)
        elif key == AVATAR_URL:
            await self.set_avatar_url(user_id, value, body.get("blurhash", body.get(BLURHASH)))
        else:
            check_custom_value(key, value)
            self._check_size(user_id, key, value)
            self.store.tree(_T_FIELDS).put(join(user_id, key), orjson.dumps(value))
            await self._changed(user_id, key, value)

    async def delete_field(self, user_id: str, key: str) -> None:
        """``DELETE /profile/{userId}/{keyName}``: succeeds whether or not it was set."""
        check_key_name(key)
        if key == DISPLAYNAME:
            await self.set_displayname(user_id, None)
        elif key == AVATAR_URL:
            await self.set_avatar_url(user_id, None)
        elif self.has_field(user_id, key):
            self.store.tree(_T_FIELDS).delete(join(user_id, key))
            await self._changed(user_id, key, None)

    async def set_displayname(self, user_id: str, name: object) -> None:
        """Set (or with ``None``/``""`` clear) the display name; registration calls this."""
        name = check_displayname(name)
        tree = self.store.tree(_T_DISPLAYNAME)
        if name is None:
            if self.displayname(user_id) is None:
                return
            tree.delete(user_id.encode())
        else:
            self._check_size(user_id, DISPLAYNAME, name)
            tree.put(user_id.encode(), name.encode())
        await self._changed(user_id, DISPLAYNAME, name)

    async def set_avatar_url(self, user_id: str, url: object, blurhash: object = None) -> None:
        """Set (or with ``None``/``""`` clear) the avatar; the blurhash goes with it."""
        url = check_avatar_url(url)
        blurhash = check_blurhash(blurhash)
        key = user_id.encode()
        if url is None:
            if self.avatar_url(user_id) is None and self.blurhash(user_id) is None:
                return
            with self.store.batch() as batch:
                batch.delete(_T_AVATAR, key)
                batch.delete(_T_BLURHASH, key)
        else:
            self._check_size(user_id, AVATAR_URL, url)
            with self.store.batch() as batch:
                batch.put(_T_AVATAR, key, url.encode())
                if blurhash is None:
                    batch.delete(_T_BLURHASH, key)
                else:
                    batch.put(_T_BLURHASH, key, blurhash.encode())
        await self._changed(user_id, AVATAR_URL, url)

    async def clear(self, user_id: str) -> None:
        """Remove the whole profile in one write (account deactivation)."""
        had = self.fields(user_id)
        key = user_id.encode()
        field_keys = list(self.store.tree(_T_FIELDS).keys(key + SEP))
        with self.store.batch() as batch:
            for tree in (_T_DISPLAYNAME, _T_AVATAR, _T_BLURHASH):
                batch.delete(tree, key)
            for field_key in field_keys:
                batch.delete(_T_FIELDS, field_key)
        for name in had:
            await self._changed(user_id, name, None)

    # -------------------------------------------------------------- internals

    def _check_size(self, user_id: str, key: str, value: Any) -> None:
        """The spec caps the whole profile at 64 KiB of canonical JSON."""
        profile = self.fields(user_id)
        profile[key] = value
        size = len(orjson.dumps(profile, option=orjson.OPT_SORT_KEYS))
        if size > MAX_PROFILE_BYTES:
            raise MatrixError(
                400, "M_PROFILE_TOO_LARGE",
                f"The profile would be {size} bytes; the limit is {MAX_PROFILE_BYTES}",
            )

    async def _changed(self, user_id: str, key: str, value: Any) -> None:
        for hook in self.on_profile_change:
            await hook(user_id, key, value)


# ------------------------------------------------------------------ validation


def check_key_name(key: str) -> None:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise MatrixError(
            400, "M_KEY_TOO_LARGE", f"Profile key names are limited to {MAX_KEY_BYTES} bytes"
        )
    if not KEY_NAME.fullmatch(key):
        raise invalid_param(
            f"Invalid profile key {key!r}: use displayname, avatar_url, m.tz or a "
            "namespaced name such as org.example.field (lowercase, dot-separated)"
        )


def check_displayname(name: object) -> str | None:
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise invalid_param("displayname must be a string")
    if len(name) > MAX_DISPLAYNAME_CHARS:
        raise invalid_param(f"displayname is longer than {MAX_DISPLAYNAME_CHARS} characters")
    return name


def check_avatar_url(url: object) -> str | None:
    if url is None or url == "":
        return None
    if not isinstance(url, str):
        raise invalid_param("avatar_url must be a string")
    if len(url) > MAX_AVATAR_URL_CHARS:
        raise invalid_param(f"avatar_url is longer than {MAX_AVATAR_URL_CHARS} characters")
    if not MXC_URI.fullmatch(url):
        raise invalid_param("avatar_url must be an mxc:// URI (mxc://server/media_id)")
    return url


def check_blurhash(blurhash: object) -> str | None:
    if blurhash is None or blurhash == "":
        return None
    if not isinstance(blurhash, str) or len(blurhash) > MAX_BLURHASH_CHARS:
        raise invalid_param(f"blurhash must be a string of at most {MAX_BLURHASH_CHARS} characters")
    return blurhash


def check_custom_value(key: str, value: object) -> None:
    # The spec defines only m.tz's type; other fields may hold any JSON value.
    if key == TIMEZONE and not isinstance(value, str):
        raise invalid_param("m.tz must be a string (an IANA time zone name)")
