"""Unread notification and highlight counts, from the push rules.

Every new event of a room is evaluated against the push rules of each joined
local member except its sender (``Timeline.index_writers``: the counts land in
the event's own write batch, so ``/sync`` shows an event and the counts it
caused together, and a crash keeps both or neither). An event whose actions
contain ``notify`` is recorded as unread for that user, with its thread, and
bumps the user's counters for the room; a ``highlight`` tweak bumps the
highlight counter too.

A read receipt (``m.read`` or ``m.read.private``) at event E, or the user
sending an event E themselves, clears every recorded notification up to and
including E (an unthreaded receipt: all of them; a threaded one: those of its
thread, ``main`` being the room's main timeline) and lowers the counters by
what it cleared. So the counters stay exact and ``/sync`` reads one key per room.

Owns ``userroomid_notificationcounts`` and ``userroomid_unreadnotification``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from conduwuit.protocol import push_rules
from conduwuit.protocol.events import Event
from conduwuit.protocol.power_levels import PowerLevels
from conduwuit.services.cache import LruCache
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, join, u64_be

from .rooms.events_db import EventStore
from .rooms.membership import Membership
from .rooms.state import CREATE, POWER_LEVELS, RoomState, member_key

log = logging.getLogger(__name__)

_T_COUNTS = "userroomid_notificationcounts"
_T_UNREAD = "userroomid_unreadnotification"
_HIGHLIGHT, _NOTIFY = b"h", b"n"
MAIN_THREAD = "main"

# user_id -> the compiled ruleset to evaluate for them; the push issue supplies the users'
# own rules here (compiled once per change). Without it, the server-default rules.
RulesetSource = Callable[[str], push_rules.CompiledRuleset]
# (tree, key, value or None to delete): writes collected before touching the batch.
_Write = tuple[str, bytes, bytes | None]


@attrs.define
class Unread:
    store: Store
    server_name: str
    membership: Membership
    state: RoomState
    events: EventStore
    ruleset_source: RulesetSource | None = None
    _defaults: LruCache[str, push_rules.CompiledRuleset] = attrs.field(
        factory=lambda: LruCache(10_000))

    # --- counting (an index writer of the timeline) ------------------------------------

    def index_event(self, batch: WriteBatch, event: Event, count: int) -> None:
        """Evaluate ``event`` for the room's local members; add the counts to its batch.

        A bug here must not refuse the event: it is logged and the counts skipped.
        """
        try:
            writes = self._writes_for(event, count)
        except Exception:
            log.exception("unread counts skipped for %s", event.event_id)
            return
        _apply(batch, writes)

    def _writes_for(self, event: Event, count: int) -> list[_Write]:
        room_id = event.room_id
        if room_id is None:
            return []
        writes: list[_Write] = []
        if self._is_local(event.sender):
            # Sending an event reads the room up to it (spec: marking notifications read).
            writes += self._clear(event.sender, room_id, count, None)
        members = self.membership.joined_members(room_id)
        recipients = [m for m in members if m != event.sender and self._is_local(m)]
        if not recipients:
            return writes
        state = self.state.current(room_id)
        power = PowerLevels.from_state(
            self.events.get(state[POWER_LEVELS]) if POWER_LEVELS in state else None,
            self.events.get(state[CREATE]) if CREATE in state else None, event.room_version)
        sender_level = power.user_level(event.sender)
        pdu = dict(event.pdu)
        pdu.setdefault("room_id", room_id)
        wants_name = _needs_display_name(event)
        thread = _thread_of(event).encode()
        position = u64_be(count)

        def evaluate(user_id: str) -> list[push_rules.Action]:
            name = self._display_name(state, user_id) if wants_name else None
            context = push_rules.PushContext(
                user_id=user_id, display_name=name, member_count=len(members),
                sender_power_level=sender_level, notification_levels=power.notifications)
            return self.rules_for(user_id).evaluate(pdu, context)

        # With the default rules only a few rules depend on who reads: everyone the
        # event does not name, mention or target gets the same actions as a nobody.
        shared = evaluate(_NOBODY) if self.ruleset_source is None else None
        for user_id in recipients:
            personal = shared is None or _may_concern(event, user_id,
                                                      self._display_name(state, user_id))
            actions = evaluate(user_id) if personal else list(shared or ())
            if not push_rules.notifies(actions):
                continue
            highlight = push_rules.highlights(actions)
            user_room = join(user_id, room_id)
            writes.append((_T_UNREAD, user_room + SEP + position,
                           (_HIGHLIGHT if highlight else _NOTIFY) + thread))
            notifications, highlights = self._counters_at(user_room)
            writes.append((_T_COUNTS, user_room,
                           _counts(notifications + 1, highlights + int(highlight))))
        return writes

    def rules_for(self, user_id: str) -> push_rules.CompiledRuleset:
        """The user's compiled rules (the defaults until the push issue adds custom ones)."""
        if self.ruleset_source is not None:
            return self.ruleset_source(user_id)
        rules = self._defaults.get(user_id)
        if rules is None:
            rules = push_rules.compile_ruleset(push_rules.default_ruleset(user_id))
            self._defaults.put(user_id, rules)
        return rules

    def _display_name(self, state: dict[tuple[str, str], str], user_id: str) -> str | None:
        event_id = state.get(member_key(user_id))
        member = self.events.get(event_id) if event_id is not None else None
        name = member.content.get("displayname") if member is not None else None
        return name if isinstance(name, str) and name else None

    # --- clearing (read receipts) --------------------------------------------------------

    def mark_read(self, user_id: str, room_id: str, upto: int, thread_id: str | None) -> None:
        """Receipts hook: the user read the room (or one thread) up to timeline count ``upto``."""
        writes = self._clear(user_id, room_id, upto, thread_id)
        if writes:
            with self.store.batch() as batch:
                _apply(batch, writes)

    def _clear(self, user_id: str, room_id: str, upto: int,
               thread_id: str | None) -> list[_Write]:
        prefix = join(user_id, room_id) + SEP
        cleared = cleared_highlights = 0
        writes: list[_Write] = []
        for key, value in self.store.tree(_T_UNREAD).iter(prefix):
            if from_u64_be(key[len(prefix):]) > upto:
                break
            thread = value[1:].decode()
            if thread_id is not None and thread != ("" if thread_id == MAIN_THREAD else thread_id):
                continue
            writes.append((_T_UNREAD, key, None))
            cleared += 1
            cleared_highlights += value[:1] == _HIGHLIGHT
        if cleared:
            notifications, highlights = self._counters(user_id, room_id)
            writes.append((_T_COUNTS, join(user_id, room_id),
                           _counts(max(0, notifications - cleared),
                                   max(0, highlights - cleared_highlights))))
        return writes

    # --- reading -----------------------------------------------------------------------

    def counts(self, room_id: str, user_id: str) -> dict[str, int]:
        """Sync hook: ``unread_notifications`` of the room for the user."""
        notifications, highlights = self._counters(user_id, room_id)
        return {"notification_count": notifications, "highlight_count": highlights}

    def _counters(self, user_id: str, room_id: str) -> tuple[int, int]:
        return self._counters_at(join(user_id, room_id))

    def _counters_at(self, user_room: bytes) -> tuple[int, int]:
        raw = self.store.tree(_T_COUNTS).get(user_room)
        if raw is None:
            return 0, 0
        return from_u64_be(raw[:8]), from_u64_be(raw[8:16])

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(f":{self.server_name}")


def _counts(notifications: int, highlights: int) -> bytes:
    return u64_be(notifications) + u64_be(highlights)


def _apply(batch: WriteBatch, writes: list[_Write]) -> None:
    for tree, key, value in writes:
        if value is None:
            batch.delete(tree, key)
        else:
            batch.put(tree, key, value)


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


def _may_concern(event: Event, user_id: str, display_name: str | None) -> bool:
    """Whether a default rule that depends on the reader could match ``event`` for them.

    Conservative on purpose (plain substrings where the rules use word globs): a
    false "yes" only costs a full evaluation.
    """
    if event.type == "m.room.member" and event.state_key == user_id:
        return True  # invite_for_me
    content = event.content
    mentions = content.get("m.mentions")
    if isinstance(mentions, dict):
        # is_user_mention; with m.mentions present the legacy body rules are off.
        ids = mentions.get("user_ids")
        return isinstance(ids, list) and user_id in ids
    body = content.get("body")
    if not isinstance(body, str):
        return False
    text = body.lower()
    localpart = user_id[1:].split(":", 1)[0].lower()
    # .m.rule.contains_user_name and .m.rule.contains_display_name (legacy)
    return localpart in text or (display_name is not None and display_name.lower() in text)
