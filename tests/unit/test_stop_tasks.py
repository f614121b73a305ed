"""The lifespan's stop: background tasks are told to stop and finish their own way out;
only one still busy after the grace is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from signoff import app


async def test_tasks_told_to_stop_finish_their_way_out_uncancelled() -> None:
    stop = asyncio.Event()
    finished: list[str] = []

    async def loop(name: str) -> None:
        try:
            await stop.wait()
        finally:
            await asyncio.sleep(0.05)  # handing a connection back takes a round trip
            finished.append(name)

    tasks = [asyncio.create_task(loop(name)) for name in ("notifier", "resolver")]
    await asyncio.sleep(0)
    await app.stop_tasks(stop, tasks)
    assert finished == ["notifier", "resolver"]
    assert not any(task.cancelled() for task in tasks)


async def test_a_task_still_busy_after_the_grace_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "STOP_GRACE_SECONDS", 0.05)
    stubborn = asyncio.create_task(asyncio.sleep(60))
    await asyncio.wait_for(app.stop_tasks(asyncio.Event(), [stubborn]), 5)
    assert stubborn.cancelled()
