"""The hot statements give the same rows whether asyncpg runs them (``Database.run`` on
PostgreSQL) or SQLAlchemy does (``Database.begin``, SQLite), and asyncpg's errors come out
as SQLAlchemy's, so that callers handle both alike."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from signoff import store
from signoff.db import DRIVER_KEY, Database, notify_at_commit
from signoff.lifecycle import EventKind
from signoff.store.rows import record_events

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]


async def _create(conn: Any, now: datetime, key: str) -> tuple[Any, bool]:
    return await store.create_request(
        conn, now, actor="bot", data={"action": "restart web", "params": {"n": [1, "é"]}},
        expires_at=now + timedelta(minutes=5), idempotency_key=key, digest="d",
    )


async def test_both_paths_give_the_same_rows_with_the_same_types(db: Database) -> None:
    async def direct(conn: Any, now: datetime) -> tuple[dict[str, Any], bool]:
        assert conn.info.get(DRIVER_KEY) is not None  # asyncpg runs the statements
        row, created = await _create(conn, now, "k-direct")
        return dict(row), created

    made, created = await db.run(direct)
    async with db.begin() as conn:
        assert conn.info.get(DRIVER_KEY) is None  # SQLAlchemy runs them
        again, created_again = await _create(conn, datetime.now(UTC), "k-direct")
        through_sqlalchemy = {k: again[k] for k in made}
        other, _ = await _create(conn, datetime.now(UTC), "k-sqlalchemy")
    assert created and not created_again
    assert through_sqlalchemy == made
    assert {k: type(v) for k, v in dict(other).items()} == {k: type(v) for k, v in made.items()}
    assert isinstance(made["id"], uuid.UUID) and made["params"] == {"n": [1, "é"]}
    assert made["created_at"].tzinfo is UTC

    async def read(conn: Any, now: datetime) -> dict[str, Any]:
        return dict(await store.find_idempotent_request(conn, "bot", "k-sqlalchemy") or {})

    assert await db.run(read) == dict(other)


async def test_an_error_of_asyncpg_is_a_dbapi_error_with_its_sqlstate(db: Database) -> None:
    async def orphan_event(conn: Any, now: datetime) -> None:
        await record_events(conn, [{"at": now, "kind": EventKind.REQUEST_CREATED,
                                    "actor": "bot", "request_id": uuid.uuid4()}])

    with pytest.raises(DBAPIError) as caught:
        await db.run(orphan_event)
    assert getattr(caught.value.orig, "sqlstate", None) == "23503"  # foreign key
    assert not caught.value.connection_invalidated

    async def count(conn: Any, now: datetime) -> int:
        return int((await conn.execute(sa.text("SELECT count(*) FROM events"))).scalar_one())

    assert await db.run(count) == 0  # rolled back whole


async def test_the_batch_read_gives_the_same_requests_and_approvals_both_ways(
    db: Database,
) -> None:
    async def made(conn: Any, now: datetime) -> list[uuid.UUID]:
        ids = [(await _create(conn, now, f"k-{i}"))[0]["id"] for i in range(3)]
        await store.approve_request(conn, now, ids[0], actor="alice", comment="ok")
        return ids

    ids = await db.run(made)
    wanted = [*ids, uuid.uuid4()]

    async def direct(conn: Any, now: datetime) -> Any:
        return await store.read_requests(conn, wanted)

    through_asyncpg = await db.run(direct)
    async with db.begin() as conn:
        through_sqlalchemy = await store.read_requests(conn, wanted)

    def plain(found: Any) -> dict[uuid.UUID, tuple[dict[str, Any], list[dict[str, Any]]]]:
        return {row["id"]: (dict(row), [dict(v) for v in votes]) for row, votes in found}

    assert plain(through_asyncpg) == plain(through_sqlalchemy)
    assert set(plain(through_asyncpg)) == set(ids)
    assert [v["approver"] for v in plain(through_asyncpg)[ids[0]][1]] == ["alice"]


async def test_a_read_of_statements_runs_on_asyncpg_outside_any_transaction(
    db: Database,
) -> None:
    async def in_transaction(conn: Any, now: datetime) -> bool:
        return bool(conn.info[DRIVER_KEY].is_in_transaction())

    assert await db.run(in_transaction, readonly=True)
    assert not await db.run(in_transaction, readonly=True, statements=True)


async def test_generic_plans_last_for_their_transaction_only(db: Database) -> None:
    async def mode(conn: Any, now: datetime) -> tuple[str, int, bool]:
        driver = conn.info[DRIVER_KEY]
        return (await driver.fetchval("SHOW plan_cache_mode"), driver.get_server_pid(),
                driver.is_in_transaction())

    generic, pid, in_transaction = await db.run(mode, generic_plans=True)
    assert (generic, in_transaction) == ("force_generic_plan", True)
    # Run one at a time, the works get the same pooled connection, back as it was.
    assert await db.run(mode) == ("auto", pid, True)

    async def fails(conn: Any, now: datetime) -> None:
        raise LookupError("refused")

    with pytest.raises(LookupError):
        await db.run(fails, generic_plans=True)
    assert await db.run(mode) == ("auto", pid, True)  # a rollback ends the setting too


async def test_notifications_ride_on_the_commit_and_only_on_a_commit(
    db: Database, db_url: str
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(db_url)
    await listener.add_listener("signoff_test", lambda *args: heard.put_nowait(args[3]))
    try:
        strange = "it's a \\ back'slash, and 'quotes'"

        async def notify(conn: Any, now: datetime) -> int:
            await notify_at_commit(conn, "signoff_test", strange)
            await asyncio.sleep(0.2)
            assert heard.empty()  # not before the commit
            return int(conn.info[DRIVER_KEY].get_server_pid())

        pid = await db.run(notify)
        assert await asyncio.wait_for(heard.get(), 5) == strange

        async def refused(conn: Any, now: datetime) -> None:
            await notify_at_commit(conn, "signoff_test", "rolled back")
            raise LookupError("refused")

        with pytest.raises(LookupError):
            await db.run(refused)

        async def too_long(conn: Any, now: datetime) -> None:
            await record_events(conn, [{"at": now, "kind": EventKind.POLICY_PAUSED,
                                        "actor": "t", "detail": {"n": 1}}])
            await notify_at_commit(conn, "signoff_test", "x" * 9000)  # over the limit

        with pytest.raises(DBAPIError):
            await db.run(too_long)

        async def state(conn: Any, now: datetime) -> tuple[int, int, bool]:
            driver = conn.info[DRIVER_KEY]
            events = await driver.fetchval(
                "SELECT count(*) FROM events WHERE kind = 'policy_paused'")
            return driver.get_server_pid(), events, driver.is_in_transaction()

        # The same connection, out of the failed transaction; the event was not kept.
        assert await db.run(state) == (pid, 0, True)
        await asyncio.sleep(0.2)
        assert heard.empty()  # neither the rolled back nor the refused one
    finally:
        await listener.close()
