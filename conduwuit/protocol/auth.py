"""The authorization rules for events, room versions 1-12 (spec ``rooms/v*.md``).

Rule numbers in comments follow the v12 page. The v1-v5 pages number the same
rules identically from rule 5 (m.room.member) on; v6-v11 number them one lower,
because they dropped the m.room.aliases rule (4) and had no room-id rule (v12's 2).

What the pure rules cannot do, and who does it instead:

* Rule 3.3 ("auth events that were themselves rejected"): the caller knows which
  events it rejected and must not pass them.
* Rule 5.2 (a member event carrying ``join_authorised_via_users_server`` must be
  signed by that user's server) is a signature check with fetched keys: the
  signature stage verifies every server ``required_signers`` names. ``check_auth``
  only refuses a value that is not a user id, since no server could sign for it.
* v3+ redactions: the auth rules accept them; whether to *apply* one is
  ``can_redact``.

Entry points: ``auth_types_for_event`` (which state an event's ``auth_events``
should cite), ``check_auth_events`` (rule 3, on the listed auth events),
``check_auth`` (all other rules, against a state map), ``can_redact``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from nacl.exceptions import CryptoError
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from .events import Event, StateKey
from .ids import UserId
from .power_levels import (
    InvalidPowerLevels,
    Level,
    PowerLevelContent,
    PowerLevels,
    parse_power_level_content,
    read_power_level_content,
    room_creators,
)
from .room_versions import ROOM_VERSIONS, EventFormat, RoomVersion

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"
AUTHORISER_KEY = "join_authorised_via_users_server"


class AuthError(Exception):
    """An event the authorization rules refuse; the message names the rule's subject
    and the failed condition, e.g. "m.room.member: sender is not joined"."""


def _server_of(identifier: str) -> str:
    """The server part of a user, room or v1/v2 event id ("" if it has none)."""
    return identifier.partition(":")[2]


# --- auth events selection (server-server API, "Auth events selection") -------


def auth_types_for_event(
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
    version: RoomVersion,
) -> set[StateKey]:
    """The (type, state_key) pairs whose current state events an event's
    ``auth_events`` should cite; the same set bounds what ``check_auth_events``
    accepts. The create event cites nothing, and from v12 nobody cites it."""
    if event_type == CREATE:
        return set()
    wanted: set[StateKey] = {(POWER_LEVELS, ""), (MEMBER, sender)}
    if not version.room_id_is_create_hash:
        wanted.add((CREATE, ""))
    if event_type != MEMBER or state_key is None:
        return wanted
    wanted.add((MEMBER, state_key))
    membership = content.get("membership")
    if membership in (JOIN, INVITE, KNOCK):
        wanted.add((JOIN_RULES, ""))
    if membership == INVITE:
        token = _third_party_invite_token(content)
        if token is not None:
            wanted.add((THIRD_PARTY_INVITE, token))
    authoriser = content.get(AUTHORISER_KEY)
    if membership == JOIN and version.restricted_join_rule and isinstance(authoriser, str):
        wanted.add((MEMBER, authoriser))
    return wanted


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def check_auth_events(event: Event, auth_events: Iterable[Event]) -> dict[StateKey, Event]:
    """Rule 3 (v1-v11: rule 2) on the events an event lists as its auth events.

    Returns them as the state map ``check_auth`` takes. Only here can duplicates and
    unexpected entries be seen; ``check_auth`` also runs on full room state.
    """
    version = event.room_version
    expected = auth_types_for_event(
        event.type, event.state_key, event.sender, event.content, version
    )
    by_key: dict[StateKey, Event] = {}
    for auth_event in auth_events:
        key = auth_event.state_pair
        if key in by_key:  # rule 3.1
            raise AuthError(f"auth events: duplicate entries for {key}")
        if not auth_event.is_state or key not in expected:  # rule 3.2 (v12: no create)
            raise AuthError(f"auth events: {key} is not one this event may cite")
        if auth_event.room_id != event.room_id:  # rule 3.5
            raise AuthError(f"auth events: {auth_event.event_id} is in another room")
        by_key[key] = auth_event
    if not version.room_id_is_create_hash and (CREATE, "") not in by_key:  # rule 3.4 (v1-v11)
        raise AuthError("auth events: no m.room.create event")
    return by_key


def required_signers(event: Event) -> set[str]:
    """Servers whose valid signature the event needs before it can be accepted.

    The sender's server always; in v1-v2 also the server of the event id; from v8
    the server of ``join_authorised_via_users_server`` on member events (rule 5.2).
    """
    servers = {_server_of(event.sender)}
    if event.room_version.event_format is EventFormat.V1:
        servers.add(_server_of(event.event_id))
    if event.room_version.restricted_join_rule and event.type == MEMBER:
        authoriser = event.content.get(AUTHORISER_KEY)
        if isinstance(authoriser, str):
            servers.add(_server_of(authoriser))
    return servers


# --- the rules -------------------------------------------------------------------


@attrs.frozen
class _Check:
    """One event under check, with the state it is checked against."""

    event: Event
    state: Mapping[StateKey, Event]
    create: Event
    power: PowerLevels

    @property
    def version(self) -> RoomVersion:
        return self.event.room_version

    def membership(self, user_id: str) -> str | None:
        member = self.state.get((MEMBER, user_id))
        return member.membership if member is not None else None

    def level(self, user_id: str) -> Level:
        return self.power.user_level(user_id)

    def join_rule(self) -> str:
        # No m.room.join_rules event: servers treat the room as invite-only.
        rules = self.state.get((JOIN_RULES, ""))
        value = rules.content.get("join_rule") if rules is not None else INVITE
        return value if isinstance(value, str) else INVITE


def check_auth(
    event: Event, auth_state: Mapping[StateKey, Event], *, create: Event | None = None
) -> None:
    """Raise AuthError unless the rules of the event's room version allow it.

    ``auth_state`` maps (type, state_key) to the events the rules may consult:
    the event's auth events (see ``check_auth_events``) or the room state before
    it. ``create`` is the room's create event; v12 events do not cite it, so pass
    it here (it defaults to ``auth_state[("m.room.create", "")]``).
    """
    if event.type == CREATE:
        _check_create(event)  # rule 1
        return
    create = create if create is not None else auth_state.get((CREATE, ""))
    if create is None:  # rule 3.4 / v12 rule 2
        raise AuthError("auth events: no m.room.create event")
    _check_room(event, auth_state, create)
    _check_federation(event, create)  # rule 3 (v12: 4)
    if event.room_version.special_case_aliases and event.type == ALIASES:
        _check_aliases(event)  # rule 4 (v1-v5)
        return
    check = _Check(
        event,
        auth_state,
        create,
        PowerLevels.from_state(auth_state.get((POWER_LEVELS, "")), create, event.room_version),
    )
    if event.type == MEMBER:
        _check_member(check)  # rule 5
        return
    if check.membership(event.sender) != JOIN:  # rule 6
        raise AuthError(f"{event.type}: sender is not joined")
    if event.type == THIRD_PARTY_INVITE:  # rule 7
        _require(check.level(event.sender) >= check.power.invite,
                 f"{THIRD_PARTY_INVITE}: sender is below the invite level")
        return
    _check_send_level(check)  # rules 8 and 9
    if event.type == POWER_LEVELS:
        _check_power_levels(check)  # rule 10
    if event.room_version.redaction_in_auth_rules and event.type == REDACTION:
        _check_v1_redaction(check)  # rule 11 (v1-v2)


def _require(condition: bool, refusal: str) -> None:
    if not condition:
        raise AuthError(refusal)


def _check_create(event: Event) -> None:
    """Rule 1: the create event stands alone, so it is checked on its own."""
    version = event.room_version
    _require(not event.pdu.get("prev_events"), f"{CREATE}: has prev_events")  # 1.1
    if version.room_id_is_create_hash:
        # 1.2 (v12): the room id is derived from this event, so it has none.
        _require("room_id" not in event.pdu, f"{CREATE}: has a room_id")
    else:
        # 1.2: the room id's server must be the sender's.
        _require(
            event.room_id is not None and _server_of(event.room_id) == _server_of(event.sender),
            f"{CREATE}: room_id server does not match the sender's",
        )
    room_version = event.content.get("room_version")
    _require(  # 1.3
        room_version is None or (isinstance(room_version, str) and room_version in ROOM_VERSIONS),
        f"{CREATE}: unknown room_version {room_version!r}",
    )
    if not version.creator_is_sender:  # 1.4 (v1-v10)
        _require("creator" in event.content, f"{CREATE}: content has no creator")
    if version.privileged_creators:  # 1.4 (v12)
        _check_additional_creators(event.content)


def _check_additional_creators(content: Mapping[str, Any]) -> None:
    if "additional_creators" not in content:
        return
    creators = content["additional_creators"]
    _require(
        isinstance(creators, list)
        and all(isinstance(user, str) and UserId.try_parse(user) is not None for user in creators),
        f"{CREATE}: additional_creators is not a list of valid user ids",
    )


def _check_room(event: Event, state: Mapping[StateKey, Event], create: Event) -> None:
    """v12 rule 2 (room id = create event id) and rule 3.5 (same room) for every
    state entry this event's rules consult."""
    if event.room_version.room_id_is_create_hash:
        _require(
            event.room_id == "!" + create.event_id[1:],
            f"{event.type}: room_id is not that of the room's m.room.create event",
        )
    else:
        _require(create.room_id == event.room_id, f"{event.type}: m.room.create is in another room")
    consulted = auth_types_for_event(
        event.type, event.state_key, event.sender, event.content, event.room_version
    )
    for key in consulted - {(CREATE, "")}:
        auth_event = state.get(key)
        if auth_event is not None and auth_event.room_id != event.room_id:
            raise AuthError(f"auth events: {auth_event.event_id} is in another room")


def _check_federation(event: Event, create: Event) -> None:
    """Rule 3 (v12: 4): ``m.federate: false`` keeps other servers out."""
    if create.content.get("m.federate", True) is False:
        _require(
            _server_of(event.sender) == _server_of(create.sender),
            f"{event.type}: room does not federate and sender is on another server",
        )


def _check_aliases(event: Event) -> None:
    """Rule 4 (v1-v5): a server may set only its own aliases, and needs no power."""
    _require(event.state_key is not None, f"{ALIASES}: has no state_key")
    _require(
        event.state_key == _server_of(event.sender),
        f"{ALIASES}: state_key is not the sender's server",
    )


# --- rule 5: m.room.member ---------------------------------------------------------


def _check_member(check: _Check) -> None:
    event = check.event
    membership = event.content.get("membership")
    # 5.1
    _require(event.state_key is not None, f"{MEMBER}: has no state_key")
    _require("membership" in event.content, f"{MEMBER}: content has no membership")
    authoriser = event.content.get(AUTHORISER_KEY)
    if check.version.restricted_join_rule and AUTHORISER_KEY in event.content:
        # 5.2: only the authoriser's server can sign; see required_signers.
        _require(
            isinstance(authoriser, str) and UserId.try_parse(authoriser) is not None,
            f"{MEMBER}: {AUTHORISER_KEY} is not a user id",
        )
    if membership == JOIN:
        _check_join(check)  # 5.3
    elif membership == INVITE:
        _check_invite(check)  # 5.4
    elif membership == LEAVE:
        _check_leave(check)  # 5.5
    elif membership == BAN:
        _check_ban(check)  # 5.6
    elif membership == KNOCK and check.version.knock_join_rule:
        _check_knock(check)  # 5.7 (v7+)
    else:
        raise AuthError(f"{MEMBER}: unknown membership {membership!r}")  # 5.8


def _check_join(check: _Check) -> None:
    event, version = check.event, check.version
    target = event.state_key or ""
    # 5.3.1: the creator's own join right after the create event.
    create = check.create
    creator = create.sender if version.creator_is_sender else create.content.get("creator")
    if event.prev_event_ids == [create.event_id] and target == creator:
        return
    _require(event.sender == target, f"{MEMBER}: join sender does not match state_key")  # 5.3.2
    membership = check.membership(target)
    _require(membership != BAN, f"{MEMBER}: sender is banned")  # 5.3.3
    join_rule = check.join_rule()
    invite_rules = {INVITE, KNOCK} if version.knock_join_rule else {INVITE}
    if join_rule in invite_rules and membership in (INVITE, JOIN):  # 5.3.4
        return
    if _is_restricted(join_rule, version):  # 5.3.5 (v8+; knock_restricted v10+)
        if membership in (INVITE, JOIN):
            return
        _require_authoriser(check)
        return
    _require(join_rule == "public", f"{MEMBER}: join rule {join_rule!r} does not allow this join")


def _is_restricted(join_rule: str, version: RoomVersion) -> bool:
    if join_rule == "restricted":
        return version.restricted_join_rule
    return join_rule == "knock_restricted" and version.knock_restricted_join_rule


def _require_authoriser(check: _Check) -> None:
    """5.3.5.2: a restricted join needs a joined member who may invite to vouch."""
    authoriser = check.event.content.get(AUTHORISER_KEY)
    _require(isinstance(authoriser, str), f"{MEMBER}: restricted join has no {AUTHORISER_KEY}")
    assert isinstance(authoriser, str)
    _require(
        check.membership(authoriser) == JOIN,
        f"{MEMBER}: {AUTHORISER_KEY} user is not joined",
    )
    _require(
        check.level(authoriser) >= check.power.invite,
        f"{MEMBER}: {AUTHORISER_KEY} user is below the invite level",
    )


def _check_invite(check: _Check) -> None:
    event = check.event
    target = event.state_key or ""
    if "third_party_invite" in event.content:
        _check_third_party_invite(check)  # 5.4.1
        return
    _require(check.membership(event.sender) == JOIN, f"{MEMBER}: inviter is not joined")  # 5.4.2
    _require(  # 5.4.3
        check.membership(target) not in (JOIN, BAN),
        f"{MEMBER}: invitee is already joined or banned",
    )
    _require(  # 5.4.4
        check.level(event.sender) >= check.power.invite,
        f"{MEMBER}: inviter is below the invite level",
    )


def _check_third_party_invite(check: _Check) -> None:
    """5.4.1: an invite that redeems an m.room.third_party_invite token."""
    event = check.event
    _require(check.membership(event.state_key or "") != BAN, f"{MEMBER}: invitee is banned")
    invite = event.content["third_party_invite"]
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    _require(isinstance(signed, Mapping), f"{MEMBER}: third_party_invite has no signed")
    assert isinstance(signed, Mapping)
    mxid, token = signed.get("mxid"), signed.get("token")
    _require(
        isinstance(mxid, str) and isinstance(token, str),
        f"{MEMBER}: third_party_invite.signed lacks mxid or token",
    )
    _require(mxid == event.state_key, f"{MEMBER}: third_party_invite mxid is not the invitee")
    token_event = check.state.get((THIRD_PARTY_INVITE, str(token)))
    _require(token_event is not None, f"{MEMBER}: no {THIRD_PARTY_INVITE} for the token")
    assert token_event is not None
    _require(
        token_event.sender == event.sender,
        f"{MEMBER}: sender did not send the {THIRD_PARTY_INVITE}",
    )
    _require(
        _signed_by_any(signed, _public_keys(token_event.content)),
        f"{MEMBER}: third_party_invite is not signed by any of the invite's public keys",
    )


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    """5.4.1.7: the key in ``public_key`` and those listed in ``public_keys``."""
    keys = [content["public_key"]] if isinstance(content.get("public_key"), str) else []
    listed = content.get("public_keys")
    if isinstance(listed, list):
        keys += [
            entry["public_key"]
            for entry in listed
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str)
        ]
    return keys


def _signed_by_any(signed: Mapping[str, Any], public_keys: list[str]) -> bool:
    """True if any signature on ``signed`` verifies with any of the public keys."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    for signer, by_key_id in signatures.items():
        if not isinstance(by_key_id, Mapping):
            continue
        for key_id in by_key_id:
            if any(_verifies(signed, signer, key_id, key) for key in public_keys):
                return True
    return False


def _verifies(signed: Mapping[str, Any], signer: str, key_id: str, public_key: str) -> bool:
    try:
        verify_key = decode_verify_key_bytes(key_id, decode_base64(public_key))
        verify_signed_json(dict(signed), signer, verify_key)
    except (SignatureVerifyException, CryptoError, ValueError, TypeError):
        return False
    return True


def _check_leave(check: _Check) -> None:
    event = check.event
    target = event.state_key or ""
    if event.sender == target:  # 5.5.1: leaving, or declining an invite or knock
        may_leave = (INVITE, JOIN, KNOCK) if check.version.knock_join_rule else (INVITE, JOIN)
        _require(
            check.membership(target) in may_leave,
            f"{MEMBER}: cannot leave without being invited or joined",
        )
        return
    sender_level = check.level(event.sender)
    _require(check.membership(event.sender) == JOIN, f"{MEMBER}: sender is not joined")  # 5.5.2
    _require(  # 5.5.3: unbanning needs the ban level too
        check.membership(target) != BAN or sender_level >= check.power.ban,
        f"{MEMBER}: sender is below the ban level",
    )
    _require(sender_level >= check.power.kick, f"{MEMBER}: sender is below the kick level")  # 5.5.4
    _require(check.level(target) < sender_level, f"{MEMBER}: target's level is not below sender's")


def _check_ban(check: _Check) -> None:
    event = check.event
    sender_level = check.level(event.sender)
    _require(check.membership(event.sender) == JOIN, f"{MEMBER}: sender is not joined")  # 5.6.1
    _require(sender_level >= check.power.ban, f"{MEMBER}: sender is below the ban level")  # 5.6.2
    _require(
        check.level(event.state_key or "") < sender_level,
        f"{MEMBER}: target's level is not below sender's",
    )


def _check_knock(check: _Check) -> None:
    """5.7 (v7+): ask to join a room whose join rule allows knocking."""
    event, version = check.event, check.version
    knock_rules = {KNOCK, "knock_restricted"} if version.knock_restricted_join_rule else {KNOCK}
    _require(check.join_rule() in knock_rules, f"{MEMBER}: join rule does not allow knocking")
    _require(event.sender == event.state_key, f"{MEMBER}: knock sender does not match state_key")
    _require(
        check.membership(event.sender) not in (BAN, INVITE, JOIN),
        f"{MEMBER}: cannot knock while banned, invited or joined",
    )


# --- rules 8-11 ----------------------------------------------------------------------


def _check_send_level(check: _Check) -> None:
    event = check.event
    required = check.power.event_level(event.type, event.is_state)
    _require(  # rule 8
        check.level(event.sender) >= required,
        f"{event.type}: sender is below the required level {required}",
    )
    state_key = event.state_key
    _require(  # rule 9: state keyed by a user id belongs to that user
        state_key is None or not state_key.startswith("@") or state_key == event.sender,
        f"{event.type}: state_key is another user's id",
    )


def _check_power_levels(check: _Check) -> None:
    """Rule 10: a user may only change levels up to their own, and not those of
    users at or above them."""
    event, version = check.event, check.version
    creators = room_creators(check.create, version)
    try:
        new = parse_power_level_content(event.content, version, creators)  # 10.1-10.4
    except InvalidPowerLevels as error:
        raise AuthError(f"{POWER_LEVELS}: {error}") from None
    previous = check.state.get((POWER_LEVELS, ""))
    if previous is None:  # 10.5
        return
    old = read_power_level_content(previous.content, version)
    sender = event.sender
    sender_level = check.level(sender)
    _check_level_changes(old.named, new.named, sender_level, "")  # 10.6
    _check_level_changes(old.events, new.events, sender_level, "events.")  # 10.7, 10.8
    if version.limit_notifications_power_levels:  # v6+
        _check_level_changes(old.notifications, new.notifications, sender_level, "notifications.")
    _check_user_changes(old, new, sender, sender_level)  # 10.9, 10.10


def _check_level_changes(
    old: Mapping[str, int], new: Mapping[str, int], sender_level: Level, prefix: str
) -> None:
    """A threshold may be added, changed or removed only if both its old and new
    values are within the sender's own level."""
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        _require(
            before is None or before <= sender_level,
            f"{POWER_LEVELS}: cannot change {prefix}{key} from above own level",
        )
        _require(
            after is None or after <= sender_level,
            f"{POWER_LEVELS}: cannot set {prefix}{key} above own level",
        )


def _check_user_changes(
    old: PowerLevelContent, new: PowerLevelContent, sender: str, sender_level: Level
) -> None:
    for user in old.users.keys() | new.users.keys():
        before, after = old.users.get(user), new.users.get(user)
        if before == after:
            continue
        _require(  # 10.9: others at or above the sender are untouchable
            user == sender or before is None or before < sender_level,
            f"{POWER_LEVELS}: cannot change the level of {user}, who is not below the sender",
        )
        _require(  # 10.10
            after is None or after <= sender_level,
            f"{POWER_LEVELS}: cannot give {user} a level above own",
        )


def _check_v1_redaction(check: _Check) -> None:
    """Rule 11 (v1-v2): redact level, or the same server as the redacted event."""
    redacts = check.event.redacts
    _require(
        check.level(check.event.sender) >= check.power.redact
        or (redacts is not None and _server_of(redacts) == _server_of(check.event.event_id)),
        f"{REDACTION}: sender is below the redact level and on another server",
    )


def can_redact(redaction: Event, power: PowerLevels, original_sender: str | None) -> bool:
    """Whether the server should apply a redaction it has accepted ("Handling
    redactions", v3+): the sender has the redact level, or is on the same server as
    the original event's sender. ``original_sender`` is None while the original
    event is unknown; then only the redact level can allow it. In v1-v2 this is the
    auth rule 11 test again, so both eras give the same answer."""
    if power.user_level(redaction.sender) >= power.redact:
        return True
    if redaction.room_version.redaction_in_auth_rules:
        redacts = redaction.redacts
        return redacts is not None and _server_of(redacts) == _server_of(redaction.event_id)
    return original_sender is not None and _server_of(original_sender) == _server_of(
        redaction.sender
    )
