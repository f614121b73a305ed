"""Periodic background jobs (the watchdogs, the daily heartbeat), run by one scheduler
that the app's lifespan starts and stops.

Each job runs in a task of its own every ``interval``, so a slow one delays no other. A
failing run is logged and tried again with capped backoff; the job never stops for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from signoff.db import Database, is_unavailable
from signoff.listener import Backoff
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.notify.heartbeat import Heartbeat
from signoff.settings import Settings
from signoff.watchdog import Watchman

log = get_logger("signoff.scheduler")


@dataclass(frozen=True)
class Job:
    """``run`` every ``interval`` seconds; ``name`` names its log events."""

    name: str
    run: Callable[[], Awaitable[object]]
    interval: float


class Scheduler:
    """The periodic jobs of one process."""

    def __init__(self, jobs: list[Job] | None = None) -> None:
        self.jobs = list(jobs or [])

    def every(self, interval: timedelta, name: str, run: Callable[[], Awaitable[object]]) -> None:
        self.jobs.append(Job(name, run, interval.total_seconds()))

    async def run_once(self) -> None:
        """Every job once, in order (errors propagate): what one round of ``run`` does."""
        for job in self.jobs:
            await job.run()

    async def run(self, stop: asyncio.Event) -> None:
        """Every job on its interval until ``stop`` is set."""
        async with asyncio.TaskGroup() as group:
            for job in self.jobs:
                group.create_task(_repeat(job, stop), name=f"signoff-{job.name}")


async def _repeat(job: Job, stop: asyncio.Event) -> None:
    backoff = Backoff(min(1.0, job.interval), job.interval)
    while not stop.is_set():
        try:
            await job.run()
            delay = job.interval
            backoff.reset()
        except Exception as exc:
            delay = backoff.next()
            event = f"{job.name}_db_unavailable" if is_unavailable(exc) else f"{job.name}_error"
            log.warning(event, error=repr(exc), retry_in_seconds=delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()


def background_checks(db: Database, settings: Settings, metrics: Metrics) -> Scheduler:
    """What ``signoff serve`` runs on a schedule: the watchdogs (their gauges and log
    lines) and the daily heartbeat, both every ``SIGNOFF_WATCHDOG_INTERVAL``."""
    scheduler = Scheduler()
    scheduler.every(settings.watchdog_interval, "watchdog", Watchman(db, settings, metrics).check)
    scheduler.every(settings.watchdog_interval, "heartbeat", Heartbeat(db, settings).beat)
    return scheduler
