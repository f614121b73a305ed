"""The delivery worker: claims due outbox items, hands each to its channel, records how
it went. Runs inside ``signoff serve`` and alone as ``signoff notify``.

It sleeps until the earliest pending item is due, a short poll at the longest (items
written by other replicas), and is woken at once in-process after a change commits.
Claims move an item out of reach for a lease, so a worker that dies mid-delivery leaves
it to be tried again (delivery is at least once); a result is recorded only by the
worker whose claim is still current.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import Database, is_unavailable
from signoff.listener import Backoff
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.notify.delivery import AfterDelivery, DeliveryFailed, Sender, retry_delay
from signoff.notify.reminders import issue_reminders, next_reminder_at
from signoff.settings import Settings

Row = Mapping[Any, Any]
# Longer than any one delivery may take (HTTP timeouts are 10 s), so no claim overlaps.
LEASE = timedelta(seconds=30)
POLL = 0.5
BATCH = 50


class Notifier:
    """Delivers the outbox: ``run_once()`` drains what is due, ``run()`` keeps at it."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        metrics: Metrics,
        senders: Mapping[str, Sender],
        *,
        rng: Callable[[], float] = random.random,
        poll: float = POLL,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.senders = dict(senders)
        self.max_attempts = settings.notify_max_attempts
        self.reminders = settings.reminders
        self.rng = rng
        self.poll = poll
        self._wake = asyncio.Event()
        self._log = get_logger("signoff.notify")

    def wake(self) -> None:
        """Look at the outbox now (call after committing a change)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Deliver every item due now (each tried once); how many were attempted."""
        done = 0
        await self.remind()
        while True:
            claimed = await self._claim()
            if not claimed:
                return done
            await self._deliver_all(claimed)
            done += len(claimed)
            if len(claimed) < BATCH:
                return done

    async def remind(self) -> int:
        """Issue the reminders that have fallen due (outbox rows, delivered like the rest)."""
        if not self.reminders:
            return 0

        async def peek(conn: AsyncConnection, now: datetime) -> bool:
            due = await next_reminder_at(conn)
            return due is not None and due <= now

        if not await self.db.run(peek, readonly=True):  # no write lock for nothing
            return 0

        async def work(conn: AsyncConnection, now: datetime) -> int:
            return await issue_reminders(conn, now, self.reminders)

        return await self.db.run(work)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until ``stop`` is set or the task is cancelled; survives the database going away."""
        stop = stop or asyncio.Event()
        self._wake = asyncio.Event()
        backoff = Backoff(0.1, 5.0)
        stopper = asyncio.create_task(self._wake_on(stop))
        self._log.info("notify_started", channels=sorted(self.senders),
                       max_attempts=self.max_attempts)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.run_once()
                    delay = await self._until_next()
                    backoff.reset()
                except Exception as exc:
                    delay = backoff.next()
                    event = "notify_db_unavailable" if is_unavailable(exc) else "notify_error"
                    self._log.warning(event, error=repr(exc), retry_in_seconds=delay)
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
            self._log.info("notify_stopped")

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _until_next(self) -> float:
        async def read(conn: AsyncConnection, now: datetime) -> float:
            due = await outbox.next_due_at(conn)
            if due is None:
                return self.poll
            return max(0.0, min((due - now).total_seconds(), self.poll))

        return await self.db.run(read, readonly=True)

    async def _claim(self) -> list[Row]:
        async def peek(conn: AsyncConnection, now: datetime) -> bool:
            due = await outbox.next_due_at(conn)
            return due is not None and due <= now

        # A read first: on SQLite a claim takes the write lock, not worth it for nothing.
        if not await self.db.run(peek, readonly=True):
            return []

        async def claim(conn: AsyncConnection, now: datetime) -> list[Row]:
            return await outbox.claim_due(conn, now, limit=BATCH, lease=LEASE)

        return await self.db.run(claim)

    async def _deliver_all(self, items: Sequence[Row]) -> None:
        """Items of one incident (or request) in order, as written (a card before its
        edit, an incident's opening before its resolution); others side by side."""
        groups: dict[Any, list[Row]] = defaultdict(list)
        for item in items:
            groups[item["incident_id"] or item["request_id"] or item["id"]].append(item)

        async def in_order(group: list[Row]) -> None:
            for item in group:
                await self._deliver(item)

        await asyncio.gather(*(in_order(g) for g in groups.values()))

    async def _deliver(self, item: Row) -> None:
        channel = item["channel"]
        sender = self.senders.get(channel)
        after: AfterDelivery | None = None
        try:
            if sender is None:
                raise DeliveryFailed(f"the {channel} channel is not configured")
            after = await sender.deliver(item)
        except DeliveryFailed as failed:
            await self._failed(item, str(failed), failed)
            return
        except Exception as exc:  # a bug or a surprise: retried like any failure
            self._log.error("notify_delivery_error", item_id=item["id"], channel=channel,
                            error=repr(exc), exc_info=exc)
            await self._failed(item, repr(exc), DeliveryFailed(repr(exc)))
            return

        async def record(conn: AsyncConnection, now: datetime) -> None:
            if after is not None:
                await after(conn, now)
            await outbox.mark_delivered(conn, now, item)

        await self.db.run(record)
        self.metrics.notifications.labels(channel=channel, result="delivered").inc()
        self._log.info("notification_delivered", item_id=item["id"], channel=channel,
                       notification=item["event"], attempts=item["attempts"],
                       request_id=item["request_id"] and str(item["request_id"]))

    async def _failed(self, item: Row, error: str, failed: DeliveryFailed) -> None:
        dead = failed.permanent or item["attempts"] >= self.max_attempts
        delay = None if dead else retry_delay(item["attempts"], failed.retry_after, self.rng)

        async def record(conn: AsyncConnection, now: datetime) -> None:
            retry_at = None if delay is None else now + timedelta(seconds=delay)
            await outbox.mark_failed(conn, now, item, error, retry_at=retry_at)

        await self.db.run(record)
        result = "dead" if dead else "failed"
        self.metrics.notifications.labels(channel=item["channel"], result=result).inc()
        (self._log.error if dead else self._log.warning)(
            "notification_dead" if dead else "notification_failed",
            item_id=item["id"], channel=item["channel"], notification=item["event"],
            request_id=item["request_id"] and str(item["request_id"]),
            attempts=item["attempts"], error=error,
            retry_in_seconds=None if delay is None else round(delay, 3),
        )
