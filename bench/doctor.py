"""How long does ``signoff doctor`` take on a large, healthy PostgreSQL database?

    python bench/doctor.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        [--n 1000000]

Creates a scratch database beside the given one (dropped at the end), loads N ended
requests with their incidents, audit events and knowledge entries (set-based SQL), plus
a pending backlog of N/100 with future deadlines, runs ANALYZE as autovacuum would, then
times each of the doctor's checks. Every check must find nothing. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from signoff.db import Database
from signoff.doctor import CHECKS, run_checks
from signoff.migrate import upgrade
from signoff.settings import Settings

LOAD = [
    # Incidents, all resolved as timeouts, opened over the last 30 days.
    """INSERT INTO incidents (id, title, severity, labels, status, opened_at, resolved_at,
           resolution_type, disposition, resolved_by)
       SELECT md5('i' || g)::uuid, 'incident ' || g, 'high', '{}', 'resolved',
              now() - interval '30 days' + g * interval '1 second',
              now() - interval '30 days' + g * interval '1 second' + interval '15 minutes',
              'timeout', 'timeout_ignored', 'timeout'
       FROM generate_series(1, $1) AS g""",
    """INSERT INTO approval_requests (id, incident_id, action, params, risk, requested_by,
           status, disposition, required_approvals, approval_count, decided_by, created_at,
           expires_at, decided_at)
       SELECT md5('r' || g)::uuid, md5('i' || g)::uuid, 'restart', '{}', 'medium', 'bot',
              'expired', 'timeout_ignored', 1, 0, 'timeout',
              now() - interval '30 days' + g * interval '1 second',
              now() - interval '30 days' + g * interval '1 second' + interval '15 minutes',
              now() - interval '30 days' + g * interval '1 second' + interval '15 minutes'
       FROM generate_series(1, $1) AS g""",
    """INSERT INTO events (at, kind, actor, request_id, incident_id, from_status, to_status)
       SELECT created_at, 'request_created', requested_by, id, incident_id, NULL, 'pending'
       FROM approval_requests""",
    """INSERT INTO events (at, kind, actor, request_id, incident_id, from_status, to_status)
       SELECT decided_at, 'request_expired', 'timeout', id, incident_id, 'pending', 'expired'
       FROM approval_requests""",
    """INSERT INTO knowledge_entries (id, incident_id, created_at, title, resolution_type,
           disposition, actions, summary)
       SELECT md5('k' || g)::uuid, md5('i' || g)::uuid, now(), 'incident ' || g, 'timeout',
              'timeout_ignored', '[]', 'expired, nobody answered'
       FROM generate_series(1, $1) AS g""",
    # A live backlog: pending, due in the future.
    """INSERT INTO approval_requests (id, action, params, risk, requested_by, status,
           required_approvals, approval_count, created_at, expires_at)
       SELECT md5('p' || g)::uuid, 'scale', '{}', 'low', 'bot', 'pending', 1, 0, now(),
              now() + interval '1 hour'
       FROM generate_series(1, $1 / 100) AS g""",
]


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


async def run(url: str, n: int) -> dict[str, Any]:
    name = f"signoff_bench_doctor_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    scratch = _with_database(url, name)
    try:
        db = Database.from_settings(Settings(database_url=scratch))
        try:
            await upgrade(db)
            conn = await asyncpg.connect(scratch)
            try:
                started = time.perf_counter()
                for statement in LOAD:
                    if "$1" in statement:
                        await conn.execute(statement, n)
                    else:
                        await conn.execute(statement)
                await conn.execute("ANALYZE")
                print(f"loaded {n:,} ended requests in {time.perf_counter() - started:.1f} s")
            finally:
                await conn.close()
            timings = {}
            for check, _, _ in CHECKS:
                began = time.perf_counter()
                found = await db.run(
                    lambda c, now, which=check: run_checks(
                        c, now, grace=timedelta(seconds=2), only=[which]
                    ),
                    readonly=True,
                )
                timings[check] = round(time.perf_counter() - began, 3)
                assert all(f.ok for f in found), found
                print(f"{check:30s} {timings[check]:8.3f} s")
            began = time.perf_counter()
            await db.run(lambda c, now: run_checks(c, now, grace=timedelta(seconds=2)),
                         readonly=True)
            total = round(time.perf_counter() - began, 3)
        finally:
            await db.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"all checks: {total:.3f} s")
    return {"benchmark": "doctor", "database": "postgresql", "n": n, "total_seconds": total,
            "check_seconds": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server to use")
    parser.add_argument("--n", type=int, default=1_000_000, help="ended requests to load")
    args = parser.parse_args()
    url = "postgresql://" + args.database_url.split("://", 1)[1]
    print(json.dumps(asyncio.run(run(url, args.n))))


if __name__ == "__main__":
    main()
