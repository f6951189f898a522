"""Relations (``m.relates_to``): their index, pagination, threads and bundled aggregations.

Owns ``tofrom_relation``, ``roomthread_activity`` and ``roomactivity_threadroot``.

Every timeline event whose content has ``m.relates_to`` with a ``rel_type`` and an
``event_id`` is indexed in its own write batch (see :meth:`Relations.stage`), keyed so
that the relations of one target are one prefix scan in stream order. ``m.in_reply_to``
alone is not a relation (it has no ``rel_type``) and is not indexed.

Redaction strips ``m.relates_to`` from content in every room version, and the timeline
stores the redacted form in place of the event, so the index is never edited: readers
load each relating event and keep it only while it still carries the relation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from conduwuit.protocol.events import Event
from conduwuit.store import SEP, Store, WriteBatch, from_u64_be, join, u64_be

from .events_db import EventStore
from .serving import EventServing
from .short import ShortIds

THREAD, REPLACE, REFERENCE, ANNOTATION = "m.thread", "m.replace", "m.reference", "m.annotation"

RELATIONS = "tofrom_relation"
TARGETS = "relationtargets"
THREAD_ACTIVITY = "roomthread_activity"
THREADS_BY_ACTIVITY = "roomactivity_threadroot"

# Levels of indirect relations followed by ``recurse=true`` (the spec asks for >= 3).
RECURSION_DEPTH = 3


@attrs.frozen
class Relation:
    rel_type: str
    event_id: str  # the target (parent)


def relation_of(content: Mapping[str, Any]) -> Relation | None:
    """The relation an event's content declares, if it is a well-formed one."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    rel_type, target = relates_to.get("rel_type"), relates_to.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(target, str) or not rel_type or not target:
        return None
    return Relation(rel_type, target)


@attrs.frozen
class Related:
    """One indexed relation: the relating event's stream count, type and relation type."""

    count: int
    event: Event
    rel_type: str


@attrs.frozen
class ThreadSummary:
    count: int
    latest: Event
    participated: bool


@attrs.define
class Relations:
    store: Store
    short: ShortIds
    events: EventStore
    serving: EventServing
    # > 0 while a thread's latest event is being served: its own bundle has no m.thread,
    # which also bounds the recursion on a (forged) cycle of relations.
    _nesting: int = 0

    # --- writing (an index writer of the timeline) ---------------------------------

    def stage(self, batch: WriteBatch, event: Event, count: int) -> None:
        relation = relation_of(event.content)
        if relation is None or event.room_id is None or relation.event_id == event.event_id:
            return
        room = self.short.room(event.room_id)
        target = self.short.event(relation.event_id, create=True)
        source = self.short.event(event.event_id, create=True)
        assert room is not None and target is not None and source is not None
        batch.put(RELATIONS, u64_be(room) + u64_be(target) + u64_be(count),
                  u64_be(source) + join(relation.rel_type, event.type))
        batch.put(TARGETS, u64_be(room) + u64_be(target), b"")
        if relation.rel_type == THREAD:
            root_key = u64_be(room) + u64_be(target)
            previous = self.store.tree(THREAD_ACTIVITY).get(root_key)
            if previous is not None:
                batch.delete(THREADS_BY_ACTIVITY, u64_be(room) + previous)
            batch.put(THREADS_BY_ACTIVITY, u64_be(room) + u64_be(count), u64_be(target))
            batch.put(THREAD_ACTIVITY, root_key, u64_be(count))

    # --- reading -------------------------------------------------------------------

    def direct(self, room_id: str, target_id: str, *, before: int | None = None,
               after: int | None = None, reverse: bool = False,
               rel_types: frozenset[str] | None = None) -> Iterator[Related]:
        """Events that relate to ``target_id`` (and still do), in stream order.

        ``before``/``after`` are exclusive stream-count bounds; ``rel_types`` skips other
        relation types without loading their events.
        """
        room, target = self.short.room(room_id), self.short.event(target_id)
        if room is None or target is None:
            return
        prefix = u64_be(room) + u64_be(target)
        if reverse:
            if before is not None and before <= 0:
                return
            start = prefix + u64_be(before - 1) if before is not None else None
        else:
            start = prefix + u64_be(after + 1) if after is not None else None
        for key, value in self.store.tree(RELATIONS).iter(prefix, reverse=reverse, start=start):
            count = from_u64_be(key[16:24])
            if (after is not None and count <= after) or (before is not None and count >= before):
                return
            rel_type, _, _event_type = value[8:].partition(SEP)
            if rel_types is not None and rel_type.decode() not in rel_types:
                continue
            event = self.events.get(self.short.event_id(from_u64_be(value[:8])))
            if event is None or event.room_id != room_id:
                continue
            still = relation_of(event.content)
            if still is None or still.event_id != target_id:
                continue  # redacted since it was indexed
            yield Related(count, event, still.rel_type)

    def relating(self, room_id: str, target_id: str, *, rel_type: str | None = None,
                 event_type: str | None = None, start: int | None = None,
                 end: int | None = None, forward: bool = False,
                 depth: int = 1) -> Iterator[Related]:
        """Paginate the children of ``target_id`` (``depth`` > 1 adds grandchildren...).

        Going backwards (newest first) ``start`` is an exclusive upper bound and ``end``
        an exclusive lower one; going forwards the other way round, as in ``/messages``.
        """
        before, after = (end, start) if forward else (start, end)
        if depth <= 1:
            found: Iterator[Related] = self.direct(room_id, target_id, before=before,
                                                   after=after, reverse=not forward)
        else:
            found = self._descendants(room_id, target_id, depth, before, after, forward)
        for related in found:
            if rel_type is not None and related.rel_type != rel_type:
                continue
            if event_type is not None and related.event.type != event_type:
                continue
            yield related

    def _descendants(self, room_id: str, target_id: str, depth: int, before: int | None,
                     after: int | None, forward: bool) -> Iterator[Related]:
        seen: dict[int, Related] = {}
        frontier = [target_id]
        for _ in range(depth):
            children: list[str] = []
            for parent in frontier:
                for related in self.direct(room_id, parent):
                    if related.count not in seen and related.event.event_id != target_id:
                        seen[related.count] = related
                        children.append(related.event.event_id)
            frontier = children
            if not frontier:
                break
        for count in sorted(seen, reverse=not forward):
            if (after is not None and count <= after) or (before is not None and count >= before):
                continue
            yield seen[count]

    def thread(self, room_id: str, root_id: str, user_id: str) -> ThreadSummary | None:
        """A thread's size, latest event and whether ``user_id`` took part; None if empty."""
        root = self.events.get(root_id)
        participated = root is not None and root.sender == user_id
        count = 0
        latest: Event | None = None
        for related in self.direct(room_id, root_id, rel_types=frozenset({THREAD})):
            count += 1
            latest = related.event
            participated = participated or related.event.sender == user_id
        if latest is None:
            return None
        return ThreadSummary(count, latest, participated)

    def threads(self, room_id: str, user_id: str, *, before: int | None = None,
                participated_only: bool = False) -> Iterator[tuple[int, Event]]:
        """Thread roots of the room by latest activity, newest first, as (activity, root)."""
        room = self.short.room(room_id)
        if room is None or (before is not None and before <= 0):
            return
        prefix = u64_be(room)
        start = prefix + u64_be(before - 1) if before is not None else None
        for key, value in self.store.tree(THREADS_BY_ACTIVITY).iter(prefix, reverse=True,
                                                                   start=start):
            activity = from_u64_be(key[8:16])
            root = self.events.get(self.short.event_id(from_u64_be(value)))
            if root is None or root.room_id != room_id:
                continue
            summary = self.thread(room_id, root.event_id, user_id)
            if summary is None or (participated_only and not summary.participated):
                continue
            yield activity, root

    # --- bundled aggregations (an unsigned provider of EventServing) ----------------

    def unsigned(self, event: Event, user_id: str) -> dict[str, Any]:
        """``{"m.relations": ...}`` for ``event`` as ``user_id`` sees it, or nothing."""
        room_id = event.room_id
        if room_id is None or not self._has_relations(room_id, event.event_id):
            return {}
        wanted = frozenset({THREAD, REPLACE, REFERENCE} if self._nesting == 0
                           else {REPLACE, REFERENCE})
        replies: list[Event] = []
        edits: list[Event] = []
        references: list[str] = []
        for related in self.direct(room_id, event.event_id, rel_types=wanted):
            if related.rel_type == THREAD:
                replies.append(related.event)
            elif related.rel_type == REPLACE:
                if _valid_edit(event, related.event):
                    edits.append(related.event)
            elif related.rel_type == REFERENCE:
                references.append(related.event.event_id)
        bundle: dict[str, Any] = {}
        if replies:
            bundle[THREAD] = {
                "latest_event": self._serve_nested(replies[-1], user_id),
                "count": len(replies),
                "current_user_participated": event.sender == user_id
                or any(reply.sender == user_id for reply in replies),
            }
        if edits and not _is_redacted(event):
            # Since v1.7 (MSC3925): the whole most recent valid edit, and the content of
            # the original is left alone.
            latest_edit = max(edits, key=lambda e: (e.origin_server_ts, e.event_id))
            bundle[REPLACE] = self._serve_nested(latest_edit, user_id)
        if references:
            bundle[REFERENCE] = {"chunk": [{"event_id": e} for e in references]}
        return {"m.relations": bundle} if bundle else {}

    def _has_relations(self, room_id: str, event_id: str) -> bool:
        """A point read: most events have no relations, and a scan costs far more."""
        room, target = self.short.room(room_id), self.short.event(event_id)
        if room is None or target is None:
            return False
        return u64_be(room) + u64_be(target) in self.store.tree(TARGETS)

    def _serve_nested(self, event: Event, user_id: str) -> dict[str, Any]:
        self._nesting += 1
        try:
            return self.serving.client(event, user_id)
        finally:
            self._nesting -= 1


def _is_redacted(event: Event) -> bool:
    unsigned = event.pdu.get("unsigned")
    return isinstance(unsigned, Mapping) and "redacted_because" in unsigned


def _valid_edit(original: Event, edit: Event) -> bool:
    """The spec's conditions for ``edit`` to replace ``original`` ("Validity of ...")."""
    if edit.sender != original.sender or edit.type != original.type:
        return False
    if original.is_state or edit.is_state:
        return False
    own = relation_of(original.content)
    if own is not None and own.rel_type == REPLACE:
        return False  # edits of edits are not edits
    # Encrypted replacements carry m.new_content inside the ciphertext.
    return edit.type == "m.room.encrypted" or isinstance(edit.content.get("m.new_content"),
                                                         Mapping)
