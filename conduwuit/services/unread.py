"""Unread notification and highlight counts, from each reader's push rules.

Every new event of a room is evaluated against the push rules of each joined
local member except its sender, and of a local user it invites
(``Timeline.index_writers``: the counts land in the event's own write batch, so
``/sync`` shows an event and the counts it caused together, and a crash keeps
both or neither). An event whose actions contain ``notify`` is recorded as unread
for that user, with its thread, and bumps the user's counters for the room; a
``highlight`` tweak bumps the highlight counter too. The notified readers and
their actions are handed to ``on_notified`` hooks in the same batch (the push
service records them for ``GET /notifications`` and queues them for pushers).

A read receipt (``m.read`` or ``m.read.private``) at event E, or the user
sending an event E themselves, clears every recorded notification up to and
including E (an unthreaded receipt: all of them; a threaded one: those of its
thread, ``main`` being the room's main timeline) and lowers the counters by
what it cleared. So the counters stay exact and ``/sync`` reads one key per room.

Cost in big rooms: a send must not read the store once per reader. Each room
keeps, in a bounded LRU of :class:`_RoomCache`, its local joined members, its
joined count, members' display names and the counters; the counters are loaded
lazily, written through in the batch and updated in memory only once the batch
committed (``committed``, a ``Timeline.on_event`` hook), and membership events
drop the room's member list and the member's name at commit (any other change of
the room's state, by federation's state resolution say, drops them at the next
event). Readers whose rules are the server defaults share one evaluation unless
the event may single them out (``_may_concern``).

Owns ``userroomid_notificationcounts`` and ``userroomid_unreadnotification``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs

from conduwuit.protocol import push_rules
from conduwuit.protocol.events import Event
from conduwuit.protocol.power_levels import PowerLevels
from conduwuit.services.cache import LruCache
from conduwuit.store import SEP, Store, Tree, WriteBatch, from_u64_be, join, u64_be

from .rooms.events_db import EventStore
from .rooms.membership import Membership
from .rooms.state import CREATE, POWER_LEVELS, RoomState, member_key

log = logging.getLogger(__name__)

_T_COUNTS = "userroomid_notificationcounts"
_T_UNREAD = "userroomid_unreadnotification"
_HIGHLIGHT, _NOTIFY = b"h", b"n"
MAIN_THREAD = "main"
ROOM_CACHE_ROOMS = 2048  # rooms whose members, names and counters stay in memory


class RulesLookup(Protocol):
    """Where a user's own push rules come from (the push service)."""

    def custom(self, user_id: str) -> push_rules.CompiledRuleset | None:
        """The user's compiled rules, or ``None`` when they are the server defaults."""


@attrs.frozen
class Notified:
    """One reader an event notifies, with the actions their rules chose."""

    user_id: str
    actions: Sequence[push_rules.Action]
    highlight: bool


# (batch, event, timeline count, notified readers): called inside the event's batch.
NotifiedHook = Callable[[WriteBatch, Event, int, list[Notified]], None]
# (tree, key, value or None to delete): writes collected before touching the batch.
_Write = tuple[Tree, bytes, bytes | None]
_TWO_U64 = struct.Struct(">QQ")


@attrs.define
class _RoomCache:
    """What evaluating an event of one room needs about its readers, kept in memory."""

    state_hash: int | None = None  # the room state the members and names were read at
    local_members: list[str] | None = None  # joined local users; None: reload
    member_count: int = 0  # every joined member, remote ones included
    names: dict[str, str | None] = attrs.field(factory=dict)  # display name in the room
    counters: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # (notify, highlight)
    keys: dict[str, bytes] = attrs.field(factory=dict)  # user_id -> (user_id, room_id) key
    localparts: dict[str, str] = attrs.field(factory=dict)  # user_id -> lowercased localpart
    # user_id -> a position at or below which the user has no unread entry left: a clear
    # starts its scan there instead of wading through the tombstones of earlier clears.
    floors: dict[str, int] = attrs.field(factory=dict)


@attrs.define
class Unread:
    store: Store
    server_name: str
    membership: Membership
    state: RoomState
    events: EventStore
    rules: RulesLookup | None = None
    on_notified: list[NotifiedHook] = attrs.field(factory=list)
    _defaults: LruCache[str, push_rules.CompiledRuleset] = attrs.field(
        factory=lambda: LruCache(10_000))
    _rooms: LruCache[str, _RoomCache] = attrs.field(
        factory=lambda: LruCache(ROOM_CACHE_ROOMS))
    # Written by the batch being built: (count, room_id, {user_id: counters}, {user_id:
    # floor}); memory follows once the batch is committed.
    _staged: tuple[int, str, dict[str, tuple[int, int]], dict[str, int]] | None = None

    # --- counting (an index writer of the timeline) ------------------------------------

    def index_event(self, batch: WriteBatch, event: Event, count: int) -> None:
        """Evaluate ``event`` for the room's local members; add the counts to its batch.

        A bug here must not refuse the event: it is logged and the counts skipped.
        """
        self._staged = None
        try:
            writes, notified = self._writes_for(event, count)
        except Exception:
            log.exception("unread counts skipped for %s", event.event_id)
            self._staged = None
            return
        _apply(batch, writes)
        if notified:
            for hook in self.on_notified:
                try:
                    hook(batch, event, count, notified)
                except Exception:
                    log.exception("notification hook failed for %s", event.event_id)

    def committed(self, event: Event, count: int) -> None:
        """``Timeline.on_event``: the batch is written; now the memory may follow it."""
        staged, self._staged = self._staged, None
        room_id = event.room_id
        if room_id is None:
            return
        room = self._rooms.get(room_id)
        if room is None:
            return
        if staged is not None and staged[0] == count and staged[1] == room_id:
            room.counters.update(staged[2])
            room.floors.update(staged[3])
        if event.type == "m.room.member" and event.state_key is not None:
            room.local_members = None
            room.names.pop(event.state_key, None)

    def _writes_for(self, event: Event, count: int) -> tuple[list[_Write], list[Notified]]:
        room_id = event.room_id
        if room_id is None:
            return [], []
        room = self._room(room_id)
        current = self.state.current_hash(room_id)
        if room.state_hash != current:
            # Any state change (a membership from federation's state resolution too)
            # may change who reads and their names: read them again.
            room.state_hash, room.local_members = current, None
            room.names.clear()
        staged: dict[str, tuple[int, int]] = {}
        floors: dict[str, int] = {}
        self._staged = (count, room_id, staged, floors)
        writes: list[_Write] = []
        sender = event.sender
        if self._is_local(sender):
            # Sending an event reads the room up to it (spec: marking notifications read).
            writes += self._clear(sender, room_id, count, None, room, staged, floors)
        recipients = [m for m in self._local_members(room_id, room) if m != sender]
        invitee = _local_invitee(event, self._is_local)
        if invitee is not None and invitee != sender and invitee not in recipients:
            recipients.append(invitee)
        if not recipients:
            return writes, []
        state = self.state.current(room_id)
        power = PowerLevels.from_state(
            self.events.get(state[POWER_LEVELS]) if POWER_LEVELS in state else None,
            self.events.get(state[CREATE]) if CREATE in state else None, event.room_version)
        sender_level = power.user_level(sender)
        notification_levels = power.notifications
        member_count = room.member_count
        pdu = dict(event.pdu)
        pdu.setdefault("room_id", room_id)
        facts = _Facts.of(event, room.localparts)
        names = room.names
        unread_tree, counts_tree = self.store.tree(_T_UNREAD), self.store.tree(_T_COUNTS)

        def name_of(user_id: str) -> str | None:
            if user_id in names:
                return names[user_id]
            name = self._display_name(state, user_id)
            names[user_id] = name
            return name

        def evaluate(rules: push_rules.CompiledRuleset, user_id: str,
                     wants_name: bool) -> list[push_rules.Action]:
            context = push_rules.PushContext(
                user_id=user_id, display_name=name_of(user_id) if wants_name else None,
                member_count=member_count, sender_power_level=sender_level,
                notification_levels=notification_levels)
            return rules.evaluate(pdu, context)

        # With the default rules only a few rules depend on who reads: everyone the
        # event does not name, mention or target gets the same actions as a nobody.
        shared: list[push_rules.Action] | None = None
        shared_highlight = False
        custom_of = self.rules.custom if self.rules is not None else None
        notified: list[Notified] = []
        thread = _thread_of(event).encode()
        position = u64_be(count)
        keys, counters = room.keys, room.counters
        for user_id in recipients:
            custom = custom_of(user_id) if custom_of is not None else None
            if custom is not None:
                actions = evaluate(custom, user_id, facts.has_body)
                highlight = push_rules.highlights(actions)
            elif facts.may_concern(user_id, name_of):
                actions = evaluate(self.default_rules(user_id), user_id, facts.body_rules)
                highlight = push_rules.highlights(actions)
            else:
                if shared is None:
                    shared = evaluate(self.default_rules(_NOBODY), _NOBODY, False)
                    shared_highlight = push_rules.highlights(shared)
                actions, highlight = shared, shared_highlight
            if "notify" not in actions:
                continue
            user_room = keys.get(user_id)
            if user_room is None:
                user_room = keys[user_id] = join(user_id, room_id)
            writes.append((unread_tree, user_room + SEP + position,
                           (_HIGHLIGHT if highlight else _NOTIFY) + thread))
            before = counters.get(user_id)
            if before is None:
                before = self._counters_at(user_room)
                counters[user_id] = before
            after = (before[0] + 1, before[1] + highlight)
            staged[user_id] = after
            writes.append((counts_tree, user_room, _TWO_U64.pack(*after)))
            notified.append(Notified(user_id, actions, highlight))
        return writes, notified

    def default_rules(self, user_id: str) -> push_rules.CompiledRuleset:
        """The server-default rules of ``user_id``, compiled once."""
        rules = self._defaults.get(user_id)
        if rules is None:
            rules = push_rules.compile_ruleset(push_rules.default_ruleset(user_id))
            self._defaults.put(user_id, rules)
        return rules

    def rules_for(self, user_id: str) -> push_rules.CompiledRuleset:
        """The user's compiled rules: their own if they changed any, else the defaults."""
        custom = self.rules.custom(user_id) if self.rules is not None else None
        return custom if custom is not None else self.default_rules(user_id)

    def _room(self, room_id: str) -> _RoomCache:
        room = self._rooms.get(room_id)
        if room is None:
            room = _RoomCache()
            self._rooms.put(room_id, room)
        return room

    def _local_members(self, room_id: str, room: _RoomCache) -> list[str]:
        if room.local_members is None:
            members = self.membership.joined_members(room_id)
            room.member_count = len(members)
            room.local_members = [m for m in members if self._is_local(m)]
        return room.local_members

    def _display_name(self, state: Mapping[tuple[str, str], str], user_id: str) -> str | None:
        event_id = state.get(member_key(user_id))
        member = self.events.get(event_id) if event_id is not None else None
        name = member.content.get("displayname") if member is not None else None
        return name if isinstance(name, str) and name else None

    # --- clearing (read receipts) --------------------------------------------------------

    def mark_read(self, user_id: str, room_id: str, upto: int, thread_id: str | None) -> None:
        """Receipts hook: the user read the room (or one thread) up to timeline count ``upto``."""
        room = self._room(room_id)
        staged: dict[str, tuple[int, int]] = {}
        floors: dict[str, int] = {}
        writes = self._clear(user_id, room_id, upto, thread_id, room, staged, floors)
        if writes:
            with self.store.batch() as batch:
                _apply(batch, writes)
            room.counters.update(staged)
        room.floors.update(floors)

    def _clear(self, user_id: str, room_id: str, upto: int, thread_id: str | None,
               room: _RoomCache, staged: dict[str, tuple[int, int]],
               floors: dict[str, int]) -> list[_Write]:
        user_room = join(user_id, room_id)
        prefix = user_room + SEP
        cleared = cleared_highlights = 0
        writes: list[_Write] = []
        if thread_id is None:
            floors[user_id] = max(upto, room.floors.get(user_id, 0))
        if self._cached_counters(user_id, room, user_room) == (0, 0):
            return writes  # every unread entry is counted: none to clear
        unread_tree = self.store.tree(_T_UNREAD)
        floor = room.floors.get(user_id)
        start = prefix + u64_be(floor + 1) if floor is not None else None
        for key, value in unread_tree.iter(prefix, start=start):
            if from_u64_be(key[len(prefix):]) > upto:
                break
            thread = value[1:].decode()
            if thread_id is not None and thread != ("" if thread_id == MAIN_THREAD else thread_id):
                continue
            writes.append((unread_tree, key, None))
            cleared += 1
            cleared_highlights += value[:1] == _HIGHLIGHT
        if cleared:
            notifications, highlights = self._cached_counters(user_id, room, user_room)
            after = (max(0, notifications - cleared), max(0, highlights - cleared_highlights))
            staged[user_id] = after
            writes.append((self.store.tree(_T_COUNTS), user_room, _TWO_U64.pack(*after)))
        return writes

    # --- reading -----------------------------------------------------------------------

    def counts(self, room_id: str, user_id: str) -> dict[str, int]:
        """Sync hook: ``unread_notifications`` of the room for the user."""
        room = self._rooms.get(room_id)
        if room is not None:
            notifications, highlights = self._cached_counters(user_id, room,
                                                              join(user_id, room_id))
        else:
            notifications, highlights = self._counters_at(join(user_id, room_id))
        return {"notification_count": notifications, "highlight_count": highlights}

    def is_unread(self, user_id: str, room_id: str, count: int) -> bool:
        """Whether the notification of the event at ``count`` is still unread."""
        return join(user_id, room_id) + SEP + u64_be(count) in self.store.tree(_T_UNREAD)

    def total_unread(self, user_id: str) -> int:
        """Unread notifications over every room of the user (a push badge count)."""
        prefix = join(user_id) + SEP
        return sum(from_u64_be(raw[:8]) for _, raw in self.store.tree(_T_COUNTS).iter(prefix))

    def _cached_counters(self, user_id: str, room: _RoomCache,
                         user_room: bytes) -> tuple[int, int]:
        counters = room.counters.get(user_id)
        if counters is None:
            counters = self._counters_at(user_room)
            room.counters[user_id] = counters
        return counters

    def _counters_at(self, user_room: bytes) -> tuple[int, int]:
        raw = self.store.tree(_T_COUNTS).get(user_room)
        if raw is None:
            return 0, 0
        return from_u64_be(raw[:8]), from_u64_be(raw[8:16])

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(f":{self.server_name}")


def _apply(batch: WriteBatch, writes: list[_Write]) -> None:
    for tree, key, value in writes:
        if value is None:
            batch.delete(tree, key)
        else:
            batch.put(tree, key, value)


def _local_invitee(event: Event, is_local: Callable[[str], bool]) -> str | None:
    """The local user an invite targets: invites notify (``.m.rule.invite_for_me``)."""
    if event.type != "m.room.member" or event.content.get("membership") != "invite":
        return None
    target = event.state_key
    return target if target is not None and is_local(target) else None


def _needs_display_name(event: Event) -> bool:
    """Only the legacy display-name rule reads it: a body and no ``m.mentions``."""
    content = event.content
    return isinstance(content.get("body"), str) and "m.mentions" not in content


def _thread_of(event: Event) -> str:
    """The thread root an event belongs to ('' for the main timeline)."""
    relation = event.content.get("m.relates_to")
    if isinstance(relation, dict) and relation.get("rel_type") == "m.thread":
        root = relation.get("event_id")
        if isinstance(root, str):
            return root
    return ""


# A user id no event can name: the default rules' answer for "anybody else".
_NOBODY = "@\x01nobody:invalid"


@attrs.frozen
class _Facts:
    """What :func:`_may_concern` reads of an event, worked out once for all readers."""

    invite_target: str | None  # state_key of a member event (invite_for_me)
    mentions: frozenset[str] | None  # m.mentions.user_ids when m.mentions is present
    has_mentions: bool
    lowered_body: str | None  # content.body lowercased, when the legacy rules apply
    localparts: dict[str, str]  # a cache: user_id -> lowercased localpart
    body_rules: bool  # whether the display name can matter (legacy rules on)
    has_body: bool  # content.body is a string (a user's own display-name rule may match)

    @classmethod
    def of(cls, event: Event, localparts: dict[str, str] | None = None) -> _Facts:
        content = event.content
        target = event.state_key if event.type == "m.room.member" else None
        raw_mentions = content.get("m.mentions")
        if isinstance(raw_mentions, dict):
            ids = raw_mentions.get("user_ids")
            mentioned = frozenset(i for i in ids if isinstance(i, str)) \
                if isinstance(ids, list) else frozenset()
            return cls(target, mentioned, True, None, {} if localparts is None else localparts,
                       False, isinstance(content.get("body"), str))
        body = content.get("body")
        lowered = body.lower() if isinstance(body, str) else None
        return cls(target, None, "m.mentions" in content, lowered,
                   {} if localparts is None else localparts, _needs_display_name(event),
                   isinstance(body, str))

    def may_concern(self, user_id: str, name_of: Callable[[str], str | None]) -> bool:
        if self.invite_target is not None and self.invite_target == user_id:
            return True  # invite_for_me
        if self.has_mentions:
            # is_user_mention; with m.mentions present the legacy body rules are off.
            return self.mentions is not None and user_id in self.mentions
        text = self.lowered_body
        if text is None:
            return False
        localpart = self.localparts.get(user_id)
        if localpart is None:
            localpart = self.localparts[user_id] = user_id[1:].split(":", 1)[0].lower()
        if localpart in text:
            return True  # .m.rule.contains_user_name
        name = name_of(user_id)  # .m.rule.contains_display_name (legacy)
        return name is not None and name.lower() in text


def _may_concern(event: Event, user_id: str, display_name: str | None) -> bool:
    """Whether a default rule that depends on the reader could match ``event`` for them.

    Conservative on purpose (plain substrings where the rules use word globs): a
    false "yes" only costs a full evaluation.
    """
    return _Facts.of(event).may_concern(user_id, lambda _user: display_name)

