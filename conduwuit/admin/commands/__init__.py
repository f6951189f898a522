"""The command tree: one module per group, assembled under the root."""

from __future__ import annotations

from ..tree import Group
from . import appservices, debug, federation, media, rooms, server, users

ROOT = Group("", "conduwuit admin commands. Run `!admin <group> --help` for a group's commands.")
for _module in (users, rooms, federation, media, server, debug, appservices):
    ROOT.add(_module.group)
ROOT.finish()

__all__ = ["ROOT"]
