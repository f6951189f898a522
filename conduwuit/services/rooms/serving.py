"""How an event looks to one requester: the client format plus per-reader ``unsigned``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from conduwuit.protocol.events import Event
from conduwuit.store import SEP, Store

from .events_db import EventStore
from .format import client_event

# Adds to an event's ``unsigned`` for a reader: bundled relations, and so on.
# Called as provider(event, user_id) -> dict of unsigned fields (may be empty).
UnsignedProvider = Callable[[Event, str], dict[str, Any]]


@attrs.define
class EventServing:
    store: Store
    events: EventStore
    unsigned_providers: list[UnsignedProvider] = attrs.field(factory=list)

    def client(self, event: Event, user_id: str, device_id: str | None = None, *,
               include_room_id: bool = True) -> dict[str, Any]:
        unsigned: dict[str, Any] = {}
        if event.sender == user_id and device_id is not None:
            txn = self._transaction_id(event.event_id, device_id)
            if txn is not None:
                unsigned["transaction_id"] = txn
        because = event.pdu.get("unsigned", {}).get("redacted_because") \
            if isinstance(event.pdu.get("unsigned"), dict) else None
        if isinstance(because, str):
            redaction = self.events.get(because)
            if redaction is not None:
                unsigned["redacted_because"] = client_event(redaction)
        for provider in self.unsigned_providers:
            unsigned.update(provider(event, user_id))
        return client_event(event, unsigned=unsigned, include_room_id=include_room_id)

    def _transaction_id(self, event_id: str, device_id: str) -> str | None:
        raw = self.store.tree("eventid_txnid").get(event_id.encode())
        if raw is None:
            return None
        device, _, txn_id = raw.partition(SEP)
        return txn_id.decode() if device.decode() == device_id else None
