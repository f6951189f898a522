"""The public room directory of this server."""

from __future__ import annotations

import attrs

from conduwuit.store import Store


@attrs.define
class Directory:
    store: Store

    def publish(self, room_id: str, public: bool) -> None:
        tree = self.store.tree("publicroomids")
        if public:
            tree.put(room_id.encode(), b"")
        else:
            tree.delete(room_id.encode())

    def is_public(self, room_id: str) -> bool:
        return room_id.encode() in self.store.tree("publicroomids")

    def public_rooms(self) -> list[str]:
        return [k.decode() for k in self.store.tree("publicroomids").keys(b"")]
