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
    "rejectedeventids": "event_id -> '' for remote events that failed the auth rules",
    "backfillid_eventid": "u64 shortroomid + u64 backfill seq (grows going back) -> event_id",
    "eventid_backfillid": "event_id -> u64 shortroomid + u64 seq of an event fetched by backfill",
    "roomid_backfill": "room_id -> JSON {edge: oldest event ids held, done} of backfill",
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
    # server-side moderation (services/rooms/moderation.py), set from the admin room
    "bannedroomids": "room_id -> '' for rooms banned on this server (no joins, no invites)",
    "disabledroomids": "room_id -> '' for rooms whose incoming federation is switched off",
    # relations (services/rooms/relations.py)
    "relationtargets": "u64 shortroomid + u64 target shorteventid -> '' (has relations)",
    "tofrom_relation": (
        "u64 shortroomid + u64 target shorteventid + u64 source count -> u64 source "
        "shorteventid + (rel_type, source event type)"
    ),
    "roomthread_activity": (
        "u64 shortroomid + u64 root shorteventid -> u64 count of the thread's latest event"
    ),
    "roomactivity_threadroot": (
        "u64 shortroomid + u64 count of a thread's latest event -> u64 root shorteventid"
    ),
    # search (services/rooms/search.py)
    "tokenids": "u64 shortroomid + lowercase word + 0xFF + u64 count -> '' (inverted index)",
    # media (services/media.py); a file is <database_path>/media/<b64url(sha256(key))>
    "mediaid_file": "(server_name, media_id) -> JSON metadata of a stored file (local or cached)",
    "mediaid_thumbnail": "(server_name, media_id, 'WxH', method, anim) -> JSON thumbnail metadata",
    "userid_mediaid": "(user_id, media_id) -> '' for each file a local user uploaded",
    "mediaid_pending": "media_id -> JSON (user_id, expires ms) of an mxc created, not uploaded",
    "userid_mediapending": "(user_id, media_id) -> u64 expiry ms (pending uploads per user)",
    "url_previews": "url -> JSON cached URL preview (fetched-at ms and og: fields)",
    # end-to-end encryption (services/e2ee/)
    "userdeviceid_devicekeys": "(user_id, device_id) -> JSON device keys as uploaded",
    "onetimekeyid_onetimekeys": (
        "(user_id, device_id, algorithm) + u64 upload count + u32 index -> JSON "
        "{key_id, key} of an unclaimed one-time key (scan order = upload order)"
    ),
    "userdevicealgo_fallbackkey": "(user_id, device_id, algorithm) -> JSON {key_id, key, used}",
    "useridusage_crosssigningkey": "(user_id, usage) -> JSON master/self_signing/user_signing key",
    "keyid_signatures": (
        "(target user_id, target key id, signer user_id, signer key id) -> signature "
        "added by /keys/signatures/upload"
    ),
    "keychangeid_userid": (
        "u64 count + kind byte + tuple -> '': device-list changes: k (user) keys changed, "
        "j/l (room, user) joined/left, t (viewer, user) seen by viewer only"
    ),
    "todeviceid_event": (
        "(user_id, device_id) + u64 count + u32 seq -> JSON to-device event to deliver"
    ),
    "userdevicetxnid_todevice": "(user_id, device_id, txn_id) -> '' to-device sends done",
    "backupid_algorithm": (
        "user_id + u64 version -> JSON room-key backup {algorithm, auth_data, etag, count}"
    ),
    "userid_backupversion": "user_id -> u64 last room-key backup version handed out",
    "backupkeyid_backup": "user_id + u64 version + (room_id, session_id) -> JSON KeyBackupData",
    # receipts (services/receipts.py): each user's latest per (type, thread) only
    "readreceiptid_readreceipt": (
        "(room_id) + u64 count -> JSON receipt {user_id, type, event_id, ts, thread_id?}"
    ),
    "roomuserreceipt_readreceiptid": (
        "(room_id, user_id, type, thread_id or '') -> u64 count of the receipt above + u64 "
        "timeline count of its event"
    ),
    # presence (services/presence.py): each user's latest record only
    "presenceid_presence": (
        "u64 count + user_id -> JSON {presence, last_active_ts, currently_active, status_msg}"
    ),
    "userid_presenceid": "user_id -> u64 count of the user's record above",
    # unread counts (services/unread.py)
    "userroomid_notificationcounts": "(user_id, room_id) -> u64 notifications + u64 highlights",
    "userroomid_unreadnotification": (
        "(user_id, room_id) + u64 count -> b'h'|b'n' (highlight or not) + thread root id "
        "('' = main timeline) of an unread notifying event"
    ),
    # push (services/push/)
    "usernotification_notification": (
        "user_id + 0xFF + u64 count -> b'h'|b'n' + (room_id, event_id) + 0xFF + JSON actions "
        "of a recorded notification (GET /notifications)"
    ),
    "userpusher_pusher": "(user_id, app_id, pushkey) -> JSON pusher (+ pushkey_ts, device_id)",
    "apppushkey_userid": "(app_id, pushkey, user_id) -> '' (users with a pusher for a pushkey)",
    # federation (services/federation/)
    "server_signingkeys": (
        "server_name -> JSON {verify_keys, old_verify_keys, responses}: cached keys of "
        "another server with their validity, and its last signed key responses"
    ),
    "openidtoken_expiresatuserid": "sha256(OpenID token) -> u64 expiry ms + user_id",
    "servertxnid_response": (
        "(origin, txn_id) -> u64 ms stored at + JSON answer of an inbound /send (retries); "
        "pruned after a day"
    ),
    "sender_queue": (
        "destination + 0xFF + u64 seq -> b'p' + event_id | b'e' + JSON EDU: outbound "
        "federation queue (services/federation/sender.py), removed once sent"
    ),
    "userid_devicelistid": "user_id -> u64 stream_id of the last m.device_list_update sent",
    "jobs_state": "job name -> JSON persisted state of a background job",
    # application services (services/appservices/)
    "id_appserviceregistrations": "appservice id -> registration YAML (admin-registered)",
    "appservice_queue": (
        "appservice id + 0xFF + u64 seq -> b'p' + event_id | b'e' + JSON ephemeral event: "
        "what an application service is still to be sent, removed once it answered 2xx"
    ),
    "appservice_txn": "appservice id -> JSON {txn_id, keys}: the transaction being retried",
    "appservice_roomdirectory": "(network_id, room_id) -> appservice id: AS room directories",
}


def describe(name: str) -> str:
    """The catalogue line for ``name``; an unknown name is a programming error."""
    try:
        return TREES[name]
    except KeyError:
        raise KeyError(
            f"unknown tree {name!r}: add it to TREES in conduwuit/store/trees.py"
        ) from None
