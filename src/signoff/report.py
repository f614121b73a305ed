"""The daily report: one local day's automation statistics, and the watchdogs' findings.

A day is a calendar day in the display time zone: the instants from its local midnight to
the next one, so a day with a daylight-saving change has 23 or 25 hours. A request belongs
to the day in which it ended (its ``decided_at``), so each ended request is counted on
exactly one day. A report of today covers the day so far; a day that has not begun is
refused. The watchdogs are read when the report is made, whichever day it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.lifecycle import Disposition
from signoff.queries import compute_stats
from signoff.settings import Settings
from signoff.watchdog import CheckResult, Thresholds, run_watchdogs

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # not the locale's


def parse_day(value: str) -> date:
    """``YYYY-MM-DD`` → a date; anything else is refused with a message that says why."""
    text = value.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ValueError(f"{value!r} is not a day; use YYYY-MM-DD, like 2026-11-27")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a day of the calendar") from None


def local_today(now: datetime, zone: ZoneInfo) -> date:
    return now.astimezone(zone).date()


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant (in UTC) at which ``day`` begins in ``zone``."""
    # Where a clock change skips midnight, fold=0 takes the offset in force before the
    # change: the instant of the change, which is when that day begins.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """A local day as instants, ``[start, end)``, read up to ``until`` (``now`` for today)."""

    day: date
    zone: ZoneInfo
    start: datetime
    end: datetime
    until: datetime

    @property
    def complete(self) -> bool:
        return self.until >= self.end

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


def day_window(day: date, zone: ZoneInfo, now: datetime) -> Window:
    """The window of local ``day``; ``FutureDay`` when it has not begun at ``now``."""
    today = local_today(now, zone)
    if day > today:
        raise errors.FutureDay(
            f"{day.isoformat()} has not begun yet in {zone.key} (it is "
            f"{today.isoformat()} there): there is nothing to report"
        )
    start = local_midnight(day, zone)
    end = local_midnight(day + timedelta(days=1), zone)
    return Window(day, zone, start, end, min(end, now))


@dataclass(frozen=True)
class Report:
    """One day's figures (``compute_stats`` over the window) and the watchdogs at
    ``made_at``."""

    window: Window
    made_at: datetime
    stats: dict[str, Any]
    checks: list[CheckResult]

    @property
    def title(self) -> str:
        day = self.window.day
        return (f"signoff daily report — {_WEEKDAYS[day.weekday()]} {day.isoformat()} "
                f"({self.window.zone.key})")

    @property
    def findings(self) -> int:
        return sum(c.count for c in self.checks if c.applies)

    def as_json(self) -> dict[str, Any]:
        w, s = self.window, self.stats
        return {
            "title": self.title,
            "day": w.day.isoformat(),
            "zone": w.zone.key,
            "start": w.start.isoformat(),
            "end": w.end.isoformat(),
            "until": w.until.isoformat(),
            "complete": w.complete,
            "made_at": self.made_at.isoformat(),
            "total": s["total"],
            "dispositions": s["dispositions"],
            "human_override_rate": s["human_override_rate"],
            "timeout_ignored_rate": s["timeout_ignored_rate"],
            "decision_seconds": s["decision_seconds"],
            "expiry_lateness_seconds": s["expiry_lateness_seconds"],
            "watchdogs": [
                {"id": c.id, "name": c.name, "applies": c.applies, "count": c.count}
                for c in self.checks
            ],
            "watchdog_findings": self.findings,
        }

    def as_text(self) -> str:
        """Short plain text, for a chat message and the terminal."""
        w, s = self.window, self.stats
        counts = s["dispositions"]
        zone = w.zone
        if w.complete:
            span = "whole day"
            if round(w.hours) != 24:
                span += f", {w.hours:g} hours: the clocks changed"
        else:
            span = f"so far, until {w.until.astimezone(zone):%H:%M}"
        lines = [self.title, f"Requests ended: {s['total']} ({span})"]
        lines += [f"  {d.value}: {counts.get(d.value, 0)}" for d in Disposition]
        human = counts.get("human_approved", 0) + counts.get("human_rejected", 0)
        lines.append(
            f"Human override rate: {_percent(s['human_override_rate'])} "
            f"({counts.get('human_rejected', 0)} rejected of {human} human decisions)"
        )
        lines.append(
            f"Timeout rate: {_percent(s['timeout_ignored_rate'])} "
            f"({counts.get('timeout_ignored', 0)} of {s['total']} ended)"
        )
        late = s["expiry_lateness_seconds"]
        lines.append(
            f"Expiry lateness: p50 {_seconds(late['p50'])}, p99 {_seconds(late['p99'])}, "
            f"max {_seconds(late['max'])}"
        )
        when = f"{self.made_at.astimezone(zone):%Y-%m-%d %H:%M}"
        found = [c for c in self.checks if c.applies and c.count]
        if not found:
            lines.append(f"Watchdogs at {when}: all clear")
        else:
            lines.append(f"Watchdogs at {when}: {self.findings} finding(s)")
            lines += [f"  {c.id} {c.name}: {c.count}" for c in found]
        return "\n".join(lines)


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} s"
    if value < 600:
        return f"{value:.1f} s"
    if value < 36000:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


async def build_report(
    conn: AsyncConnection, now: datetime, settings: Settings, day: date | None = None
) -> Report:
    """The report of local ``day`` in the display time zone (default: today, so far)."""
    zone = settings.zone
    window = day_window(local_today(now, zone) if day is None else day, zone, now)
    stats = await compute_stats(conn, since=window.start, until=window.until)
    checks = await run_watchdogs(conn, now, Thresholds.from_settings(settings), limit=0)
    return Report(window, now, stats, checks)
