"""The resolver on PostgreSQL: NOTIFY from other connections, killed connections, an outage."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from signoff.db import Database
from signoff.metrics import Metrics
from signoff.resolver import Resolver
from signoff.settings import Settings
from tests.integration.resolver_support import (
    LATENESS_BOUND,
    expired,
    is_true,
    lateness,
    make_resolver,
    request_row,
    running,
    seed,
    wait_for,
)

# LISTEN/NOTIFY and pg_terminate_backend are PostgreSQL's: no SQLite twin of these tests.
pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


async def test_notify_from_another_connection_wakes_the_loop(
    db_url: str, db: Database
) -> None:
    resolver, _ = make_resolver(db_url, db, backstop=30)
    other = Database.from_settings(Settings(database_url=db_url))  # a pool of its own
    try:
        async with running(resolver):
            await wait_for(lambda: is_true(resolver.listening), within=5)
            await asyncio.sleep(0.2)  # asleep for the backstop, nothing pending
            [request_id] = await seed(other, 1, ttl=0.3)  # commits, with its NOTIFY
            took = await wait_for(lambda: expired(db, [request_id]), within=5)
    finally:
        await other.dispose()
    assert took < 1.0  # the backstop is 30 s
    assert await lateness(db, request_id) < LATENESS_BOUND


async def test_loop_survives_killed_connections(db_url: str, db: Database) -> None:
    resolver, _ = make_resolver(db_url, db, backstop=1)
    async with running(resolver) as task:
        await wait_for(lambda: is_true(resolver.listening), within=5)
        [first] = await seed(db, 1, ttl=0.2)
        await wait_for(lambda: expired(db, [first]), within=3)

        killed = await terminate_other_backends(db_url)
        assert killed >= 2  # at least the pool's connection and the LISTEN one
        # The LISTEN connection comes back by itself, and the loop keeps expiring.
        await wait_for(lambda: is_true(resolver.listening), within=10)
        other = Database.from_settings(Settings(database_url=db_url))
        try:
            [second] = await seed(other, 1, ttl=0.3)
        finally:
            await other.dispose()
        await wait_for(lambda: expired(db, [second]), within=5)
        assert not task.done()
    assert await lateness(db, second) < LATENESS_BOUND


async def terminate_other_backends(db_url: str) -> int:
    """Kill every connection to the test database except the one doing the killing."""
    admin = Database.from_settings(Settings(database_url=db_url, db_pool_size=1))
    try:
        async def kill(conn: AsyncConnection, _now: datetime) -> int:
            rows = await conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ))
            return len(rows.all())

        return await admin.run(kill)
    finally:
        await admin.dispose()


class Outage:
    """A TCP proxy in front of PostgreSQL that can go down and come back, like a server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self.host, self.port)
            self.writers.add(upstream)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
                    self.writers.discard(w)
            self.tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


async def test_loop_survives_the_database_going_away_and_coming_back(
    db_url: str, db: Database
) -> None:
    url = sa.make_url(db_url)
    outage = Outage(url.host or "127.0.0.1", url.port or 5432)
    await outage.up()
    proxied = url.set(drivername="postgresql", port=outage.listen_port).render_as_string(
        hide_password=False)
    settings = Settings(database_url=proxied, resolver_backstop=0.5)
    through_proxy = Database.from_settings(settings)
    resolver = Resolver(through_proxy, settings, Metrics())
    try:
        with capture_logs() as logs:
            async with running(resolver) as task:
                await wait_for(lambda: is_true(resolver.listening), within=5)
                await outage.down()
                [request_id] = await seed(db, 1, ttl=0.2)  # the direct way still works
                await asyncio.sleep(1.5)
                assert (await request_row(db, request_id))["status"] == "pending"
                assert not task.done()
                await outage.up()
                took = await wait_for(lambda: expired(db, [request_id]), within=10)
                await wait_for(lambda: is_true(resolver.listening), within=10)
    finally:
        await through_proxy.dispose()
        if outage.server is not None:
            await outage.down()
    names = [e["event"] for e in logs]
    assert "resolver_db_unavailable" in names
    assert "resolver_listen_unavailable" in names
    assert "resolver_error" not in names
    assert took < 6  # the backoff is capped at 5 s
