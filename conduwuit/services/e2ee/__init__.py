"""End-to-end encryption: device and cross-signing keys, to-device messages, key backups.

The server only stores and relays: it checks the signatures it can check, hands out
one-time keys once, tells clients whose device lists changed and delivers to-device
messages, but never sees a message key. :meth:`E2ee.attach` plugs the parts into the
sync hooks, the device and account lifecycle and the timeline.
"""

from __future__ import annotations

import logging

import attrs

from conduwuit.config import Config
from conduwuit.store import Store

from ..accounts import Accounts
from ..devices import Devices
from ..notifier import Notifier
from ..rooms import Rooms
from ..sync import Sync
from .backup import KeyBackup
from .cross_signing import CrossSigning
from .device_lists import DeviceLists
from .keys import DeviceKeys
from .to_device import ToDevice

__all__ = ["CrossSigning", "DeviceKeys", "DeviceLists", "E2ee", "KeyBackup", "ToDevice"]

log = logging.getLogger(__name__)


@attrs.define
class E2ee:
    config: Config
    device_lists: DeviceLists
    keys: DeviceKeys
    cross_signing: CrossSigning
    to_device: ToDevice
    backup: KeyBackup

    @classmethod
    def build(cls, config: Config, store: Store, devices: Devices, rooms: Rooms,
              notifier: Notifier) -> E2ee:
        device_lists = DeviceLists(store, rooms.membership, notifier)
        keys = DeviceKeys(store, config.server_name, devices, device_lists)
        return cls(
            config=config,
            device_lists=device_lists,
            keys=keys,
            cross_signing=CrossSigning(store, keys, device_lists),
            to_device=ToDevice(store, config.server_name, devices, notifier),
            backup=KeyBackup(store),
        )

    def attach(self, sync: Sync, devices: Devices, accounts: Accounts, rooms: Rooms) -> None:
        sync.to_device_source = self.to_device.source
        sync.device_list_source = self.device_lists.changes
        sync.key_count_source = self.keys.one_time_key_counts
        sync.fallback_source = self.keys.unused_fallback_algorithms
        devices.on_device_removed.append(self.device_removed)
        accounts.on_deactivated.append(self.deactivated)
        rooms.timeline.index_writers.append(self.device_lists.index_membership)

    def device_removed(self, user_id: str, device_id: str) -> None:
        """A deleted device takes its keys and its undelivered messages with it."""
        self.to_device.remove_device(user_id, device_id)
        if self.keys.remove_device(user_id, device_id):
            self.device_lists.keys_changed(user_id)

    async def deactivated(self, user_id: str) -> None:
        """Cross-signing keys, signatures and backups go; others are told."""
        for device_id in list(self.keys.device_keys_of(user_id)):
            self.device_removed(user_id, device_id)
        self.cross_signing.remove_user(user_id)
        self.backup.delete_user(user_id)
        self.device_lists.keys_changed(user_id)
        log.info("Removed the end-to-end encryption keys of %s", user_id)
