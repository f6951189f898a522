"""Store errors: each one's ``str()`` is a complete message an operator can act on.

The server prints these at startup and refuses to run, so they name the path, what
LevelDB said, and what to do next, instead of leaking a raw ``plyvel`` exception.
"""

from __future__ import annotations

import os

REPAIR_HINT = (
    "To attempt recovery, first make a backup copy of the whole directory, then set "
    "`rocksdb_repair = true` in [global] (or CONDUWUIT_ROCKSDB_REPAIR=true) to run a "
    "LevelDB repair at next start; remove the setting again once the server is up."
)


class StoreError(Exception):
    """Base class for everything the store raises on purpose."""


class StoreInUseError(StoreError):
    """Another conduwuit process (or this one) already has the database open."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        detail: str = "",
        *,
        advice: str = (
            "Stop the other server first, or point `database_path` at a different "
            "directory; two processes must never share one database."
        ),
    ) -> None:
        self.path = str(path)
        message = f"database at {self.path} is in use by another conduwuit process"
        if detail:
            message += f" ({detail})"
        super().__init__(f"{message}. {advice}")


class StoreCorruptError(StoreError):
    """LevelDB reported corruption, or a startup sanity check failed."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        leveldb_message: str,
        *,
        repair_attempted: bool = False,
        source: str = "LevelDB said",
    ) -> None:
        self.path = str(path)
        self.leveldb_message = leveldb_message
        self.repair_attempted = repair_attempted
        message = (
            f"database at {self.path} is corrupt or unreadable ({source}: "
            f"{leveldb_message}). {REPAIR_HINT}"
        )
        if repair_attempted:
            message += (
                " A repair already ran at this start and did not recover the database;"
                " restore the directory from a backup (see `database_backup_path`)."
            )
        super().__init__(message)


class StoreSchemaError(StoreError):
    """The database was written by a newer conduwuit with a schema this build lacks."""

    def __init__(self, path: str | os.PathLike[str], found: int, supported: int) -> None:
        self.path = str(path)
        self.found = found
        self.supported = supported
        super().__init__(
            f"database at {self.path} has schema version {found}, but this build of "
            f"conduwuit only knows schema version {supported}. Refusing to open it so "
            "it is not damaged: run the newer conduwuit that wrote it, or restore a "
            "backup made before the upgrade."
        )


def leveldb_text(exc: BaseException) -> str:
    """plyvel carries bytes in ``args[0]``; decode it so messages read cleanly."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", "replace")
    return str(exc)
