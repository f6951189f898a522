"""Send-to-device messages: an inbox per device, drained through ``/sync``.

Each message is stored at its own stream position under the recipient device. A sync
delivers those with ``since < position <= upto``; a later sync whose ``since`` is past
them acknowledges them, and they are deleted then (not before, so a lost response
is simply delivered again). A ``(user, device, txn id)`` is sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from conduwuit.store import SEP, Store, from_u64_be, join, u64_be

from ..devices import Devices
from ..notifier import Notifier
from .common import bad_json, server_of

log = logging.getLogger(__name__)

INBOX = "todeviceid_event"
TXNS = "userdevicetxnid_todevice"
ALL_DEVICES = "*"

# Called with (sender, sender_device, event type, txn_id, messages) for the messages
# to users of other servers: the federation sender queues them.
RemoteHook = Callable[[str, str | None, str, str, dict[str, dict[str, Any]]], None]


@attrs.define
class ToDevice:
    store: Store
    server_name: str
    devices: Devices
    notifier: Notifier
    on_remote: list[RemoteHook] = attrs.field(factory=list)

    def send(self, sender: str, sender_device: str | None, event_type: str, txn_id: str,
             messages: object) -> None:
        """Queue the messages of one ``PUT /sendToDevice``; a repeated txn id does nothing."""
        if not isinstance(messages, Mapping) or not all(
                isinstance(devices, Mapping) and all(isinstance(c, Mapping)
                                                     for c in devices.values())
                for devices in messages.values()):
            raise bad_json("'messages' must map user ids to device ids to contents")
        txn_key = join(sender, sender_device or "", txn_id)
        txns = self.store.tree(TXNS)
        if txn_key in txns:
            return
        remote = {user_id: {device_id: dict(content) for device_id, content in by_device.items()}
                  for user_id, by_device in messages.items()
                  if server_of(user_id) != self.server_name}
        if remote:
            # Queued (durably) before the txn id is recorded: a crash in between means
            # the client's retry queues them again, with the same message id.
            for hook in self.on_remote:
                hook(sender, sender_device, event_type, txn_id, remote)
            if not self.on_remote:
                log.info("to-device %s from %s to %d remote user(s) dropped: no federation "
                         "sender", event_type, sender, len(remote))
        recipients: set[str] = set()
        count = self.store.next_count()
        sequence = 0
        with self.store.batch() as batch:
            for user_id, by_device in messages.items():
                if user_id in remote:
                    continue
                for device_id, content in by_device.items():
                    targets = ([d["device_id"] for d in self.devices.for_user(user_id)]
                               if device_id == ALL_DEVICES else
                               [device_id] if self.devices.exists(user_id, device_id) else [])
                    event = orjson.dumps({"sender": sender, "type": event_type,
                                          "content": dict(content)})
                    for target in targets:
                        sequence += 1
                        batch.put(INBOX, join(user_id, target) + SEP + u64_be(count)
                                  + sequence.to_bytes(4, "big"), event)
                        recipients.add(user_id)
            batch.put(TXNS, txn_key, b"")
        self.notifier.notify_users(recipients)

    def source(self, user_id: str, device_id: str | None, since: int,
               upto: int) -> list[dict[str, Any]]:
        """Sync hook: the device's messages after ``since``; those up to it are done."""
        if device_id is None:
            return []
        prefix = join(user_id, device_id) + SEP
        tree = self.store.tree(INBOX)
        out: list[dict[str, Any]] = []
        acknowledged: list[bytes] = []
        for key, raw in tree.iter(prefix):
            count = from_u64_be(key[len(prefix):len(prefix) + 8])
            if count <= since:
                acknowledged.append(key)
            elif count <= upto:
                out.append(orjson.loads(raw))
            else:
                break
        if acknowledged:
            with self.store.batch() as batch:
                for key in acknowledged:
                    batch.delete(INBOX, key)
        return out

    def pending(self, user_id: str, device_id: str) -> int:
        return self.store.tree(INBOX).count(join(user_id, device_id) + SEP)

    def remove_device(self, user_id: str, device_id: str) -> None:
        with self.store.batch() as batch:
            for tree in (INBOX, TXNS):
                for key in self.store.tree(tree).keys(join(user_id, device_id) + SEP):
                    batch.delete(tree, key)
