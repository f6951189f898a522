"""The catalogue of every tree (named keyspace) in the database.

One line per tree: ``name -> "key -> value"``. Adding a tree is adding a line here; the
store gives it the next free numeric prefix on open, so existing trees never move.
Keys written as ``(a, b)`` are tuples joined with 0xFF (see ``keys.join``).
"""

from __future__ import annotations

TREES: dict[str, str] = {
    "global": (
        "fixed ASCII names -> server-wide values: b'version' schema (u64), b'c' global "
        "counter (u64), b'sentinel' startup check, first-run token, migration markers"
    ),
    "userid_password": "user_id -> argon2 hash ('' = deactivated); existence = local user",
    "userid_displayname": "user_id -> display name (UTF-8)",
    "token_userdeviceid": "access_token -> (user_id, device_id)",
    "userdeviceid_token": "(user_id, device_id) -> access_token",
    "userdeviceid_metadata": "(user_id, device_id) -> JSON device (display name, last seen)",
    "server_signingkeys": "server_name -> JSON cached remote server verify keys",
    "jobs_state": "job name -> JSON persisted state of a background job",
}


def describe(name: str) -> str:
    """The catalogue line for ``name``; an unknown name is a programming error."""
    try:
        return TREES[name]
    except KeyError:
        raise KeyError(
            f"unknown tree {name!r}: add it to TREES in conduwuit/store/trees.py"
        ) from None
