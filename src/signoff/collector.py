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

Once the long-poll waiters have drained (their count, having reached ``DRAINED_FROM``,
falls to a tenth of its peak and stays there for ``SETTLE`` seconds, while their
connections close), the C heap's free memory is given back to the system
(glibc's ``malloc_trim(0)``, logged as ``memory_trimmed``): the waiters' buffers and
large objects came from it, and glibc keeps what it freed for later. The last of them
are answered and freed after that, so the trim is repeated every ``SETTLE`` seconds while
the waiters stay drained, as long as the one before gave back at least ``RETRIM_MB``, at
most ``TRIMS_PER_DRAIN`` times. ``signoff serve`` runs on glibc's allocator for Python's
objects too (``signoff.launch``); on Python's own small-object allocator the trim does
not reach them: an arena of it goes back only once every block in it is free
(``docs/performance.md``, long-poll waiters, on memory after).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sys
import time
from collections.abc import Callable

from signoff.logs import get_logger

FREEZE_EVERY = 1.0
FULL_EVERY = 15 * 60.0
GROWTH = 2.0
# Below this many memory blocks a full collection is cheap: no need to wait for it.
_FLOOR = 500_000
# Waiters drained: from a peak of at least this many to a tenth of it, for SETTLE s.
DRAINED_FROM = 1000
DRAINED_TO = 0.1
SETTLE = 10.0
# Trims again after a drain while each gives back this much (MB of resident set), at most
# this many times.
RETRIM_MB = 1.0
TRIMS_PER_DRAIN = 6

log = get_logger("signoff.collector")


class Collector:
    """Freezes the survivors of young collections; collects everything now and then."""

    def __init__(
        self, *, freeze_every: float = FREEZE_EVERY, full_every: float = FULL_EVERY,
        growth: float = GROWTH, monotonic: Callable[[], float] = time.monotonic,
        waiting: Callable[[], int] | None = None,
        trim: Callable[[], object] | None = None,
        resident: Callable[[], float | None] | None = None,
    ) -> None:
        self.freeze_every, self.full_every, self.growth = freeze_every, full_every, growth
        self.monotonic = monotonic
        self.waiting = waiting  # how many long-poll waiters there are now
        self.trim = trim if trim is not None else malloc_trim()
        self.resident = resident if resident is not None else resident_mb
        self._after_full = 0  # memory blocks in use after the last full collection
        self._last_full = monotonic()
        self._peak = 0  # the most waiters since the last trim
        self._drained_at: float | None = None  # when they fell to a tenth of the peak
        self._trims = 0  # trims since they drained

    def step(self) -> None:
        """One turn: freeze what survived; a full collection if one is due; the heap
        trimmed if the waiters have drained."""
        gc.collect(1)  # the young garbage goes first: frozen, a cycle would stay
        gc.freeze()
        grown = sys.getallocatedblocks() > self.growth * max(self._after_full, _FLOOR)
        if grown or self.monotonic() - self._last_full >= self.full_every:
            self.collect_all(reason="grown" if grown else "due")
        if self.waiting is not None:
            self.trim_after_drain(self.waiting())

    def trim_after_drain(self, waiting: int) -> bool:
        """Give the C heap's free memory back if the waiters have drained since their
        peak, ``SETTLE`` seconds ago (or since the last trim, if it gave back enough);
        whether it did."""
        self._peak = max(self._peak, waiting)
        if self.trim is None or self._peak < DRAINED_FROM or waiting > DRAINED_TO * self._peak:
            self._drained_at, self._trims = None, 0
            return False
        now = self.monotonic()
        if self._drained_at is None:
            self._drained_at = now
        if now - self._drained_at < SETTLE:
            return False
        before, started = self.resident(), time.perf_counter()
        self.trim()
        after = self.resident()
        self._trims += 1
        log.info("memory_trimmed", waiters=waiting, peak=self._peak, rss_mb_before=before,
                 rss_mb_after=after, trim=self._trims,
                 pause_ms=round((time.perf_counter() - started) * 1000, 1))
        gave = before - after if before is not None and after is not None else 0.0
        if gave >= RETRIM_MB and self._trims < TRIMS_PER_DRAIN:
            self._drained_at = now  # once more, SETTLE seconds from now
        else:  # done until the next crowd
            self._drained_at, self._trims, self._peak = None, 0, waiting
        return True

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


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``; None where there is none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) (Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


def resident_mb() -> float | None:
    """The process's resident set in MB (Linux), else None."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
