"""UTCDateTime: aware instants only, stored as UTC, microseconds kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from signoff.tables import UTCDateTime

TAIPEI = timezone(timedelta(hours=8))
SQLITE = sqlite.dialect()
POSTGRES = postgresql.dialect()


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRES], ids=["sqlite", "postgres"])
def test_naive_datetimes_are_refused(dialect: object) -> None:
    with pytest.raises(ValueError, match="naive datetime refused"):
        UTCDateTime().process_bind_param(datetime(2026, 1, 1, 12), dialect)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["2026-01-01T12:00:00+00:00", 1767268800, datetime(2026, 1, 1).date()]
)
def test_non_datetimes_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="expected a datetime"):
        UTCDateTime().process_bind_param(value, SQLITE)


def test_sqlite_stores_utc_without_the_offset() -> None:
    local = datetime(2026, 1, 1, 20, 0, 0, 123456, tzinfo=TAIPEI)
    bound = UTCDateTime().process_bind_param(local, SQLITE)
    assert bound == datetime(2026, 1, 1, 12, 0, 0, 123456)
    assert bound is not None and bound.tzinfo is None


def test_postgres_gets_an_aware_utc_instant() -> None:
    local = datetime(2026, 1, 1, 20, 0, 0, 1, tzinfo=TAIPEI)
    bound = UTCDateTime().process_bind_param(local, POSTGRES)
    assert bound == local
    assert bound is not None and bound.utcoffset() == timedelta(0)


def test_results_are_aware_utc() -> None:
    t = UTCDateTime()
    naive = datetime(2026, 1, 1, 12, 0, 0, 7)
    assert t.process_result_value(naive, SQLITE) == naive.replace(tzinfo=UTC)
    aware = datetime(2026, 1, 1, 20, 0, tzinfo=TAIPEI)
    result = t.process_result_value(aware, POSTGRES)
    assert result == aware and result is not None and result.tzinfo is UTC
    text = t.process_result_value("2026-01-01 12:00:00.000007", SQLITE)
    assert text == naive.replace(tzinfo=UTC)
    assert t.process_bind_param(None, SQLITE) is None
    assert t.process_result_value(None, SQLITE) is None
