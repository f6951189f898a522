"""Client-Server API blueprints."""

from __future__ import annotations

from quart import Blueprint

from . import (
    account,
    account_data,
    capabilities,
    devices,
    filters,
    login,
    membership,
    profile,
    register,
    rooms,
    sync,
    thirdparty,
    versions,
)

BLUEPRINTS: tuple[Blueprint, ...] = (
    versions.bp,
    register.bp,
    login.bp,
    account.bp,
    devices.bp,
    profile.bp,
    account_data.bp,
    filters.bp,
    capabilities.bp,
    thirdparty.bp,
    rooms.bp,
    membership.bp,
    sync.bp,
)
