"""Server-side room-key backups (``/room_keys/...``).

A user has numbered backup versions; the newest one not deleted is the current one,
and keys may only be written to it. The server never sees a key: ``session_data`` is
encrypted by the client and stored as given. Each version keeps its key ``count`` and
an ``etag`` that changes whenever its stored keys change, in the version's record,
updated in the same batch as the keys.

When a session is uploaded again, the spec decides which copy stays: the verified
one; then the one with the lower ``first_message_index``; then the one with the lower
``forwarded_count``; on a full tie, the one already stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import orjson

from conduwuit.errors import MatrixError
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, join, u64_be

from .common import bad_json, require_object, require_str

VERSIONS = "backupid_algorithm"
LAST_VERSION = "userid_backupversion"
KEYS = "backupkeyid_backup"
MAX_VERSION_DIGITS = 18


# The spec's one backup algorithm; a backup of another kind could not be read by clients.
BACKUP_ALGORITHMS = frozenset({"m.megolm_backup.v1.curve25519-aes-sha2"})


def unknown_version() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "Unknown backup version")


@attrs.frozen
class Version:
    number: int
    meta: dict[str, Any]

    def info(self) -> dict[str, Any]:
        return {"algorithm": self.meta["algorithm"], "auth_data": self.meta["auth_data"],
                "count": self.meta["count"], "etag": str(self.meta["etag"]),
                "version": str(self.number)}

    def update_result(self) -> dict[str, Any]:
        return {"etag": str(self.meta["etag"]), "count": self.meta["count"]}


def check_session(raw: object, where: str) -> dict[str, Any]:
    """A KeyBackupData object, checked field by field."""
    data = require_object(raw, where)
    for field in ("first_message_index", "forwarded_count"):
        value = data.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad_json(f"{where}: '{field}' must be a non-negative integer")
    if not isinstance(data.get("is_verified"), bool):
        raise bad_json(f"{where}: 'is_verified' must be a boolean")
    require_object(data.get("session_data"), f"{where}: 'session_data'")
    return data


def should_replace(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """The spec's rules for keeping one of two copies of a session."""
    if old is None:
        return True
    if old["is_verified"] != new["is_verified"]:
        return bool(new["is_verified"])
    if old["first_message_index"] != new["first_message_index"]:
        return bool(new["first_message_index"] < old["first_message_index"])
    return bool(new["forwarded_count"] < old["forwarded_count"])


def _version_key(user_id: str, number: int) -> bytes:
    return join(user_id) + SEP + u64_be(number)


def _keys_prefix(user_id: str, number: int) -> bytes:
    return _version_key(user_id, number) + SEP


@attrs.define
class KeyBackup:
    store: Store

    # --- versions --------------------------------------------------------------------

    def create(self, user_id: str, body: Mapping[str, Any]) -> str:
        algorithm = require_str(body.get("algorithm"), "'algorithm'")
        if algorithm not in BACKUP_ALGORITHMS:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"Unsupported backup algorithm {algorithm!r}: this server "
                              f"knows {', '.join(sorted(BACKUP_ALGORITHMS))}")
        auth_data = require_object(body.get("auth_data"), "'auth_data'")
        number = self._last_number(user_id) + 1
        meta = {"algorithm": algorithm, "auth_data": auth_data, "etag": 0, "count": 0}
        with self.store.batch() as batch:
            batch.put(VERSIONS, _version_key(user_id, number), orjson.dumps(meta))
            batch.put(LAST_VERSION, user_id.encode(), u64_be(number))
        return str(number)

    def current(self, user_id: str) -> Version | None:
        prefix = join(user_id) + SEP
        for key, raw in self.store.tree(VERSIONS).iter(prefix, reverse=True):
            return Version(from_u64_be(key[len(prefix):]), orjson.loads(raw))
        return None

    def get(self, user_id: str, version: str) -> Version:
        number = self._number(version)
        raw = self.store.tree(VERSIONS).get(_version_key(user_id, number)) if number else None
        if raw is None:
            raise unknown_version()
        return Version(number, orjson.loads(raw))

    def update(self, user_id: str, version: str, body: Mapping[str, Any]) -> None:
        """Only ``auth_data`` may change; ``algorithm`` and ``version`` must match."""
        algorithm = require_str(body.get("algorithm"), "'algorithm'")
        auth_data = require_object(body.get("auth_data"), "'auth_data'")
        if "version" in body and body["version"] != version:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "The version in the body does not match the path")
        found = self.get(user_id, version)
        if algorithm != found.meta["algorithm"]:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "The algorithm of a backup version cannot change")
        meta = {**found.meta, "auth_data": auth_data}
        self.store.tree(VERSIONS).put(_version_key(user_id, found.number), orjson.dumps(meta))

    def delete(self, user_id: str, version: str) -> None:
        """Delete a version and its keys; deleting it again is not an error."""
        number = self._number(version)
        if not 0 < number <= self._last_number(user_id):
            raise unknown_version()
        with self.store.batch() as batch:
            batch.delete(VERSIONS, _version_key(user_id, number))
            for key in self.store.tree(KEYS).keys(_keys_prefix(user_id, number)):
                batch.delete(KEYS, key)

    def delete_user(self, user_id: str) -> None:
        prefix = join(user_id) + SEP
        with self.store.batch() as batch:
            for tree in (VERSIONS, KEYS):
                for key in self.store.tree(tree).keys(prefix):
                    batch.delete(tree, key)

    def _number(self, version: str) -> int:
        if not version.isdigit() or len(version) > MAX_VERSION_DIGITS:
            raise unknown_version()
        return int(version)

    def _last_number(self, user_id: str) -> int:
        raw = self.store.tree(LAST_VERSION).get(user_id.encode())
        return from_u64_be(raw) if raw is not None else 0

    # --- keys ------------------------------------------------------------------------

    def put_keys(self, user_id: str, version: str | None,
                 rooms: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
        """Store sessions (already checked) into the current version."""
        target = self._writable(user_id, version)
        tree = self.store.tree(KEYS)
        prefix = _keys_prefix(user_id, target.number)
        meta = dict(target.meta)
        changed = False
        with self.store.batch() as batch:
            for room_id, sessions in rooms.items():
                for session_id, data in sessions.items():
                    key = prefix + join(room_id, session_id)
                    raw = tree.get(key)
                    old = orjson.loads(raw) if raw is not None else None
                    if not should_replace(old, data):
                        continue
                    batch.put(KEYS, key, orjson.dumps(data))
                    changed = True
                    if old is None:
                        meta["count"] += 1
            if changed:
                meta["etag"] += 1
                self._stage_meta(batch, user_id, target.number, meta)
        return Version(target.number, meta).update_result()

    def get_keys(self, user_id: str, version: str | None, room_id: str | None = None,
                 session_id: str | None = None) -> dict[str, Any]:
        found = self.get(user_id, _required(version))
        prefix = _keys_prefix(user_id, found.number)
        if session_id is not None and room_id is not None:
            raw = self.store.tree(KEYS).get(prefix + join(room_id, session_id))
            if raw is None:
                raise MatrixError(404, "M_NOT_FOUND", "No such key in the backup")
            result: dict[str, Any] = orjson.loads(raw)
            return result
        rooms: dict[str, dict[str, Any]] = {}
        for room, session, data in self._scan(prefix, room_id):
            rooms.setdefault(room, {"sessions": {}})["sessions"][session] = data
        if room_id is not None:
            return rooms.get(room_id, {"sessions": {}})
        return {"rooms": rooms}

    def delete_keys(self, user_id: str, version: str | None, room_id: str | None = None,
                    session_id: str | None = None) -> dict[str, Any]:
        found = self.get(user_id, _required(version))
        prefix = _keys_prefix(user_id, found.number)
        tree = self.store.tree(KEYS)
        if session_id is not None and room_id is not None:
            key = prefix + join(room_id, session_id)
            doomed = [key] if key in tree else []
        else:
            scope = prefix + (join(room_id) + SEP if room_id is not None else b"")
            doomed = list(tree.keys(scope))
        meta = dict(found.meta)
        if doomed:
            with self.store.batch() as batch:
                for key in doomed:
                    batch.delete(KEYS, key)
                meta["count"] = max(0, meta["count"] - len(doomed))
                meta["etag"] += 1
                self._stage_meta(batch, user_id, found.number, meta)
        return Version(found.number, meta).update_result()

    def _writable(self, user_id: str, version: str | None) -> Version:
        current = self.current(user_id)
        if current is None:
            raise MatrixError(404, "M_NOT_FOUND", "No backup version exists")
        if _required(version) != str(current.number):
            raise MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version",
                              current_version=str(current.number))
        return current

    def _scan(self, prefix: bytes,
              room_id: str | None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        scope = prefix + (join(room_id) + SEP if room_id is not None else b"")
        for key, raw in self.store.tree(KEYS).iter(scope):
            room, _, session = key[len(prefix):].partition(SEP)
            yield room.decode(), session.decode(), orjson.loads(raw)

    def _stage_meta(self, batch: WriteBatch, user_id: str, number: int,
                    meta: dict[str, Any]) -> None:
        batch.put(VERSIONS, _version_key(user_id, number), orjson.dumps(meta))


def _required(version: str | None) -> str:
    if version is None:
        raise MatrixError(400, "M_MISSING_PARAM", "The 'version' query parameter is required")
    return version


def parse_rooms(body: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"rooms": {room: {"sessions": {session: KeyBackupData}}}}``, checked."""
    rooms = require_object(body.get("rooms"), "'rooms'")
    return {room_id: parse_sessions(require_object(room, f"rooms[{room_id!r}]"), room_id)
            for room_id, room in rooms.items()}


def parse_sessions(body: Mapping[str, Any], room_id: str) -> dict[str, dict[str, Any]]:
    sessions = require_object(body.get("sessions"), f"'sessions' of {room_id}")
    return {session_id: check_session(data, f"session {session_id!r}")
            for session_id, data in sessions.items()}
