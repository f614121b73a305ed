"""A decision refused at the deadline names the status that finally won (``settle_request``).

A decider whose guard passed a moment before the deadline may still be committing when a
later one is refused; the refusal must not say "expired" if the request ends approved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from signoff import store
from signoff.db import Database, create_engine
from signoff.settings import Settings
from tests.integration.test_races_postgres import wait_until_blocked

DEADLINE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BEFORE = DEADLINE - timedelta(milliseconds=1)
AFTER = DEADLINE + timedelta(milliseconds=1)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=db_url, db_pool_size=4))
    yield engine
    await engine.dispose()


async def _request(engine: AsyncEngine) -> object:
    db = Database(engine, clock=lambda: DEADLINE - timedelta(minutes=1))

    async def work(conn, now):  # type: ignore[no-untyped-def]
        inc, _ = await store.create_incident(
            conn, now, actor="bot", data={"title": "t", "severity": "low"}
        )
        row, _ = await store.create_request(
            conn,
            now,
            actor="bot",
            data={"action": "a", "incident_id": inc["id"]},
            expires_at=DEADLINE,
        )
        return row["id"]

    return await db.run(work)


async def test_settling_an_untouched_overdue_request_expires_it(engine: AsyncEngine) -> None:
    rid = await _request(engine)
    late = Database(engine, clock=lambda: AFTER)
    status = await late.run(lambda c, n: store.settle_request(c, n, rid))  # type: ignore[arg-type]
    assert status == "expired"
    row = await late.run(lambda c, n: store.get_request(c, rid))  # type: ignore[arg-type]
    assert (row["status"], row["decided_by"], row["decided_at"]) == ("expired", "timeout", AFTER)
    # Settling again changes nothing: terminal states are final.
    assert await late.run(lambda c, n: store.settle_request(c, n, rid)) == "expired"  # type: ignore[arg-type]


# Row locks are PostgreSQL's; SQLite has one writer at a time, so nothing is in flight.
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("ending", ["commit", "rollback"])
async def test_settling_waits_for_a_decision_in_flight(db_url: str, ending: str) -> None:
    engine = create_engine(Settings(database_url=db_url, db_pool_size=4))
    try:
        rid = await _request(engine)
        early, late = Database(engine, clock=lambda: BEFORE), Database(engine, clock=lambda: AFTER)
        settled: asyncio.Task[str] | None = None
        try:
            async with early.begin() as conn:
                row = await store.approve_request(conn, BEFORE, rid, actor="alice")  # type: ignore[arg-type]
                assert row["status"] == "approved"
                settled = asyncio.create_task(
                    late.run(lambda c, n: store.settle_request(c, n, rid))  # type: ignore[arg-type]
                )
                await wait_until_blocked(engine)
                assert not settled.done()
                if ending == "rollback":
                    raise RuntimeError("the decider gave up")
        except RuntimeError:
            pass
        assert settled is not None
        status = await asyncio.wait_for(settled, 10)
        final = await late.run(lambda c, n: store.get_request(c, rid))  # type: ignore[arg-type]
        assert status == final["status"] == ("approved" if ending == "commit" else "expired")
    finally:
        await engine.dispose()
