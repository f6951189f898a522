"""Full-text search of room events (``POST /search``). Owns ``tokenids``.

The index is a plain inverted index written by :meth:`Search.stage` in each event's own
batch: every distinct lowercase word of an event's searchable text (the spec's keys:
``content.body`` of ``m.room.message``, ``content.name`` of ``m.room.name``,
``content.topic`` and the ``text/plain`` ``m.topic`` body of ``m.room.topic``) becomes one
key ``u64 shortroomid + word + 0xFF + u64 count``, so the events of a room holding a word
are one prefix scan. Encrypted rooms are not searched, as the spec says.

A query intersects, room by room, the counts under the prefix of each of its terms
(every term must occur, as whole words). Each candidate is then loaded from a snapshot
and checked again: redaction strips the words but leaves the keys, and the filter and the
``keys`` of the request need the event anyway. The rank is the share of the event's
words that are query terms. All of that runs in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from itertools import islice
from typing import Any

import attrs
import orjson
import trio

from conduwuit.errors import MatrixError
from conduwuit.protocol.events import Event
from conduwuit.protocol.filters import event_allowed, room_allowed
from conduwuit.store import SEP, Store, TreeView, WriteBatch, from_u64_be, u64_be

from .events_db import EventStore
from .membership import Membership
from .short import ShortIds
from .state import ENCRYPTION, RoomState, member_key

TREE = "tokenids"
SEARCH_KEYS = ("content.body", "content.name", "content.topic")
RANK, RECENT = "rank", "recent"

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script
MAX_WORD_LENGTH = 50  # longer "words" are hashes, keys or URLs: not worth indexing
# Candidates checked per room and query, most recent first; older ones are not found.
MAX_CANDIDATES = 10_000
DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def words(text: str) -> list[str]:
    """The lowercase words of ``text`` that the index knows, in order, repeats kept."""
    found = (w.lower() for w in _WORD.findall(text))
    return [w for w in found if len(w) <= MAX_WORD_LENGTH]


def searchable_words(event_type: str, content: Mapping[str, Any],
                     keys: Collection[str] = SEARCH_KEYS) -> list[str]:
    """The words of the event under ``keys`` (spec "Search Categories": room_events)."""
    texts: list[object] = []
    if event_type == "m.room.message" and "content.body" in keys:
        texts.append(content.get("body"))
    elif event_type == "m.room.name" and "content.name" in keys:
        texts.append(content.get("name"))
    elif event_type == "m.room.topic" and "content.topic" in keys:
        texts.append(content.get("topic"))
        texts.extend(_plain_topics(content.get("m.topic")))
    found: list[str] = []
    for text in dict.fromkeys(t for t in texts if isinstance(t, str)):
        found.extend(words(text))
    return found


def _plain_topics(topic: object) -> list[object]:
    """The ``text/plain`` bodies of an ``m.topic`` (mimetype defaults to text/plain)."""
    representations = topic.get("m.text") if isinstance(topic, Mapping) else None
    if not isinstance(representations, list):
        return []
    return [r.get("body") for r in representations
            if isinstance(r, Mapping) and r.get("mimetype", "text/plain") == "text/plain"]


@attrs.frozen
class Query:
    terms: tuple[str, ...]  # distinct, lowercase
    keys: frozenset[str]
    filter: dict[str, Any]  # a validated RoomEventFilter
    order_by: str = RANK
    limit: int = DEFAULT_LIMIT


@attrs.frozen
class Hit:
    rank: float
    count: int
    room_id: str
    event_id: str


@attrs.frozen
class Page:
    hits: list[Hit]
    total: int
    next_batch: str | None


@attrs.frozen
class Context:
    before: list[tuple[int, Event]]  # newest first
    after: list[tuple[int, Event]]  # oldest first
    start: int
    end: int


@attrs.define
class Search:
    store: Store
    short: ShortIds
    events: EventStore
    state: RoomState
    membership: Membership

    # --- writing (an index writer of the timeline) ---------------------------------

    def stage(self, batch: WriteBatch, event: Event, count: int) -> None:
        found = searchable_words(event.type, event.content)
        if not found or event.room_id is None:
            return
        room = self.short.room(event.room_id)
        assert room is not None
        for word in set(found):
            batch.put(TREE, u64_be(room) + word.encode() + SEP + u64_be(count), b"")

    # --- querying ------------------------------------------------------------------

    async def find(self, user_id: str, query: Query, token: str | None) -> Page:
        """One page of the events of the user's joined rooms that match ``query``."""
        position = parse_token(token, query.order_by)
        if not query.terms:
            return Page([], 0, None)
        rooms: list[tuple[str, int]] = []
        for room_id in self.membership.joined_rooms(user_id):
            short = self.short.room(room_id)
            if short is None or not room_allowed(query.filter, room_id):
                continue
            if self.state.event_id(room_id, ENCRYPTION) is None:
                rooms.append((room_id, short))
        hits = await trio.to_thread.run_sync(self._collect, rooms, query)
        if query.order_by == RECENT:
            hits.sort(key=lambda h: -h.count)
            left = hits if position is None else [h for h in hits if h.count < position]
            page = left[:query.limit]
            next_batch = f"{RECENT}.{page[-1].count}" if len(left) > query.limit else None
        else:
            hits.sort(key=lambda h: (-h.rank, -h.count))
            offset = position or 0
            page = hits[offset:offset + query.limit]
            more = len(hits) > offset + query.limit
            next_batch = f"{RANK}.{offset + query.limit}" if more else None
        return Page(page, len(hits), next_batch)

    def _collect(self, rooms: list[tuple[str, int]], query: Query) -> list[Hit]:
        """Every checked hit in ``rooms`` (runs in a worker thread, on a snapshot)."""
        hits: list[Hit] = []
        with self.store.snapshot() as snap:
            postings, pdus = snap.tree(TREE), snap.tree("pduid_pdu")
            for room_id, room in rooms:
                for count in _candidates(postings, room, query.terms):
                    hit = _check(pdus.get(u64_be(room) + u64_be(count)), room_id, count, query)
                    if hit is not None:
                        hits.append(hit)
        return hits

    # --- what is shown around a result ---------------------------------------------

    def context(self, room_id: str, count: int, before: int, after: int) -> Context:
        earlier = list(islice(self.events.timeline(room_id, before=count, reverse=True), before))
        later = list(islice(self.events.timeline(room_id, after=count), after))
        start = (earlier[-1][0] if earlier else count) - 1  # just before the oldest shown
        end = later[-1][0] if later else count
        return Context(earlier, later, start, end)

    def profiles(self, event_id: str, user_ids: Collection[str]) -> dict[str, dict[str, str]]:
        """Display names and avatars of ``user_ids`` as of just after ``event_id``."""
        state = self.state.after(event_id) or {}
        found: dict[str, dict[str, str]] = {}
        for user_id in user_ids:
            member_id = state.get(member_key(user_id))
            member = self.events.get(member_id) if member_id is not None else None
            if member is None:
                continue
            found[user_id] = {key: value for key in ("displayname", "avatar_url")
                              if isinstance(value := member.content.get(key), str)}
        return found


def parse_token(token: str | None, order_by: str) -> int | None:
    """A ``next_batch`` of ours: ``rank.<offset>`` or ``recent.<count>``."""
    if token is None or token == "":
        return None
    kind, _, number = token.partition(".")
    if kind != order_by or not number.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid next_batch token for this search")
    return int(number)


def _candidates(postings: TreeView, room: int, terms: tuple[str, ...]) -> list[int]:
    """Counts of the room's events holding every term, most recent first."""
    found: set[int] | None = None
    # Rarest-first would scan less; the terms of one query are few, so keep it simple.
    for term in terms:
        prefix = u64_be(room) + term.encode() + SEP
        counts = {from_u64_be(key[len(prefix):]) for key in postings.keys(prefix)}
        found = counts if found is None else found & counts
        if not found:
            return []
    return sorted(found or (), reverse=True)[:MAX_CANDIDATES]


def _check(raw: bytes | None, room_id: str, count: int, query: Query) -> Hit | None:
    if raw is None:
        return None
    pdu: dict[str, Any] = orjson.loads(raw)
    event_id, event_type, sender = pdu.get("_event_id"), pdu.get("type"), pdu.get("sender")
    content = pdu.get("content")
    if not (isinstance(event_id, str) and isinstance(event_type, str)
            and isinstance(sender, str) and isinstance(content, dict)):
        return None
    if not event_allowed(query.filter, event_type, sender, room_id,
                         contains_url=isinstance(content.get("url"), str)):
        return None
    found = searchable_words(event_type, content, query.keys)
    if not found or any(term not in found for term in query.terms):
        return None  # redacted since indexed, or matched in a key not asked for
    rank = sum(found.count(term) for term in query.terms) / len(found)
    return Hit(rank, count, room_id, event_id)
