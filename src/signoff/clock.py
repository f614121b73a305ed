"""PostgreSQL's clock, as one process keeps it.

On PostgreSQL the database's clock is signoff's clock: replicas whose own clocks disagree
still agree on when a deadline passes. Reading it (``SELECT now()``) in every transaction
cost a round trip on every call. Instead the process reads ``clock_timestamp()`` now and
then, in the first statement of a transaction that finds the reading stale, and carries
it forward with its monotonic clock, which no change of the wall clock moves.

A reading is exact to within half the round trip that fetched it, so a reading that took
long (the event loop was busy when the answer came) is not taken over a recent better
one. Readings never go backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

# How often the reading is refreshed, and how long a better-timed one is kept over a new
# reading whose round trip was slow.
REFRESH_SECONDS = 1.0
KEEP_SECONDS = 30.0
# A round trip within this much of the best one seen is as good as it.
_SLACK_SECONDS = 0.001


class DatabaseClock:
    """``read()`` the database's time; ``due()`` says when to ``take()`` a new reading."""

    def __init__(
        self, *, refresh: float = REFRESH_SECONDS, keep: float = KEEP_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh, self.keep, self.monotonic = refresh, keep, monotonic
        self._base: tuple[float, datetime] | None = None  # (monotonic, database time)
        self._base_rtt = float("inf")
        self._asked = float("-inf")  # when a reading was last asked for
        self._last: datetime | None = None

    @property
    def known(self) -> bool:
        return self._base is not None

    def due(self) -> bool:
        """Whether a transaction should take a new reading (one at a time asks)."""
        now = self.monotonic()
        if self._base is not None and now - self._asked < self.refresh:
            return False
        self._asked = now
        return True

    def take(self, sent: float, database_time: datetime, received: float) -> None:
        """A reading: ``database_time`` answered a query sent and received at these
        monotonic instants."""
        if database_time.utcoffset() is None:
            raise ValueError(f"naive datetime refused: the database gave {database_time!r}")
        rtt = max(received - sent, 0.0)
        if self._base is not None:
            age = received - self._base[0]
            if rtt > self._base_rtt + _SLACK_SECONDS and age < self.keep:
                return  # the base is surer, and still fresh
        self._base = ((sent + received) / 2, database_time.astimezone(UTC))
        self._base_rtt = rtt

    def read(self) -> datetime:
        """The database's time now, by the last reading; never earlier than the last read."""
        if self._base is None:
            raise RuntimeError("the database clock has not been read yet")
        at, time_then = self._base
        value = time_then + timedelta(seconds=self.monotonic() - at)
        if self._last is not None and value < self._last:
            value = self._last
        self._last = value
        return value
