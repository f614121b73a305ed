"""The resolver against a real database: batches, rule 4, isolation, the loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from signoff import store
from signoff.db import Database
from signoff.metrics import Metrics
from signoff.resolver import PassResult, Resolver
from signoff.settings import Settings
from signoff.tables import events, knowledge, requests
from tests.integration.resolver_support import (
    LATENESS_BOUND,
    count,
    expired,
    incident_of,
    lateness,
    make_resolver,
    request_row,
    running,
    sample,
    scalar,
    seed,
    wait_for,
)

# -- one pass ---------------------------------------------------------------------------


async def test_pass_drains_everything_due_in_batches(
    db_url: str, clocked_db: Database, clock: Any
) -> None:
    due = await seed(clocked_db, 25, ttl=10)
    later = await seed(clocked_db, 3, ttl=100)
    clock.advance(10)
    resolver, metrics = make_resolver(db_url, clocked_db, batch_size=4, concurrency=1)
    assert await resolver.count_due() == 25
    seen: list[int] = []

    result = await resolver.run_pass(on_batch=seen.append)

    assert (result.expired, result.incidents_resolved, result.errors) == (25, 25, 0)
    # Six full batches of four, then a short one that ends the pass.
    assert result.batches == 7 and seen == [4, 4, 4, 4, 4, 4, 1]
    assert result.lateness_max == 0.0  # the fake clock did not move during the pass
    assert await expired(clocked_db, due)
    for request_id in due[:3]:
        row = await request_row(clocked_db, request_id)
        assert row["decided_by"] == "timeout"
        assert row["disposition"] == "timeout_ignored"
        assert row["decided_at"] == clock.now
        incident = await incident_of(clocked_db, request_id)
        assert incident["status"] == "resolved"
        assert incident["resolution_type"] == "timeout"
        assert incident["disposition"] == "timeout_ignored"
    assert await count(clocked_db, requests, requests.c.status == "pending") == 3
    assert all([(await request_row(clocked_db, r))["status"] == "pending" for r in later])
    # Every expiry wrote its knowledge entry and its audit events.
    assert await count(clocked_db, knowledge) == 25
    assert await count(clocked_db, events, events.c.kind == "request_expired") == 25
    assert await count(clocked_db, events, events.c.kind == "incident_resolved") == 25
    assert await resolver.count_due() == 0

    assert sample(metrics, "signoff_requests_expired_total") == 25
    assert sample(metrics, "signoff_requests_decided_total", disposition="timeout_ignored") == 25
    assert sample(metrics, "signoff_incidents_resolved_total", resolution_type="timeout") == 25
    assert sample(metrics, "signoff_expiry_lateness_seconds_count") == 25
    assert sample(metrics, "signoff_resolver_passes_total") == 1
    assert sample(metrics, "signoff_requests_pending") == 3
    assert sample(metrics, "signoff_oldest_overdue_seconds") == 0

    again = await resolver.run_pass()
    assert (again.expired, again.batches) == (0, 1)


async def test_concurrent_batches_close_each_incident_once(
    db_url: str, clocked_db: Database, clock: Any
) -> None:
    # Three requests per incident, due together, in batches of five run four at a time:
    # siblings land in different concurrent batches, and only the last to commit may
    # (and must) close their incident.
    async def setup(conn: AsyncConnection, now: datetime) -> None:
        for i in range(40):
            incident, _ = await store.create_incident(
                conn, now, actor="bot", data={"title": f"t{i}", "severity": "low"}
            )
            for j in range(3):
                await store.create_request(
                    conn, now, actor="bot",
                    data={"action": f"a{j}", "incident_id": incident["id"]},
                    expires_at=now + timedelta(seconds=10),
                )

    await clocked_db.run(setup)
    clock.advance(10)
    resolver, _ = make_resolver(db_url, clocked_db, batch_size=5, concurrency=4)
    result = await resolver.run_pass()
    assert (result.expired, result.incidents_resolved, result.errors) == (120, 40, 0)
    assert await count(clocked_db, requests, requests.c.status == "pending") == 0
    assert await count(clocked_db, knowledge) == 40
    assert await count(clocked_db, events, events.c.kind == "incident_resolved") == 40
    # Each case file was written after all three expiries, by whichever batch came last.
    async def entries(conn: AsyncConnection, _now: datetime) -> list[Any]:
        return list((await conn.execute(sa.select(knowledge.c.actions))).scalars())

    for actions in await clocked_db.run(entries, readonly=True):
        assert sorted(a["status"] for a in actions) == ["expired"] * 3


async def test_pass_records_lateness(db_url: str, clocked_db: Database, clock: Any) -> None:
    [request_id] = await seed(clocked_db, 1, ttl=5)
    clock.advance(7.5)
    resolver, metrics = make_resolver(db_url, clocked_db)
    result = await resolver.run_pass()
    assert result.lateness_max == pytest.approx(2.5)
    assert result.lateness_mean == pytest.approx(2.5)
    assert await lateness(clocked_db, request_id) == pytest.approx(2.5)
    assert sample(metrics, "signoff_expiry_lateness_seconds_sum") == pytest.approx(2.5)


async def test_oldest_overdue_gauge(db_url: str, clocked_db: Database, clock: Any) -> None:
    await seed(clocked_db, 2, ttl=10)
    clock.advance(40)
    resolver, metrics = make_resolver(db_url, clocked_db, listen=False)
    await resolver._refresh_gauges(force=True)
    assert sample(metrics, "signoff_requests_pending") == 2
    assert sample(metrics, "signoff_oldest_overdue_seconds") == pytest.approx(30)


async def test_incident_resolved_only_when_rule_4_holds(
    db_url: str, clocked_db: Database, clock: Any
) -> None:
    async def setup(conn: AsyncConnection, now: datetime) -> dict[str, uuid.UUID]:
        made: dict[str, uuid.UUID] = {}

        async def incident(name: str) -> uuid.UUID:
            row, _ = await store.create_incident(
                conn, now, actor="bot", data={"title": name, "severity": "high"}
            )
            made[name] = row["id"]
            return row["id"]

        async def request(name: str, incident_id: uuid.UUID | None, ttl: float) -> uuid.UUID:
            row, _ = await store.create_request(
                conn, now, actor="bot", data={"action": name, "incident_id": incident_id},
                expires_at=now + timedelta(seconds=ttl),
            )
            made[name] = row["id"]
            return row["id"]

        # A: a second request is still pending (due later).
        a = await incident("A")
        await request("a1", a, 10)
        await request("a2", a, 100)
        # B: another request was approved and awaits its outcome.
        b = await incident("B")
        await request("b1", b, 10)
        b2 = await request("b2", b, 100)
        await store.approve_request(conn, now, b2, actor="alice")
        # C: the other request was rejected: nothing keeps C open.
        c = await incident("C")
        await request("c1", c, 10)
        c2 = await request("c2", c, 100)
        await store.reject_request(conn, now, c2, actor="alice")
        # D: the other request was approved and its (failed) outcome reported.
        d = await incident("D")
        await request("d1", d, 10)
        d2 = await request("d2", d, 100)
        await store.approve_request(conn, now, d2, actor="alice")
        await store.report_outcome(conn, now, d2, actor="bot", succeeded=False)
        # E: two requests due together.
        e = await incident("E")
        await request("e1", e, 10)
        await request("e2", e, 10)
        # A request with no incident at all.
        await request("lone", None, 10)
        return made

    made = await clocked_db.run(setup)
    clock.advance(10)
    resolver, _ = make_resolver(db_url, clocked_db, batch_size=2)
    result = await resolver.run_pass()
    assert result.expired == 7  # a1 b1 c1 d1 e1 e2 lone
    assert result.incidents_resolved == 3  # C, D, E

    async def status(name: str) -> str:
        row = await clocked_db.run(
            lambda conn, _now: store.get_incident(conn, made[name]), readonly=True
        )
        return str(row["status"])

    assert [await status(n) for n in "ABCDE"] == ["open", "open", "resolved", "resolved",
                                                  "resolved"]
    for name in "CDE":
        row = await clocked_db.run(
            lambda conn, _now, name=name: store.get_incident(conn, made[name]), readonly=True
        )
        assert (row["resolution_type"], row["disposition"]) == ("timeout", "timeout_ignored")
    entries = await count(clocked_db, knowledge)
    assert entries == 3
    actions = await scalar(
        clocked_db, sa.select(knowledge.c.actions).where(knowledge.c.incident_id == made["C"])
    )
    assert sorted((a["action"], a["status"]) for a in actions) == [
        ("c1", "expired"), ("c2", "rejected")]

    # When A's last pending request expires, A closes too; B waits for its outcome.
    clock.advance(90)
    result = await resolver.run_pass()
    assert (result.expired, result.incidents_resolved) == (1, 1)
    assert await status("A") == "resolved"
    assert await status("B") == "open"


# -- one bad row ------------------------------------------------------------------------


async def plant_knowledge_entry(db: Database, request_id: uuid.UUID) -> uuid.UUID:
    """A knowledge entry for a still-open incident: resolving it will break the unique key."""
    row = await request_row(db, request_id)

    async def work(conn: AsyncConnection, now: datetime) -> None:
        await conn.execute(knowledge.insert().values(
            id=uuid.uuid4(), incident_id=row["incident_id"], created_at=now, title="planted",
            resolution_type="manual", actions=[], summary="planted",
        ))

    await db.run(work)
    return uuid.UUID(str(row["incident_id"]))


async def test_one_bad_row_never_stops_the_others(
    db_url: str, clocked_db: Database, clock: Any
) -> None:
    ids = await seed(clocked_db, 6, ttl=10)
    bad = ids[2]
    bad_incident = await plant_knowledge_entry(clocked_db, bad)
    clock.advance(10)
    # One batch at a time, so the counts are exact (two at once: the test after this one).
    resolver, metrics = make_resolver(db_url, clocked_db, batch_size=4, concurrency=1)

    with capture_logs() as logs:
        result = await resolver.run_pass()

    assert (result.expired, result.errors) == (5, 1)
    assert resolver.quarantine == {bad}
    assert (await request_row(clocked_db, bad))["status"] == "pending"
    assert await expired(clocked_db, [i for i in ids if i != bad])
    failed = [e for e in logs if e["event"] == "resolver_row_failed"]
    assert [e["request_id"] for e in failed] == [str(bad)]
    assert any(e["event"] == "resolver_batch_failed" for e in logs)
    assert sample(metrics, "signoff_resolver_errors_total") == 2  # the batch, then the row

    # Later passes: new due rows are claimed in batches around the bad one, which is
    # retried alone and fails again without holding anything up.
    more = await seed(clocked_db, 5, ttl=10)
    clock.advance(10)
    with capture_logs() as logs:
        result = await resolver.run_pass()
    assert (result.expired, result.errors) == (5, 1)
    assert await expired(clocked_db, more)
    assert not any(e["event"] == "resolver_batch_failed" for e in logs)
    assert [e["event"] for e in logs if e["event"] == "resolver_row_failed"] == [
        "resolver_row_failed"]

    # Once the cause is gone, the next pass expires it and lets it go.
    async def unplant(conn: AsyncConnection, _now: datetime) -> None:
        await conn.execute(knowledge.delete().where(knowledge.c.incident_id == bad_incident))

    await clocked_db.run(unplant)
    result = await resolver.run_pass()
    assert (result.expired, result.errors, result.incidents_resolved) == (1, 0, 1)
    assert resolver.quarantine == set()
    assert (await request_row(clocked_db, bad))["status"] == "expired"


async def test_two_batches_at_once_fail_a_bad_row_once(
    db_url: str, clocked_db: Database, clock: Any
) -> None:
    """With two batch workers, both may claim the bad row (one after the other's batch
    rolled back), but one at a time looks for it row by row: it fails alone once, is set
    aside, and every other row expires."""
    for _ in range(5):
        ids = await seed(clocked_db, 9, ttl=10)
        bad = ids[4]
        await plant_knowledge_entry(clocked_db, bad)
        clock.advance(10)
        resolver, metrics = make_resolver(db_url, clocked_db, batch_size=3, concurrency=2)
        with capture_logs() as logs:
            result = await resolver.run_pass()
        assert (result.expired, result.errors) == (8, 1)
        assert resolver.quarantine == {bad}
        assert [e["request_id"] for e in logs if e["event"] == "resolver_row_failed"] == [
            str(bad)]
        batches_failed = sum(e["event"] == "resolver_batch_failed" for e in logs)
        assert batches_failed >= 1  # more when the retry row by row took other rows first
        assert sample(metrics, "signoff_resolver_errors_total") == batches_failed + 1
        assert await expired(clocked_db, [i for i in ids if i != bad])

        async def unplant(conn: AsyncConnection, _now: datetime) -> None:
            await conn.execute(knowledge.delete().where(knowledge.c.title == "planted"))

        await clocked_db.run(unplant)
        assert (await resolver.run_pass()).expired == 1  # the bad row, set free


async def test_quarantined_row_does_not_make_the_loop_spin(db_url: str, db: Database) -> None:
    [bad] = await seed(db, 1, ttl=0.05)
    await plant_knowledge_entry(db, bad)
    await asyncio.sleep(0.1)
    resolver, metrics = make_resolver(db_url, db, backstop=0.3, listen=False)
    with capture_logs():  # not rendered: a pretty traceback takes longer than the test
        async with running(resolver):
            for _ in range(100):  # a loaded machine may take a while to set it aside
                if resolver.quarantine:
                    break
                await asyncio.sleep(0.1)
            before = sample(metrics, "signoff_resolver_passes_total")
            await asyncio.sleep(1.5)
            passes = sample(metrics, "signoff_resolver_passes_total") - before
    # About one retry per backstop (0.3 s), not thousands.
    assert resolver.quarantine == {bad}
    assert 2 <= passes <= 10


# -- the loop ---------------------------------------------------------------------------


async def test_loop_expires_each_request_soon_after_its_deadline(
    db_url: str, db: Database
) -> None:
    # Created before the loop starts, with deadlines spread over a second.
    ids = []
    for i in range(10):
        ids += await seed(db, 1, ttl=0.3 + i * 0.1)
    resolver, _ = make_resolver(db_url, db, backstop=5, listen=False)
    async with running(resolver):
        await wait_for(lambda: expired(db, ids), within=5)
    late = [await lateness(db, i) for i in ids]
    assert max(late) < LATENESS_BOUND, late
    assert min(late) >= 0


async def test_wake_in_process_beats_the_backstop(db_url: str, db: Database) -> None:
    resolver, metrics = make_resolver(db_url, db, backstop=30, listen=False)
    async with running(resolver):
        await asyncio.sleep(0.2)  # now asleep for the whole backstop: nothing is pending
        passes = sample(metrics, "signoff_resolver_passes_total")
        [request_id] = await seed(db, 1, ttl=0.3)
        resolver.wake((await request_row(db, request_id))["expires_at"])
        await wait_for(lambda: expired(db, [request_id]), within=3)
        # The wake moved the plan; the one pass ran at the deadline.
        assert sample(metrics, "signoff_resolver_passes_total") == passes + 1
    assert await lateness(db, request_id) < LATENESS_BOUND


async def test_an_exhausted_pool_does_not_make_expiry_late(db_url: str) -> None:
    # The loop holds a connection of its own: a burst of HTTP requests queueing for the
    # pool must not hold an expiry back.
    db = Database.from_settings(Settings(database_url=db_url, db_pool_size=3))
    other = Database.from_settings(Settings(database_url=db_url))
    resolver, _ = make_resolver(db_url, db, backstop=30, listen=False)
    try:
        async with running(resolver), contextlib.AsyncExitStack() as stack:
            await asyncio.sleep(0.2)
            for _ in range(2):  # the rest of the pool, busy
                await stack.enter_async_context(db.begin(readonly=True))
            queued = [asyncio.create_task(scalar(db, sa.select(1))) for _ in range(5)]
            [request_id] = await seed(other, 1, ttl=0.3)
            resolver.wake((await request_row(other, request_id))["expires_at"])
            await wait_for(lambda: expired(other, [request_id]), within=3)
            assert not any(task.done() for task in queued)
        await asyncio.gather(*queued)
        assert await lateness(other, request_id) < LATENESS_BOUND
    finally:
        await other.dispose()
        await db.dispose()


async def test_wake_for_a_later_deadline_keeps_the_plan(db_url: str, db: Database) -> None:
    [soon] = await seed(db, 1, ttl=0.4)
    resolver, metrics = make_resolver(db_url, db, backstop=30, listen=False)
    async with running(resolver):
        await asyncio.sleep(0.1)
        passes = sample(metrics, "signoff_resolver_passes_total")
        [later] = await seed(db, 1, ttl=60)
        resolver.wake((await request_row(db, later))["expires_at"])
        await asyncio.sleep(0.1)
        assert sample(metrics, "signoff_resolver_passes_total") == passes  # not woken
        await wait_for(lambda: expired(db, [soon]), within=3)
    assert await lateness(db, soon) < LATENESS_BOUND


async def test_stop_and_cancel_end_the_loop_promptly(db_url: str, db: Database) -> None:
    resolver, _ = make_resolver(db_url, db, backstop=30)
    stop = asyncio.Event()
    task = asyncio.create_task(resolver.run(stop))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 0.5

    task = asyncio.create_task(resolver.run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert not resolver.listening


async def test_loop_survives_an_unreachable_database(tmp_path: Any) -> None:
    url = "postgresql://postgres@127.0.0.1:1/nothing_here"
    settings = Settings(database_url=url, resolver_backstop=0.2)
    db = Database.from_settings(settings)
    resolver = Resolver(db, settings, Metrics())
    try:
        with capture_logs() as logs:
            async with running(resolver):
                await asyncio.sleep(0.8)
    finally:
        await db.dispose()
    names = [e["event"] for e in logs]
    assert names.count("resolver_db_unavailable") >= 2
    assert "resolver_listen_unavailable" in names
    assert "resolver_error" not in names


def test_pass_result_mean_without_rows() -> None:
    assert PassResult().lateness_mean == 0.0
