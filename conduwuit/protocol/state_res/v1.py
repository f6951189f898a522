"""State resolution v1 (room version 1). Spec: content/rooms/v1.md "State resolution".

Known to reset state (the reason v2 exists); kept exact so that v1 rooms resolve the
way every other server resolves them. Where the spec is silent we do what Synapse does:

* Conflicts on several member keys (or several "other" keys) are each resolved against
  the same R, the one from the previous pass, so the result does not depend on the
  order the keys are visited in.
* If no event of an "other" key passes auth in R, the last one in the ordering (lowest
  depth, then highest sha1) is kept rather than the key dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..events import Event, StateKey
from ..room_versions import RoomVersion
from .common import (
    JOIN_RULES_TYPE,
    MEMBER_TYPE,
    POWER_LEVELS,
    Authoriser,
    EventCache,
    IsRejected,
    StateMap,
    split_v1,
)


def resolve_v1(
    version: RoomVersion,
    state_sets: Sequence[StateMap],
    events: EventCache,
    is_rejected: IsRejected | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` with the original algorithm, in its four passes."""
    unconflicted, conflicted = split_v1(state_sets)
    resolved = dict(unconflicted)
    candidates = _fetch_conflicting(conflicted, events, resolved)
    authoriser = Authoriser(version, events, is_rejected)

    # Pass 1: m.room.power_levels.
    if POWER_LEVELS in candidates:
        resolved[POWER_LEVELS] = _resolve_auth_key(
            POWER_LEVELS, candidates.pop(POWER_LEVELS), resolved, authoriser
        )
    # Passes 2 and 3: m.room.join_rules, then m.room.member.
    for event_type in (JOIN_RULES_TYPE, MEMBER_TYPE):
        keys = [key for key in candidates if key[0] == event_type]
        winners = {
            key: _resolve_auth_key(key, candidates.pop(key), resolved, authoriser) for key in keys
        }
        resolved.update(winners)
    # Pass 4: everything else.
    others = {key: _resolve_other(found, resolved, authoriser) for key, found in candidates.items()}
    resolved.update(others)
    return resolved


def _fetch_conflicting(
    conflicted: dict[StateKey, set[str]], events: EventCache, resolved: dict[StateKey, str]
) -> dict[StateKey, list[Event]]:
    """The conflicting events we have, per key. Missing ones are skipped; a key left with
    a single event is no longer in conflict and goes straight into ``resolved``."""
    candidates: dict[StateKey, list[Event]] = {}
    for key, event_ids in conflicted.items():
        found = [event for event in map(events.get, event_ids) if event is not None]
        if len(found) == 1:
            resolved[key] = found[0].event_id
        elif found:
            candidates[key] = found
    return candidates


def _sha1(event_id: str) -> int:
    return int.from_bytes(hashlib.sha1(event_id.encode("utf-8")).digest(), "big")


def _resolve_auth_key(
    key: StateKey, found: list[Event], resolved: dict[StateKey, str], authoriser: Authoriser
) -> str:
    """The power levels / join rules / member pass: sort by ascending depth then
    descending sha1(event_id); take the first; keep replacing it by the next event while
    that event is allowed in R (updated with the winner so far); stop at the first one
    that is not."""
    ordered = sorted(found, key=lambda event: (event.depth, -_sha1(event.event_id)))
    state = dict(resolved)
    state[key] = ordered[0].event_id
    for event in ordered[1:]:
        if not _allowed_in(event, state, authoriser):
            break
        state[key] = event.event_id
    return state[key]


def _resolve_other(
    found: list[Event], resolved: dict[StateKey, str], authoriser: Authoriser
) -> str:
    """Any other key: the event with the highest depth, then lowest sha1(event_id), that
    passes auth in R."""
    ordered = sorted(found, key=lambda event: (-event.depth, _sha1(event.event_id)))
    for event in ordered:
        if _allowed_in(event, resolved, authoriser):
            return event.event_id
    return ordered[-1].event_id


def _allowed_in(event: Event, state: dict[StateKey, str], authoriser: Authoriser) -> bool:
    """Would the auth rules allow ``event`` in a room whose state is ``state``?"""
    return authoriser.allowed(event, authoriser.state_events(state, authoriser.auth_types(event)))
