"""Domain logic: one module per domain, wired together by :class:`Services`."""

from __future__ import annotations

import attrs
import trio

from conduwuit.config import Config
from conduwuit.store import Store

from .diagnostics import Diagnostics
from .first_run import FirstRun
from .users import Users


@attrs.define
class Services:
    """Every service of one server, built once the store is open.

    ``stopping`` is set when shutdown begins; long-polling code waits on it
    next to its own notifier so that it returns promptly instead of being cut
    off at the end of the grace period.
    """

    config: Config
    store: Store
    stopping: trio.Event
    diagnostics: Diagnostics
    users: Users
    first_run: FirstRun

    @classmethod
    def build(cls, config: Config, store: Store, stopping: trio.Event) -> Services:
        users = Users(store)
        return cls(
            config=config,
            store=store,
            stopping=stopping,
            diagnostics=Diagnostics(),
            users=users,
            first_run=FirstRun(store, users, config.allow_registration),
        )
