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
    # short ids (services/rooms/short.py): compact u64 stand-ins for long strings
    "roomid_shortroomid": "room_id -> u64 shortroomid",
    "shortroomid_roomid": "u64 shortroomid -> room_id",
    "eventid_shorteventid": "event_id -> u64 shorteventid",
    "shorteventid_eventid": "u64 shorteventid -> event_id",
    "statekey_shortstatekey": "(event type, state_key) -> u64 shortstatekey",
    "shortstatekey_statekey": "u64 shortstatekey -> (event type, state_key)",
    # state snapshots (services/rooms/state_store.py)
    "statehash_shortstatehash": "sha256 of a snapshot's sorted entries -> u64 shortstatehash",
    "shortstatehash_statediff": (
        "u64 shortstatehash -> u64 parent (0: none) + u64 added count + added entries + "
        "removed entries; an entry is u64 shortstatekey + u64 shorteventid"
    ),
    # timeline and events (services/rooms/timeline.py)
    "pduid_pdu": "u64 shortroomid + u64 count -> JSON PDU (federation form)",
    "eventid_pduid": "event_id -> u64 shortroomid + u64 count",
    "eventid_outlierpdu": "event_id -> JSON PDU known but not in the timeline",
    "shorteventid_shortstatehash": "u64 shorteventid -> u64 shortstatehash of the state after it",
    "roomid_roomversion": "room_id -> room version identifier (from its create event)",
    "roomid_shortstatehash": "room_id -> u64 shortstatehash of the current state",
    "roomid_pduleaves": "u64 shortroomid + event_id -> '' (forward extremities)",
    "eventid_txnid": "event_id -> (device_id, txn_id) of a locally sent event",
    "userdevicetxnid_eventid": "(user_id, device_id, room_id, event type, txn_id) -> event_id",
    "redactedby_eventid": "event_id -> event_id of the redaction applied to it",
    "softfailedeventids": "event_id -> '' for events stored but not shown",
    # membership (services/rooms/membership.py)
    "userroomid_joined": "(user_id, room_id) -> ''",
    "roomuserid_joined": "(room_id, user_id) -> ''",
    "userroomid_membership": (
        "(user_id, room_id) -> u64 count + membership (invite/join/leave/ban/knock) of the "
        "latest change"
    ),
    "roomuserid_membership": "(room_id, user_id) -> membership",
    "userroomid_strippedstate": "(user_id, room_id) -> JSON stripped state for invites/knocks",
    "roomserverids": "(room_id, server_name) -> '' for servers with joined members",
    # aliases and the directory (services/rooms/aliases.py, directory.py)
    "alias_roomid": "room alias -> room_id",
    "roomid_alias": "(room_id, alias) -> ''",
    "alias_userid": "room alias -> user_id who created it",
    "publicroomids": "room_id -> '' for rooms in the public room directory",
    # relations (services/rooms/relations.py)
    "tofrom_relation": (
        "u64 shortroomid + u64 target shorteventid + u64 source count -> u64 source "
        "shorteventid + rel_type"
    ),
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
