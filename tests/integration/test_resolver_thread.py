"""The resolver on its own event loop, in a thread that the app's lifespan starts and stops."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from signoff import store
from signoff.app import create_app
from signoff.db import Database
from signoff.lifecycle import Role
from signoff.metrics import Metrics
from signoff.resolver_thread import ResolverThread, can_run_apart
from signoff.settings import Settings
from tests.conftest import FakeClock
from tests.integration.resolver_support import (
    LATENESS_BOUND,
    expired,
    lateness,
    request_row,
    sample,
    seed,
    wait_for,
)


def resolver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "signoff-resolver"]


def settings_for(db_url: str, **extra: Any) -> Settings:
    # A long backstop: only a wake-up can bring a pass on time.
    return Settings(database_url=db_url, resolver_backstop=60, **extra)


async def test_the_lifespan_starts_and_stops_the_thread(db_url: str, db: Database) -> None:
    metrics = Metrics()
    app = create_app(settings_for(db_url), db=db, metrics=metrics, run_notifier=False,
                     run_watchdog=False)
    assert not resolver_threads()  # building the app starts nothing
    async with app.router.lifespan_context(app):
        service = app.state.service
        assert isinstance(service.resolver, ResolverThread)
        assert service.resolver.running
        assert len(resolver_threads()) == 1
        token = await db.run(lambda c, n: store.create_token(c, n, "bot", Role.REQUESTER))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://signoff/api/v1",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            created = await client.post(
                "/approvals", json={"action": "restart", "ttl_seconds": 1})
            assert created.status_code == 201, created.text
        request_id = uuid.UUID(created.json()["id"])
        # Woken by the create (in process: SQLite has no NOTIFY), not by the backstop.
        await wait_for(lambda: expired(db, [request_id]), within=5)
        assert await lateness(db, request_id) < LATENESS_BOUND
        assert sample(metrics, "signoff_resolver_wake_lag_seconds_count", stage="timer") >= 1
        assert sample(metrics, "signoff_resolver_wake_lag_seconds_count", stage="start") >= 1
    assert service.resolver is None
    assert not resolver_threads()


async def test_wake_from_another_thread(db_url: str, db: Database) -> None:
    apart = ResolverThread(db, settings_for(db_url), Metrics(), listen=False)
    apart.wake()  # before it runs: nothing to wake, and no error
    await apart.start()
    try:
        await asyncio.sleep(0.2)  # asleep for the backstop: nothing is pending
        [request_id] = await seed(db, 1, ttl=0.3)
        deadline = (await request_row(db, request_id))["expires_at"]
        waker = threading.Thread(target=apart.wake, args=(deadline,))
        waker.start()
        waker.join()
        await wait_for(lambda: expired(db, [request_id]), within=3)
    finally:
        await apart.stop()
    assert not apart.running
    apart.wake(deadline)  # after it stopped: ignored
    assert await lateness(db, request_id) < LATENESS_BOUND


async def test_the_database_clock_given_applies_in_the_thread(
    db_url: str, clocked_db: Database, clock: FakeClock
) -> None:
    [request_id] = await seed(clocked_db, 1, ttl=30)
    apart = ResolverThread(clocked_db, settings_for(db_url), Metrics(), listen=False)
    await apart.start()
    try:
        await asyncio.sleep(0.2)
        assert (await request_row(clocked_db, request_id))["status"] == "pending"
        at = clock.advance(31)
        apart.wake()  # a pass now: by the test's clock the request is due
        await wait_for(lambda: expired(clocked_db, [request_id]), within=3)
    finally:
        await apart.stop()
    assert (await request_row(clocked_db, request_id))["decided_at"] == at


async def test_stop_is_prompt(db_url: str, db: Database) -> None:
    apart = ResolverThread(db, settings_for(db_url), Metrics())
    await apart.start()
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await apart.stop()
    assert time.monotonic() - started < 1.0
    assert not apart.running and not resolver_threads()


async def test_in_memory_sqlite_keeps_the_resolver_on_the_app_loop() -> None:
    memory = Database(create_async_engine("sqlite+aiosqlite://"))
    try:
        assert not can_run_apart(memory)
    finally:
        await memory.dispose()
