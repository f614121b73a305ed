"""Long-poll waiters through the service itself, with no resolver anywhere: a waiter
answers ``expired`` at the deadline from its own timer, and holds no database connection
while it waits (a pool of one still serves everything else)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from signoff import errors
from signoff.db import Database
from signoff.lifecycle import Principal, Role
from signoff.metrics import Metrics
from signoff.schemas import DecisionIn, RequestIn
from signoff.service import Service
from signoff.settings import Settings
from signoff.tables import requests
from signoff.waiters import Waiters


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
