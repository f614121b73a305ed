"""Engines, transactions and the one clock.

SQLite runs in WAL mode with a busy timeout, and every writing transaction starts with
``BEGIN IMMEDIATE`` so that two writers queue instead of failing half-way. On PostgreSQL
the database's clock is the clock: ``now`` is read once per transaction from ``now()``
and passed to every statement of it, so a guard and the time it records are one instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from signoff.notify.outbox import OPTION as OUTBOX_OPTION
from signoff.notify.outbox import Routing
from signoff.settings import Settings

T = TypeVar("T")
Clock = Callable[[], datetime]

# SQLSTATEs worth one more try: the transaction did nothing and can simply run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the work rolled back whole and may run again."""
    if isinstance(exc, DBAPIError):
        if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
            return True
        return "database is locked" in str(exc.orig)
    return False


def create_engine(settings: Settings) -> AsyncEngine:
    """One engine per process, sized by ``SIGNOFF_DB_POOL_SIZE``."""
    url = settings.async_database_url
    if url.startswith("postgresql"):
        return create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"server_settings": {"application_name": "signoff", "timezone": "UTC"}},
        )
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        connect_args={"timeout": 30},
    )
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to write.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("signoff_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine, the clock and the unit of work. Built at the edge, passed down."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock | None = None, routing: Routing | None = None
    ) -> None:
        # The channels that are on travel with every connection, so that the store writes
        # their outbox rows wherever it writes audit events.
        self.routing = routing
        self.engine = engine if routing is None else engine.execution_options(
            **{OUTBOX_OPTION: routing})
        self.is_postgres = engine.dialect.name == "postgresql"
        # A fixed clock is for tests: it replaces the database clock on every backend.
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> Database:
        routing = Routing(
            webhook=settings.webhook_url is not None, telegram=settings.telegram_enabled
        )
        return cls(create_engine(settings), clock, routing)

    async def now(self, conn: AsyncConnection) -> datetime:
        """The transaction's instant: the database clock on PostgreSQL, UTC elsewhere."""
        if self.clock is not None:
            instant = self.clock()
            if instant.utcoffset() is None:
                raise ValueError(f"naive datetime refused: the clock gave {instant!r}")
            return instant
        if self.is_postgres:
            value = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
            assert isinstance(value, datetime)
            return value.astimezone(UTC)
        return datetime.now(UTC)

    @asynccontextmanager
    async def begin(self, *, readonly: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction: commits when the block ends, rolls back on any error."""
        engine = self.engine.execution_options(signoff_readonly=True) if readonly else self.engine
        async with engine.begin() as conn:
            yield conn

    async def run(
        self,
        work: Callable[[AsyncConnection, datetime], Awaitable[T]],
        *,
        readonly: bool = False,
        attempts: int = 4,
    ) -> T:
        """Run ``work(conn, now)`` in one transaction, again if it was a deadlock victim."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.begin(readonly=readonly) as conn:
                    return await work(conn, await self.now(conn))
            except DBAPIError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        await self.engine.dispose()
