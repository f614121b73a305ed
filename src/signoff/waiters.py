"""Long-poll waiters: callers waiting for a pending request to end, holding no connection.

A waiter registers before it reads the request, so that a transition committed between
its read and its sleep still wakes it. It is woken by any transition of its request (an
approval short of the quorum too): in this process straight after the commit
(``Service._write``), from another replica by ``NOTIFY signoff_changed``
(``ChannelListener``). It also wakes at the request's deadline, when the request reads
``expired`` whether or not a resolver has run yet. A wake only makes it read again: the
database says what happened, never the wake. A wait that runs out with nothing woken
answers the reading it already has: had anything changed, it would have been woken.

Many waiters cost little: the reads of every waiter that asks in one turn of the event
loop are one query (``BatchReader``), and a waiter asleep is a future and a timer, with
no exception raised when its wait runs out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from signoff import errors
from signoff.lifecycle import EventKind, RequestStatus

CHANGING_KINDS = frozenset({
    EventKind.REQUEST_APPROVAL_ADDED, EventKind.REQUEST_APPROVED, EventKind.REQUEST_REJECTED,
    EventKind.REQUEST_EXPIRED, EventKind.REQUEST_CANCELLED,
})
# A read that lands a hair before the deadline (clocks read at different moments) tries
# again this much later, not at once.
_MIN_SLEEP = 0.001
# Requests read by one query of a batch, at most.
BATCH_LIMIT = 500
Reading = tuple[dict[str, Any], float]  # the request as answered, seconds to its deadline
ReadMany = Callable[[Sequence[uuid.UUID]], Awaitable[dict[uuid.UUID, Reading]]]


def changed_requests(events: Iterable[dict[str, Any]]) -> list[uuid.UUID]:
    """The pending requests that committed events changed or ended."""
    return [e["request_id"] for e in events
            if e["kind"] in CHANGING_KINDS and e.get("request_id") is not None]


class _Watch:
    """One waiter's wake-up: a future, replaced each time it reads again."""

    __slots__ = ("future",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[bool] = loop.create_future()

    def set(self, woken: bool = True) -> None:
        if not self.future.done():
            self.future.set_result(woken)


class Waiters:
    """Who waits for which request in this process."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, set[_Watch]] = {}
        self._count = 0
        self.closing = False

    def __len__(self) -> int:
        return self._count

    def wake(self, request_ids: Iterable[uuid.UUID]) -> None:
        for rid in request_ids:
            for watch in self._waiting.get(rid, ()):
                watch.set()

    def wake_all(self) -> None:
        for watches in self._waiting.values():
            for watch in watches:
                watch.set()

    def close(self) -> None:
        """The server is shutting down: every waiter answers with the state it reads now."""
        self.closing = True
        self.wake_all()

    def heard(self, payload: str) -> None:
        """A ``NOTIFY signoff_changed`` payload: request ids, comma-separated."""
        ids = []
        for part in payload.split(","):
            try:
                ids.append(uuid.UUID(part))
            except ValueError:  # not ours to judge: let everyone read again
                self.wake_all()
                return
        self.wake(ids)

    @contextmanager
    def _watching(self, rid: uuid.UUID, loop: asyncio.AbstractEventLoop) -> Iterator[_Watch]:
        watch = _Watch(loop)
        self._waiting.setdefault(rid, set()).add(watch)
        self._count += 1
        try:
            yield watch
        finally:
            self._count -= 1
            watches = self._waiting.get(rid)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._waiting[rid]

    async def wait(
        self, rid: uuid.UUID, seconds: float, read: Callable[[], Awaitable[Reading]]
    ) -> dict[str, Any]:
        """Read the request until it is no longer pending, its deadline has passed (it
        then reads ``expired``), ``seconds`` have passed or the server closes; answer the
        last reading."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + seconds
        with self._watching(rid, loop) as watch:
            out, to_deadline = await read()
            while out["status"] == RequestStatus.PENDING and not self.closing:
                left = give_up - loop.time()
                if left <= 0:
                    break
                deadline_first = to_deadline < left
                timer = loop.call_later(max(min(left, to_deadline), _MIN_SLEEP), watch.set, False)
                try:
                    woken = await watch.future
                finally:
                    timer.cancel()
                if not (woken or deadline_first or self.closing):
                    break  # ran out, nothing changed: the reading in hand is the answer
                watch.future = loop.create_future()
                out, to_deadline = await read()
        return out


class BatchReader:
    """Reads requests for waiters: the reads asked for while one batch is being read are
    the next batch, one query for all of them (at most ``BATCH_LIMIT`` each)."""

    def __init__(self, read_many: ReadMany) -> None:
        self._read_many = read_many
        self._asked: dict[uuid.UUID, list[asyncio.Future[Reading]]] = {}
        self._running: asyncio.Task[None] | None = None

    def read(self, rid: uuid.UUID) -> asyncio.Future[Reading]:
        """A future of the request's reading (``RequestNotFound`` for an unknown one)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reading] = loop.create_future()
        self._asked.setdefault(rid, []).append(future)
        if self._running is None:
            self._running = loop.create_task(self._drain(), name="signoff-waiters-read")
        return future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the other waiters asking in this turn join the batch
            while self._asked:
                batch = dict(list(self._asked.items())[:BATCH_LIMIT])
                for rid in batch:
                    del self._asked[rid]
                await self._answer(batch)
        finally:
            self._running = None

    async def _answer(self, batch: dict[uuid.UUID, list[asyncio.Future[Reading]]]) -> None:
        try:
            readings = await self._read_many(list(batch))
        except BaseException as exc:  # each waiter's caller answers for it
            for futures in batch.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:  # this reader is being cancelled: so are its readings
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for rid, futures in batch.items():
            reading = readings.get(rid)
            for future in futures:
                if future.done():  # its caller is gone
                    continue
                if reading is None:
                    future.set_exception(errors.RequestNotFound())
                else:
                    future.set_result(reading)
