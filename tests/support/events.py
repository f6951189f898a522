"""Rooms of test events for the protocol rules.

Events carry fake but unique ids ("$7:test"); nothing here hashes or signs
(except ``signatures`` placeholders), so the rules are tested apart from the
crypto. A ``Room`` keeps the current state and builds each new event with the
auth events the selection algorithm picks, like a server would.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import attrs

from conduwuit.protocol import room_versions
from conduwuit.protocol.auth import auth_types_for_event, check_auth
from conduwuit.protocol.events import Event, StateKey
from conduwuit.protocol.room_versions import EventFormat, RoomVersion

ALICE = "@alice:test"  # the creator in every standard room
BOB = "@bob:test"
CAROL = "@carol:test"
EVE = "@eve:evil.example"  # a user on another server

ALL_VERSIONS = [str(n) for n in range(1, 13)]

_counter = itertools.count(1)


def version(identifier: str | RoomVersion) -> RoomVersion:
    if isinstance(identifier, RoomVersion):
        return identifier
    found = room_versions.get(identifier)
    assert found is not None, identifier
    return found


def versions(first: int, last: int = 12) -> list[str]:
    """Room version ids first..last, for parametrize."""
    return [str(n) for n in range(first, last + 1)]


def new_event_id() -> str:
    return f"${next(_counter)}:test"


def make_event(
    room_version: str | RoomVersion,
    event_type: str,
    sender: str,
    content: Mapping[str, Any],
    *,
    state_key: str | None = None,
    room_id: str | None = None,
    prev_events: list[str] | None = None,
    auth_events: list[str] | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> Event:
    """One event with a fresh id; ``extra`` sets further top-level PDU keys."""
    rv = version(room_version)
    event_id = event_id or new_event_id()
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": dict(content),
        "origin_server_ts": 1_700_000_000_000,
        "depth": 1,
        "prev_events": _id_list(prev_events or [], rv),
        "auth_events": _id_list(auth_events or [], rv),
        "hashes": {"sha256": "fake"},
        "signatures": {sender.partition(":")[2]: {"ed25519:fake": "fake"}},
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if rv.event_format is EventFormat.V1:
        pdu["event_id"] = event_id
    pdu.update(extra)
    return Event(event_id, pdu, rv)


def _id_list(ids: list[str], rv: RoomVersion) -> list[Any]:
    if rv.event_format is EventFormat.V1:
        return [[event_id, {"sha256": "fake"}] for event_id in ids]
    return list(ids)


def create_event(
    room_version: str | RoomVersion,
    /,
    creator: str = ALICE,
    *,
    additional_creators: list[str] | None = None,
    **content: Any,
) -> Event:
    """The m.room.create event as a server of that version would write it."""
    rv = version(room_version)
    body: dict[str, Any] = {"room_version": rv.identifier}
    if not rv.creator_is_sender:
        body["creator"] = creator
    if additional_creators is not None:
        body["additional_creators"] = additional_creators
    body.update(content)
    event_id = new_event_id()
    room_id = None if rv.room_id_is_create_hash else f"!room{event_id[1:]}"
    return make_event(
        rv, "m.room.create", creator, body, state_key="", room_id=room_id, event_id=event_id
    )


@attrs.define
class Room:
    """A room's current state and the last event, to build the next event on."""

    version: RoomVersion
    create: Event
    state: dict[StateKey, Event] = attrs.field(factory=dict)
    last: str = ""

    @property
    def room_id(self) -> str:
        if self.version.room_id_is_create_hash:
            return "!" + self.create.event_id[1:]
        assert self.create.room_id is not None
        return self.create.room_id

    @property
    def creator(self) -> str:
        return self.create.sender

    def build(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        **extra: Any,
    ) -> Event:
        """The next event, citing the auth events the selection algorithm picks."""
        wanted = auth_types_for_event(event_type, state_key, sender, content, self.version)
        auth_ids = [self.state[key].event_id for key in sorted(wanted) if key in self.state]
        return make_event(
            self.version, event_type, sender, content, state_key=state_key,
            room_id=self.room_id, prev_events=[self.last], auth_events=auth_ids, **extra,
        )

    def apply(self, event: Event) -> Event:
        """Make ``event`` part of the room (no checks)."""
        if event.is_state:
            self.state[event.state_pair] = event
        self.last = event.event_id
        return event

    def send(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        **extra: Any,
    ) -> Event:
        """Build, auth-check against the current state, and apply."""
        event = self.build(event_type, sender, content, state_key, **extra)
        check_auth(event, self.state, create=self.create)
        return self.apply(event)

    def force(
        self, event_type: str, sender: str, content: Mapping[str, Any], state_key: str | None = None
    ) -> Event:
        """Put an event into the state without checking it (to set up a scenario)."""
        return self.apply(self.build(event_type, sender, content, state_key))

    def member(self, sender: str, membership: str, target: str | None = None,
               **content: Any) -> Event:
        """Build (without applying) a membership event."""
        return self.build("m.room.member", sender, {"membership": membership, **content},
                          target or sender)

    def set_membership(self, user: str, membership: str) -> Event:
        return self.force("m.room.member", user, {"membership": membership}, user)

    def check(self, event: Event) -> None:
        check_auth(event, self.state, create=self.create)


def standard_room(
    room_version: str | RoomVersion,
    *,
    join_rule: str = "public",
    users: Mapping[str, int] | None = None,
    power_levels: Mapping[str, Any] | None = None,
    with_power_levels: bool = True,
    additional_creators: list[str] | None = None,
    joined: tuple[str, ...] = (),
) -> Room:
    """create, creator's join, power levels, join rules; then ``joined`` users join.

    Before v12 the creator is listed with 100 in ``users``; from v12 creators may not
    be listed (their level is infinite).
    """
    rv = version(room_version)
    create = create_event(rv, additional_creators=additional_creators)
    room = Room(rv, create)
    room.apply(create)
    room.send("m.room.member", ALICE, {"membership": "join"}, ALICE)
    if with_power_levels:
        listed: dict[str, int] = {} if rv.privileged_creators else {ALICE: 100}
        listed.update(users or {})
        content = {"users": listed, **(power_levels or {})}
        room.send("m.room.power_levels", ALICE, content, "")
    room.send("m.room.join_rules", ALICE, {"join_rule": join_rule}, "")
    for user in joined:
        room.set_membership(user, "join")
    return room
