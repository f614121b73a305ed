"""The console's pure parts: how times and countdowns read, the charts, the days of the
statistics, the sign-in limit and the change subscriptions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from signoff.browsing import summarise_days
from signoff.changes import ANYTHING, Changes
from signoff.settings import Settings
from signoff.web import security
from signoff.web.charts import bar_chart, line_chart
from signoff.web.render import clock_time, left, local_time


def test_times_show_in_the_display_zone_with_its_name() -> None:
    settings = Settings(display_tz="Asia/Taipei")
    at = "2026-12-07T01:14:03.5+00:00"
    assert local_time(at, settings) == "2026-12-07 09:14:03 Asia/Taipei"
    assert clock_time(at, settings) == "09:14:03 Asia/Taipei"
    assert local_time(None, settings) == ""


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "expired"), (-3, "expired"), (0.4, "0s left"), (59.9, "59s left"), (65, "1m 05s left"),
    (3600 * 2 + 61, "2h 01m left"),
])
def test_a_countdown_reads_as_the_script_writes_it(seconds: float, text: str) -> None:
    assert left(seconds) == text


def test_charts_escape_their_labels_and_draw_gaps() -> None:
    svg = bar_chart("<b>t</b>", ["<x>", "y"], [[1, 2], [0, 0]])
    assert "<b>" not in svg and "&lt;x&gt;" in svg and svg.count("<rect") == 2
    lines = line_chart("rates", ["a", "b", "c"], [[0.5, None, 1.0]], top=1)
    assert lines.count("<circle") == 2 and "<polyline" in lines


def test_days_gather_hours_in_the_display_zone() -> None:
    zone = ZoneInfo("Asia/Taipei")
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # 11:00 in Taipei
    hours = [
        {"hour": datetime(2026, 12, 6, 17, tzinfo=UTC), "disposition": "human_rejected",
         "count": 1, "late_sum": 0.0, "late_max": None},  # 01:00 on the 7th in Taipei
        {"hour": datetime(2026, 12, 6, 15, tzinfo=UTC), "disposition": "human_approved",
         "count": 3, "late_sum": 0.0, "late_max": None},  # 23:00 on the 6th
        {"hour": datetime(2026, 12, 7, 1, tzinfo=UTC), "disposition": "timeout_ignored",
         "count": 2, "late_sum": 0.5, "late_max": 0.4},
    ]
    days = summarise_days(hours, now, 2, zone)["days"]
    assert [d["day"].isoformat() for d in days] == ["2026-12-06", "2026-12-07"]
    assert days[0]["counts"]["human_approved"] == 3 and days[0]["override_rate"] == 0
    assert days[1]["override_rate"] == 1 and days[1]["timeout_rate"] == pytest.approx(2 / 3)
    assert days[1]["late_mean"] == 0.25 and days[1]["late_max"] == 0.4


def test_the_sixth_failed_sign_in_within_a_minute_is_refused(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: clock[0])
    limit = security.SignInLimit()
    for _ in range(5):
        assert limit.refused("10.0.0.1") is None
        limit.failed("10.0.0.1")
    assert limit.refused("10.0.0.1") == pytest.approx(60)
    assert limit.refused("10.0.0.2") is None  # per address
    clock[0] += 61
    assert limit.refused("10.0.0.1") is None


async def test_changes_are_coalesced_and_cost_nothing_without_watchers() -> None:
    changes = Changes()
    changes.publish(["a"])  # nobody watches: nothing kept
    sub = changes.subscribe()
    assert await sub.next(0.01) == set()
    changes.publish(["a", "b"])
    changes.publish([])
    assert await sub.next(1) == {"a", "b", ANYTHING}
    waiting = asyncio.ensure_future(sub.next(5))
    await asyncio.sleep(0)
    changes.close()
    assert await waiting == set() and sub.closed
    changes.unsubscribe(sub)
    assert len(changes) == 0


def test_the_watch_compares_with_the_oldest_event_a_stream_opened_at() -> None:
    changes = Changes()
    assert changes.take_opened(None) is None
    changes.opened_at(12)
    changes.opened_at(10)
    assert changes.take_opened(None) == 10  # a first read compares with the opening
    assert changes.take_opened(11) == 11  # taken once
    changes.opened_at(9)
    assert changes.take_opened(11) == 9
