"""Shared fixtures: a clean database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``SIGNOFF_TEST_POSTGRES_URL`` (default: the local server's ``test``
database). Each test session works in a database of its own, created here, so that two
sessions on one server never meet. Without a server the PostgreSQL tests are skipped,
unless ``SIGNOFF_REQUIRE_POSTGRES=1`` (as in CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from signoff.db import Database
from signoff.migrate import upgrade
from signoff.settings import Settings, normalise_database_url
from signoff.tables import metadata

POSTGRES_URL = os.environ.get(
    "SIGNOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("SIGNOFF_REQUIRE_POSTGRES") == "1"


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


async def _admin(url: str, *statements: str) -> None:
    engine = create_async_engine(normalise_database_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    db = Database.from_settings(Settings(database_url=url))
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this session's own on the PostgreSQL server, migrated to head."""
    name = f"signoff_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is not there
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {exc}")
    url = _with_database(POSTGRES_URL, name)

    asyncio.run(migrate(url))
    yield url
    asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate(url: str) -> None:
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    engine = create_async_engine(normalise_database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A clean, migrated database URL: SQLite file or PostgreSQL, one test each."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/signoff.db"
        asyncio.run(migrate(url))
        return url
    pg: str = request.getfixturevalue("postgres_url")
    asyncio.run(_truncate(pg))
    return pg


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A Database on the real clock (the database's, on PostgreSQL)."""
    database = Database.from_settings(Settings(database_url=db_url))
    yield database
    await database.dispose()


@pytest.fixture
async def clocked_db(db_url: str, clock: FakeClock) -> AsyncIterator[Database]:
    """A Database whose every transaction reads ``clock``: time moves when a test says."""
    database = Database.from_settings(Settings(database_url=db_url), clock=clock)
    yield database
    await database.dispose()
