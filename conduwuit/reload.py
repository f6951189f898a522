"""Config reload: what may change while the server runs, and how it is applied.

Services are built with one :class:`LiveConfig`, a shared holder that looks
like a :class:`Config` and forwards every attribute to the config in force.
A reload swaps its target, so the many services that read ``self.config.x``
when they act see the new value at once, with no service rebuilt and no
connection dropped. A few services compile or copy values when they are
built; :data:`_REDERIVE` recomputes those from the new config.

Only the options in :data:`RELOADABLE` change at run time. Any other option
that differs in the new file keeps its old value with a "needs a restart"
warning (listeners, database, caches, timeouts baked into HTTP clients...).
A changed ``server_name`` refuses the whole reload: that file belongs to
another server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs

from conduwuit.config import Config
from conduwuit.log import LogFilter, log_control

if TYPE_CHECKING:
    from conduwuit.services import Services

log = logging.getLogger(__name__)


class LiveConfig:
    """The config in force, shared by every service; :meth:`swap` replaces it atomically.

    Each :class:`Config` stays frozen; only which one is current changes.
    """

    __slots__ = ("_current",)

    def __init__(self, config: Config) -> None:
        object.__setattr__(self, "_current", config)

    @property
    def current(self) -> Config:
        return cast(Config, object.__getattribute__(self, "_current"))

    def swap(self, config: Config) -> None:
        object.__setattr__(self, "_current", config)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_current"), name)

    def __setattr__(self, name: str, value: object) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __repr__(self) -> str:
        return f"LiveConfig({self.current.server_name!r})"

    def as_config(self) -> Config:
        """This holder typed as the Config it stands for, to hand to the services."""
        return cast(Config, self)


def current(config: Config) -> Config:
    """The plain Config behind ``config`` (itself, or a LiveConfig's target)."""
    return config.current if isinstance(config, LiveConfig) else config


# Options read by the services each time they act, or re-derived below.
RELOADABLE: frozenset[str] = frozenset({
    # logging
    "log",
    # registration
    "allow_registration", "registration_token", "registration_token_file",
    "yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse",
    "allow_guest_registration", "log_guest_registrations", "allow_guests_auto_join_rooms",
    "new_user_displayname_suffix", "auto_join_rooms",
    # rooms
    "default_room_version", "allow_unstable_room_versions", "allow_room_creation",
    "allow_encryption", "forget_forced_upon_leave",
    # moderation lists and switches
    "forbidden_usernames", "forbidden_alias_names", "forbidden_remote_server_names",
    "forbidden_remote_room_directory_server_names", "prevent_media_downloads_from",
    "block_non_admin_invites", "lockdown_public_room_directory",
    "allow_public_room_directory_without_auth", "allow_public_room_directory_over_federation",
    "require_auth_for_profile_requests",
    # presence, typing, receipts
    "allow_local_presence", "allow_incoming_presence", "allow_outgoing_presence",
    "presence_idle_timeout_s", "presence_offline_timeout_s",
    "allow_incoming_typing", "allow_outgoing_typing", "typing_federation_timeout_s",
    "typing_client_timeout_min_s", "typing_client_timeout_max_s",
    "allow_incoming_read_receipts", "allow_outgoing_read_receipts",
    # federation sender
    "sender_retry_backoff_limit", "sender_timeout",
    # TURN
    "turn_uris", "turn_secret", "turn_secret_file", "turn_username", "turn_password",
    "turn_ttl", "turn_allow_guests",
    # media and URL previews
    "allow_legacy_media", "freeze_legacy_media", "prune_missing_media",
    "url_preview_domain_contains_allowlist", "url_preview_domain_explicit_allowlist",
    "url_preview_domain_explicit_denylist", "url_preview_url_contains_allowlist",
    "url_preview_check_root_domain", "url_preview_max_spider_size",
    # the [global.well_known] table, answered from the live config
    "well_known",
    # read by the server when the signal arrives
    "config_reload_signal", "admin_signal_execute",
})

# A different value here means the file is not this server's: nothing is applied.
REFUSED: frozenset[str] = frozenset({"server_name"})


class ReloadRefused(Exception):
    """The new config is not applied at all; the message says why, in one line."""


@attrs.frozen
class ReloadResult:
    """What a reload did, for the log line and the admin command's answer."""

    source: str
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        parts = [f"config reloaded from {self.source}"]
        parts.append("changed: " + ", ".join(self.applied) if self.applied else "no change")
        if self.needs_restart:
            parts.append("kept until a restart: " + ", ".join(self.needs_restart))
        return "; ".join(parts)


@attrs.frozen
class ReloadPlan:
    """The config to put in force, and which of the changed options it takes."""

    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan(old: Config, new: Config) -> ReloadPlan:
    """Diff two configs; the result keeps every restart-only option at its old value.

    Raises :class:`ReloadRefused` for a changed ``server_name`` or an invalid log filter.
    """
    changed = [a.name for a in attrs.fields(Config) if getattr(old, a.name) != getattr(new, a.name)]
    for name in changed:
        if name in REFUSED:
            raise ReloadRefused(
                f"{name} cannot change while the server runs "
                f"({getattr(old, name)!r} -> {getattr(new, name)!r}); nothing was reloaded"
            )
    applied = tuple(n for n in changed if n in RELOADABLE)
    needs_restart = tuple(n for n in changed if n not in RELOADABLE)
    if "log" in applied:
        try:
            LogFilter.parse(new.log)
        except ValueError as exc:
            raise ReloadRefused(f"{exc}; nothing was reloaded") from None
    config = attrs.evolve(old, **{name: getattr(new, name) for name in applied})
    return ReloadPlan(config, applied, needs_restart)


def apply(services: Services, live: LiveConfig, reload: ReloadPlan) -> None:
    """Put ``reload.config`` in force: swap the shared config, re-derive copied values.

    Runs with no ``await``: no request sees half of it.
    """
    if "log" in reload.applied:
        log_control.set_filter(reload.config.log)
    live.swap(reload.config)
    done: set[Callable[[Services, Config], None]] = set()
    for name in reload.applied:
        for rederive in _REDERIVE.get(name, ()):
            if rederive not in done:
                rederive(services, reload.config)
                done.add(rederive)
    # Always: the shared secret may live in turn_secret_file, whose content may have changed.
    _turn(services, reload.config)


# --- values the services copy or compile when they are built ---------------------------------


def _compile(patterns: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


def _first_run(services: Services, config: Config) -> None:
    services.first_run.allow_registration = config.allow_registration


def _aliases(services: Services, config: Config) -> None:
    services.rooms.aliases.forbidden_names = list(config.forbidden_alias_names)


def _federation_client(services: Services, config: Config) -> None:
    # FederationClient compiles forbidden_remote_server_names once, in __attrs_post_init__.
    services.federation.client._forbidden = _compile(config.forbidden_remote_server_names)


def _media_blocked(services: Services, config: Config) -> None:
    # Media compiles both lists into one when it is built.
    services.media._blocked = _compile([*config.prevent_media_downloads_from,
                                        *config.forbidden_remote_server_names])


def _presence(services: Services, config: Config) -> None:
    presence = services.presence
    presence.enabled = config.allow_local_presence
    presence.idle_timeout_s = config.presence_idle_timeout_s
    presence.offline_timeout_s = config.presence_offline_timeout_s


def _typing(services: Services, config: Config) -> None:
    services.typing.min_timeout_s = config.typing_client_timeout_min_s
    services.typing.max_timeout_s = config.typing_client_timeout_max_s


def _previews(services: Services, config: Config) -> None:
    from conduwuit.services.media.preview import PreviewPolicy

    previews = services.media.previews
    previews.policy = PreviewPolicy.from_config(config)
    previews.max_spider_size = config.url_preview_max_spider_size


def _turn(services: Services, config: Config) -> None:
    from conduwuit.services.turn import Turn

    services.turn = Turn.from_config(config)


_REDERIVE: dict[str, tuple[Callable[[Services, Config], None], ...]] = {
    "allow_registration": (_first_run,),
    "forbidden_alias_names": (_aliases,),
    "forbidden_remote_server_names": (_federation_client, _media_blocked),
    "prevent_media_downloads_from": (_media_blocked,),
    "allow_local_presence": (_presence,),
    "presence_idle_timeout_s": (_presence,),
    "presence_offline_timeout_s": (_presence,),
    "typing_client_timeout_min_s": (_typing,),
    "typing_client_timeout_max_s": (_typing,),
    **{name: (_previews,) for name in (
        "url_preview_domain_contains_allowlist", "url_preview_domain_explicit_allowlist",
        "url_preview_domain_explicit_denylist", "url_preview_url_contains_allowlist",
        "url_preview_check_root_domain", "url_preview_max_spider_size")},
}
