"""Serving events to clients: the client format of a stored PDU."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from conduwuit.protocol.events import Event

# Fields of the federation PDU that clients never see.
_FEDERATION_ONLY = ("auth_events", "prev_events", "hashes", "signatures", "depth", "origin",
                    "prev_state", "unsigned", "membership")


def client_event(event: Event, *, unsigned: Mapping[str, Any] | None = None,
                 include_room_id: bool = True) -> dict[str, Any]:
    """The ``ClientEvent`` form: ids, content, sender, ts, and our ``unsigned`` data."""
    body = {k: v for k, v in event.pdu.items() if k not in _FEDERATION_ONLY}
    body["event_id"] = event.event_id
    if event.room_id is None or not include_room_id:
        body.pop("room_id", None)
    else:
        body["room_id"] = event.room_id  # v12 create events carry none in the PDU
    if event.redacts is not None:
        # v11 moved `redacts` into content; clients still read the top-level copy too.
        body["redacts"] = event.redacts
    extra = dict(unsigned or {})
    extra.setdefault("age", max(0, int(time.time() * 1000) - event.origin_server_ts))
    body["unsigned"] = extra
    return body


def stripped_state(event: Event) -> dict[str, Any]:
    """The form of state shown with invites and knocks."""
    return {"type": event.type, "state_key": event.state_key or "", "content": dict(event.content),
            "sender": event.sender}
