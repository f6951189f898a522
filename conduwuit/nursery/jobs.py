"""The jobs supervisor: every background job runs here, named and watched.

Jobs are grouped in families (``federation``, ``presence``, ...); each family
is a nursery of its own inside the supervisor's nursery, which lives inside
the server's root nursery. So nothing a job starts can outlive the server.

A job that raises is logged, marked failed with its error, and restarted with
exponential backoff. Cancellation is not a failure: it is how shutdown reaches
a job, which may then persist what it holds under a short shielded scope.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

log = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[None]]


class JobState(enum.Enum):
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed, waiting out its backoff
    FAILED = "failed"  # crashed and is not restarted
    FINISHED = "finished"  # returned normally; one-shot jobs end here
    STOPPED = "stopped"  # cancelled by shutdown


@attrs.define
class JobStatus:
    """What the admin room shows for one job."""

    family: str
    name: str
    state: JobState = JobState.RUNNING
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    started_at: float = attrs.field(factory=time.time)

    @property
    def full_name(self) -> str:
        return f"{self.family}/{self.name}"


@attrs.define
class Backoff:
    """Delay before the n-th restart: doubling from ``initial`` up to ``maximum``."""

    initial: float = 1.0
    maximum: float = 300.0
    # A job that ran this long before crashing starts its backoff over.
    reset_after: float = 60.0

    def delay(self, consecutive_failures: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** max(0, consecutive_failures - 1)))


class Supervisor:
    """Owns the job families; start it with ``await nursery.start(supervisor.run)``."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._families: dict[str, trio.Nursery] = {}
        self._jobs: dict[str, JobStatus] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def start_job(self, family: str, name: str, fn: JobFn, *, restart: bool = True) -> None:
        """Run ``fn`` as job ``family/name``; with ``restart``, crashes are retried."""
        status = JobStatus(family, name)
        if status.full_name in self._jobs:
            raise ValueError(f"job {status.full_name} already exists")
        nursery = await self._family(family)
        self._jobs[status.full_name] = status
        nursery.start_soon(self._supervise, status, fn, restart, name=f"job:{status.full_name}")

    def statuses(self) -> list[JobStatus]:
        return sorted(self._jobs.values(), key=lambda s: s.full_name)

    def status(self, full_name: str) -> JobStatus:
        return self._jobs[full_name]

    async def _family(self, family: str) -> trio.Nursery:
        if family not in self._families:
            if self._nursery is None:
                raise RuntimeError("the supervisor is not running")
            self._families[family] = await self._nursery.start(
                self._run_family, name=f"jobs:{family}"
            )
        return self._families[family]

    @staticmethod
    async def _run_family(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()

    async def _supervise(self, status: JobStatus, fn: JobFn, restart: bool) -> None:
        failures = 0
        try:
            while True:
                status.state = JobState.RUNNING
                began = trio.current_time()
                try:
                    await fn()
                except Exception as exc:  # a job's crash must not end the server
                    self._record_failure(status, exc)
                else:
                    status.state = JobState.FINISHED
                    log.debug("job %s finished", status.full_name)
                    return
                if not restart:
                    status.state = JobState.FAILED
                    return
                ran_for = trio.current_time() - began
                failures = 1 if ran_for >= self.backoff.reset_after else failures + 1
                delay = self.backoff.delay(failures)
                status.state = JobState.RESTARTING
                log.warning("job %s restarts in %.1f s", status.full_name, delay)
                await trio.sleep(delay)
                status.restarts += 1
        except trio.Cancelled:
            if status.state not in (JobState.FINISHED, JobState.FAILED):
                status.state = JobState.STOPPED
            raise

    @staticmethod
    def _record_failure(status: JobStatus, exc: Exception) -> None:
        status.last_error = f"{type(exc).__name__}: {exc}"
        status.last_error_at = time.time()
        log.error("job %s failed: %s", status.full_name, status.last_error, exc_info=exc)
