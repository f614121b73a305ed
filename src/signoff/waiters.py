"""Long-poll waiters: callers waiting for a pending request to end, holding no connection.

A waiter registers before it reads the request, so that a transition committed between
its read and its sleep still wakes it. It is woken by the transition that ended its
request: in this process straight after the commit (``Service._write``), from another
replica by ``NOTIFY signoff_ended`` (``ChannelListener``). It also wakes at the request's
deadline, when the request reads ``expired`` whether or not a resolver has run yet. A
wake only makes it read again: the database says what happened, never the wake.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from signoff.lifecycle import EventKind, RequestStatus

ENDING_KINDS = frozenset({EventKind.REQUEST_APPROVED, EventKind.REQUEST_REJECTED,
                          EventKind.REQUEST_EXPIRED, EventKind.REQUEST_CANCELLED})
# A read that lands a hair before the deadline (clocks read at different moments) tries
# again this much later, not at once.
_MIN_SLEEP = 0.001
Reading = tuple[dict[str, Any], float]  # the request as answered, seconds to its deadline


def ended_requests(events: Iterable[dict[str, Any]]) -> list[uuid.UUID]:
    """The requests that committed events ended."""
    return [e["request_id"] for e in events
            if e["kind"] in ENDING_KINDS and e.get("request_id") is not None]


class Waiters:
    """Who waits for which request in this process."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, set[asyncio.Event]] = {}
        self.closing = False

    def __len__(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    def wake(self, request_ids: Iterable[uuid.UUID]) -> None:
        for rid in request_ids:
            for event in self._waiting.get(rid, ()):
                event.set()

    def wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()

    def close(self) -> None:
        """The server is shutting down: every waiter answers with the state it reads now."""
        self.closing = True
        self.wake_all()

    def heard(self, payload: str) -> None:
        """A ``NOTIFY signoff_ended`` payload: request ids, comma-separated."""
        ids = []
        for part in payload.split(","):
            try:
                ids.append(uuid.UUID(part))
            except ValueError:  # not ours to judge: let everyone read again
                self.wake_all()
                return
        self.wake(ids)

    @contextmanager
    def _watching(self, rid: uuid.UUID) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.setdefault(rid, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(rid)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[rid]

    async def wait(
        self, rid: uuid.UUID, seconds: float, read: Callable[[], Awaitable[Reading]]
    ) -> dict[str, Any]:
        """Read the request until it is no longer pending, its deadline has passed (it
        then reads ``expired``), ``seconds`` have passed or the server closes; answer the
        last reading."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + seconds
        with self._watching(rid) as woken:
            while True:
                woken.clear()
                out, to_deadline = await read()
                left = give_up - loop.time()
                if out["status"] != RequestStatus.PENDING or self.closing or left <= 0:
                    return out
                sleep = max(min(left, to_deadline), _MIN_SLEEP)
                try:
                    async with asyncio.timeout(sleep):
                        await woken.wait()
                except TimeoutError:
                    pass
