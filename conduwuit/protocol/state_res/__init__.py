"""State resolution: the room state before an event whose prev_events disagree.

``resolve`` picks the algorithm the room version names: v1 for room v1, v2 for rooms
v2-v11, v2.1 for room v12. It is pure: events come from the caller's ``fetch``, which
returns None for an event the server does not have (such events are skipped). Results
do not depend on the order of the state sets nor on the order events are fetched in.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..events import StateKey
from ..room_versions import RoomVersion, StateRes
from .common import EventCache, Fetch, IsRejected, StateMap, auth_chain
from .v1 import resolve_v1
from .v2 import resolve_v2

__all__ = ["Fetch", "IsRejected", "StateMap", "auth_chain", "resolve"]


def resolve(
    version: RoomVersion,
    state_sets: Sequence[StateMap],
    fetch: Fetch,
    *,
    is_rejected: IsRejected | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` (each (type, state_key) -> event id) into one state map.

    ``fetch`` must return the conflicted events and their auth chains (the unconflicted
    events too under v2, for the auth difference). ``is_rejected``, if given, says which
    events the server rejected: those are never used to authorise another event, whether
    they are one of its auth_events (spec: "Rejected auth events are deliberately
    excluded") or in the state being built (as Synapse does). Conflicted events that
    were rejected are still checked and may be accepted, as the spec says.
    """
    if not state_sets:
        return {}
    events = EventCache(fetch)
    if version.state_res is StateRes.V1:
        return resolve_v1(version, state_sets, events, is_rejected)
    return resolve_v2(version, state_sets, events, is_rejected)
