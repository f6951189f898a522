"""Per-connection state, kept in memory: what each sliding sync connection has been sent.

A connection is (user, device, ``conn_id``). Every response records a new immutable
:class:`ConnState` under a fresh position; the ``pos`` the client sends back names the
state it has processed, so a retried or re-sent request (same ``pos``) starts from the
same state and cannot lose or duplicate data. States older than the one a request names
are dropped (the client has moved past them).

A state maps each room to the stream position up to which the client holds it: the
room's timeline, state and metadata (``rooms``), and separately its room account data
and receipts. A room absent from a map was never sent (its next result is ``initial``).
A room that leaves every list keeps its position, so when it comes back only what
happened after that position is sent.

Nothing here is persisted: after a restart, or once the bounded LRU evicts a connection
(``MAX_CONNECTIONS_PER_USER`` per user, ``MAX_STATES`` positions per connection), its
``pos`` is answered with 400 ``M_UNKNOWN_POS`` and the client starts a new connection, as
MSC4186 lets a server expire connections.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

from conduwuit.errors import MatrixError

from .request import RoomConfig

MAX_CONNECTIONS_PER_USER = 32
MAX_STATES = 4
MAX_LAZY_MEMBERS = 100  # members remembered per room for $LAZY, as Synapse does


def unknown_pos() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN_POS", "Unknown or expired position; start a new "
                       "connection without pos")


@attrs.frozen
class ConnState:
    """What the client holds after processing the response that carried this state."""

    upto: int  # the stream position of that response
    rooms: dict[str, int] = attrs.field(factory=dict)
    configs: dict[str, RoomConfig] = attrs.field(factory=dict)
    lazy_members: dict[str, frozenset[str]] = attrs.field(factory=dict)
    account_data: dict[str, int] = attrs.field(factory=dict)
    receipts: dict[str, int] = attrs.field(factory=dict)
    list_counts: dict[str, int] = attrs.field(factory=dict)


@attrs.define
class Connection:
    next_position: int = 1
    states: OrderedDict[int, ConnState] = attrs.field(factory=OrderedDict)
    # (pos, request fingerprint) -> the response it got, for exact replies to retries
    last_answer: tuple[int, bytes, dict[str, Any]] | None = None

    def state_at(self, position: int) -> ConnState:
        state = self.states.get(position)
        if state is None:
            raise unknown_pos()
        # The client has processed ``position``: anything older is of no more use.
        for older in [p for p in self.states if p < position]:
            del self.states[older]
        return state

    def record(self, state: ConnState) -> int:
        position = self.next_position
        self.next_position += 1
        self.states[position] = state
        while len(self.states) > MAX_STATES:
            self.states.popitem(last=False)
        return position


@attrs.define
class Connections:
    """Every live connection, by user; at most ``MAX_CONNECTIONS_PER_USER`` each (LRU)."""

    _by_user: dict[str, OrderedDict[tuple[str, str], Connection]] = attrs.field(factory=dict)

    def get(self, user_id: str, device_id: str, conn_id: str) -> Connection | None:
        conns = self._by_user.get(user_id)
        if conns is None:
            return None
        conn = conns.get((device_id, conn_id))
        if conn is not None:
            conns.move_to_end((device_id, conn_id))
        return conn

    def start(self, user_id: str, device_id: str, conn_id: str) -> Connection:
        """A new connection (a request without ``pos``), replacing any of that name."""
        conns = self._by_user.setdefault(user_id, OrderedDict())
        conn = Connection()
        conns[(device_id, conn_id)] = conn
        conns.move_to_end((device_id, conn_id))
        while len(conns) > MAX_CONNECTIONS_PER_USER:
            conns.popitem(last=False)
        return conn

    def drop_device(self, user_id: str, device_id: str) -> None:
        conns = self._by_user.get(user_id)
        if conns is None:
            return
        for key in [k for k in conns if k[0] == device_id]:
            del conns[key]
        if not conns:
            del self._by_user[user_id]

    def count(self) -> int:
        return sum(len(c) for c in self._by_user.values())


def make_pos(position: int, upto: int) -> str:
    return f"{position}_{upto}"


def parse_pos(raw: object) -> tuple[int, int] | None:
    """(connection position, stream position) of a ``pos``; ``None`` when absent."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise MatrixError(400, "M_INVALID_PARAM", "pos must be a string")
    position, _, upto = raw.partition("_")
    if not (position.isascii() and position.isdigit() and upto.isascii() and upto.isdigit()
            and len(position) <= 18 and len(upto) <= 18):
        # A token of another server or version: the client should simply start over.
        raise unknown_pos()
    return int(position), int(upto)
