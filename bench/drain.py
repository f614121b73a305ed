"""How fast does signoff drain a backlog, next to plain SQL doing the same work?

    python bench/drain.py --database-url URL [--n 100000] [--batch-size 1000] [--repeat 1]

Preloads N overdue pending requests, each with an open incident, into a fresh database
(on PostgreSQL a scratch database created beside the given one and dropped at the end;
on SQLite a fresh file), drains them with ``Resolver.run_pass``, then drains identical
fresh data with hand-written set-based SQL at the same batch size: expire, resolve the
incident, write the knowledge entry and the audit events. Both end states are compared.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

from signoff.db import Database
from signoff.logs import configure_logging
from signoff.metrics import Metrics
from signoff.migrate import upgrade
from signoff.resolver import Resolver
from signoff.settings import Settings, normalise_database_url
from signoff.tables import incidents, metadata, requests

DEFAULT_CONCURRENCY = inspect.signature(Resolver).parameters["concurrency"].default

# -- fresh state ------------------------------------------------------------------------


def plain_postgres_url(url: str) -> str:
    return "postgresql://" + normalise_database_url(url).split("://", 1)[1]


def with_database(url: str, name: str) -> str:
    parsed = sa.make_url(plain_postgres_url(url)).set(database=name)
    return parsed.render_as_string(hide_password=False)


@dataclass
class Target:
    """Where one run's data lives."""

    url: str
    postgres: bool


async def migrate(url: str) -> None:
    db = Database.from_settings(Settings(database_url=url))
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def fresh_postgres(scratch: str, n: int, base: datetime) -> None:
    """Empty every table, then load the backlog with two INSERT … SELECT statements."""
    conn = await asyncpg.connect(scratch)
    try:
        tables = ", ".join(t.name for t in metadata.sorted_tables)
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        # Ids are derived from the row number, so both runs see exactly the same rows.
        await conn.execute(
            """
            INSERT INTO incidents (id, fingerprint, source, title, severity, service, labels,
                                   status, opened_by, opened_at)
            SELECT md5('incident' || i)::uuid, 'fp-' || i, 'bench', 'disk full on host-' || i,
                   'high', 'svc-' || (i % 50), '{}'::jsonb, 'open', 'bench',
                   $1::timestamptz - interval '1 hour'
            FROM generate_series(1, $2::int) AS i
            """,
            base, n,
        )
        await conn.execute(
            """
            INSERT INTO approval_requests (id, incident_id, action, params, risk, requested_by,
                                           status, required_approvals, approval_count,
                                           created_at, expires_at)
            SELECT md5('request' || i)::uuid, md5('incident' || i)::uuid, 'restart service',
                   '{}'::jsonb, 'medium', 'bench', 'pending', 1, 0,
                   $1::timestamptz - interval '1 hour',
                   $1::timestamptz - interval '10 minutes' + i * interval '10 microseconds'
            FROM generate_series(1, $2::int) AS i
            """,
            base, n,
        )
        await conn.execute("VACUUM ANALYZE incidents")
        await conn.execute("VACUUM ANALYZE approval_requests")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def fresh_sqlite(path: Path, n: int, base: datetime) -> None:
    """A new file, migrated, loaded with executemany through the same column types."""
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    asyncio.run(migrate(f"sqlite:///{path}"))
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            rows = []
            reqs = []
            for i in range(1, n + 1):
                incident_id = uuid.uuid5(uuid.NAMESPACE_OID, f"incident{i}")
                rows.append({
                    "id": incident_id, "fingerprint": f"fp-{i}", "source": "bench",
                    "title": f"disk full on host-{i}", "severity": "high",
                    "service": f"svc-{i % 50}", "labels": {}, "description": None,
                    "status": "open", "opened_by": "bench",
                    "opened_at": base - timedelta(hours=1),
                })
                reqs.append({
                    "id": uuid.uuid5(uuid.NAMESPACE_OID, f"request{i}"),
                    "incident_id": incident_id, "action": "restart service", "params": {},
                    "risk": "medium", "requested_by": "bench", "status": "pending",
                    "required_approvals": 1, "approval_count": 0,
                    "created_at": base - timedelta(hours=1),
                    "expires_at": base - timedelta(minutes=10) + timedelta(microseconds=10 * i),
                })
            conn.execute(incidents.insert(), rows)
            conn.execute(requests.insert(), reqs)
    finally:
        engine.dispose()


# -- the two drains ---------------------------------------------------------------------


async def drain_signoff(url: str, batch_size: int, concurrency: int) -> tuple[float, int]:
    settings = Settings(database_url=url, resolver_batch_size=batch_size)
    db = Database.from_settings(settings)
    resolver = Resolver(db, settings, Metrics(), listen=False, concurrency=concurrency)
    try:
        await resolver.count_due()  # the pool is warm, as in a running service
        started = time.perf_counter()
        result = await resolver.run_pass()
        elapsed = time.perf_counter() - started
    finally:
        await db.dispose()
    if result.errors:
        raise SystemExit(f"signoff reported {result.errors} errors")
    return elapsed, result.expired


PG_RAW = [
    # 1. claim a batch and expire it
    """
    WITH due AS MATERIALIZED (
        SELECT id FROM approval_requests
        WHERE status = 'pending' AND expires_at <= $1
        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    UPDATE approval_requests r
    SET status = 'expired', disposition = 'timeout_ignored', decided_by = 'timeout',
        decided_at = $1
    FROM due WHERE r.id = due.id
    RETURNING r.id, r.incident_id, r.expires_at
    """,
    # 2. their audit events
    """
    INSERT INTO events (at, kind, actor, request_id, incident_id, from_status, to_status, detail)
    SELECT $1, 'request_expired', 'timeout', u.id, u.incident_id, 'pending', 'expired',
           jsonb_build_object('lateness_seconds', extract(epoch FROM $1 - u.expires_at))
    FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS u(id, incident_id, expires_at)
    """,
    # 3. resolve the incidents nothing else keeps open (rule 4)
    """
    UPDATE incidents i
    SET status = 'resolved', resolved_at = $1, resolution_type = 'timeout',
        disposition = 'timeout_ignored', resolved_by = 'timeout'
    WHERE i.id = ANY($2::uuid[]) AND i.status = 'open'
      AND NOT EXISTS (
        SELECT 1 FROM approval_requests r
        WHERE r.incident_id = i.id
          AND (r.status = 'pending' OR (r.status = 'approved' AND r.outcome_at IS NULL)))
    RETURNING i.id
    """,
    # 4. one knowledge entry each
    """
    INSERT INTO knowledge_entries (id, incident_id, created_at, service, fingerprint, title,
                                   resolution_type, disposition, actions, summary)
    SELECT gen_random_uuid(), i.id, $1, i.service, i.fingerprint, i.title, 'timeout',
           'timeout_ignored', a.actions,
           format('%s incident on %s: %s. Resolved as timeout after %s min '
                  '(disposition timeout_ignored). %s action(s) proposed: %s.',
                  i.severity, i.service, i.title,
                  round((extract(epoch FROM $1 - i.opened_at) / 60)::numeric, 1),
                  a.n, a.prose)
    FROM incidents i
    CROSS JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object('action', r.action, 'status', r.status,
                                            'decided_by', r.decided_by, 'outcome', NULL)
                         ORDER BY r.created_at, r.id) AS actions,
               count(*) AS n,
               string_agg(format('%L: %s by %s', r.action, r.status, r.decided_by), '; '
                          ORDER BY r.created_at, r.id) AS prose
        FROM approval_requests r WHERE r.incident_id = i.id) a
    WHERE i.id = ANY($2::uuid[])
    """,
    # 5. the incidents' audit events
    """
    INSERT INTO events (at, kind, actor, incident_id, from_status, to_status, detail)
    SELECT $1, 'incident_resolved', 'timeout', u.id, 'open', 'resolved',
           '{"resolution_type": "timeout", "disposition": "timeout_ignored"}'::jsonb
    FROM unnest($2::uuid[]) AS u(id)
    """,
]


async def drain_raw_postgres(url: str, batch_size: int) -> tuple[float, int]:
    conn = await asyncpg.connect(url)
    stmts = [await conn.prepare(sql) for sql in PG_RAW]
    expire, request_events, resolve, write_knowledge, incident_events = stmts
    total = 0
    try:
        started = time.perf_counter()
        while True:
            async with conn.transaction():
                now = await conn.fetchval("SELECT now()")
                rows = await expire.fetch(now, batch_size)
                if rows:
                    await request_events.fetch(
                        now, [r["id"] for r in rows], [r["incident_id"] for r in rows],
                        [r["expires_at"] for r in rows],
                    )
                    closed = [r["id"] for r in await resolve.fetch(
                        now, sorted({r["incident_id"] for r in rows}))]
                    if closed:
                        await write_knowledge.fetch(now, closed)
                        await incident_events.fetch(now, closed)
            total += len(rows)
            if len(rows) < batch_size:
                break
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return elapsed, total


def _sqlite_time(value: datetime) -> str:
    # The text form SQLAlchemy stores for a UTC instant on SQLite: sortable, microseconds.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def drain_raw_sqlite(path: Path, batch_size: int) -> tuple[float, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    total = 0
    try:
        started = time.perf_counter()
        while True:
            now = _sqlite_time(datetime.now(UTC))
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                """
                UPDATE approval_requests
                SET status = 'expired', disposition = 'timeout_ignored',
                    decided_by = 'timeout', decided_at = :now
                WHERE id IN (SELECT id FROM approval_requests
                             WHERE status = 'pending' AND expires_at <= :now
                             ORDER BY expires_at LIMIT :limit)
                RETURNING id, incident_id
                """,
                {"now": now, "limit": batch_size},
            ).fetchall()
            if rows:
                ids = json.dumps([r[0] for r in rows])
                conn.execute(
                    """
                    INSERT INTO events (at, kind, actor, request_id, incident_id,
                                        from_status, to_status, detail)
                    SELECT :now, 'request_expired', 'timeout', r.id, r.incident_id,
                           'pending', 'expired',
                           json_object('lateness_seconds',
                                       (julianday(:now) - julianday(r.expires_at)) * 86400)
                    FROM approval_requests r WHERE r.id IN (SELECT value FROM json_each(:ids))
                    """,
                    {"now": now, "ids": ids},
                )
                closed = conn.execute(
                    """
                    UPDATE incidents
                    SET status = 'resolved', resolved_at = :now, resolution_type = 'timeout',
                        disposition = 'timeout_ignored', resolved_by = 'timeout'
                    WHERE id IN (SELECT incident_id FROM approval_requests
                                 WHERE id IN (SELECT value FROM json_each(:ids)))
                      AND status = 'open'
                      AND NOT EXISTS (
                        SELECT 1 FROM approval_requests r
                        WHERE r.incident_id = incidents.id
                          AND (r.status = 'pending'
                               OR (r.status = 'approved' AND r.outcome_at IS NULL)))
                    RETURNING id
                    """,
                    {"now": now, "ids": ids},
                ).fetchall()
                if closed:
                    closed_ids = json.dumps([c[0] for c in closed])
                    conn.execute(
                        """
                        INSERT INTO knowledge_entries (id, incident_id, created_at, service,
                            fingerprint, title, resolution_type, disposition, actions, summary)
                        SELECT lower(hex(randomblob(16))), i.id, :now, i.service,
                               i.fingerprint, i.title, 'timeout', 'timeout_ignored',
                               (SELECT json_group_array(json_object(
                                    'action', r.action, 'status', r.status,
                                    'decided_by', r.decided_by, 'outcome', NULL))
                                FROM approval_requests r WHERE r.incident_id = i.id),
                               printf('%s incident on %s: %s. Resolved as timeout after '
                                      || '%.1f min (disposition timeout_ignored). %s',
                                      i.severity, i.service, i.title,
                                      (julianday(:now) - julianday(i.opened_at)) * 1440,
                                      (SELECT count(*) || ' action(s) proposed: '
                                              || group_concat(quote(r.action) || ': '
                                              || r.status || ' by ' || r.decided_by, '; ')
                                              || '.'
                                       FROM approval_requests r WHERE r.incident_id = i.id))
                        FROM incidents i WHERE i.id IN (SELECT value FROM json_each(:ids))
                        """,
                        {"now": now, "ids": closed_ids},
                    )
                    conn.execute(
                        """
                        INSERT INTO events (at, kind, actor, incident_id, from_status,
                                            to_status, detail)
                        SELECT :now, 'incident_resolved', 'timeout', value, 'open', 'resolved',
                               json_object('resolution_type', 'timeout',
                                           'disposition', 'timeout_ignored')
                        FROM json_each(:ids)
                        """,
                        {"now": now, "ids": closed_ids},
                    )
            conn.execute("COMMIT")
            total += len(rows)
            if len(rows) < batch_size:
                break
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return elapsed, total


# -- the end state ----------------------------------------------------------------------

END_STATE = {
    "requests": "SELECT status || '/' || coalesce(disposition, '-') || '/' || "
                "coalesce(decided_by, '-'), count(*) FROM approval_requests GROUP BY 1",
    "incidents": "SELECT status || '/' || coalesce(resolution_type, '-') || '/' || "
                 "coalesce(disposition, '-'), count(*) FROM incidents GROUP BY 1",
    "knowledge": "SELECT resolution_type || '/' || coalesce(disposition, '-'), count(*) "
                 "FROM knowledge_entries GROUP BY 1",
    "events": "SELECT kind, count(*) FROM events GROUP BY 1",
    "unresolved_with_entry": "SELECT 'n', count(*) FROM knowledge_entries k "
                             "JOIN incidents i ON i.id = k.incident_id "
                             "WHERE i.status <> 'resolved'",
}


async def end_state(target: Target) -> dict[str, dict[str, int]]:
    state: dict[str, dict[str, int]] = {}
    if target.postgres:
        conn = await asyncpg.connect(target.url)
        try:
            for name, sql in END_STATE.items():
                state[name] = {r[0]: r[1] for r in await conn.fetch(sql)}
        finally:
            await conn.close()
    else:
        with sqlite3.connect(target.url) as lite:
            for name, sql in END_STATE.items():
                state[name] = dict(lite.execute(sql).fetchall())
    return state


# -- main -------------------------------------------------------------------------------


async def bench_postgres(
    url: str, n: int, batch_size: int, repeat: int, concurrency: int
) -> dict[str, Any]:
    name = f"signoff_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(plain_postgres_url(url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    scratch = with_database(url, name)
    try:
        await migrate(scratch)
        base = datetime.now(UTC)
        return await run_both(
            Target(scratch, True), n, batch_size, repeat,
            load=lambda: fresh_postgres(scratch, n, base),
            signoff=lambda: drain_signoff(scratch, batch_size, concurrency),
            raw=lambda: drain_raw_postgres(scratch, batch_size),
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench_sqlite(n: int, batch_size: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        base = datetime.now(UTC)

        async def load() -> None:
            await asyncio.to_thread(fresh_sqlite, path, n, base)

        async def raw() -> tuple[float, int]:
            return await asyncio.to_thread(drain_raw_sqlite, path, batch_size)

        return await run_both(
            Target(str(path), False), n, batch_size, repeat, load=load,
            signoff=lambda: drain_signoff(f"sqlite:///{path}", batch_size, 1), raw=raw,
        )


async def run_both(
    target: Target, n: int, batch_size: int, repeat: int, *, load: Any, signoff: Any, raw: Any
) -> dict[str, Any]:
    """Alternate the two drains on freshly loaded data; keep the best time of each."""
    best = {"signoff": float("inf"), "raw": float("inf")}
    states: dict[str, Any] = {}
    for round_ in range(1, repeat + 1):
        for label, drain in (("signoff", signoff), ("raw", raw)):
            started = time.perf_counter()
            await load()
            loaded = time.perf_counter() - started
            elapsed, drained = await drain()
            if drained != n:
                raise SystemExit(f"{label} drained {drained} of {n}")
            states[label] = await end_state(target)
            best[label] = min(best[label], elapsed)
            print(f"round {round_}: {label:7} drained {drained} in {elapsed:.2f} s "
                  f"({drained / elapsed:,.0f} rows/s; preload {loaded:.1f} s)", flush=True)
    match = states["signoff"] == states["raw"]
    expected = {
        "requests": {"expired/timeout_ignored/timeout": n},
        "incidents": {"resolved/timeout/timeout_ignored": n},
        "knowledge": {"timeout/timeout_ignored": n},
        "events": {"request_expired": n, "incident_resolved": n},
        "unresolved_with_entry": {"n": 0},
    }
    print(f"end states {'match' if match else 'DIFFER'}: {json.dumps(states['signoff'])}")
    if not match:
        print(f"raw end state: {json.dumps(states['raw'])}")
    complete = states["signoff"] == expected
    if not complete:
        print(f"expected end state: {json.dumps(expected)}")
    return {
        "signoff_seconds": round(best["signoff"], 3),
        "raw_seconds": round(best["raw"], 3),
        "signoff_rows_per_s": round(n / best["signoff"]),
        "raw_rows_per_s": round(n / best["raw"]),
        "ratio": round(best["raw"] / best["signoff"], 3),
        "end_states_match": match and complete,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="postgresql://user@host:port/db (a scratch database is made "
                             "beside it) or sqlite:///any (a temporary file is used)")
    parser.add_argument("--n", type=int, default=100_000, help="overdue requests to drain")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best time counts")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="batches signoff runs at once on PostgreSQL (the raw SQL runs one)")
    args = parser.parse_args()
    configure_logging("warning", "json")
    postgres = Settings(database_url=args.database_url).is_postgres
    print(f"draining {args.n:,} overdue requests, batches of {args.batch_size}, on "
          f"{'PostgreSQL' if postgres else 'SQLite'}", flush=True)
    if postgres:
        figures = asyncio.run(bench_postgres(args.database_url, args.n, args.batch_size,
                                             args.repeat, args.concurrency))
    else:
        figures = asyncio.run(bench_sqlite(args.n, args.batch_size, args.repeat))
    print(f"signoff {figures['signoff_rows_per_s']:,} rows/s, raw SQL "
          f"{figures['raw_rows_per_s']:,} rows/s: ratio {figures['ratio']}")
    print(json.dumps({"database": "postgresql" if postgres else "sqlite", "n": args.n,
                      "batch_size": args.batch_size,
                      "concurrency": args.concurrency if postgres else 1, **figures}))
    if not figures["end_states_match"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
