"""Helpers for the resolver tests: seeding, polling, running the loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import store
from signoff.db import Database
from signoff.metrics import Metrics
from signoff.resolver import Resolver
from signoff.settings import Settings
from signoff.tables import requests

# The loop's promise, with room for a busy test machine.
LATENESS_BOUND = 0.25


def make_resolver(
    db_url: str, db: Database, *, batch_size: int = 1000, backstop: float = 2.0,
    listen: bool = True, concurrency: int = 2,
) -> tuple[Resolver, Metrics]:
    settings = Settings(
        database_url=db_url, resolver_batch_size=batch_size, resolver_backstop=backstop
    )
    metrics = Metrics()
    return Resolver(db, settings, metrics, listen=listen, concurrency=concurrency), metrics


async def seed(
    db: Database, n: int, *, ttl: float, with_incident: bool = True, service: str = "db"
) -> list[uuid.UUID]:
    """``n`` pending requests due ``ttl`` seconds from now, each with an open incident."""

    async def work(conn: AsyncConnection, now: datetime) -> list[uuid.UUID]:
        ids = []
        for i in range(n):
            incident_id = None
            if with_incident:
                incident, _ = await store.create_incident(
                    conn, now, actor="bot",
                    data={"title": f"disk full {i}", "severity": "high", "service": service},
                )
                incident_id = incident["id"]
            row, _ = await store.create_request(
                conn, now, actor="bot", data={"action": "restart", "incident_id": incident_id},
                expires_at=now + timedelta(seconds=ttl),
            )
            ids.append(row["id"])
        return ids

    return await db.run(work)


async def request_row(db: Database, request_id: uuid.UUID) -> Any:
    return await db.run(lambda conn, _now: store.get_request(conn, request_id), readonly=True)


async def incident_of(db: Database, request_id: uuid.UUID) -> Any:
    row = await request_row(db, request_id)
    return await db.run(
        lambda conn, _now: store.get_incident(conn, row["incident_id"]), readonly=True
    )


async def scalar(db: Database, stmt: Any) -> Any:
    async def read(conn: AsyncConnection, _now: datetime) -> Any:
        return (await conn.execute(stmt)).scalar()

    return await db.run(read, readonly=True)


async def count(db: Database, table: sa.Table, *where: Any) -> int:
    return int(await scalar(db, sa.select(sa.func.count()).select_from(table).where(*where)))


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.02
) -> float:
    """Poll ``check`` until it holds; return how long that took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(interval)
    return time.monotonic() - started


@asynccontextmanager
async def running(resolver: Resolver) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(resolver.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def expired(db: Database, ids: list[uuid.UUID]) -> bool:
    return await count(db, requests, requests.c.id.in_(ids), requests.c.status == "expired") == len(
        ids
    )


async def lateness(db: Database, request_id: uuid.UUID) -> float:
    row = await request_row(db, request_id)
    assert row["status"] == "expired"
    return float((row["decided_at"] - row["expires_at"]).total_seconds())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def is_true(value: bool) -> bool:
    return value
