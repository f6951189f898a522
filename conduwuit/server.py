"""The Server object: owns the store, the services, the listeners and every job.

``await Server(config).run()`` opens the root nursery. Inside it run the HTTP
listeners (one Hypercorn ``serve()``), the jobs supervisor and, in a real
process, the signal watcher. Shutdown is one path whatever starts it:
``stopping`` is set, Hypercorn stops accepting and drains, then the root
nursery is cancelled (jobs stop), and finally the store is flushed and closed.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable
from typing import TypeVar

import attrs
import trio
from hypercorn.trio import serve

from conduwuit.config import Config
from conduwuit.handlers.app import create_app
from conduwuit.handlers.context import MatrixApp
from conduwuit.handlers.middleware import KeepEncodedSlashes, ShieldFinalSend
from conduwuit.listeners import hypercorn_config
from conduwuit.nursery import keyfetch, last_seen
from conduwuit.nursery import presence as presence_job
from conduwuit.nursery import typing as typing_job
from conduwuit.nursery.jobs import Supervisor
from conduwuit.services import Services
from conduwuit.store import Store, StoreOptions
from conduwuit.systemd import Notifier

log = logging.getLogger(__name__)

# How long past the grace period a stuck shutdown may take before we give up
# on the remaining connections, close the store and exit anyway.
LAST_RESORT_MARGIN = 5.0

AppHook = Callable[[MatrixApp], None]
_E = TypeVar("_E", bound=BaseException)


class StartupError(Exception):
    """The server cannot start; the message says why, in one line for the operator."""


def store_options(config: Config) -> StoreOptions:
    """Map the RocksDB-named options onto their LevelDB equivalents."""
    mib = 1024 * 1024
    return StoreOptions(
        repair=config.rocksdb_repair,
        paranoid_checks=config.rocksdb_paranoid_file_checks,
        lru_cache_size=int(config.db_cache_capacity_mb * mib),
        write_buffer_size=int(config.db_write_buffer_capacity_mb * mib),
        compression=None if config.rocksdb_compression_algo == "none" else "snappy",
    )


@attrs.define(eq=False)
class Server:
    config: Config
    # A real process watches SIGTERM/SIGINT and keeps the last-resort exit timer;
    # a server started inside a test must do neither.
    handle_signals: bool = False
    app_hooks: list[AppHook] = attrs.field(factory=list)
    notifier: Notifier = attrs.field(factory=Notifier)
    supervisor: Supervisor = attrs.field(factory=Supervisor)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    store: Store | None = None
    services: Services | None = None
    bound: list[str] = attrs.field(factory=list)
    _root: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown; reports ``started`` once every listener is bound."""
        began = trio.current_time()
        self.notifier.status("Opening the database")
        self.store = await trio.to_thread.run_sync(
            Store.open, self.config.database_path, store_options(self.config)
        )
        try:
            self.services = Services.build(self.config, self.store, self.stopping)
            self.services.first_run.prepare()
            self.services.registration.warn_forbidden_existing()
            try:
                await self._run_nursery(began, task_status)
            except BaseExceptionGroup as group:
                # A startup refusal reaches the caller as itself, not inside a group.
                refusal = _only(group, StartupError)
                if refusal is None:
                    raise
                raise refusal from None
        finally:
            with trio.CancelScope(shield=True):
                self._close_store()

    async def _run_nursery(self, began: float, task_status: trio.TaskStatus[Server]) -> None:
        async with trio.open_nursery() as root:
            self._root = root
            if self.handle_signals:
                root.start_soon(self._watch_signals, name="signals")
            await root.start(self.supervisor.run, name="jobs")
            assert self.services is not None
            self.bound = await root.start(self._serve_http, self.services, name="http")
            await self._start_jobs()
            self._announce_ready(trio.current_time() - began)
            task_status.started(self)

    def shutdown(self, reason: str = "shutdown requested") -> None:
        """Begin a graceful shutdown; safe to call more than once."""
        if self.stopping.is_set():
            return
        log.info("Shutting down (%s): no new connections, draining requests", reason)
        self.notifier.stopping(f"Shutting down: {reason}")
        self.stopping.set()
        if self.services is not None:
            self.services.notifier.wake_all()  # long-polls answer now, not at the deadline

    def force_stop(self) -> None:
        """Stop now: cancel everything; the store is still flushed and closed."""
        log.warning("Stopping immediately: open requests are dropped")
        self.stopping.set()
        if self._root is not None:
            self._root.cancel_scope.cancel()

    async def _serve_http(
        self, services: Services, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        app = create_app(services)
        for hook in self.app_hooks:
            hook(app)
        hc = hypercorn_config(self.config)
        try:
            await serve(
                ShieldFinalSend(KeepEncodedSlashes(app)),  # type: ignore[arg-type]
                hc,
                shutdown_trigger=self.stopping.wait,
                task_status=task_status,
            )
        except (OSError, BaseExceptionGroup) as exc:
            bind_error = _only(exc, OSError)
            if bind_error is None:
                raise
            binds = ", ".join(hc.bind + hc.insecure_bind)
            reason = bind_error.strerror or str(bind_error)
            raise StartupError(f"cannot listen on {binds}: {reason}") from None
        # Every request is answered or timed out: now stop the jobs too.
        assert self._root is not None
        self._root.cancel_scope.cancel()

    async def _start_jobs(self) -> None:
        assert self.services is not None
        svc = self.services
        # Long-lived jobs of nursery/: the server wires them to the services they drive.
        await self.supervisor.start_job("devices", "last-seen",
                                        functools.partial(last_seen.run, svc.devices))
        await self.supervisor.start_job("federation", "keyfetch",
                                        functools.partial(keyfetch.run, svc.federation.keys))
        await self.supervisor.start_job("typing", "expiry",
                                        functools.partial(typing_job.run, svc.typing))
        if self.config.allow_local_presence:
            await self.supervisor.start_job("presence", "timers",
                                            functools.partial(presence_job.run, svc.presence))
        for family, name, job in self.services.jobs:
            await self.supervisor.start_job(family, name, job)
        if self.notifier.watchdog_interval is not None:
            await self.supervisor.start_job("systemd", "watchdog", self.notifier.run_watchdog)

    def _announce_ready(self, elapsed: float) -> None:
        where = ", ".join(self.bound)
        log.info("conduwuit %s for %s listening on %s (started in %.2f s)",
                 self.services.diagnostics.version if self.services else "?",
                 self.config.server_name, where, elapsed)
        self.notifier.ready(f"Listening on {where}")

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.stopping.is_set():
                    self.shutdown(name)
                    assert self._root is not None
                    self._root.start_soon(self._last_resort_exit, name="last-resort-exit")
                else:
                    log.warning("Second %s: not waiting for open requests", name)
                    self.force_stop()

    async def _last_resort_exit(self) -> None:
        """Exit even if a client stopped reading and holds its connection forever.

        Hypercorn sends under a shield with no write timeout, so such a client
        can keep ``serve()`` from ever returning. Normally this sleep is
        cancelled together with the root nursery long before it ends.
        """
        await trio.sleep(self.config.client_request_timeout + LAST_RESORT_MARGIN)
        log.error("Shutdown did not finish in time; closing the database and exiting")
        self._close_store()
        os._exit(1)

    def _close_store(self) -> None:
        if self.store is None:
            return
        self.notifier.status("Closing the database")
        try:
            self.store.flush()
        finally:
            self.store.close()
        log.info("Database closed")


def _only(exc: BaseException, kind: type[_E]) -> _E | None:
    """``exc`` itself, or the single leaf of nested groups, if it is a ``kind``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, kind) else None
