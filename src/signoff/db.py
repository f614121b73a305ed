"""Engines, transactions and the one clock.

SQLite runs in WAL mode with a busy timeout, and every writing transaction starts with
``BEGIN IMMEDIATE`` so that two writers queue instead of failing half-way. On PostgreSQL
the database's clock is the clock (``signoff.clock``): ``now`` is taken once per
transaction and passed to every statement of it, so a guard and the time it records are
one instant.

A pooled connection is not pinged before use (a ping costs three round trips: it runs in
a transaction of its own). A connection that died (a restarted server, a terminated
backend) fails at the transaction's first statement; a transaction whose connection was
lost before its commit was sent did nothing (the server rolls it back), so ``run`` starts
it again, once, on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from signoff.clock import DatabaseClock
from signoff.errors import DatabaseMissing
from signoff.notify.outbox import OPTION as OUTBOX_OPTION
from signoff.notify.outbox import Channel, Routing
from signoff.settings import Settings

T = TypeVar("T")
Clock = Callable[[], datetime]

# SQLSTATEs worth one more try: the transaction did nothing and can simply run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
_CLOCK = sa.text("SELECT clock_timestamp()")
# One round trip (the simple protocol takes both): the transaction, and for its length
# the plan cache's generic plans (``Database.run(generic_plans=True)``).
_BEGIN_GENERIC = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"
# Where a transaction of ``Database.run`` on PostgreSQL keeps its asyncpg connection, for
# the statements that run on it directly (``signoff.store.prepared``).
DRIVER_KEY = "signoff.asyncpg"
# Notifications that ride on the COMMIT's own message (``notify_at_commit``).
AT_COMMIT_KEY = "signoff.at_commit"
# What asyncpg itself raises; a client error means the connection's state is unknown.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                 OSError)


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


# SQLSTATE classes and codes that mean the server, not the row, is the problem.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unreachable (as opposed to a bad row)."""
    if isinstance(exc, OSError | TimeoutError | InterfaceError | OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        for candidate in (orig, getattr(orig, "__cause__", None)):
            code = getattr(candidate, "sqlstate", None)
            if isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATES):
                return True
            if isinstance(candidate, OSError | asyncpg.exceptions.ConnectionDoesNotExistError):
                return True
    return False


def is_missing_database(exc: BaseException) -> bool:
    """Whether ``exc`` says the PostgreSQL database named in the URL does not exist."""
    return isinstance(exc, DBAPIError) and _sqlstate(exc) == "3D000"


def is_login_refused(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL refused the URL's role or password."""
    return isinstance(exc, DBAPIError) and (_sqlstate(exc) or "").startswith("28")


def is_not_a_database(exc: BaseException) -> bool:
    """Whether ``exc`` says the SQLite file named in the URL is not a database at all."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB


def require_existing(settings: Settings) -> None:
    """Refuse an SQLite file that does not exist, before anything opens it: opening one
    creates it, empty. (``serve`` and ``db upgrade`` may create a database; nothing else.)"""
    path = settings.sqlite_file
    if path is not None and not path.exists():
        raise DatabaseMissing(f"the file {path.absolute()} does not exist")


def create_engine(settings: Settings) -> AsyncEngine:
    """One engine per process, sized by ``SIGNOFF_DB_POOL_SIZE``."""
    url = settings.async_database_url
    if url.startswith("postgresql"):
        return create_async_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=0,
            pool_timeout=settings.db_pool_timeout.total_seconds(),
            pool_recycle=1800,
            connect_args={"server_settings": {"application_name": "signoff", "timezone": "UTC"}},
        )
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout.total_seconds(),
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
        self.readonly_engine = self.engine.execution_options(signoff_readonly=True)
        # On PostgreSQL ``run`` opens its transactions on the asyncpg connection itself;
        # SQLAlchemy, told the connection is in autocommit, then starts none of its own and
        # its statements run in that transaction too.
        self.driver_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Every pooled connection may have died at once (a restarted server).
        pool_size = getattr(engine.pool, "size", None)
        self._checkout_attempts = (pool_size() if callable(pool_size) else 0) + 2
        self.is_postgres = engine.dialect.name == "postgresql"
        # A fixed clock is for tests: it replaces the database clock on every backend.
        self.clock = clock
        self.database_clock = DatabaseClock()

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> Database:
        routing = Routing(
            webhook=settings.webhook_url is not None,
            cards=tuple(Channel(name) for name in settings.card_channels),
        )
        return cls(create_engine(settings), clock, routing)

    async def now(self, conn: AsyncConnection) -> datetime:
        """The transaction's instant: the database clock on PostgreSQL, UTC elsewhere.

        Call it first in a transaction: on PostgreSQL it may read the database's clock."""
        if self.clock is not None:
            instant = self.clock()
            if instant.utcoffset() is None:
                raise ValueError(f"naive datetime refused: the clock gave {instant!r}")
            return instant
        if not self.is_postgres:
            return datetime.now(UTC)
        keeper = self.database_clock
        if keeper.due():
            sent = time.monotonic()
            value = (await conn.execute(_CLOCK)).scalar_one()
            assert isinstance(value, datetime)
            keeper.take(sent, value, time.monotonic())
        return keeper.read()

    @asynccontextmanager
    async def begin(self, *, readonly: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction: commits when the block ends, rolls back on any error."""
        engine = self.readonly_engine if readonly else self.engine
        async with engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(
        self, *, readonly: bool, statements: bool = False, generic_plans: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """``begin``; on PostgreSQL with the transaction on the asyncpg connection, or
        with ``statements``, none: each statement is its own, on a connection in autocommit."""
        if not self.is_postgres:
            async with self.begin(readonly=readonly) as conn:
                yield conn
            return
        if statements:
            async with self._statements() as conn:
                yield conn
            return
        conn, driver = await self._checkout()
        try:
            info = conn.info  # held: it raises once the connection is lost
            try:
                await driver.execute(_BEGIN_GENERIC if generic_plans else "BEGIN")
            except DRIVER_ERRORS as exc:
                error = await _lost(conn, driver_error(exc, "BEGIN", ()))
                if error.connection_invalidated:  # nothing was done: run starts again
                    raise _LostBeforeCommit(error) from exc
                raise error from exc
            info[DRIVER_KEY] = driver
            notes: list[tuple[str, str]] = []
            info[AT_COMMIT_KEY] = notes
            try:
                yield conn
            except BaseException as exc:
                info.pop(DRIVER_KEY, None)
                info.pop(AT_COMMIT_KEY, None)
                try:
                    await driver.execute("ROLLBACK")
                except DRIVER_ERRORS:  # the connection is gone: so is the transaction
                    await conn.invalidate()
                else:
                    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                        await conn.invalidate()
                raise
            info.pop(DRIVER_KEY, None)
            info.pop(AT_COMMIT_KEY, None)
            commit = "".join(f"SELECT pg_notify({_literal(channel)}, {_literal(payload)}); "
                             for channel, payload in notes) + "COMMIT"
            try:
                await driver.execute(commit)
            except DRIVER_ERRORS as exc:
                error = await _lost(conn, driver_error(exc, "COMMIT", ()))
                if not error.connection_invalidated:
                    # A notification refused leaves the transaction open, failed: the
                    # COMMIT after it in the message never ran.
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await driver.execute("ROLLBACK")
                raise error from exc
        finally:
            await conn.close()

    @asynccontextmanager
    async def _statements(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit, its statements run by asyncpg."""
        conn, driver = await self._checkout()
        try:
            info = conn.info
            info[DRIVER_KEY] = driver
            try:
                yield conn
            except BaseException as exc:
                error = exc.error if isinstance(exc, _LostBeforeCommit) else exc
                if isinstance(error, DBAPIError) and error.connection_invalidated:
                    await conn.invalidate()
                raise
            finally:
                info.pop(DRIVER_KEY, None)
        finally:
            await conn.close()

    async def _checkout(self) -> tuple[AsyncConnection, Any]:
        """A pooled connection in autocommit and its asyncpg connection. One the server
        has closed (asyncpg knows it without a round trip) is dropped for another."""
        for _ in range(self._checkout_attempts):
            conn = await self.driver_engine.connect()
            try:
                driver = (await conn.get_raw_connection()).driver_connection
            except BaseException:
                await conn.close()
                raise
            if driver is not None and not driver.is_closed():
                return conn, driver
            await conn.invalidate()
            await conn.close()
        raise OperationalError("checkout", (), ConnectionError("no live database connection"),
                               connection_invalidated=True)

    async def run(
        self,
        work: Callable[[AsyncConnection, datetime], Awaitable[T]],
        *,
        readonly: bool = False,
        attempts: int = 4,
        statements: bool = False,
        generic_plans: bool = False,
    ) -> T:
        """Run ``work(conn, now)`` in one transaction, again if it was a deadlock victim,
        and once more if its connection was lost before the commit was sent.

        ``statements`` (reads only): on PostgreSQL, no transaction around the work, each
        of its statements being its own. A read of a statement or two whose results need
        no snapshot in common (under READ COMMITTED a transaction gives them none either)
        saves the round trips of ``BEGIN`` and ``COMMIT``, each a turn of a busy event
        loop.

        ``generic_plans``: on PostgreSQL, the work's prepared statements run on their
        generic plans, planned once per connection, instead of being planned again for
        each call's values (``plan_cache_mode``, set in the ``BEGIN``'s own round trip).
        For work whose statements are index lookups that any value plans alike, where
        the planning would cost more than the execution.
        """
        lost_before = False
        for attempt in range(1, attempts + 1):
            try:
                async with self._transaction(readonly=readonly, statements=statements,
                                             generic_plans=generic_plans) as conn:
                    try:
                        return await work(conn, await self.now(conn))
                    except (DBAPIError, OSError) as exc:
                        if _lost_connection(exc) and not lost_before:
                            raise _LostBeforeCommit(exc) from exc
                        raise
            except _LostBeforeCommit as lost:
                lost_before = True
                if attempt == attempts:
                    raise lost.error from None
            except DBAPIError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        await self.engine.dispose()


async def notify_at_commit(conn: AsyncConnection, channel: str, payload: str) -> None:
    """PostgreSQL: ``NOTIFY channel, payload``, delivered at the commit. Inside
    ``Database.run`` it is sent in the COMMIT's own message, saving a round trip;
    elsewhere it is a statement now (delivered at the commit all the same)."""
    notes = conn.info.get(AT_COMMIT_KEY)
    if notes is not None:
        notes.append((channel, payload))
        return
    await conn.execute(sa.select(sa.func.pg_notify(channel, payload)))


def _literal(text: str) -> str:
    """A string constant for a message of the simple protocol: an escape string, read
    alike whatever ``standard_conforming_strings`` says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def driver_error(exc: BaseException, statement: str, params: Any) -> DBAPIError:
    """An error of asyncpg itself as SQLAlchemy would have raised it: a ``DBAPIError``
    whose ``orig`` is asyncpg's (its SQLSTATE intact), flagged when the connection is
    gone, so that callers handle both paths alike."""
    lost = isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError) or (
        isinstance(exc, asyncpg.PostgresError) and str(getattr(exc, "sqlstate", "")).startswith(
            _UNAVAILABLE_SQLSTATES))
    error_type = OperationalError if lost else DBAPIError
    return error_type(statement, params, exc, connection_invalidated=lost)


async def _lost(conn: AsyncConnection, error: DBAPIError) -> DBAPIError:
    """``error``, once a connection it says is gone has been taken out of the pool."""
    if error.connection_invalidated:
        await conn.invalidate()
    return error


class _LostBeforeCommit(Exception):
    """The connection was lost while the work ran: nothing was committed."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _lost_connection(exc: BaseException) -> bool:
    """The connection is gone (the server rolls back whatever it had not committed)."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    return isinstance(exc, ConnectionError)
