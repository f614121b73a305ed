"""The database clock as a process keeps it: carried by the monotonic clock, taken from
the reading with the shortest round trip, never backwards, refreshed on time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from signoff.clock import DatabaseClock

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_reading_is_carried_forward_from_the_midpoint_of_its_round_trip() -> None:
    ticks = Ticks()
    clock = DatabaseClock(monotonic=ticks)
    assert clock.due() and not clock.known
    clock.take(100.0, T0, 100.002)  # the database read T0 about 1 ms after sending
    ticks.now = 100.501
    assert clock.read() == T0 + timedelta(seconds=0.5)


def test_a_slow_round_trip_does_not_replace_a_fresh_better_reading() -> None:
    ticks = Ticks()
    clock = DatabaseClock(monotonic=ticks, keep=30)
    clock.take(100.0, T0, 100.0002)
    # 50 ms round trip: the answer sat in a busy event loop; its midpoint is 25 ms off.
    clock.take(105.0, T0 + timedelta(seconds=5.0001), 105.05)
    ticks.now = 106.0001
    assert clock.read() == T0 + timedelta(seconds=6)
    # A better one replaces it, and so does any once the base is older than ``keep``.
    clock.take(110.0, T0 + timedelta(seconds=10.0101), 110.0001)
    ticks.now = 110.00005
    assert clock.read() == T0 + timedelta(seconds=10.0101)
    clock.take(141.0, T0 + timedelta(seconds=41.2), 141.05)
    ticks.now = 141.025
    assert clock.read() == T0 + timedelta(seconds=41.2)


def test_readings_never_go_backwards() -> None:
    ticks = Ticks()
    clock = DatabaseClock(monotonic=ticks)
    clock.take(100.0, T0, 100.0)
    ticks.now = 101.0
    first = clock.read()
    clock.take(101.0, T0 + timedelta(seconds=0.9), 101.0)  # the database says 100 ms less
    assert clock.read() == first
    ticks.now = 101.2
    assert clock.read() == T0 + timedelta(seconds=1.1)


def test_one_transaction_at_a_time_is_asked_to_refresh() -> None:
    ticks = Ticks()
    clock = DatabaseClock(monotonic=ticks, refresh=1.0)
    assert clock.due()
    clock.take(100.0, T0, 100.001)
    assert not clock.due()
    ticks.now = 101.5
    assert clock.due()  # this caller reads the clock
    assert not clock.due()  # the others meanwhile use the reading they have


def test_times_are_aware_utc_and_a_naive_reading_is_refused() -> None:
    clock = DatabaseClock(monotonic=Ticks())
    with pytest.raises(RuntimeError):
        clock.read()
    with pytest.raises(ValueError, match="naive"):
        clock.take(100.0, datetime(2026, 1, 1), 100.0)
    clock.take(100.0, datetime(2026, 1, 1, 20, tzinfo=timezone(timedelta(hours=8))), 100.0)
    assert clock.read() == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert clock.read().tzinfo is UTC
