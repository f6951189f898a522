"""Opt-in error reporting to Sentry, through the optional ``sentry-sdk`` package.

Off unless ``sentry = true`` and ``sentry_endpoint`` names a DSN. The SDK is
an optional extra (``pip install 'conduwuit[sentry]'``): a server that asks
for Sentry without it starts anyway and says so once in the log.

What is sent: log lines at error level as events (``sentry_send_error``; the
app logs every unexpected request failure with its traceback), uncaught
exceptions (``sentry_send_panic``), earlier log lines from ``sentry_filter``
up as breadcrumbs, and per-route request transactions sampled at
``sentry_traces_sample_rate``. No request bodies, headers or user ids: the
SDK's personal-data option stays off, and the host name is replaced by the
``server_name`` only with ``sentry_send_server_name``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from conduwuit import __version__
from conduwuit.config import Config
from conduwuit.log import LEVELS

log = logging.getLogger(__name__)

_active = False


def active() -> bool:
    """Whether :func:`init` switched reporting on in this process."""
    return _active


def options(config: Config) -> dict[str, Any]:
    """The keyword arguments for ``sentry_sdk.init`` (integrations aside)."""
    return {
        "dsn": config.sentry_endpoint,
        "release": f"conduwuit@{__version__}",
        "traces_sample_rate": config.sentry_traces_sample_rate,
        "attach_stacktrace": config.sentry_attach_stacktrace,
        "send_default_pii": False,
        # The SDK would send the machine's host name; an empty one sends nothing.
        "server_name": config.server_name if config.sentry_send_server_name else "",
        # Only what is set up here: auto-enabled framework integrations assume asyncio.
        "auto_enabling_integrations": False,
    }


def init(config: Config) -> bool:
    """Start reporting if configured and possible; True when reporting is on."""
    global _active
    if not config.sentry:
        return False
    if not config.sentry_endpoint:
        log.warning("sentry = true but sentry_endpoint is not set: nothing is reported")
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.excepthook import ExcepthookIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        log.warning("sentry = true but the sentry-sdk package is not installed "
                    "(pip install 'conduwuit[sentry]'): nothing is reported to Sentry")
        return False
    breadcrumbs = LEVELS.get(config.sentry_filter.strip().lower(), logging.INFO)
    logging_integration = LoggingIntegration(
        level=breadcrumbs,
        event_level=logging.ERROR if config.sentry_send_error else None,
    )
    disabled = [] if config.sentry_send_panic else [ExcepthookIntegration]
    sentry_sdk.init(**options(config), integrations=[logging_integration],
                    disabled_integrations=disabled)
    _active = True
    log.info("Reporting errors to Sentry at %s", urlsplit(config.sentry_endpoint).hostname)
    return True


class RequestTransaction:
    """One sampled Sentry transaction per request, named by method and route template."""

    def __init__(self, method: str, route: str) -> None:
        import sentry_sdk

        self._transaction = sentry_sdk.start_transaction(op="http.server",
                                                         name=f"{method} {route}")

    def finish(self, status: int) -> None:
        self._transaction.set_http_status(status)
        self._transaction.finish()


def close() -> None:
    """Flush what is queued and stop reporting (the end of the process, or a test)."""
    global _active
    if not _active:
        return
    import sentry_sdk

    sentry_sdk.flush(timeout=2.0)
    sentry_sdk.get_client().close()
    _active = False
