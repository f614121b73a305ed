"""The resolver: expires due requests on time, in batches, and never stops for one bad row.

It sleeps until the earliest pending deadline (or the backstop, whichever is sooner) and
is woken early by ``wake()`` in-process, and across replicas by PostgreSQL
``LISTEN signoff_deadlines``. Each pass drains every due request in batches, each batch
one transaction; there is no claimed state, no lease and no leader, so a crash is just a
rollback and any number of replicas share the work through ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import store
from signoff.db import Database, is_retryable, is_unavailable
from signoff.lifecycle import Disposition, ResolutionType
from signoff.listener import Backoff, deadline_listener, listen_dsn
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.settings import Settings

T = TypeVar("T")
Work = Callable[[AsyncConnection, datetime], Awaitable[T]]
BatchHook = Callable[[int], None]
"""Called after each batch with the number of requests it expired (drives a progress bar)."""

# A wake-up a little after the deadline finds the row due at once; one a little before
# it would cost an empty pass and a second sleep.
_SLACK = 0.002
# Due rows this process could not take are held by another transaction: look again soon,
# without spinning on them. Not only by another replica's claim, which expires them: the
# delivery worker's reminder claim locks pending rows up to their deadline, and a row it
# holds when its deadline passes is expired by nobody until it lets go.
_CONTENDED_DELAY = 0.01
# Gauges need a count over every pending row: refreshed at most this often.
_GAUGE_INTERVAL = 1.0
# A quarantine that grows without bound is no longer "one bad row": stop adding to it.
_QUARANTINE_LIMIT = 1000
_ATTEMPTS = 4

@dataclass
class PassResult:
    """What one pass did. Lateness is ``decided_at - expires_at``, in seconds.

    ``errors`` counts requests that could not be expired (each is then set aside); a
    failed batch whose rows then expire one by one is not an error of the pass.
    """

    expired: int = 0
    incidents_resolved: int = 0
    errors: int = 0
    batches: int = 0
    lateness_max: float = 0.0
    lateness_total: float = 0.0
    duration: float = 0.0

    @property
    def lateness_mean(self) -> float:
        return self.lateness_total / self.expired if self.expired else 0.0


class _HeldConnection:
    """One connection of the pool, held while the loop runs.

    When a deadline falls during a burst of HTTP requests, the pool has a queue; the
    resolver waiting its turn in it was most of its lateness. Holding one connection
    (of the pool's, so the process stays within ``SIGNOFF_DB_POOL_SIZE``) removes the wait.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn: AsyncConnection | None = None
        self.lock = asyncio.Lock()

    async def run(self, work: Work[T], *, readonly: bool) -> T:
        """Like ``Database.run``, on the held connection (taken again if it was lost)."""
        async with self.lock:
            for attempt in range(1, _ATTEMPTS + 1):
                if self.conn is None:
                    self.conn = await self.db.engine.connect()
                conn = await self.conn.execution_options(signoff_readonly=readonly)
                try:
                    async with conn.begin():
                        return await work(conn, await self.db.now(conn))
                except Exception as exc:
                    lost = is_unavailable(exc)
                    if lost:
                        await self.release(invalidate=True)
                    # A deadlock victim, or a connection that died while held (the server
                    # restarted, or killed it): the work rolled back, so it may run again.
                    if attempt < _ATTEMPTS and (lost or is_retryable(exc)):
                        await asyncio.sleep(0.01 * attempt)
                        continue
                    raise
            raise AssertionError("unreachable")

    async def release(self, *, invalidate: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if invalidate:
                await conn.invalidate()
            await conn.close()


class Resolver:
    """Expires due requests: ``run_pass()`` drains once, ``run()`` is the timer-gated loop."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        metrics: Metrics,
        *,
        listen_url: str | None = None,
        listen: bool = True,
        concurrency: int = 2,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.batch_size = settings.resolver_batch_size
        # On PostgreSQL several batches can run at once (SKIP LOCKED keeps them disjoint):
        # one's Python work overlaps another's time in the database. SQLite has one writer.
        self.concurrency = max(1, concurrency) if db.is_postgres else 1
        self.backstop = settings.resolver_backstop.total_seconds()
        # LISTEN needs its own connection outside the pool; by default to the same database.
        if listen_url is None and listen and db.is_postgres:
            listen_url = settings.database_url
        self.listen_dsn = None if listen_url is None else listen_dsn(listen_url)
        # Requests that failed even alone: excluded from batch claims, retried each pass.
        self.quarantine: set[uuid.UUID] = set()
        self._isolating = asyncio.Lock()
        self._listener = None if self.listen_dsn is None else deadline_listener(
            self.listen_dsn, self.wake)
        self._log = get_logger("signoff.resolver")
        self._wake = asyncio.Event()
        self._force = False
        # The loop's plan: the event loop time of the next pass (None while one runs), the
        # earliest deadline woken for meanwhile, and a (loop time, database time) pair.
        self._target: float | None = None
        self._early: datetime | None = None
        self._anchor: tuple[float, datetime] | None = None
        self._held: _HeldConnection | None = None
        # A planned pass: when it woke (loop time) until its first transaction reads its
        # clock, and how late (s) its timer fired and that transaction started, by stage.
        self._woke_at: float | None = None
        self._lags: dict[str, float] = {}
        self._last_now: datetime | None = None
        self._gauges_at = float("-inf")

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (always false on SQLite)."""
        return self._listener is not None and self._listener.listening

    # -- one pass -------------------------------------------------------------------------

    async def count_due(self) -> int:
        """How many pending requests are past their deadline now: the backlog a pass
        drains (counted before a large drain, so that a progress bar has a total)."""

        async def read(conn: AsyncConnection, now: datetime) -> int:
            return await store.count_due_requests(conn, now)

        return await self._transact(read, readonly=True)

    async def run_pass(self, *, on_batch: BatchHook | None = None) -> PassResult:
        """Drain every due request: batches, each its own transaction, until one is short.

        Raises only when the database is unavailable; a failing batch is retried row by
        row and a row that still fails is set aside (see ``quarantine``).
        """
        started = time.perf_counter()
        result = PassResult()
        debug = self._log.is_enabled_for(logging.DEBUG)
        try:
            await self._retry_quarantined(result, debug)

            async def drain() -> None:
                while True:
                    claimed, expired = await self._run_batch(result, debug)
                    if on_batch is not None:
                        on_batch(expired)
                    if claimed < self.batch_size:
                        return

            workers = [asyncio.create_task(drain()) for _ in range(self.concurrency)]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
            await self._refresh_gauges()
        finally:
            result.duration = time.perf_counter() - started
            self.metrics.resolver_passes.inc()
            log = self._log.info if result.expired or result.errors else self._log.debug
            log(
                "resolver_pass", expired=result.expired,
                incidents_resolved=result.incidents_resolved, errors=result.errors,
                batches=result.batches, quarantined=len(self.quarantine),
                lateness_max_seconds=round(result.lateness_max, 6),
                lateness_mean_seconds=round(result.lateness_mean, 6),
                duration_seconds=round(result.duration, 6),
                **{f"{stage}_lag_seconds": round(v, 6) for stage, v in self._lags.items()},
            )
        return result

    async def _expire(
        self, *, only: list[uuid.UUID] | None = None, exclude: list[uuid.UUID] | None = None
    ) -> tuple[store.ExpiryBatch, datetime]:
        limit = self.batch_size if only is None else len(only)

        async def work(conn: AsyncConnection, now: datetime) -> tuple[store.ExpiryBatch, datetime]:
            if self._woke_at is not None:  # the planned pass's first transaction
                self._lag("start", self._woke_at)
                self._woke_at = None
            batch = await store.expire_due_requests(
                conn, now, limit=limit, only=only, exclude=exclude or ()
            )
            return batch, now

        return await self._transact(work)

    async def _run_batch(self, result: PassResult, debug: bool) -> tuple[int, int]:
        """One batch; on failure, the same rows one by one. Returns (claimed, expired)."""
        if self._isolating.locked():  # another worker is finding a bad row: let it
            async with self._isolating:
                pass
        try:
            batch, now = await self._expire(exclude=sorted(self.quarantine))
        except Exception as exc:
            if is_unavailable(exc):
                raise
            self.metrics.resolver_errors.inc()
            self._log.warning("resolver_batch_failed", error=repr(exc))
            async with self._isolating:
                return await self._isolate(result, debug)
        return batch.count, self._record(batch, now, result, debug)

    async def _isolate(self, result: PassResult, debug: bool) -> tuple[int, int]:
        """The failed batch's rows one per transaction, so one bad row stops nothing. One
        worker at a time, no batch meanwhile: a row set aside is not failed again."""
        exclude = sorted(self.quarantine)

        async def read(conn: AsyncConnection, now: datetime) -> list[uuid.UUID]:
            return await store.due_request_ids(conn, now, limit=self.batch_size, exclude=exclude)

        ids = await self._transact(read, readonly=True)
        expired = 0
        for request_id in ids:
            if request_id not in self.quarantine:
                expired += await self._expire_alone(request_id, result, debug, retry=False)
        return len(ids), expired

    async def _retry_quarantined(self, result: PassResult, debug: bool) -> None:
        for request_id in sorted(self.quarantine):
            await self._expire_alone(request_id, result, debug, retry=True)

    async def _expire_alone(
        self, request_id: uuid.UUID, result: PassResult, debug: bool, *, retry: bool
    ) -> int:
        try:
            batch, now = await self._expire(only=[request_id])
        except Exception as exc:
            if is_unavailable(exc):
                raise
            result.errors += 1
            self.metrics.resolver_errors.inc()
            if retry:
                self._log.warning("resolver_row_failed", request_id=str(request_id),
                                  error=repr(exc), retry=True)
            else:
                self._log.error("resolver_row_failed", request_id=str(request_id),
                                error=repr(exc), exc_info=exc)
                if len(self.quarantine) >= _QUARANTINE_LIMIT:
                    # Hundreds of rows failing alone is a fault of the code or the schema,
                    # not of rows: say so loudly instead of hiding them all.
                    raise
                self.quarantine.add(request_id)
            return 0
        # Expired now, or no longer pending (decided, or resolved with its incident).
        self.quarantine.discard(request_id)
        return self._record(batch, now, result, debug)

    def _record(
        self, batch: store.ExpiryBatch, now: datetime, result: PassResult, debug: bool
    ) -> int:
        if self._last_now is None or now > self._last_now:
            self._last_now = now
        result.batches += 1
        if not batch.expired:
            return 0
        result.expired += batch.count
        result.incidents_resolved += batch.incidents_resolved
        observe = self.metrics.expiry_lateness.observe
        late_max, late_total = result.lateness_max, 0.0
        for row in batch.expired:
            late = (now - row["expires_at"]).total_seconds()
            observe(late)
            late_total += late
            late_max = max(late_max, late)
            if debug:  # checked once per batch: 100k rows must not pay for silent logs
                self._log.debug("request_expired", request_id=str(row["id"]),
                                incident_id=row["incident_id"] and str(row["incident_id"]),
                                lateness_seconds=round(late, 6))
        result.lateness_max, result.lateness_total = late_max, result.lateness_total + late_total
        self.metrics.requests_expired.inc(batch.count)
        self.metrics.requests_decided.labels(
            disposition=Disposition.TIMEOUT_IGNORED.value).inc(batch.count)
        if batch.incidents_resolved:
            self.metrics.incidents_resolved.labels(
                resolution_type=ResolutionType.TIMEOUT.value).inc(batch.incidents_resolved)
        return batch.count

    def _lag(self, stage: str, since: float) -> None:
        lag = self._lags[stage] = max(0.0, asyncio.get_running_loop().time() - since)
        self.metrics.resolver_wake_lag.labels(stage=stage).observe(lag)

    async def _refresh_gauges(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._gauges_at < _GAUGE_INTERVAL:
            return

        async def read(conn: AsyncConnection, now: datetime) -> tuple[int, float]:
            count, earliest = await store.pending_overview(conn)
            overdue = 0.0 if earliest is None else max(0.0, (now - earliest).total_seconds())
            return count, overdue

        count, overdue = await self._transact(read, readonly=True)
        self.metrics.pending.set(count)
        self.metrics.oldest_overdue.set(overdue)
        self._gauges_at = time.monotonic()

    # -- the loop -------------------------------------------------------------------------

    def wake(self, deadline: datetime | None = None) -> None:
        """Bring the next pass forward to ``deadline`` if that is earlier than planned;
        without a deadline, run a pass now.

        Call it on the resolver's event loop after committing a request (the API does).
        A wake costs no query: the planned instant just moves earlier. One that arrives
        while a pass runs is kept for the plan that follows, so none is missed.
        """
        if deadline is None or self._anchor is None:
            self._force = True
            self._wake.set()
            return
        if self._target is None:  # a pass or a plan is under way
            if self._early is None or deadline < self._early:
                self._early = deadline
            return
        at = self._loop_time(deadline)
        if at < self._target:
            self._target = at
            self._wake.set()

    def _loop_time(self, instant: datetime) -> float:
        """The event loop's time at which ``instant`` (database clock) arrives."""
        assert self._anchor is not None
        loop_at, db_at = self._anchor
        return loop_at + (instant - db_at).total_seconds() + _SLACK

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Expire requests as their deadlines pass until ``stop`` is set or the task is cancelled.

        Survives the database going away: it logs ``resolver_db_unavailable`` and tries
        again with capped backoff.
        """
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        # Made here, not in __init__: an Event belongs to the loop that first waits on it.
        self._wake = asyncio.Event()
        self._held = _HeldConnection(self.db)
        tasks = [asyncio.create_task(self._wake_on(stop))]
        if self._listener is not None:
            tasks.append(asyncio.create_task(self._listener.run()))
        # Capped at the backstop: once the database is back, the next pass starts within
        # one backstop, as it would have while the database was up.
        cap = min(5.0, self.backstop)
        backoff = Backoff(min(0.1, cap), cap)
        self._log.info("resolver_started", batch_size=self.batch_size,
                       backstop_seconds=self.backstop, listen=self.listen_dsn is not None,
                       concurrency=self.concurrency)
        try:
            while not stop.is_set():
                self._target = None
                self._force = False
                try:
                    await self.run_pass()
                    target = await self._plan()
                except Exception as exc:
                    self.metrics.resolver_errors.inc()
                    retry = backoff.next()
                    if is_unavailable(exc):
                        self._log.warning("resolver_db_unavailable", error=repr(exc),
                                          retry_in_seconds=retry)
                    else:
                        self._log.error("resolver_error", error=repr(exc), exc_info=exc,
                                        retry_in_seconds=retry)
                    target = loop.time() + retry
                else:
                    backoff.reset()
                if self._early is not None and self._anchor is not None:
                    target = min(target, self._loop_time(self._early))
                self._early = None
                self._target = target
                self._woke_at, self._lags = None, {}
                if await self._sleep():  # the plan's instant came: how late was the loop?
                    self._lag("timer", target if self._target is None else self._target)
                    self._woke_at = loop.time()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._held.release()
            self._held = None
            self._target = self._anchor = None
            self._log.info("resolver_stopped")

    async def _sleep(self) -> bool:
        """Until the target, which ``wake()`` may move earlier (true), or until forced."""
        while not self._force:
            assert self._target is not None
            self._wake.clear()
            try:
                async with asyncio.timeout_at(self._target):
                    await self._wake.wait()
            except TimeoutError:
                return True
        return False

    async def _plan(self) -> float:
        """When (event loop time) the next pass should run: the earliest deadline, the
        backstop at the latest.

        Requests that were due when the last batch looked, yet not taken, are held by
        another replica (its claim locked them), a reminder's claim or a decision in
        flight: they are looked at again after ``_CONTENDED_DELAY``, and the next
        deadline after them is not slept through meanwhile. (When two replicas claim at
        the same instant each skips the other's rows: both used to sleep the whole delay.)
        """
        last_now = self._last_now
        quarantined = sorted(self.quarantine)

        async def read(
            conn: AsyncConnection, now: datetime
        ) -> tuple[datetime | None, datetime | None, datetime]:
            deadline = await store.next_deadline(conn, exclude=quarantined)
            if deadline is None or last_now is None or deadline > min(last_now, now):
                return deadline, None, now
            held = await store.due_request_ids(conn, last_now, limit=self.batch_size,
                                               exclude=quarantined)
            after = await store.next_deadline(conn, exclude=[*quarantined, *held])
            return deadline, after, now

        started = asyncio.get_running_loop().time()
        deadline, after, now = await self._transact(read, readonly=True)
        # The database clock read at about ``started``: wake() converts deadlines with it.
        self._anchor = (started, now)
        if deadline is None:
            return started + self.backstop
        delay = min((deadline - now).total_seconds() + _SLACK, self.backstop)
        if delay <= 0 and last_now is not None and deadline <= last_now:
            # Held elsewhere (see above). If something came due since, the next pass
            # takes it at once; if it comes due sooner than the delay, wake for it.
            delay = _CONTENDED_DELAY
            if after is not None and after > last_now:
                delay = min(delay, (after - now).total_seconds() + _SLACK)
            self._log.debug("resolver_contended", deadline=deadline.isoformat(),
                            delay_seconds=round(delay, 6))
        return started + max(delay, 0.0)

    async def _transact(self, work: Work[T], *, readonly: bool = False) -> T:
        """One transaction: on the held connection while the loop runs and it is free,
        else on one from the pool (a second batch worker, or ``run_pass`` alone)."""
        held = self._held
        if held is not None and not held.lock.locked():
            return await held.run(work, readonly=readonly)
        return await self.db.run(work, readonly=readonly)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._force = True
        self._wake.set()
