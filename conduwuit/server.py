"""The Server object: owns the store, the services, the listeners and every job.

``await Server(config).run()`` opens the root nursery. Inside it run the HTTP
listeners (one Hypercorn ``serve()``), the jobs supervisor and, in a real
process, the signal watcher. Shutdown is one path whatever starts it:
``stopping`` is set, Hypercorn stops accepting and drains, then the root
nursery is cancelled (jobs stop), and finally the store is flushed and closed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio
from hypercorn.trio import serve

from conduwuit import admin, reload
from conduwuit.admin.context import AdminContext
from conduwuit.config import Config, ConfigError, LoadedConfig, check_config
from conduwuit.handlers import metrics as metrics_handlers
from conduwuit.handlers.app import create_app
from conduwuit.handlers.compression import Compression
from conduwuit.handlers.context import MatrixApp
from conduwuit.handlers.middleware import KeepEncodedSlashes, ShieldFinalSend
from conduwuit.listeners import hypercorn_config, tcp_bind
from conduwuit.metrics import RequestMetrics
from conduwuit.metrics import render as render_metrics
from conduwuit.nursery import appservice as appservice_job
from conduwuit.nursery import keyfetch, last_seen
from conduwuit.nursery import presence as presence_job
from conduwuit.nursery import pusher as pusher_job
from conduwuit.nursery import sender as sender_job
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
# Runs one admin command (as typed in the admin room, without the "!admin" prefix) and
# returns its answer; the admin layer sets Server.admin_executor.
# A command fails when it raises or its answer starts with ADMIN_ERROR.
AdminExecutor = Callable[[str], Awaitable[str]]
ADMIN_ERROR = "**Error**"
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
    # Re-reads the config for a reload (file, env, -O); the CLI sets it.
    config_loader: Callable[[], LoadedConfig] | None = None
    # Set by the admin layer; admin_execute and admin_signal_execute go through it.
    admin_executor: AdminExecutor | None = None
    # The CLI can start the process again after run() returns (`!admin server restart`);
    # a server inside a test cannot.
    can_restart: bool = False
    restart_requested: bool = False
    request_metrics: RequestMetrics = attrs.field(factory=RequestMetrics)
    metrics_bound: list[str] = attrs.field(factory=list)
    started_at: float = attrs.field(factory=time.time)
    _live: reload.LiveConfig | None = None
    _reload_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _root: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown; reports ``started`` once every listener is bound."""
        began = trio.current_time()
        self.notifier.status("Opening the database")
        self.store = await trio.to_thread.run_sync(
            Store.open, self.config.database_path, store_options(self.config)
        )
        try:
            # Services share one LiveConfig: a reload swaps what they all read.
            self._live = reload.LiveConfig(self.config)
            self.services = Services.build(self._live.as_config(), self.store, self.stopping)
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
            if self.config.allow_metrics:
                self.metrics_bound = await root.start(self._serve_metrics, name="metrics")
            await self._start_jobs()
            self._announce_ready(trio.current_time() - began)
            if self.config.admin_execute:
                root.start_soon(self._admin_commands, list(self.config.admin_execute),
                                "admin_execute", name="admin-execute")
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
        metrics_handlers.install(app, self.request_metrics if self.config.allow_metrics else None)
        for hook in self.app_hooks:
            hook(app)
        hc = hypercorn_config(self.config)
        slashes = KeepEncodedSlashes(app)  # type: ignore[arg-type]
        asgi = ShieldFinalSend(Compression.from_config(slashes, self.config))
        try:
            await serve(
                asgi,  # type: ignore[arg-type]
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

    async def _serve_metrics(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        """The Prometheus listener: its own Hypercorn bind, only ``GET /metrics``."""
        hc = hypercorn_config(self.config)
        hc.bind = [tcp_bind(address, self.config.metrics_port)
                   for address in self.config.metrics_address]
        hc.insecure_bind = []
        hc.certfile = hc.keyfile = None
        hc.graceful_timeout = 1.0
        app = metrics_handlers.MetricsApp(lambda: render_metrics(self, self.request_metrics))
        try:
            await serve(app, hc, shutdown_trigger=self.stopping.wait,  # type: ignore[arg-type]
                        task_status=task_status)
        except (OSError, BaseExceptionGroup) as exc:
            bind_error = _only(exc, OSError)
            if bind_error is None:
                raise
            reason = bind_error.strerror or str(bind_error)
            raise StartupError(f"cannot listen for metrics on {', '.join(hc.bind)}: {reason}"
                               ) from None

    async def _start_presence_job(self) -> None:
        assert self.services is not None
        if "presence/timers" not in {s.full_name for s in self.supervisor.statuses()}:
            await self.supervisor.start_job(
                "presence", "timers", functools.partial(presence_job.run, self.services.presence))

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
            await self._start_presence_job()
        await self.supervisor.start_job("sender", "federation",
                                        functools.partial(sender_job.run, svc.federation.sender))
        await self.supervisor.start_job("push", "gateway",
                                        functools.partial(pusher_job.run, svc.push.gateway))
        await self.supervisor.start_job(
            "appservice", "transactions",
            functools.partial(appservice_job.run, svc.appservices.sender))
        for family, name, job in self.services.jobs:
            await self.supervisor.start_job(family, name, job)
        # The admin room: the timeline queues commands; they run in their own job.
        try:
            await svc.admin_room.startup()
        except Exception:  # the server still starts; the room is made on a later start
            log.exception("could not prepare the admin room")
        context = self._admin_context()
        self.admin_executor = functools.partial(admin.execute_and_follow_up, context)
        await self.supervisor.start_job("admin", "commands",
                                        functools.partial(admin.run, svc.admin_room, context))
        if self.notifier.watchdog_interval is not None:
            await self.supervisor.start_job("systemd", "watchdog", self.notifier.run_watchdog)

    def _admin_context(self) -> AdminContext:
        """What admin commands may reach of the server itself (no import of this module)."""
        assert self.services is not None

        async def reload_config() -> str:
            try:
                return (await self.reload_config()).summary()
            except reload.ReloadRefused as refused:
                return f"**Error**: the configuration was not reloaded: {refused}"

        return AdminContext(self.services, self.supervisor.statuses, self.shutdown,
                            started_at=self.started_at, reload_config=reload_config,
                            restart=self.restart if self.can_restart else None)

    def restart(self) -> None:
        """A graceful shutdown after which the CLI starts the process again."""
        self.restart_requested = True
        self.shutdown("restart requested")

    def _announce_ready(self, elapsed: float) -> None:
        where = ", ".join(self.bound)
        log.info("conduwuit %s for %s listening on %s (started in %.2f s)",
                 self.services.diagnostics.version if self.services else "?",
                 self.config.server_name, where, elapsed)
        self.notifier.ready(f"Listening on {where}")

    async def reload_config(self) -> reload.ReloadResult:
        """Re-read the config (file, env, ``-O``) and apply what may change while running.

        Raises :class:`~conduwuit.reload.ReloadRefused` (one line, already logged)
        when nothing could be applied. systemd sees ``RELOADING=1`` then ``READY=1``
        either way. SIGUSR1 and the admin room's reload command both come here.
        """
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                result = await self._reload()
            except reload.ReloadRefused as exc:
                log.error("Config reload refused: %s", exc)
                self.notifier.ready(f"Listening on {', '.join(self.bound)} (reload refused)")
                raise
            self.notifier.ready(f"Listening on {', '.join(self.bound)}")
            return result

    async def _reload(self) -> reload.ReloadResult:
        if self.config_loader is None or self.services is None or self._live is None:
            raise reload.ReloadRefused("this server was not started from a config file")
        try:
            loaded = await trio.to_thread.run_sync(self.config_loader)
            warnings = [*loaded.warnings, *check_config(loaded.config)]
        except (ConfigError, ValueError) as exc:
            raise reload.ReloadRefused(f"{exc}; nothing was reloaded") from None
        plan = reload.plan(self.config, loaded.config)
        for warning in warnings:
            log.warning("%s", warning)
        for name in plan.needs_restart:
            log.warning("Config reload: %s changed but needs a restart; keeping %r", name,
                        getattr(self.config, name))
        reload.apply(self.services, self._live, plan)
        self.config = plan.config
        if self.config.allow_local_presence:
            await self._start_presence_job()
        result = reload.ReloadResult(loaded.source, plan.applied, plan.needs_restart,
                                     tuple(warnings))
        log.info("%s", result.summary())
        return result

    async def run_admin_commands(self, commands: list[str], origin: str) -> bool:
        """Run admin commands through :attr:`admin_executor`; False if any failed."""
        if self.admin_executor is None:
            log.warning("%s: admin commands are unavailable (no admin executor); skipped %d",
                        origin, len(commands))
            return False
        ok = True
        for command in commands:
            try:
                answer = await self.admin_executor(command)
            except Exception as exc:  # one bad command must not take the server down
                log.error("%s: %r failed: %s", origin, command, exc, exc_info=exc)
                ok = False
                continue
            if answer.startswith(ADMIN_ERROR):
                log.error("%s: %r failed: %s", origin, command, answer)
                ok = False
            else:
                log.info("%s: %s\n%s", origin, command, answer)
        return ok

    async def _admin_commands(self, commands: list[str], origin: str) -> None:
        ok = await self.run_admin_commands(commands, origin)
        if not ok and origin == "admin_execute" and self.admin_executor is not None \
                and not self.config.admin_execute_errors_ignore:
            self.shutdown("an admin_execute command failed (admin_execute_errors_ignore is off)")

    async def _reload_from_signal(self) -> None:
        if not self.config.config_reload_signal:
            log.warning("SIGUSR1 ignored: config_reload_signal is off")
            return
        # Refusals are logged by reload_config; the server runs on with its config.
        with contextlib.suppress(reload.ReloadRefused):
            await self.reload_config()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                                       signal.SIGUSR2) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                assert self._root is not None
                if signum == signal.SIGUSR1:
                    if not self.stopping.is_set():
                        self._root.start_soon(self._reload_from_signal, name="reload")
                    continue
                if signum == signal.SIGUSR2:
                    if not self.config.admin_signal_execute:
                        log.info("SIGUSR2: no admin_signal_execute commands are configured")
                    elif not self.stopping.is_set():
                        self._root.start_soon(self._admin_commands,
                                              list(self.config.admin_signal_execute),
                                              "admin_signal_execute", name="admin-signal")
                    continue
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
