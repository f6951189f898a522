"""Domain logic: one module per domain, wired together by :class:`Services`."""

from __future__ import annotations

import attrs
import trio

from conduwuit.config import Config
from conduwuit.store import Store

from .account_data import AccountData
from .accounts import Accounts
from .auth import Auth
from .devices import Devices
from .diagnostics import Diagnostics
from .filters import Filters
from .first_run import FirstRun
from .login import Login
from .passwords import Passwords
from .profile import Profile
from .registration import Registration
from .uia import Uia
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
            account_data=AccountData(store),
            filters=Filters(store),
        )
