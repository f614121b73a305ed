"""Who watches for any change at all: the console's live pages.

Fed by the same wake-ups as the long-poll waiters: ``Service._write`` after each commit
that wrote audit events (a request created, decided, expired...), and ``Service.heard``
for ``NOTIFY signoff_changed`` from other replicas. Requests created on another replica
send no ``NOTIFY``: ``Service.watch_changes`` reads the newest audit event id once every
few seconds, one query per server however many pages are open, and only while at least
one is. A page open while nothing changes costs nothing: its stream sleeps on a future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

# Sent instead of ids: something changed, the watcher does not know what.
ANYTHING = "*"


class Subscription:
    """One watcher's queue of changed ids, coalesced: what piled up is taken at once."""

    __slots__ = ("_pending", "_ready", "closed")

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._ready = asyncio.Event()
        self.closed = False

    def push(self, ids: Iterable[str]) -> None:
        self._pending.update(ids)
        self._ready.set()

    async def next(self, seconds: float) -> set[str]:
        """What changed since the last call; empty once ``seconds`` have passed."""
        try:
            await asyncio.wait_for(self._ready.wait(), seconds)
        except TimeoutError:
            return set()
        self._ready.clear()
        taken, self._pending = self._pending, set()
        return taken


class Changes:
    """Every watcher in this process."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._opened: int | None = None
        self.closing = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subscribers.add(sub)
        return sub

    def opened_at(self, event_id: int) -> None:
        """A stream opened when ``event_id`` was the newest audit event: what comes after
        it, from anywhere, must reach it (see ``Service.watch_changes``)."""
        self._opened = event_id if self._opened is None else min(self._opened, event_id)

    def take_opened(self, last: int | None) -> int | None:
        """The oldest newest event to compare with: ``last`` read, or a stream's opening."""
        opened, self._opened = self._opened, None
        if last is None:
            return opened
        return last if opened is None else min(last, opened)

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, ids: Iterable[str]) -> None:
        if not self._subscribers:
            return
        found = list(ids) or [ANYTHING]
        for sub in self._subscribers:
            sub.push(found)

    def publish_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Audit events just committed: the requests they touched (anything, if none)."""
        if events and self._subscribers:
            self.publish(str(e["request_id"]) for e in events if e.get("request_id"))

    def close(self) -> None:
        """The server is going: every stream ends now."""
        self.closing = True
        for sub in self._subscribers:
            sub.closed = True
            sub.push([])
