"""Domain logic: one module per domain, wired together by :class:`Services`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from conduwuit.config import Config
from conduwuit.store import Store

from .account_data import AccountData
from .accounts import Accounts
from .admin_room import AdminRoom
from .appservices import Appservices
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
from .push import Push
from .receipts import Receipts
from .registration import Registration
from .reports import Reports
from .rooms import Rooms
from .rooms.profile_updates import ProfileUpdates
from .server_keys import ServerKeys
from .sliding_sync import SlidingSync
from .sync import Sync
from .turn import Turn
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
    sliding_sync: SlidingSync
    e2ee: E2ee
    federation: Federation
    typing: Typing
    receipts: Receipts
    presence: Presence
    unread: Unread
    push: Push
    user_directory: UserDirectory
    reports: Reports
    media: Media
    turn: Turn
    admin_room: AdminRoom
    appservices: Appservices
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
        profile.on_profile_change.append(
            ProfileUpdates(rooms.membership, rooms.state, rooms.timeline).on_profile_change)
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
        # membership in rooms of other servers, behind the local membership actions
        rooms.actions.remote = federation.membership
        federation.membership.on_change.append(notifier.notify_user)
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
        rooms.timeline.on_event.append(unread.committed)
        # push rules, notifications, pushers: the push/gateway job delivers (server.py)
        push = Push.build(config, store, account_data, rooms, unread)
        jobs.append(("push", "notification-prune", push.notifications.prune_forever))
        devices.on_device_removed.append(push.pushers.remove_device)
        accounts.on_deactivated.append(push.pushers.remove_user)
        rooms.timeline.on_event.extend((typing.on_event, presence.on_event))
        sync.ephemeral_sources.extend((typing.ephemeral, receipts.ephemeral))
        sync.presence_source = presence.source
        sync.unread_source = unread.counts
        # simplified sliding sync (MSC4186) over the same sources as /sync
        sliding_sync = SlidingSync.build(store, rooms, sync, account_data, notifier, receipts,
                                         typing)
        devices.on_device_removed.append(sliding_sync.device_removed)
        # outbound federation: local events and EDUs queue for the sender/federation job
        federation.sender.attach(timeline=rooms.timeline, typing=typing, receipts=receipts,
                                 presence=presence, e2ee=e2ee, devices=devices)
        # inbound federation: joins/invites from other servers, /send and its EDUs
        federation.attach_inbound(store, server_keys, users, rooms, notifier, typing, receipts,
                                  presence, e2ee)
        jobs.append(("federation", "txn-prune", federation.inbound.prune_transactions_forever))
        media = Media(config, store, stopping)
        if config.allow_federation:
            media.remote = FederationMediaFetcher(federation.client, config.max_request_size)
        if config.media_startup_check:
            jobs.append(("media", "startup-check", media.startup_check))
        # the admin room: created for the first admin; its commands run in the
        # admin/commands job (server.py), never in the timeline's write path
        admin_room = AdminRoom(config, store, users, profile, rooms, account_data, accounts)
        registration.on_registered.append(admin_room.on_registered)
        rooms.timeline.on_event.append(admin_room.on_event)
        if config.auto_deactivate_banned_room_attempts:
            rooms.moderation.on_banned_attempt.append(admin_room.deactivate_banned_attempt)
        # application services: registrations, identity assertion, exclusive namespaces;
        # the appservice/transactions job (server.py) pushes what their sender queues
        appservices = Appservices.build(config, store, users, devices, rooms)
        appservices.attach(typing=typing, receipts=receipts, presence=presence,
                           registration=registration, login=login)
        jobs.append(("appservice", "connections", appservices.hold_connections))
        return cls(
            config=config,
            store=store,
            stopping=stopping,
            diagnostics=Diagnostics(),
            users=users,
            first_run=first_run,
            passwords=passwords,
            devices=devices,
            auth=Auth(users, devices, appservice_lookup=appservices.authenticate),
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
            sliding_sync=sliding_sync,
            e2ee=e2ee,
            federation=federation,
            typing=typing,
            receipts=receipts,
            presence=presence,
            unread=unread,
            push=push,
            user_directory=UserDirectory(users, profile, rooms),
            reports=Reports(rooms, users),
            media=media,
            turn=Turn.from_config(config),
            admin_room=admin_room,
            appservices=appservices,
            jobs=jobs,
        )
