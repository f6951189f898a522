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
    # accounts (services/users.py)
    "userid_password": "user_id -> argon2 hash ('' = no password); existence = local user",
    "userid_deactivated": "user_id -> u64 ms timestamp of deactivation",
    "userid_admin": "user_id -> '' for server admins",
    "userid_guest": "user_id -> '' for guest accounts",
    # devices and tokens (services/devices.py); tokens are stored as sha256 digests
    "token_userdeviceid": "sha256(access_token) -> (user_id, device_id)",
    "userdeviceid_token": "(user_id, device_id) -> sha256(access_token)",
    "refreshtoken_userdeviceid": "sha256(refresh_token) -> (user_id, device_id)",
    "userdeviceid_refreshtoken": "(user_id, device_id) -> sha256(refresh_token)",
    "userdeviceid_metadata": "(user_id, device_id) -> JSON device (display name, last seen)",
    "logintoken_userid": "sha256(login_token) -> (user_id, u64 expiry ms)",
    # profile (services/profile.py)
    "userid_displayname": "user_id -> display name (UTF-8)",
    "userid_avatarurl": "user_id -> avatar mxc:// URI",
    "userid_blurhash": "user_id -> blurhash of the avatar",
    "useridprofilekey_value": "(user_id, key) -> JSON value of a custom profile field",
    # account data (services/account_data.py); room_id is '' for global account data
    "roomuserdataid_accountdata": "(room_id, user_id, u64 count, type) -> JSON event",
    "roomusertype_roomuserdataid": "(room_id, user_id, type) -> key of the latest event above",
    # filters (services/filters.py)
    "userfilterid_filter": "(user_id, filter_id) -> JSON filter definition",
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
