"""Python's garbage collector, kept from stopping ``signoff serve`` for seconds.

CPython's full collection walks every object the collector tracks, and 3.11 runs one
whenever a quarter as many objects as it already holds have survived the young
collections since the last. A long-poll waiter is about 185 tracked objects that live up to
a minute: with 10,000 waiters that is 2 million objects, and the full collections came
every 20 s or so and stopped the server for 1.3 to 2.3 s each, while finding almost
nothing to free (waiters are freed by their reference counts, not by the collector).

So ``serve`` runs a ``Collector``: every second it lets the young collections finish and
moves what survived them into the permanent generation (``gc.freeze()``), which the
collector never walks. Frozen objects are still freed the moment their reference count
drops to zero; only garbage in reference cycles among them stays, until a full collection
over everything (``gc.unfreeze()``, ``gc.collect()``, then freeze again). That runs when
the memory blocks Python has handed out have doubled since the last one (a count that
costs a millisecond to take; counting the frozen objects walks them all), and at least
every 15 minutes, so such garbage stays bounded; each is logged as
``gc_full_collection`` with its pause.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable

from signoff.logs import get_logger

FREEZE_EVERY = 1.0
FULL_EVERY = 15 * 60.0
GROWTH = 2.0
# Below this many memory blocks a full collection is cheap: no need to wait for it.
_FLOOR = 500_000

log = get_logger("signoff.collector")


class Collector:
    """Freezes the survivors of young collections; collects everything now and then."""

    def __init__(
        self, *, freeze_every: float = FREEZE_EVERY, full_every: float = FULL_EVERY,
        growth: float = GROWTH, monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.freeze_every, self.full_every, self.growth = freeze_every, full_every, growth
        self.monotonic = monotonic
        self._after_full = 0  # memory blocks in use after the last full collection
        self._last_full = monotonic()

    def step(self) -> None:
        """One turn: freeze what survived; a full collection if one is due."""
        gc.collect(1)  # the young garbage goes first: frozen, a cycle would stay
        gc.freeze()
        grown = sys.getallocatedblocks() > self.growth * max(self._after_full, _FLOOR)
        if grown or self.monotonic() - self._last_full >= self.full_every:
            self.collect_all(reason="grown" if grown else "due")

    def collect_all(self, *, reason: str) -> int:
        """A full collection over every object, frozen ones too; then freeze again."""
        started = time.perf_counter()
        before = sys.getallocatedblocks()
        gc.unfreeze()
        try:
            collected = gc.collect()
        finally:
            gc.freeze()
        self._after_full = sys.getallocatedblocks()
        self._last_full = self.monotonic()
        log.info("gc_full_collection", reason=reason, blocks_before=before,
                 blocks_after=self._after_full, collected=collected,
                 pause_ms=round((time.perf_counter() - started) * 1000, 1))
        return collected

    async def run(self) -> None:
        """Until cancelled; then the collector is as it was (nothing stays frozen)."""
        try:
            while True:
                await asyncio.sleep(self.freeze_every)
                self.step()
        finally:
            gc.unfreeze()
