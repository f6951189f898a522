"""Logging set-up driven by the ``log`` option, changeable while the server runs.

The option takes a level (``"info"``) or a filter string in the style of
conduwuit's tracing filters: comma-separated directives, each either a bare
level (the default for everything) or ``logger=level`` for one logger and its
children (``"warn,conduwuit.store=debug"``).
"""

from __future__ import annotations

import logging
import sys
import time

import attrs

LEVELS: dict[str, int] = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}

logging.addLevelName(5, "TRACE")


@attrs.frozen
class LogFilter:
    """A parsed ``log`` option: a default level plus per-logger levels."""

    default: int
    loggers: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, text: str) -> LogFilter:
        default = logging.INFO
        loggers: list[tuple[str, int]] = []
        for raw in text.split(","):
            directive = raw.strip()
            if not directive:
                continue
            target, sep, level_name = directive.rpartition("=")
            level = _level(level_name.strip(), text)
            if sep:
                loggers.append((_logger_name(target.strip(), text), level))
            else:
                default = level
        return cls(default, tuple(loggers))


def _level(name: str, text: str) -> int:
    try:
        return LEVELS[name.lower()]
    except KeyError:
        allowed = ", ".join(sorted(set(LEVELS) - {"warning"}))
        raise ValueError(
            f"invalid log filter {text!r}: unknown level {name!r} (expected one of {allowed})"
        ) from None


def _logger_name(name: str, text: str) -> str:
    # conduwuit's filters name Rust crates (conduwuit_service); map to our dotted names.
    name = name.replace("::", ".").replace("conduwuit_", "conduwuit.")
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"invalid log filter {text!r}: bad logger name {name!r}")
    return name


class _Formatter(logging.Formatter):
    """One line per event: UTC timestamp, level, logger, message."""

    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s: %(message)s",
                         datefmt="%Y-%m-%dT%H:%M:%S")

    def formatException(self, ei: object) -> str:
        # Keep tracebacks but indent them so a log reader sees one event per block.
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join("    " + line for line in text.splitlines())


class LogControl:
    """Owns our handler and the levels applied by the current filter."""

    def __init__(self) -> None:
        self._handler: logging.Handler | None = None
        self._configured: list[str] = []
        self.current = "info"

    def install(self, text: str, stream: object = None) -> None:
        """Attach one stderr handler to the root logger and apply ``text``."""
        root = logging.getLogger()
        if self._handler is None:
            handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
            handler.setFormatter(_Formatter())
            root.addHandler(handler)
            self._handler = handler
        self.set_filter(text)

    def set_filter(self, text: str) -> None:
        """Apply a new filter at once; raises ValueError (nothing changed) if invalid."""
        parsed = LogFilter.parse(text)
        for name in self._configured:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger().setLevel(parsed.default)
        for name, level in parsed.loggers:
            logging.getLogger(name).setLevel(level)
        self._configured = [name for name, _ in parsed.loggers]
        self.current = text
        # Third-party chatter stays at warn unless a filter asks for it by name.
        for noisy in ("hypercorn.error", "hypercorn.access", "quart.app", "httpx", "httpcore"):
            if noisy not in self._configured:
                logging.getLogger(noisy).setLevel(max(parsed.default, logging.WARNING))


log_control = LogControl()
