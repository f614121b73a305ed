"""``signoff report`` as operators run it, on a seeded SQLite file: the figures of a local
day in the display time zone, as text and as JSON; a bad or future day exits 2. And
``signoff serve`` sending yesterday's heartbeat once, on the real clock."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from signoff.db import Database
from signoff.migrate import upgrade
from signoff.notify.webhook import verify
from signoff.settings import Settings
from tests.acceptance.conftest import run_signoff, start_server
from tests.conftest import FakeClock
from tests.integration.notify_support import Recorder, serving
from tests.integration.store_support import approve, expire_all, new_request, reject


async def _seed(url: str) -> None:
    """On 2026-01-01 (UTC): a rejection at 12:00 (20:00 in Taipei), an approval at 20:00
    (04:00 on the 2nd in Taipei); and a timeout 3 s late at 23:00 (07:00 on the 2nd)."""
    clock = FakeClock(datetime(2026, 1, 1, 11, tzinfo=UTC))
    db = Database.from_settings(Settings(database_url=url), clock=clock)
    try:
        await upgrade(db)
        rejected = await new_request(db, ttl=7200)
        clock.now = datetime(2026, 1, 1, 12, tzinfo=UTC)
        await reject(db, rejected["id"])
        approved = await new_request(db, ttl=10 * 3600)
        clock.now = datetime(2026, 1, 1, 20, tzinfo=UTC)
        await approve(db, approved["id"])
        clock.now = datetime(2026, 1, 1, 23, tzinfo=UTC)
        await new_request(db, ttl=60)
        clock.advance(63)
        assert await expire_all(db) == 1
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path: Path = tmp_path_factory.mktemp("report") / "signoff.db"
    url = f"sqlite:///{path}"
    asyncio.run(_seed(url))
    return {**os.environ, "SIGNOFF_DATABASE_URL": url}


def test_the_report_of_a_day_in_utc_and_in_taipei(seeded: dict[str, str]) -> None:
    utc = run_signoff({**seeded, "SIGNOFF_DISPLAY_TZ": "UTC"}, "report", "--day", "2026-01-01")
    assert utc.returncode == 0, utc.stderr
    for shown in ("signoff daily report — Thu 2026-01-01 (UTC)",
                  "Requests ended: 3 (whole day)", "human_approved: 1", "human_rejected: 1",
                  "timeout_ignored: 1", "Human override rate: 50.0%", "Timeout rate: 33.3%",
                  "p99 3.00 s", "W-3 approved request with no outcome: 1"):
        assert shown in utc.stdout, (shown, utc.stdout)

    taipei = run_signoff({**seeded, "SIGNOFF_DISPLAY_TZ": "Asia/Taipei"}, "report",
                         "--day", "2026-01-01", "--json")
    assert taipei.returncode == 0, taipei.stderr
    report = json.loads(taipei.stdout)
    assert (report["day"], report["zone"], report["total"]) == ("2026-01-01", "Asia/Taipei", 1)
    assert report["dispositions"]["human_rejected"] == 1
    assert report["human_override_rate"] == 1.0 and report["timeout_ignored_rate"] == 0.0
    assert report["expiry_lateness_seconds"]["p99"] is None

    second = run_signoff(seeded, "--display-tz", "Asia/Taipei", "report", "--day", "2026-01-02",
                         "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert {k: v for k, v in report["dispositions"].items() if v} == {
        "human_approved": 1, "timeout_ignored": 1}
    assert report["expiry_lateness_seconds"]["p99"] == pytest.approx(3.0, abs=1e-3)


def test_today_so_far_by_default(seeded: dict[str, str]) -> None:
    done = run_signoff(seeded, "report")
    assert done.returncode == 0, done.stderr
    assert "so far, until" in done.stdout


@pytest.mark.parametrize(
    ("day", "says"),
    [("2026-13-01", "not a day of the calendar"), ("01/02/2026", "use YYYY-MM-DD"),
     ("2999-01-01", "has not begun yet")],
)
def test_a_bad_or_future_day_exits_2(seeded: dict[str, str], day: str, says: str) -> None:
    done = run_signoff(seeded, "report", "--day", day)
    assert done.returncode == 2
    assert says in " ".join(done.stderr.replace("│", " ").split()), done.stderr
    assert done.stdout == ""


def test_a_bad_heartbeat_time_stops_every_command(seeded: dict[str, str]) -> None:
    done = run_signoff({**seeded, "SIGNOFF_HEARTBEAT_AT": "9am"}, "report")
    assert done.returncode == 2
    assert "SIGNOFF_HEARTBEAT_AT" in done.stderr and "HH:MM" in done.stderr


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with serving(Recorder()) as rec:
        yield rec


def test_serve_sends_yesterdays_heartbeat_once(
    database_url: str, tmp_path: Path, receiver: Recorder
) -> None:
    # 00:00 has always passed: the heartbeat is due as soon as serve starts.
    server = start_server(
        database_url, tmp_path / "serve.log", SIGNOFF_WEBHOOK_URL=receiver.url + "/hook",
        SIGNOFF_WEBHOOK_SECRET="s3cret", SIGNOFF_DISPLAY_TZ="Asia/Taipei",
        SIGNOFF_HEARTBEAT_AT="00:00", SIGNOFF_WATCHDOG_INTERVAL="0.2s",
    )
    try:
        [call] = receiver.wait_for(1, timeout=30)
        time.sleep(1.0)  # several more watchdog passes: nothing more is sent
    finally:
        server.stop()
    assert len(receiver.calls) == 1
    assert verify("s3cret", call.body, call.headers["x-signoff-signature"])
    body = call.json
    assert body["event"] == "report.daily"
    yesterday = datetime.now(ZoneInfo("Asia/Taipei")).date() - timedelta(days=1)
    assert body["report"]["day"] in (yesterday.isoformat(),
                                     (yesterday - timedelta(days=1)).isoformat())
    assert body["report"]["zone"] == "Asia/Taipei" and body["report"]["complete"] is True
    assert '"daily_report_queued"' in server.log_path.read_text()
