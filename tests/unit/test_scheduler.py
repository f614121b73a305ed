"""The scheduler runs each job on its own interval, survives a failing run, and stops."""

from __future__ import annotations

import asyncio

from signoff.scheduler import Job, Scheduler


async def test_jobs_run_on_their_own_interval_and_a_failure_does_not_stop_them() -> None:
    runs: dict[str, int] = {"fast": 0, "flaky": 0, "slow": 0}
    stop = asyncio.Event()

    async def fast() -> None:
        runs["fast"] += 1

    async def flaky() -> None:
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            raise RuntimeError("first run fails")

    async def slow() -> None:
        runs["slow"] += 1
        await asyncio.sleep(10)  # never finishes while the test runs: blocks nothing else

    scheduler = Scheduler([Job("fast", fast, 0.01), Job("flaky", flaky, 0.01),
                           Job("slow", slow, 0.01)])
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(0.3)
    assert runs["fast"] >= 5 and runs["flaky"] >= 3 and runs["slow"] == 1
    stop.set()
    task.cancel()  # the slow job is mid-run: cancelling the scheduler ends it too
    await asyncio.gather(task, return_exceptions=True)
    assert task.done()


async def test_stop_ends_every_job_between_runs() -> None:
    stop = asyncio.Event()
    count = 0

    async def job() -> None:
        nonlocal count
        count += 1

    task = asyncio.create_task(Scheduler([Job("tick", job, 3600)]).run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)  # ends without waiting out the hour
    assert count == 1


async def test_run_once_runs_every_job_in_order() -> None:
    seen: list[str] = []

    async def a() -> None:
        seen.append("a")

    async def b() -> None:
        seen.append("b")

    await Scheduler([Job("a", a, 1), Job("b", b, 1)]).run_once()
    assert seen == ["a", "b"]
