"""The jobs supervisor: named families, restart with backoff, visible status."""

from __future__ import annotations

import trio

from conduwuit.nursery.jobs import Backoff, JobState, Supervisor


async def test_crashing_job_is_restarted_and_its_failure_visible(
    autojump_clock: trio.abc.Clock,
) -> None:
    supervisor = Supervisor(Backoff(initial=1.0, maximum=4.0))
    runs = 0
    recovered = trio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError(f"crash {runs}")
        recovered.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.start_job("test", "flaky", flaky)
        began = trio.current_time()
        await trio.sleep(0.5)
        status = supervisor.status("test/flaky")
        assert status.state is JobState.RESTARTING
        assert status.last_error == "ValueError: crash 1"
        await recovered.wait()
        # Backoff doubled: 1 + 2 + 4 seconds before the fourth run.
        assert trio.current_time() - began == 7.0
        assert status.state is JobState.RUNNING
        assert status.restarts == 3 and status.last_error == "ValueError: crash 3"
        assert [s.full_name for s in supervisor.statuses()] == ["test/flaky"]
        nursery.cancel_scope.cancel()
    assert status.state is JobState.STOPPED


async def test_one_shot_and_non_restarting_jobs() -> None:
    supervisor = Supervisor()

    async def once() -> None:
        await trio.sleep(0)

    async def broken() -> None:
        raise RuntimeError("no")

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.start_job("a", "once", once)
        await supervisor.start_job("a", "broken", broken, restart=False)
        await trio.sleep(0.05)
        assert supervisor.status("a/once").state is JobState.FINISHED
        assert supervisor.status("a/broken").state is JobState.FAILED
        assert supervisor.status("a/broken").last_error == "RuntimeError: no"
        nursery.cancel_scope.cancel()


async def test_jobs_end_with_the_supervisor() -> None:
    supervisor = Supervisor()
    cleaned = trio.Event()

    async def worker() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.start_job("family", "worker", worker)
        await trio.sleep(0)
        nursery.cancel_scope.cancel()
    assert cleaned.is_set()
    assert supervisor.status("family/worker").state is JobState.STOPPED
