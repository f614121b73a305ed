"""The daily heartbeat on both databases, with an injected clock, in UTC and in Asia/Taipei.

A request that ended at 2026-01-01 20:00 UTC ended on 2026-01-01 in UTC but on 2026-01-02
in Taipei: each zone counts it on its own day. The heartbeat is written at 09:00 local
(01:00 UTC in Taipei), not a second before, once by two replicas, about the day before;
it is delivered as a plain Telegram message and as a signed webhook event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from signoff.db import Database
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.notify.channels import build_senders
from signoff.notify.heartbeat import Heartbeat
from signoff.notify.webhook import SIGNATURE_HEADER, verify
from signoff.notify.worker import Notifier
from signoff.report import build_report
from signoff.scheduler import Scheduler, background_checks
from signoff.settings import Settings
from tests.conftest import FakeClock
from tests.integration.notify_support import FakeBotApi, Recorder, serving
from tests.integration.store_support import (
    approve,
    cancel,
    expire_all,
    new_request,
    reject,
)

TOKEN = "123456:test-token"
CHAT = "-1001"
SECRET = "webhook-secret"


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def bot() -> Iterator[FakeBotApi]:
    with serving(FakeBotApi(TOKEN)) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with serving(Recorder()) as rec:
        yield rec


def channels(bot: FakeBotApi, receiver: Recorder) -> dict[str, Any]:
    return {"telegram_bot_token": TOKEN, "telegram_chat_id": CHAT,
            "telegram_api_base": bot.url, "webhook_url": receiver.url + "/hook",
            "webhook_secret": SECRET}


async def seed_day(db: Database, clock: FakeClock) -> None:
    """Two requests ended on 2026-01-01 (UTC): one rejected at 12:00 UTC (20:00 in
    Taipei), one approved at 20:00 UTC (04:00 on the 2nd in Taipei) and never reported
    on (a W-3 finding an hour later)."""
    clock.now = at(2026, 1, 1, 11)
    rejected = await new_request(db, ttl=7200)
    clock.now = at(2026, 1, 1, 12)
    await reject(db, rejected["id"])
    approved = await new_request(db, ttl=10 * 3600)
    clock.now = at(2026, 1, 1, 20)
    await approve(db, approved["id"])


async def report_items(db: Database) -> list[Any]:
    rows = await db.run(lambda c, n: outbox.list_items(c), readonly=True)
    return [r for r in rows if r["event"] == outbox.DAILY_REPORT]


# -- the figures of a day -------------------------------------------------------------


async def test_each_zone_counts_a_request_on_its_own_local_day(
    clocked_db: Database, clock: FakeClock, db_url: str
) -> None:
    db = clocked_db
    await seed_day(db, clock)
    cancelled = await new_request(db, ttl=4 * 3600)
    clock.now = at(2026, 1, 1, 22)  # 06:00 on the 2nd in Taipei: cancelled
    await cancel(db, cancelled["id"])
    # Two timeouts on the 2nd (both zones), expired 2 s and 30 s late.
    clock.now = at(2026, 1, 2, 2)
    soon, later = await new_request(db, ttl=10), await new_request(db, ttl=40)
    clock.now = at(2026, 1, 2, 2, 0, 12)
    assert await expire_all(db) == 1
    clock.now = at(2026, 1, 2, 2, 1, 10)
    assert await expire_all(db) == 1
    assert soon["id"] != later["id"]
    clock.now = at(2026, 1, 3, 12)

    async def figures(zone: str, day: str) -> dict[str, Any]:
        settings = Settings(database_url=db_url, display_tz=zone)
        report = await db.run(
            lambda c, now: build_report(c, now, settings, date.fromisoformat(day)),
            readonly=True)
        return report.as_json()

    def counts(report: dict[str, Any]) -> dict[str, int]:
        return {k: v for k, v in report["dispositions"].items() if v}

    utc1, utc2 = await figures("UTC", "2026-01-01"), await figures("UTC", "2026-01-02")
    tpe1, tpe2 = (await figures("Asia/Taipei", "2026-01-01"),
                  await figures("Asia/Taipei", "2026-01-02"))
    assert counts(utc1) == {"human_rejected": 1, "human_approved": 1, "cancelled": 1}
    assert (utc1["total"], utc1["human_override_rate"], utc1["timeout_ignored_rate"]) == (
        3, 0.5, 0.0)
    assert counts(utc2) == {"timeout_ignored": 2}
    assert utc2["human_override_rate"] is None and utc2["timeout_ignored_rate"] == 1.0
    assert counts(tpe1) == {"human_rejected": 1}
    assert tpe1["human_override_rate"] == 1.0
    assert counts(tpe2) == {"human_approved": 1, "cancelled": 1, "timeout_ignored": 2}
    assert (tpe2["human_override_rate"], tpe2["timeout_ignored_rate"]) == (0.0, 0.5)
    for late in (utc2, tpe2):
        lateness = late["expiry_lateness_seconds"]  # julianday on SQLite: within a ms
        assert lateness == {"p50": pytest.approx(2.0, abs=1e-3),
                            "p99": pytest.approx(30.0, abs=1e-3),
                            "max": pytest.approx(30.0, abs=1e-3)}
    assert utc1["expiry_lateness_seconds"]["p99"] is None
    assert (tpe1["start"], tpe1["end"]) == ("2025-12-31T16:00:00+00:00",
                                            "2026-01-01T16:00:00+00:00")
    # Read now, whatever the day: the approval of the 1st has had no outcome since.
    for report in (utc1, utc2, tpe1, tpe2):
        w3 = next(c for c in report["watchdogs"] if c["id"] == "W-3")
        assert w3["count"] == 1 and report["watchdog_findings"] == 1


async def test_today_is_reported_so_far(
    clocked_db: Database, clock: FakeClock, db_url: str
) -> None:
    await seed_day(clocked_db, clock)
    settings = Settings(database_url=db_url, display_tz="Asia/Taipei")
    clock.now = at(2026, 1, 1, 21)  # 05:00 on the 2nd in Taipei
    report = await clocked_db.run(lambda c, now: build_report(c, now, settings),
                                  readonly=True)
    assert report.window.day == date(2026, 1, 2) and not report.window.complete
    assert report.stats["dispositions"]["human_approved"] == 1
    assert "(so far, until 05:00)" in report.as_text()


async def test_a_spring_forward_day_is_23_hours_long(
    clocked_db: Database, clock: FakeClock, db_url: str
) -> None:
    """New York, 2026-03-08: from 05:00 UTC to 04:00 UTC the next day. A request that
    ended at 04:30 UTC on the 9th ended on the 9th there, though it is within 24 hours of
    the 8th's midnight."""
    for when in (at(2026, 3, 8, 5, 30), at(2026, 3, 9, 3, 30), at(2026, 3, 9, 4, 30)):
        clock.now = when - timedelta(minutes=5)
        row = await new_request(clocked_db, ttl=3600)
        clock.now = when
        await reject(clocked_db, row["id"])
    clock.now = at(2026, 3, 10, 12)
    settings = Settings(database_url=db_url, display_tz="America/New_York")

    async def day(text: str) -> Any:
        return await clocked_db.run(lambda c, now: build_report(
            c, now, settings, date.fromisoformat(text)), readonly=True)

    eighth, ninth = await day("2026-03-08"), await day("2026-03-09")
    assert eighth.window.hours == 23 and ninth.window.hours == 24
    assert (eighth.stats["total"], ninth.stats["total"]) == (2, 1)
    assert "whole day, 23 hours: the clocks changed" in eighth.as_text()


# -- the heartbeat --------------------------------------------------------------------


@dataclass
class Replicas:
    """Two serve processes on one database: a Database and the scheduled checks each."""

    dbs: list[Database]
    schedulers: list[Scheduler]
    settings: Settings

    async def check(self) -> None:
        for scheduler in self.schedulers:
            await scheduler.run_once()

    def heartbeat(self, replica: int) -> Heartbeat:
        [job] = [j for j in self.schedulers[replica].jobs if j.name == "heartbeat"]
        beat = job.run
        assert isinstance(beat.__self__, Heartbeat)  # type: ignore[attr-defined]
        return beat.__self__  # type: ignore[attr-defined]


@pytest.fixture
async def replicas_of(
    db_url: str, clock: FakeClock
) -> AsyncIterator[Any]:
    made: list[Database] = []

    def make(**settings: Any) -> Replicas:
        config = Settings(database_url=db_url, **settings)
        dbs = [Database.from_settings(config, clock=clock) for _ in range(2)]
        made.extend(dbs)
        return Replicas(dbs, [background_checks(d, config, Metrics()) for d in dbs], config)

    yield make
    for db in made:
        await db.dispose()


@pytest.mark.parametrize(
    ("zone", "due", "approvals"),
    [("UTC", at(2026, 1, 2, 9), 1), ("Asia/Taipei", at(2026, 1, 2, 1), 0)],
)
async def test_the_heartbeat_is_written_once_at_the_local_time_about_the_day_before(
    replicas_of: Any, clock: FakeClock, bot: FakeBotApi, receiver: Recorder,
    zone: str, due: datetime, approvals: int,
) -> None:
    replicas: Replicas = replicas_of(display_tz=zone, heartbeat_at="09:00",
                                     **channels(bot, receiver))
    db = replicas.dbs[0]
    await seed_day(db, clock)
    for before in (at(2026, 1, 2, 0, 59, 59), at(2026, 1, 2, 8, 59, 59)):
        if before < due:
            clock.now = before
            await replicas.check()
    assert await report_items(db) == []

    clock.now = due  # both replicas at once: one item per channel all the same
    await asyncio.gather(*(s.run_once() for s in replicas.schedulers))
    clock.advance(3600)
    await replicas.check()
    await replicas.check()
    items = await report_items(db)
    assert sorted((i["channel"], i["dedupe_key"]) for i in items) == [
        ("telegram", "heartbeat:telegram:2026-01-01"),
        ("webhook", "heartbeat:webhook:2026-01-01"),
    ]
    assert all(i["created_at"] == due and i["request_id"] is None for i in items)

    async with httpx.AsyncClient(timeout=2) as client:
        notifier = Notifier(db, replicas.settings, Metrics(),
                            build_senders(db, replicas.settings, client), rng=lambda: 0.5)
        await notifier.run_once()
    assert {i["status"] for i in await report_items(db)} == {"delivered"}

    [message] = [c for c in bot.of("sendMessage")
                 if c.json["text"].startswith("signoff daily report")]
    assert message.json["chat_id"] == CHAT and "reply_markup" not in message.json
    text = message.json["text"]
    for shown in (f"signoff daily report — Thu 2026-01-01 ({zone})", "human_rejected: 1",
                  f"human_approved: {approvals}", "W-3 approved request with no outcome: 1",
                  f"Requests ended: {1 + approvals} (whole day)"):
        assert shown in text, (shown, text)

    [hook] = [c for c in receiver.calls if c.json["event"] == "report.daily"]
    assert verify(SECRET, hook.body, hook.headers[SIGNATURE_HEADER.lower()])
    assert hook.headers["x-signoff-event"] == "report.daily"
    body = hook.json
    assert set(body) == {"event", "at", "request", "incident", "report"}
    assert (body["request"], body["incident"]) == (None, None)
    assert body["at"] == due.isoformat()
    assert (body["report"]["day"], body["report"]["zone"]) == ("2026-01-01", zone)
    assert body["report"]["dispositions"]["human_approved"] == approvals
    assert body["report"]["watchdog_findings"] == 1

    # `signoff report --day 2026-01-01` later shows the same figures.
    clock.advance(86400)
    again = await db.run(lambda c, now: build_report(
        c, now, replicas.settings, date(2026, 1, 1)), readonly=True)
    same = {k: v for k, v in again.as_json().items() if k not in ("made_at", "watchdogs",
                                                                  "watchdog_findings")}
    assert same == {k: body["report"][k] for k in same}
    assert json.dumps(body["report"], ensure_ascii=False)  # plain JSON through and through


async def test_after_a_downtime_only_yesterday_is_sent(
    replicas_of: Any, clock: FakeClock, bot: FakeBotApi, receiver: Recorder
) -> None:
    replicas: Replicas = replicas_of(display_tz="Asia/Taipei", heartbeat_at="09:00",
                                     **channels(bot, receiver))
    clock.now = at(2026, 1, 2, 1)
    await replicas.check()
    clock.now = at(2026, 1, 5, 7)  # down for three days: back at 15:00 on the 5th
    await replicas.check()
    keys = sorted(i["dedupe_key"] for i in await report_items(replicas.dbs[0]))
    assert keys == ["heartbeat:telegram:2026-01-01", "heartbeat:telegram:2026-01-04",
                    "heartbeat:webhook:2026-01-01", "heartbeat:webhook:2026-01-04"]


async def test_off_writes_nothing_and_no_channel_writes_nothing(
    replicas_of: Any, clock: FakeClock, bot: FakeBotApi, receiver: Recorder
) -> None:
    off: Replicas = replicas_of(heartbeat_at="off", **channels(bot, receiver))
    silent: Replicas = replicas_of(heartbeat_at="09:00")
    await seed_day(off.dbs[0], clock)
    for hour in range(0, 48, 3):
        clock.now = at(2026, 1, 2) + timedelta(hours=hour)
        await off.check()
        await silent.check()
    assert await report_items(off.dbs[0]) == []
    heartbeat = silent.heartbeat(0)
    assert isinstance(heartbeat, Heartbeat) and heartbeat.done == date(2026, 1, 2)
