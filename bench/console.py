"""How fast does the web console render with a big database, next to the JSON API?

    python bench/console.py --database-url postgresql://user@host:port/db
                            [--pending 10000] [--ended 100000] [--calls 400]

Creates a scratch database beside the given one (dropped at the end), fills it with
``--pending`` pending requests (deadlines from an hour to a week ahead) and ``--ended``
ended ones (approved, rejected, expired over the last two weeks), each with its incident
and audit events, in plain SQL. Then starts ``signoff serve``, signs in to the console
with an approver's token and, one call at a time over one keep-alive connection, asks
``--calls`` times each for the pending list (``GET /ui/``: the 50 soonest of them, with
their count) and a request page (``GET /ui/approvals/{id}``, a random pending request),
and, as the baseline in the same run, the JSON API's first page of pending requests
(``GET /api/v1/approvals?status=pending&limit=50``, as many items). Reported per page:
p50 and p99 of
the time from sending the call to its last byte (the server's time plus a loopback round
trip: an upper bound of the server's), the server's CPU per call, and the ratio of each
page's p99 to the baseline's. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

# ``python bench/console.py`` has this directory on its path: the scratch database and
# the server are made as bench/api.py makes them.
from api import (  # type: ignore[import-not-found]
    load_average,
    make_token,
    plain_postgres_url,
    process_cpu,
    quantile,
    scratch_database,
    start_serve,
)

from signoff.settings import Settings

LIMIT_MS = 50.0

FILL = """
INSERT INTO incidents (id, fingerprint, source, title, severity, service, labels,
                       description, status, opened_by, opened_at)
SELECT gen_random_uuid(), 'bench:' || g, 'bench', 'bench incident ' || g, 'high',
       'svc-' || (g % 20), '{{}}'::jsonb, 'filled by bench/console.py', 'open', 'bench-bot',
       now() - interval '14 days' + (g * interval '1 second')
FROM generate_series(1, {incidents}) AS g;

CREATE TEMP TABLE bench_incidents AS
SELECT id, row_number() OVER (ORDER BY id) AS n FROM incidents;

INSERT INTO approval_requests (id, incident_id, action, params, risk, rationale,
    requested_by, status, disposition, required_approvals, approval_count, decided_by,
    decision_comment, created_at, expires_at, decided_at, needs_analysis)
SELECT gen_random_uuid(), i.id, 'restart service ' || g, '{{"replicas": 3}}'::jsonb,
       'medium', 'filled by bench/console.py', 'bench-bot',
       CASE g % 3 WHEN 0 THEN 'approved' WHEN 1 THEN 'rejected' ELSE 'expired' END,
       CASE g % 3 WHEN 0 THEN 'human_approved' WHEN 1 THEN 'human_rejected'
                  ELSE 'timeout_ignored' END,
       1, 0, CASE g % 3 WHEN 2 THEN 'timeout' ELSE 'bench-alice' END, NULL,
       now() - (g % 1209600) * interval '1 second' - interval '10 minutes',
       now() - (g % 1209600) * interval '1 second',
       now() - (g % 1209600) * interval '1 second' + interval '50 milliseconds', false
FROM generate_series(1, {ended}) AS g
JOIN bench_incidents i ON i.n = 1 + g % {incidents};

INSERT INTO approval_requests (id, incident_id, action, params, risk, rationale,
    requested_by, status, required_approvals, approval_count, created_at, expires_at,
    needs_analysis)
SELECT gen_random_uuid(), i.id, 'scale out pool ' || g, '{{"to": 6}}'::jsonb, 'high',
       'filled by bench/console.py', 'bench-bot', 'pending', 1, 0, now(),
       now() + interval '1 hour' + (g * interval '60 seconds'), false
FROM generate_series(1, {pending}) AS g
JOIN bench_incidents i ON i.n = 1 + g % {incidents};

INSERT INTO events (at, kind, actor, request_id, incident_id, from_status, to_status)
SELECT created_at, 'request_created', requested_by, id, incident_id, NULL, 'pending'
FROM approval_requests;
INSERT INTO events (at, kind, actor, request_id, incident_id, from_status, to_status)
SELECT decided_at, 'request_' || status, decided_by, id, incident_id, 'pending', status
FROM approval_requests WHERE status <> 'pending';
"""


async def fill(url: str, pending: int, ended: int) -> float:
    began = time.monotonic()
    conn = await asyncpg.connect(plain_postgres_url(url))
    try:
        incidents = max(pending + ended, 1) // 20
        # Whole numbers from the command line, formatted in: no text reaches the SQL.
        await conn.execute(FILL.format(incidents=int(incidents), ended=int(ended),
                                       pending=int(pending)))
        await conn.execute("VACUUM ANALYZE")  # as autovacuum leaves a table that settled
    finally:
        await conn.close()
    return time.monotonic() - began


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    form = await client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    done = await client.post("/ui/login", data={"csrf": csrf.group(1), "token": token})
    if done.status_code != 303:
        raise SystemExit(f"sign-in failed: {done.status_code}")


async def measure(client: httpx.AsyncClient, paths: list[str], pid: int) -> dict[str, Any]:
    for path in paths[:20]:  # warm-up
        await client.get(path)
    took = []
    cpu = process_cpu(pid)
    for path in paths:
        began = time.perf_counter()
        answer = await client.get(path)
        took.append(time.perf_counter() - began)
        if answer.status_code != 200:
            raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    cpu = process_cpu(pid) - cpu
    return {"calls": len(took), "p50_ms": round(quantile(took, 0.5) * 1000, 2),
            "p99_ms": round(quantile(took, 0.99) * 1000, 2),
            "max_ms": round(max(took) * 1000, 2),
            "server_cpu_ms_per_call": round(cpu / len(took) * 1000, 2),
            "bytes": len(answer.content)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_database(args.database_url, "signoff_bench_console") as url:
        with tempfile.TemporaryDirectory(prefix="signoff-bench-console-") as tmp:
            token = make_token(url, "bench-alice", "approver")
            seconds = await fill(url, args.pending, args.ended)
            print(f"filled {args.pending:,} pending and {args.ended:,} ended requests in "
                  f"{seconds:.0f} s; {os.cpu_count()} cores, load average {load_average()}",
                  flush=True)
            conn = await asyncpg.connect(plain_postgres_url(url))
            ids = [str(r["id"]) for r in await conn.fetch(
                "SELECT id FROM approval_requests WHERE status = 'pending' "
                "ORDER BY random() LIMIT $1", args.calls)]
            await conn.close()
            serve = await start_serve(url, Path(tmp) / "serve.log")
            try:
                async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
                    await sign_in(client, token)
                    api = {"Authorization": f"Bearer {token}"}
                    async with httpx.AsyncClient(base_url=serve.url, timeout=30,
                                                 headers=api) as plain:
                        baseline = await measure(
                            plain, ["/api/v1/approvals?status=pending&limit=50"] * args.calls,
                            serve.pid)
                    listing = await measure(client, ["/ui/"] * args.calls, serve.pid)
                    pages = await measure(client, [f"/ui/approvals/{i}" for i in ids],
                                          serve.pid)
            finally:
                serve.stop()
    out = {"database": "postgresql", "pending": args.pending, "ended": args.ended,
           "cores": os.cpu_count(), "baseline_api_list": baseline, "pending_list": listing,
           "request_page": pages}
    for name, figures in (("baseline_api_list", baseline), ("pending_list", listing),
                          ("request_page", pages)):
        print(f"{name:18} p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms  "
              f"server CPU {figures['server_cpu_ms_per_call']:.2f} ms/call  "
              f"{figures['bytes']:,} bytes", flush=True)
    for name in ("pending_list", "request_page"):
        out[f"{name}_p99_ratio"] = round(out[name]["p99_ms"] / baseline["p99_ms"], 2)
        print(f"{name} p99 is {out[f'{name}_p99_ratio']} x the JSON API's; "
              f"{'within' if out[name]['p99_ms'] <= LIMIT_MS else 'OVER'} {LIMIT_MS:g} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="postgresql://user@host:port/db (a scratch database is made "
                             "beside it and dropped at the end)")
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--ended", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=400, help="calls per page")
    args = parser.parse_args()
    if not Settings(database_url=args.database_url).is_postgres:
        raise SystemExit("bench/console.py measures on PostgreSQL: give a postgresql:// URL")
    figures = asyncio.run(bench(args))
    print(json.dumps(figures))
    if any(figures[n]["p99_ms"] > LIMIT_MS for n in ("pending_list", "request_page")):
        sys.exit(1)


if __name__ == "__main__":
    main()
