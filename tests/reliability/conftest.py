"""Fixtures of the reliability suites: a clean PostgreSQL database, processes, a connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import _truncate
from tests.reliability.harness import Fleet, connect


@pytest.fixture
async def pg(postgres_url: str) -> str:
    """This session's PostgreSQL database, migrated and emptied for one test."""
    await _truncate(postgres_url)
    return postgres_url


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """Starts ``signoff`` processes; kills whatever is still running when the test ends."""
    started = Fleet(tmp_path)
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def conn(pg: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test's database, for loading and checking."""
    connection = await connect(pg)
    try:
        yield connection
    finally:
        await connection.close()
