"""Client-Server API blueprints."""

from __future__ import annotations

from quart import Blueprint

from . import account, devices, login, register, versions

BLUEPRINTS: tuple[Blueprint, ...] = (
    versions.bp,
    register.bp,
    login.bp,
    account.bp,
    devices.bp,
)
