"""The ``conduwuit`` command: load the config, set up logging, run the server."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence

import trio

from conduwuit import __version__, sentry
from conduwuit.config import ConfigError, check_config, load_config
from conduwuit.log import log_control
from conduwuit.server import AppHook, Server, StartupError
from conduwuit.store import StoreError

log = logging.getLogger("conduwuit")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="conduwuit",
        description="A Matrix homeserver. With no config file it runs on an embedded "
        "default configuration (server_name localhost, port 6167).",
    )
    parser.add_argument("-c", "--config", metavar="PATH",
                        help="TOML config file (default: $CONDUWUIT_CONFIG, else built-in)")
    parser.add_argument("-O", "--option", metavar="KEY=VALUE", action="append", default=[],
                        help="override one option, value in TOML syntax (repeatable)")
    parser.add_argument("-V", "--version", action="version", version=f"conduwuit {__version__}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, app_hooks: Sequence[AppHook] = ()) -> int:
    """Run until shut down; returns the exit status (1 for any startup refusal)."""
    args = parse_args(argv)
    try:
        loaded = load_config(args.config, overrides=args.option)
        warnings = [*loaded.warnings, *check_config(loaded.config)]
        log_control.install(loaded.config.log)
    except (ConfigError, ValueError) as exc:
        print(f"conduwuit: {exc}", file=sys.stderr)
        return 1
    for warning in warnings:
        log.warning("%s", warning)
    log.info("conduwuit %s starting with config from %s", __version__, loaded.source)
    sentry.init(loaded.config)
    # A reload (SIGUSR1, admin room) reads the same file, the environment then, and -O.
    loader = functools.partial(load_config, args.config, overrides=args.option)
    server = Server(loaded.config, handle_signals=True, app_hooks=list(app_hooks),
                    config_loader=loader, can_restart=True)
    try:
        trio.run(server.run)
    except (StartupError, StoreError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        sentry.close()
    if server.restart_requested:
        # Same PID (systemd keeps tracking it), same arguments, a fresh interpreter:
        # everything of the old server is closed by now, the store included.
        log.info("conduwuit restarting")
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, "-m", "conduwuit",
                                  *(sys.argv[1:] if argv is None else argv)])
    log.info("conduwuit stopped")
    return 0


def run() -> None:
    sys.exit(main())
