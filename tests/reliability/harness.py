"""What the reliability suites share: real processes, a bulk backlog, exactly-once checks.

Every process is the real ``signoff`` command, started with ``asyncio`` so that a test can
wait on a log line, poll the database and kill a process without blocking its own loop.
Sizes are multiplied by ``SIGNOFF_RELIABILITY_SCALE`` (default 1, the CI size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa

from signoff.db import Database
from signoff.doctor import run_checks
from signoff.settings import Settings, normalise_database_url

SCALE = float(os.environ.get("SIGNOFF_RELIABILITY_SCALE", "1"))
# Random choices are printed with their seed; set it to replay a run.
SEED = int(os.environ.get("SIGNOFF_RELIABILITY_SEED", str(random.randrange(1 << 30))))


def scaled(n: int) -> int:
    """``n`` times the scale knob, at least 1."""
    return max(1, round(n * SCALE))


def plain_url(url: str) -> str:
    """The ``postgresql://`` form asyncpg takes."""
    return "postgresql://" + normalise_database_url(url).split("://", 1)[1]


def port_and_database(url: str) -> tuple[int, str]:
    """Where a PostgreSQL URL points: the port (for a proxy in front of it) and the database."""
    parsed = sa.make_url(plain_url(url))
    assert parsed.database is not None
    return parsed.port or 5432, parsed.database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.05, what: str
) -> float:
    """Poll ``check`` until it is true; return the seconds it took. Fails after ``within``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(every)


# -- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """One running ``signoff`` process, its JSON log in a file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    url: str | None = None  # the HTTP base of a ``serve``

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The structured log lines so far (of one event name, if given)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written while we read
            if name is None or record.get("event") == name:
                found.append(record)
        return found

    async def wait_event(self, name: str, *, within: float = 60, count: int = 1) -> None:
        async def seen() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            return len(self.events(name)) >= count

        await wait_for(seen, within=within, every=0.01, what=f"{self.name}: {name}")

    async def kill(self) -> None:
        """``kill -9``: no cleanup, no rollback sent, sockets dropped by the kernel."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()
        await self.process.wait()


@dataclass
class Fleet:
    """The processes a test started; all of them are ended when the test ends."""

    directory: Path
    procs: list[Proc] = field(default_factory=list)

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "SIGNOFF_DATABASE_URL": database_url,
            "SIGNOFF_LOG_FORMAT": "json",
            # A few connections per replica: sixteen replicas still fit in a default server.
            "SIGNOFF_DB_POOL_SIZE": "4",
            **extra,
        }

    async def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log_path = self.directory / f"{name}-{len(self.procs)}.log"
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "signoff", *args,
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )
        proc = Proc(name, process, log_path)
        self.procs.append(proc)
        return proc

    async def resolver(self, database_url: str, **extra: str) -> Proc:
        """``signoff resolve`` (the loop), not yet waited for."""
        return await self._spawn("resolve", ["resolve"], self.env(database_url, **extra))

    async def server(self, database_url: str, **extra: str) -> Proc:
        """``signoff serve`` on a free port, not yet waited for."""
        port = free_port()
        env = self.env(database_url, SIGNOFF_HOST="127.0.0.1", SIGNOFF_PORT=str(port), **extra)
        proc = await self._spawn("serve", ["serve"], env)
        proc.url = f"http://127.0.0.1:{port}"
        return proc

    async def ready(self, proc: Proc, *, within: float = 90) -> None:
        """Until the resolver in ``proc`` listens (and, for a server, HTTP answers)."""
        await proc.wait_event("resolver_listening", within=within)
        if proc.url is None:
            return
        async with httpx.AsyncClient(timeout=2) as client:

            async def healthy() -> bool:
                try:
                    return (await client.get(proc.url + "/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(healthy, within=within, what=f"{proc.name} /healthz")

    async def close(self) -> None:
        for proc in self.procs:
            await proc.kill()


async def run_cli(env: dict[str, str], *args: str, within: float = 120) -> tuple[int, str]:
    """Run one ``signoff`` command to completion; its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signoff", *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(within):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def doctor_cli(database_url: str, *args: str) -> None:
    """``signoff doctor`` as an operator runs it must exit 0."""
    env = {**os.environ, "SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_LOG_FORMAT": "json"}
    code, out = await run_cli(env, "doctor", *args)
    assert code == 0, f"signoff doctor found violations:\n{out}"


async def doctor_except_overdue(database_url: str) -> None:
    """Every invariant but "nothing overdue": what must hold at any instant, mid-drain too."""
    db = Database.from_settings(Settings(database_url=database_url, db_pool_size=1))
    try:
        findings = await db.run(
            lambda conn, now: run_checks(conn, now, grace=timedelta(days=3650)), readonly=True
        )
    finally:
        await db.dispose()
    broken = [f for f in findings if not f.ok]
    assert not broken, f"invariants broken: {broken}"


# -- the backlog --------------------------------------------------------------------------


async def preload(
    conn: asyncpg.Connection, n: int, *, due: str = "now() - interval '10 minutes'",
    siblings: float = 0.1, tag: str = "rel",
) -> int:
    """Insert ``n`` pending requests, each with an open incident, in two statements.

    Deadlines start at the SQL expression ``due`` and follow 10 µs apart. A share
    (``siblings``) of the incidents get a second request whose deadline falls half a backlog
    later, so that its two requests expire in different batches, often different replicas:
    the incident must then be resolved once, by whichever expires the last of them.
    Returns the number of requests inserted.
    """
    pairs = int(n * siblings)
    await conn.execute(
        f"""
        WITH inc AS (
            INSERT INTO incidents (id, fingerprint, source, title, severity, service, labels,
                                   status, opened_by, opened_at)
            SELECT gen_random_uuid(), NULL, 'reliability', '{tag} incident ' || i, 'high',
                   'svc-' || (i % 50), '{{}}'::jsonb, 'open', 'reliability',
                   now() - interval '1 hour'
            FROM generate_series(1, $1::int) AS i
            RETURNING id
        ), numbered AS (
            SELECT id, row_number() OVER (ORDER BY id) AS i FROM inc
        ), wanted AS (
            SELECT id, i, i AS slot FROM numbered
            UNION ALL
            SELECT id, i, i + $1::int / 2 FROM numbered WHERE i <= $2::int
        )
        INSERT INTO approval_requests (id, incident_id, action, params, risk, requested_by,
                                       status, required_approvals, approval_count,
                                       created_at, expires_at)
        SELECT gen_random_uuid(), id, 'restart service', '{{}}'::jsonb, 'medium', 'bot',
               'pending', 1, 0, now() - interval '1 hour',
               ({due}) + slot * interval '10 microseconds'
        FROM wanted
        """,
        n - pairs, pairs,
    )
    await conn.execute("ANALYZE approval_requests")
    await conn.execute("ANALYZE incidents")
    return n


async def pending_count(conn: asyncpg.Connection, *, due_only: bool = True) -> int:
    where = "status = 'pending'" + (" AND expires_at <= now()" if due_only else "")
    value = await conn.fetchval(f"SELECT count(*) FROM approval_requests WHERE {where}")
    return int(value)


async def wait_drained(conn: asyncpg.Connection, *, within: float = 180) -> float:
    """Until no due request is pending; the seconds it took."""

    async def drained() -> bool:
        return await pending_count(conn) == 0

    within *= max(1.0, SCALE)  # a larger backlog takes longer to drain
    return await wait_for(drained, within=within, every=0.02, what="the backlog to drain")


EXACTLY_ONCE = {
    "terminal request without exactly one ending event": """
        SELECT r.id FROM approval_requests r
        LEFT JOIN events e ON e.request_id = r.id AND e.from_status = 'pending'
                          AND e.to_status IN ('approved', 'rejected', 'expired', 'cancelled')
        WHERE r.status <> 'pending'
        GROUP BY r.id, r.status HAVING count(e.id) <> 1 OR min(e.to_status) <> r.status
    """,
    "pending request with an ending event": """
        SELECT r.id FROM approval_requests r JOIN events e ON e.request_id = r.id
        WHERE r.status = 'pending' AND e.from_status = 'pending'
    """,
    "resolved incident without exactly one resolution event": """
        SELECT i.id FROM incidents i
        LEFT JOIN events e ON e.incident_id = i.id AND e.kind = 'incident_resolved'
        WHERE i.status = 'resolved' GROUP BY i.id HAVING count(e.id) <> 1
    """,
    "open incident with a resolution event": """
        SELECT i.id FROM incidents i JOIN events e ON e.incident_id = i.id
        WHERE i.status = 'open' AND e.kind = 'incident_resolved'
    """,
    "resolved incident without exactly one knowledge entry": """
        SELECT i.id FROM incidents i LEFT JOIN knowledge_entries k ON k.incident_id = i.id
        WHERE i.status = 'resolved' GROUP BY i.id HAVING count(k.id) <> 1
    """,
    "knowledge entry missing one of its incident's requests": """
        SELECT k.id FROM knowledge_entries k
        WHERE jsonb_array_length(k.actions) <> (
            SELECT count(*) FROM approval_requests r WHERE r.incident_id = k.incident_id)
    """,
    "expired request whose idle incident is open": """
        SELECT r.id FROM approval_requests r JOIN incidents i ON i.id = r.incident_id
        WHERE r.status = 'expired' AND i.status = 'open' AND NOT EXISTS (
            SELECT 1 FROM approval_requests s WHERE s.incident_id = i.id
              AND (s.status = 'pending' OR (s.status = 'approved' AND s.outcome_at IS NULL)))
    """,
}


async def assert_exactly_once(conn: asyncpg.Connection) -> None:
    """Every transition recorded once, every resolution once, one knowledge entry each.

    Holds at any instant, mid-drain included: each check only looks at what has ended.
    """
    # Fresh statistics: after a drain the planner still believes every row is pending
    # and would check each request with a scan of all events.
    for table in ("approval_requests", "incidents", "events", "knowledge_entries"):
        await conn.execute(f"ANALYZE {table}")
    broken = {}
    for what, sql in EXACTLY_ONCE.items():
        rows = await conn.fetch(f"SELECT count(*) OVER () AS n, x.* FROM ({sql}) x LIMIT 3")
        if rows:
            broken[what] = (rows[0]["n"], [str(r["id"]) for r in rows])
    assert not broken, f"exactly-once broken: {broken}"


async def assert_all_expired(conn: asyncpg.Connection) -> None:
    """The whole backlog ended as the resolver ends it: expired, incidents resolved."""
    requests = dict(await conn.fetch(
        "SELECT status || '/' || coalesce(decided_by, '-'), count(*) FROM approval_requests "
        "GROUP BY 1"))
    incidents = dict(await conn.fetch(
        "SELECT status || '/' || coalesce(resolution_type, '-'), count(*) FROM incidents "
        "GROUP BY 1"))
    assert set(requests) == {"expired/timeout"}, requests
    assert set(incidents) == {"resolved/timeout"}, incidents
    await assert_exactly_once(conn)


async def database_now(conn: asyncpg.Connection) -> datetime:
    value = await conn.fetchval("SELECT now()")
    assert isinstance(value, datetime)
    return value


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(plain_url(url), server_settings={
        "application_name": "reliability-test"})
