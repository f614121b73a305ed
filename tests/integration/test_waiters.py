"""Long-poll waiters through the service itself, with no resolver anywhere: a waiter
answers ``expired`` at the deadline from its own timer, and holds no database connection
while it waits (a pool of one still serves everything else)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.db import Database
from signoff.lifecycle import Principal, Role
from signoff.metrics import Metrics
from signoff.schemas import DecisionIn, RequestIn
from signoff.service import Service
from signoff.settings import Settings
from signoff.store.prepared import Prepared
from signoff.tables import requests
from signoff.waiters import BatchReader, Reading, Waiters


async def settled(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


BOT = Principal("bot", Role.REQUESTER)
ALICE = Principal("alice", Role.APPROVER)
VIEWER = Principal("viewer", Role.VIEWER)


async def test_expired_at_the_deadline_with_no_resolver(db_url: str) -> None:
    db = Database.from_settings(Settings(database_url=db_url))
    service = Service(db, Settings(database_url=db_url), Metrics())
    try:
        made, _ = await service.create_request(
            BOT, RequestIn(action="restart", ttl_seconds=1))
        started = time.monotonic()
        answer = await service.get_request(VIEWER, made["id"], wait=30)
        took = time.monotonic() - started
        assert answer["status"] == "expired" and answer["decided_by"] == "timeout"
        assert 0.5 < took < 2.0, took
        async with db.engine.connect() as conn:  # nobody expired the row itself
            stored = await conn.scalar(
                sa.select(requests.c.status).where(requests.c.id == uuid.UUID(made["id"])))
        assert stored == "pending"
    finally:
        await db.dispose()


async def test_waiters_hold_no_connection(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_pool_size=1)
    db = Database.from_settings(settings)
    service = Service(db, settings, Metrics())
    try:
        made, _ = await service.create_request(BOT, RequestIn(action="restart"))
        waiting = [asyncio.create_task(service.get_request(VIEWER, made["id"], wait=20))
                   for _ in range(20)]
        await settled(lambda: len(service.waiters) == 20)
        # With every waiter asleep, the one connection still serves a create and a decision.
        async with asyncio.timeout(5):
            other, _ = await service.create_request(BOT, RequestIn(action="other"))
            await service.approve(ALICE, made["id"], DecisionIn())
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert {a["status"] for a in answers} == {"approved"}
        assert len(service.waiters) == 0
        assert other["status"] == "pending"
    finally:
        await db.dispose()


async def test_a_bad_wait_is_refused_after_the_lookup(db_url: str) -> None:
    db = Database.from_settings(Settings(database_url=db_url))
    service = Service(db, Settings(database_url=db_url), Metrics())
    try:
        bad = errors.InvalidInput("wait: out of range")
        try:
            await service.get_request(VIEWER, uuid.uuid4(), wait=bad)
        except errors.RequestNotFound:
            pass
        else:
            raise AssertionError("an unknown request must be a 404 first")
        made, _ = await service.create_request(BOT, RequestIn(action="restart"))
        try:
            await service.get_request(VIEWER, made["id"], wait=bad)
        except errors.InvalidInput as exc:
            assert exc is bad
        else:
            raise AssertionError("a bad wait must be refused")
    finally:
        await db.dispose()


async def test_closing_answers_every_waiter_and_payloads_are_read_safely() -> None:
    waiters = Waiters()
    reads = 0

    async def read() -> tuple[dict[str, str], float]:
        nonlocal reads
        reads += 1
        return {"status": "pending"}, 3600.0

    rid = uuid.uuid4()
    tasks = [asyncio.create_task(waiters.wait(rid, 60, read)) for _ in range(3)]
    await settled(lambda: len(waiters) == 3)
    waiters.heard(f"{uuid.uuid4()},{uuid.uuid4()}")  # others' requests: nobody reads
    await asyncio.sleep(0.01)
    assert reads == 3
    waiters.heard("not-a-uuid")  # unreadable: everyone reads again, to be safe
    await asyncio.sleep(0.01)
    assert reads == 6
    waiters.close()
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert answers == [{"status": "pending"}] * 3
    assert len(waiters) == 0


async def test_a_wait_that_runs_out_unwoken_answers_what_it_read() -> None:
    waiters = Waiters()
    reads = 0

    async def read() -> tuple[dict[str, str], float]:
        nonlocal reads
        reads += 1
        return {"status": "pending", "read": str(reads)}, 3600.0

    rid = uuid.uuid4()
    assert await waiters.wait(rid, 0.05, read) == {"status": "pending", "read": "1"}
    assert reads == 1  # nothing woke it: no second read
    woken = asyncio.create_task(waiters.wait(rid, 0.2, read))
    await settled(lambda: len(waiters) == 1)
    waiters.wake([rid])  # an approval short of the quorum: read again, wait on
    assert await woken == {"status": "pending", "read": "3"}
    assert reads == 3


async def test_an_approval_short_of_the_quorum_shows_in_a_wait_that_runs_out(
    db_url: str,
) -> None:
    db = Database.from_settings(Settings(database_url=db_url))
    service = Service(db, Settings(database_url=db_url), Metrics())
    try:
        made, _ = await service.create_request(
            BOT, RequestIn(action="restart", required_approvals=2))
        waiting = asyncio.create_task(service.get_request(VIEWER, made["id"], wait=1.0))
        await settled(lambda: len(service.waiters) == 1)
        await service.approve(ALICE, made["id"], DecisionIn())
        answer = await asyncio.wait_for(waiting, 5)
        assert answer["status"] == "pending"
        assert [a["by"] for a in answer["approvals"]] == ["alice"]
    finally:
        await db.dispose()


async def test_reads_asked_together_are_one_query_each_answered_for_itself(
    db_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = Database.from_settings(Settings(database_url=db_url))
    service = Service(db, Settings(database_url=db_url), Metrics())
    statements: list[str] = []
    sa.event.listen(db.engine.sync_engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    run_prepared = Prepared.rows

    async def prepared_rows(
        self: Prepared, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:  # asyncpg runs these itself, past SQLAlchemy's events
        statements.append(str(self.statement))
        return await run_prepared(self, conn, params)

    monkeypatch.setattr(Prepared, "rows", prepared_rows)
    try:
        made = [(await service.create_request(BOT, RequestIn(action=f"a{i}")))[0]
                for i in range(30)]
        await service.approve(ALICE, made[0]["id"], DecisionIn())
        statements.clear()
        missing = str(uuid.uuid4())
        answers = await asyncio.gather(
            *(service.get_request(VIEWER, m["id"]) for m in made),
            service.get_request(VIEWER, missing), return_exceptions=True)
        assert [a["id"] for a in answers[:30]] == [m["id"] for m in made]  # type: ignore[index]
        assert answers[0]["status"] == "approved"  # type: ignore[index]
        assert isinstance(answers[30], errors.RequestNotFound)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len([s for s in selects if "FROM approval_requests" in s]) == 1, selects
    finally:
        await db.dispose()


async def test_a_failed_batch_read_fails_each_of_its_readers() -> None:
    calls: list[list[uuid.UUID]] = []

    async def read_many(ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Reading]:
        calls.append(list(ids))
        raise ConnectionError("database gone")

    reader = BatchReader(read_many)
    futures = [reader.read(uuid.uuid4()) for _ in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert len(calls) == 1 and len(calls[0]) == 3
