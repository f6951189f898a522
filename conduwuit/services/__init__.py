"""Domain logic: one module per domain, wired together by :class:`Services`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from conduwuit.config import Config
from conduwuit.store import Store

from .account_data import AccountData
from .accounts import Accounts
from .auth import Auth
from .devices import Devices
from .diagnostics import Diagnostics
from .e2ee import E2ee
from .federation import Federation
from .filters import Filters
from .first_run import FirstRun
from .login import Login
from .media import Media
from .media.federation_fetcher import FederationMediaFetcher
from .notifier import Notifier
from .passwords import Passwords
from .presence import Presence
from .profile import Profile
from .receipts import Receipts
from .registration import Registration
from .reports import Reports
from .rooms import Rooms
from .server_keys import ServerKeys
from .sync import Sync
from .typing import Typing
from .uia import Uia
from .unread import Unread
from .user_directory import UserDirectory
from .users import Users

# A background job a service needs: (family, name, coroutine function). The
# server's supervisor runs each in the family's named nursery (nursery/jobs.py).
Job = tuple[str, str, Callable[[], Awaitable[None]]]


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
    passwords: Passwords
    devices: Devices
    auth: Auth
    uia: Uia
    registration: Registration
    login: Login
    accounts: Accounts
    profile: Profile
    account_data: AccountData
    filters: Filters
    server_keys: ServerKeys
    rooms: Rooms
    notifier: Notifier
    sync: Sync
    e2ee: E2ee
    federation: Federation
    typing: Typing
    receipts: Receipts
    presence: Presence
    unread: Unread
    user_directory: UserDirectory
    reports: Reports
    media: Media
    jobs: list[Job] = attrs.field(factory=list)

    @classmethod
    def build(cls, config: Config, store: Store, stopping: trio.Event) -> Services:
        users = Users(store, config.server_name)
        first_run = FirstRun(store, users, config.allow_registration)
        passwords = Passwords()
        devices = Devices(store)
        uia = Uia()
        login = Login(config, users, devices, passwords)
        profile = Profile(store, users, config.server_name)
        registration = Registration(config, users, devices, passwords, uia, first_run)
        registration.on_registered.append(profile.set_displayname)
        accounts = Accounts(users, devices, passwords, login)
        accounts.on_deactivated.append(profile.clear)
        server_keys = ServerKeys(store, config.server_name)
        server_keys.load_or_create()
        rooms = Rooms.build(config, store, server_keys, users, profile)
        registration.on_registered.append(rooms.actions.auto_join)
        accounts.on_deactivated.append(rooms.actions.leave_all)
        notifier = Notifier(stopping)
        account_data = AccountData(store)
        account_data.on_change.append(lambda user_id, _room, _pos: notifier.notify_user(user_id))
        filters = Filters(store)
        sync = Sync(store, rooms, account_data, filters, notifier)
        rooms.timeline.on_event.append(sync.on_event)
        e2ee = E2ee.build(config, store, devices, rooms, notifier)
        e2ee.attach(sync, devices, accounts, rooms)
        jobs: list[Job] = []
        federation = Federation.build(config, store, server_keys, profile, rooms)
        jobs.append(("federation", "connections", federation.hold_connections))
        # typing, receipts, presence, unread counts: ephemeral data of /sync
        typing = Typing(store, rooms.membership, notifier, config.typing_client_timeout_min_s,
                        config.typing_client_timeout_max_s)
        unread = Unread(store, config.server_name, rooms.membership, rooms.state, rooms.events)
        receipts = Receipts(store, rooms.events, rooms.membership, account_data, notifier)
        receipts.on_read.append(unread.mark_read)
        presence = Presence(store, users, profile, rooms.membership, notifier,
                            config.allow_local_presence, config.presence_idle_timeout_s,
                            config.presence_offline_timeout_s)
        presence.reset_after_restart()
        rooms.timeline.index_writers.append(unread.index_event)
        rooms.timeline.on_event.extend((typing.on_event, presence.on_event))
        sync.ephemeral_sources.extend((typing.ephemeral, receipts.ephemeral))
        sync.presence_source = presence.source
        sync.unread_source = unread.counts
        media = Media(config, store, stopping)
        if config.allow_federation:
            media.remote = FederationMediaFetcher(federation.client, config.max_request_size)
        if config.media_startup_check:
            jobs.append(("media", "startup-check", media.startup_check))
        return cls(
            config=config,
            store=store,
            stopping=stopping,
            diagnostics=Diagnostics(),
            users=users,
            first_run=first_run,
            passwords=passwords,
            devices=devices,
            auth=Auth(users, devices),
            uia=uia,
            registration=registration,
            login=login,
            accounts=accounts,
            profile=profile,
            account_data=account_data,
            filters=filters,
            server_keys=server_keys,
            rooms=rooms,
            notifier=notifier,
            sync=sync,
            e2ee=e2ee,
            federation=federation,
            typing=typing,
            receipts=receipts,
            presence=presence,
            unread=unread,
            user_directory=UserDirectory(users, profile, rooms),
            reports=Reports(rooms, users),
            media=media,
            jobs=jobs,
        )
