"""On PostgreSQL a transaction's ``now`` is the database's clock, kept by the process
without a round trip per transaction; a transaction whose connection is lost before its
commit runs again on a new connection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import Database
from signoff.settings import normalise_database_url

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]


async def test_now_follows_the_database_clock_without_reading_it_each_time(
    db: Database,
) -> None:
    statements: list[str] = []

    @sa.event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def count(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    async def both(conn: AsyncConnection, now: datetime) -> tuple[datetime, datetime]:
        server = (await conn.execute(sa.text("SELECT clock_timestamp()"))).scalar_one()
        return now, server

    readings = [await db.run(both) for _ in range(50)]
    for now, server in readings:
        assert now.tzinfo is UTC
        assert abs((server - now).total_seconds()) < 0.05, (now, server)
    assert [n for n, _ in readings] == sorted(n for n, _ in readings)
    # 50 transactions, one of them (or two, if a second passed) took a reading.
    taken = [s for s in statements if s == "SELECT clock_timestamp()"]
    assert 50 < len(taken) <= 52


async def test_a_connection_lost_before_the_commit_runs_the_work_again(
    db: Database, db_url: str
) -> None:
    dsn = normalise_database_url(db_url).replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    marker = f"lost-{uuid.uuid4()}"
    tries: list[int] = []
    try:
        async def work(conn: AsyncConnection, now: datetime) -> int:
            pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            tries.append(pid)
            await conn.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS t (v text)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": marker})
            if len(tries) == 1:  # the server ends this connection mid-transaction
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                await conn.execute(sa.text("SELECT 1"))
            return int(pid)

        pid = await db.run(work)
    finally:
        await admin.close()
    assert len(tries) == 2 and pid == tries[1] != tries[0]
