"""Push: users' push rules, recorded notifications, pushers and push gateways.

* ``rules``: ``/pushrules`` CRUD over ``m.push_rules`` account data, and each user's
  compiled rules for the evaluation in ``services/unread.py`` (cached, dropped on change)
* ``notifications``: the records ``GET /notifications`` pages through
* ``pushers``: ``GET /pushers``, ``POST /pushers/set``
* ``gateway``: the notify payloads and their delivery; the ``push/gateway`` job
  (``nursery/pusher.py``) drives it
"""

from __future__ import annotations

import attrs

from conduwuit.config import Config
from conduwuit.store import Store

from ..account_data import AccountData
from ..rooms import Rooms
from ..unread import Unread
from .gateway import PushGateway
from .notifications import Notifications
from .pushers import Pushers
from .rules import PushRules


@attrs.define
class Push:
    rules: PushRules
    pushers: Pushers
    notifications: Notifications
    gateway: PushGateway

    @classmethod
    def build(cls, config: Config, store: Store, account_data: AccountData, rooms: Rooms,
              unread: Unread) -> Push:
        """Build and hook into the unread counter, account data and the timeline."""
        rules = PushRules(account_data)
        account_data.on_change.append(rules.on_account_data)
        unread.rules = rules
        pushers = Pushers(store)
        notifications = Notifications(store, rooms.events, rooms.serving, unread.is_unread)
        gateway = PushGateway(config, pushers, rooms.state, unread.total_unread)
        unread.on_notified.extend((notifications.stage, gateway.stage))
        rooms.timeline.on_event.append(gateway.committed)
        return cls(rules, pushers, notifications, gateway)
