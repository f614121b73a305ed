"""The watchdogs on both databases, with an injected clock: each check fires just past its
threshold, not before, and clears once the database says the failure is over."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from signoff.db import Database
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.settings import Settings
from signoff.watchdog import IDS, Thresholds, Watchman, run_watchdogs
from tests.conftest import FakeClock
from tests.integration.api_support import api_for
from tests.integration.store_support import (
    approve,
    expire_all,
    new_incident,
    new_request,
    outcome,
    reject,
    resolve,
)


@pytest.fixture(params=["UTC", "Asia/Taipei"])
def zone(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    # 15:59:50 UTC is 23:59:50 in Taipei: the thresholds cross a local midnight there.
    return FakeClock(datetime(2026, 1, 1, 15, 59, 50, tzinfo=UTC))


@pytest.fixture
def settings(db_url: str, zone: str) -> Settings:
    return Settings(database_url=db_url, resolver_backstop="2s", display_tz=zone)


@pytest.fixture
async def wdb(settings: Settings, clock: FakeClock) -> AsyncIterator[Database]:
    database = Database.from_settings(settings, clock=clock)
    yield database
    await database.dispose()


async def found(db: Database, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Each check's findings (asserting that the count agrees with the list)."""
    thresholds = Thresholds.from_settings(settings)
    results = await db.run(lambda c, now: run_watchdogs(c, now, thresholds), readonly=True)
    assert [r.id for r in results] == list(IDS)
    for r in results:
        assert r.count == len(r.findings)
    return {r.id: r.findings for r in results}


def only(findings: dict[str, list[dict[str, Any]]], check: str) -> list[dict[str, Any]]:
    """The findings of ``check``, asserting that no other check found anything."""
    assert {k: v for k, v in findings.items() if k != check and v} == {}
    return findings[check]


async def test_a_quiet_database_has_no_findings(wdb: Database, settings: Settings) -> None:
    await new_request(wdb, ttl=60)
    assert all(v == [] for v in (await found(wdb, settings)).values())


async def test_w1_a_request_overdue_by_three_backstops_means_the_resolver_stalled(
    wdb: Database, settings: Settings, clock: FakeClock, zone: str
) -> None:
    row = await new_request(wdb, ttl=10)
    clock.advance(10 + 6)  # exactly three backstops late: not yet
    assert only(await found(wdb, settings), "W-1") == []
    clock.advance(0.001)
    [finding] = only(await found(wdb, settings), "W-1")
    assert finding["request_id"] == str(row["id"])
    deadline = {"UTC": "2026-01-01 16:00:00 UTC", "Asia/Taipei": "2026-01-02 00:00:00 CST"}
    assert f"still pending 6s after its deadline ({deadline[zone]})" in finding["detail"]
    await expire_all(wdb)
    assert only(await found(wdb, settings), "W-1") == []


async def test_w3_approved_with_no_outcome_after_the_limit(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    reported, silent = await new_request(wdb, ttl=600), await new_request(wdb, ttl=600)
    await approve(wdb, reported["id"])
    await approve(wdb, silent["id"])
    await outcome(wdb, reported["id"], succeeded=True)
    clock.advance(3600)
    assert only(await found(wdb, settings), "W-3") == []
    clock.advance(1)
    [finding] = only(await found(wdb, settings), "W-3")
    assert finding["request_id"] == str(silent["id"])
    assert "bot has not reported whether 'restart web' worked" in finding["detail"]
    await outcome(wdb, silent["id"], succeeded=False)
    assert only(await found(wdb, settings), "W-3") == []


async def test_w4_dead_notifications_within_the_window(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    async def give_up(conn: Any, now: Any) -> None:
        await outbox.add_items(conn, [
            {"channel": "webhook", "event": "request.created", "created_at": now},
            {"channel": "webhook", "event": "request.expired", "created_at": now},
        ])
        first, second = await outbox.claim_due(conn, now, limit=10, lease=timedelta(seconds=30))
        await outbox.mark_failed(conn, now, first, "HTTP 410 Gone", retry_at=None)
        await outbox.mark_failed(conn, now, second, "HTTP 503",
                                 retry_at=now + timedelta(seconds=5))

    await wdb.run(give_up)
    [finding] = only(await found(wdb, settings), "W-4")
    assert finding["outbox_id"] >= 1
    assert "webhook request.created given up after 1 attempts" in finding["detail"]
    assert "HTTP 410 Gone" in finding["detail"]
    clock.advance(24 * 3600)
    assert len(only(await found(wdb, settings), "W-4")) == 1
    clock.advance(1)  # the item stays dead (and visible in the outbox); the alert is over
    assert only(await found(wdb, settings), "W-4") == []
    dead = await wdb.run(lambda c, n: outbox.list_items(c, status="dead"))
    assert len(dead) == 1


async def test_w5_placeholders_with_no_card_even_without_a_card_channel(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    placeholder = await new_request(wdb, ttl=3600, action="TBD", needs_analysis=True)
    await new_request(wdb, ttl=3600)  # an ordinary request: W-2 is off without Telegram
    clock.advance(120)
    assert only(await found(wdb, settings), "W-5") == []
    clock.advance(1)
    [finding] = only(await found(wdb, settings), "W-5")
    assert finding["request_id"] == str(placeholder["id"])
    assert "no card was queued" in finding["detail"]
    await reject(wdb, placeholder["id"])
    assert only(await found(wdb, settings), "W-5") == []


async def test_w6_an_open_incident_whose_requests_all_ended(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    incident = await new_incident(wdb, title="queue stuck")
    first = await new_request(wdb, incident_id=incident["id"], ttl=600)
    bare = await new_incident(wdb, title="no request yet", fingerprint="bare")
    await reject(wdb, first["id"])
    clock.advance(15 * 60)
    assert only(await found(wdb, settings), "W-6") == []
    clock.advance(1)
    [finding] = only(await found(wdb, settings), "W-6")
    assert finding["incident_id"] == str(incident["id"])
    assert "'queue stuck' is open, but its last request ended 15m1s ago" in finding["detail"]
    assert str(bare["id"]) not in str(await found(wdb, settings))

    # Another proposal makes it live again; approved without an outcome is still live.
    second = await new_request(wdb, incident_id=incident["id"], ttl=600)
    assert only(await found(wdb, settings), "W-6") == []
    await approve(wdb, second["id"])
    clock.advance(1800)
    assert only(await found(wdb, settings), "W-6") == []
    await outcome(wdb, second["id"], succeeded=False)  # failed: the incident stays open
    clock.advance(15 * 60 + 1)
    assert len(only(await found(wdb, settings), "W-6")) == 1

    await resolve(wdb, incident["id"])
    assert only(await found(wdb, settings), "W-6") == []


async def test_findings_are_listed_oldest_first_up_to_a_limit_with_the_whole_count(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = []
    for _ in range(5):
        ids.append(str((await new_request(wdb, ttl=1))["id"]))
        clock.advance(1)
    clock.advance(60)
    thresholds = Thresholds.from_settings(settings)
    [w1, *_] = await wdb.run(lambda c, now: run_watchdogs(c, now, thresholds, limit=2))
    assert w1.count == 5
    assert [f["request_id"] for f in w1.findings] == ids[:2]


async def test_get_watchdog_shows_every_check(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    row = await new_request(wdb, ttl=1)
    clock.advance(60)
    async with api_for(wdb, settings) as api:
        assert (await api.as_(None).get("/watchdog")).status_code == 401
        response = await api.as_("viewer").get("/watchdog")
    assert response.status_code == 200
    checks = {c["id"]: c for c in response.json()["checks"]}
    assert list(checks) == list(IDS)
    assert checks["W-1"]["findings"][0]["request_id"] == str(row["id"])
    assert checks["W-1"]["count"] == 1
    assert checks["W-2"]["applies"] is False
    assert all(set(c) >= {"id", "name", "findings"} for c in checks.values())
    assert all(c["findings"] == [] for k, c in checks.items() if k != "W-1")


async def test_the_watchman_sets_a_gauge_per_check(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    metrics = Metrics()
    watchman = Watchman(wdb, settings, metrics)
    await new_request(wdb, ttl=1)
    await new_request(wdb, ttl=1)
    clock.advance(60)
    await watchman.check()
    text = generate_latest(metrics.registry).decode()
    assert 'signoff_watchdog_findings{check="W-1",name="resolver stalled"} 2.0' in text
    assert 'signoff_watchdog_findings{check="W-6",name="open incident with every request ended"} 0.0' in text  # noqa: E501
    assert "signoff_watchdog_last_run_timestamp_seconds" in text
    await expire_all(wdb)
    await watchman.check()
    text = generate_latest(metrics.registry).decode()
    assert 'signoff_watchdog_findings{check="W-1",name="resolver stalled"} 0.0' in text


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_each_check_is_index_backed_on_postgres(
    wdb: Database, settings: Settings, clock: FakeClock
) -> None:
    """No check reads the whole requests table: EXPLAIN shows no Seq Scan on it."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from signoff.watchdog import CHECKS

    no_chat = Thresholds.from_settings(settings)
    both_chats = dataclasses.replace(no_chat, card_channels=("telegram", "slack"))
    now = clock.now

    async def plans(conn: Any, _now: Any) -> dict[tuple[str, int], str]:
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        out = {}
        for chats, thresholds in enumerate((no_chat, both_chats)):
            for check in CHECKS:
                sql = check.query(now, thresholds).compile(
                    dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
                rows = (await conn.execute(sa.text(f"EXPLAIN {sql}"))).scalars().all()
                out[check.id, chats] = "\n".join(rows)
        return out

    for check_id, plan in (await wdb.run(plans)).items():
        assert "Seq Scan on approval_requests" not in plan, (check_id, plan)

