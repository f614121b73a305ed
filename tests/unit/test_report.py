"""The daily report's pure parts: the heartbeat setting, local-day windows (in UTC, in
Asia/Taipei, and on a daylight-saving day), when a heartbeat is due, and the text."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from signoff import errors
from signoff.notify.heartbeat import due_day
from signoff.report import Report, day_window, parse_day
from signoff.settings import Settings, parse_time_of_day
from signoff.watchdog import CheckResult

UTC_ZONE, TAIPEI, NEW_YORK = ZoneInfo("UTC"), ZoneInfo("Asia/Taipei"), ZoneInfo("America/New_York")


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SIGNOFF_"):
            monkeypatch.delenv(name)
    yield


@pytest.mark.parametrize(
    ("text", "expected"),
    [("09:00", time(9)), ("9:05", time(9, 5)), (" 23:59 ", time(23, 59)), ("00:00", time(0)),
     ("off", None), ("OFF", None), ("", None)],
)
def test_heartbeat_at_takes_a_local_time_or_off(text: str, expected: time | None) -> None:
    assert parse_time_of_day(text) == expected
    assert Settings(heartbeat_at=text).heartbeat_time == expected


def test_the_heartbeat_is_at_nine_by_default() -> None:
    assert Settings().heartbeat_time == time(9)


@pytest.mark.parametrize(
    "text", ["24:00", "9", "09:60", "9am", "09:00:00", "-1:00", "\uff10\uff19:\uff10\uff10"]
)
def test_a_bad_heartbeat_time_is_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValidationError, match="not a time of day; use HH:MM"):
        Settings(heartbeat_at=text)


def test_days_parse_strictly() -> None:
    assert parse_day("2026-01-02") == date(2026, 1, 2)
    for bad in ("20260102", "2026-1-2", "yesterday", "2026-02-30", ""):
        with pytest.raises(ValueError, match="day"):
            parse_day(bad)


def test_a_local_day_is_a_different_window_in_utc_and_in_taipei() -> None:
    now = at(2026, 3, 1)
    utc = day_window(date(2026, 1, 2), UTC_ZONE, now)
    taipei = day_window(date(2026, 1, 2), TAIPEI, now)
    assert (utc.start, utc.end) == (at(2026, 1, 2), at(2026, 1, 3))
    assert (taipei.start, taipei.end) == (at(2026, 1, 1, 16), at(2026, 1, 2, 16))
    # 2026-01-01 20:00 UTC is 2026-01-02 04:00 in Taipei.
    instant = at(2026, 1, 1, 20)
    assert not utc.start <= instant < utc.end
    assert taipei.start <= instant < taipei.end
    assert utc.complete and taipei.complete and utc.hours == taipei.hours == 24


def test_a_daylight_saving_day_has_23_or_25_hours() -> None:
    now = at(2026, 12, 1)
    spring = day_window(date(2026, 3, 8), NEW_YORK, now)
    assert (spring.start, spring.end) == (at(2026, 3, 8, 5), at(2026, 3, 9, 4))
    assert spring.hours == 23
    autumn = day_window(date(2026, 11, 1), NEW_YORK, now)
    assert (autumn.start, autumn.end) == (at(2026, 11, 1, 4), at(2026, 11, 2, 5))
    assert autumn.hours == 25


def test_a_day_whose_midnight_is_skipped_begins_at_the_change() -> None:
    # Santiago moved its clocks from 00:00 to 01:00 on 2026-09-06.
    santiago = ZoneInfo("America/Santiago")
    window = day_window(date(2026, 9, 6), santiago, at(2026, 12, 1))
    before = day_window(date(2026, 9, 5), santiago, at(2026, 12, 1))
    assert before.end == window.start == at(2026, 9, 6, 4)
    assert window.hours == 23


def test_today_is_read_so_far_and_a_future_day_is_refused() -> None:
    now = at(2026, 1, 1, 20)  # 04:00 on 2026-01-02 in Taipei
    window = day_window(date(2026, 1, 2), TAIPEI, now)
    assert window.until == now and not window.complete
    with pytest.raises(errors.FutureDay, match="2026-01-02 has not begun yet in UTC"):
        day_window(date(2026, 1, 2), UTC_ZONE, now)
    with pytest.raises(errors.FutureDay):
        day_window(date(2026, 1, 3), TAIPEI, now)


def test_the_heartbeat_is_due_from_the_local_time_and_is_about_yesterday() -> None:
    nine = time(9)
    # 09:00 in Taipei is 01:00 UTC.
    assert due_day(at(2026, 1, 2, 0, 59, 59), TAIPEI, nine) is None
    assert due_day(at(2026, 1, 2, 1), TAIPEI, nine) == date(2026, 1, 1)
    assert due_day(at(2026, 1, 2, 15, 59), TAIPEI, nine) == date(2026, 1, 1)
    assert due_day(at(2026, 1, 2, 16), TAIPEI, nine) is None  # 00:00 on the 3rd there
    assert due_day(at(2026, 1, 2, 1), UTC_ZONE, nine) is None
    assert due_day(at(2026, 1, 2, 9), UTC_ZONE, nine) == date(2026, 1, 1)
    # A time skipped by the clocks (02:30 on New York's spring-forward day) is reached at 03:00.
    assert due_day(at(2026, 3, 8, 6, 59), NEW_YORK, time(2, 30)) is None
    assert due_day(at(2026, 3, 8, 7), NEW_YORK, time(2, 30)) == date(2026, 3, 7)


def _report(stats: dict[str, object], checks: list[CheckResult], now: datetime) -> Report:
    return Report(day_window(date(2026, 11, 27), TAIPEI, now), now, dict(stats), checks)


def test_the_text_shows_percentages_and_a_dash_where_there_is_no_denominator() -> None:
    stats = {
        "total": 8,
        "dispositions": {"auto_repair": 0, "human_approved": 3, "human_rejected": 1,
                         "timeout_ignored": 2, "cancelled": 2},
        "human_override_rate": 0.25, "timeout_ignored_rate": 0.25,
        "decision_seconds": {"p50": 5.0, "p90": 9.0},
        "expiry_lateness_seconds": {"p50": 0.5, "p99": 1.25, "max": 1.25},
    }
    checks = [CheckResult("W-1", "resolver stalled", "", count=2),
              CheckResult("W-2", "pending request with no delivered card", "", applies=False),
              CheckResult("W-4", "dead notifications", "", count=0)]
    report = _report(stats, checks, at(2026, 11, 28, 1))
    text = report.as_text()
    assert text.splitlines()[0] == "signoff daily report — Fri 2026-11-27 (Asia/Taipei)"
    for shown in ("Requests ended: 8 (whole day)", "human_approved: 3", "cancelled: 2",
                  "Human override rate: 25.0% (1 rejected of 4 human decisions)",
                  "Timeout rate: 25.0% (2 of 8 ended)", "p99 1.25 s",
                  "Watchdogs at 2026-11-28 09:00: 2 finding(s)", "W-1 resolver stalled: 2"):
        assert shown in text, shown
    assert "W-4" not in text and "W-2" not in text
    body = report.as_json()
    assert body["watchdog_findings"] == 2 and body["complete"] is True
    assert (body["start"], body["end"]) == ("2026-11-26T16:00:00+00:00",
                                            "2026-11-27T16:00:00+00:00")

    empty = {**stats, "total": 0, "human_override_rate": None, "timeout_ignored_rate": None,
             "dispositions": dict.fromkeys(stats["dispositions"], 0),  # type: ignore[arg-type]
             "expiry_lateness_seconds": {"p50": None, "p99": None, "max": None}}
    text = _report(empty, [], at(2026, 11, 27, 6, 30)).as_text()
    for shown in ("Requests ended: 0 (so far, until 14:30)", "Human override rate: —",
                  "Timeout rate: —", "p99 —", "all clear"):
        assert shown in text, shown
