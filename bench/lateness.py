"""How late do requests expire, measured from the database, against a running ``signoff serve``?

    python bench/lateness.py --spawn [--database-url URL]
    python bench/lateness.py --url http://127.0.0.1:8700 --token TOKEN --database-url URL

Creates requests over HTTP whose deadlines are spread over a window (``ttl_seconds``),
then a burst that all fall due at one instant (``expires_at``), waits for them to expire,
and reads lateness (``decided_at - expires_at`` of each expired request) from the
database. ``--spawn`` starts ``signoff serve`` itself on a temporary SQLite file (or the
given ``--database-url``, where it works in a scratch database beside the one named,
dropped at the end) and makes its own requester token; ``--logs DIR`` keeps the server's
log, whose ``resolver_pass`` lines say how each pass went. The last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from signoff.settings import normalise_database_url
from signoff.tables import requests


@dataclass
class Server:
    url: str
    token: str
    database_url: str
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Created:
    spread: list[str] = field(default_factory=list)
    burst: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    first_deadline: datetime | None = None
    last_deadline: datetime | None = None


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def signoff_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "signoff", *args]


@contextlib.contextmanager
def scratch_database(database_url: str | None) -> Iterator[str | None]:
    """On PostgreSQL, a new database beside the one named, dropped when the block ends, so
    that every run starts from an empty table."""
    if database_url is None or not database_url.startswith("postg"):
        yield database_url
        return
    plain = sa.make_url("postgresql://" + database_url.split("://", 1)[1])
    name = f"signoff_lateness_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(plain.render_as_string(hide_password=False))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield plain.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def spawned(database_url: str | None, workdir: Path, logs: Path) -> Iterator[Server]:
    """``signoff serve`` as a subprocess, with a requester token of its own."""
    url = database_url or f"sqlite:///{workdir / 'lateness.db'}"
    port = free_port()
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_PORT": str(port),
           "SIGNOFF_LOG_FORMAT": "json", "SIGNOFF_MAX_TTL": "1d"}
    subprocess.run(signoff_command("db", "upgrade"), env=env, capture_output=True, check=True)
    made = subprocess.run(
        signoff_command("token", "create", f"bench-{os.getpid()}", "--role", "requester"),
        env=env, capture_output=True, check=True,
    )
    token = made.stdout.decode().strip().splitlines()[-1]
    log = logs / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(signoff_command("serve"), env=env, stdout=out, stderr=out)
    server = Server(f"http://127.0.0.1:{port}", token, url, log, process)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_healthy(server: Server, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            if server.process is not None and server.process.poll() is not None:
                raise SystemExit(f"signoff serve exited; see {server.log}")
            try:
                if (await client.get(f"{server.url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"signoff serve did not answer within {within} s")
            await asyncio.sleep(0.2)


# -- creating requests --------------------------------------------------------------------


async def create_all(
    client: httpx.AsyncClient, bodies: list[Callable[[], dict[str, Any]]], concurrency: int,
    into: list[str], created: Created, *, incidents: bool = False,
) -> float:
    """POST every body (each made at the moment it is sent) with ``concurrency`` in flight,
    each for an incident of its own if ``incidents``; return the rate achieved."""
    position = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal position
        while position < len(bodies):
            make = bodies[position]
            position += 1
            try:
                body = make()
                if incidents:
                    incident = await client.post("/api/v1/incidents", json={
                        "title": "lateness bench", "severity": "low", "service": "bench"})
                    incident.raise_for_status()
                    body = {**body, "incident_id": incident.json()["id"]}
                response = await client.post("/api/v1/approvals", json=body)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
                created.failures[key] = created.failures.get(key, 0) + 1
                continue
            if response.status_code != 201:
                key = str(response.status_code)
                created.failures[key] = created.failures.get(key, 0) + 1
                continue
            data = response.json()
            into.append(data["id"])
            deadline = datetime.fromisoformat(data["expires_at"])
            if created.first_deadline is None or deadline < created.first_deadline:
                created.first_deadline = deadline
            if created.last_deadline is None or deadline > created.last_deadline:
                created.last_deadline = deadline

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - started)


def ttl_until(instant: datetime) -> dict[str, Any]:
    """A body whose ``ttl_seconds`` (whole seconds) lands as near ``instant`` as it can."""
    seconds = max(1, round((instant - datetime.now(UTC)).total_seconds()))
    return {"action": "restart service", "risk": "low", "rationale": "lateness bench",
            "ttl_seconds": seconds}


async def create_requests(server: Server, args: argparse.Namespace) -> Created:
    """Everything is created before the first deadline, so what is measured is the
    resolver's timing, not a server saturated by the creates themselves."""
    created = Created()
    headers = {"Authorization": f"Bearer {server.token}"}
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits,
                                 timeout=60) as client:
        # How fast can this server create? Long-lived requests, withdrawn afterwards.
        probe: list[str] = []
        far = {"action": "calibrate", "risk": "low", "ttl_seconds": 3600}
        rate = await create_all(client, [lambda: far] * args.calibrate, args.concurrency,
                                probe, Created())
        for request_id in probe:
            await client.post(f"/api/v1/approvals/{request_id}/cancel")
        total = args.spread + args.burst
        # An incident per request is a second create, about as costly as the first.
        needed = total * (2 if args.incidents else 1) / max(rate, 1.0)
        window_start = datetime.now(UTC) + timedelta(seconds=needed * 1.25 + args.lead)
        burst_at = window_start + timedelta(seconds=args.window / 2)
        print(f"creating at about {rate:,.0f}/s: {args.spread:,} deadlines spread over "
              f"{args.window} s from {window_start.isoformat()}, and {args.burst:,} all due "
              f"at {burst_at.isoformat()}", flush=True)
        offsets = [random.uniform(0, args.window) for _ in range(args.spread)]
        spread = [
            (lambda o=o: ttl_until(window_start + timedelta(seconds=o))) for o in offsets
        ]
        burst_body = {"action": "restart service", "risk": "low", "rationale": "burst",
                      "expires_at": burst_at.isoformat()}
        started = time.perf_counter()
        await create_all(client, [lambda: burst_body] * args.burst, args.concurrency,
                         created.burst, created, incidents=args.incidents)
        await create_all(client, spread, args.concurrency, created.spread, created,
                         incidents=args.incidents)
        finished = datetime.now(UTC)
        took = time.perf_counter() - started
    ahead = ((created.first_deadline or finished) - finished).total_seconds()
    print(f"created {len(created.spread) + len(created.burst):,} in {took:.1f} s "
          f"({(len(created.spread) + len(created.burst)) / took:,.0f}/s); the first deadline "
          f"is {ahead:.1f} s after the last create", flush=True)
    if ahead < 0:
        print("warning: some deadlines fell while requests were still being created",
              flush=True)
    if created.failures:
        print(f"failed creates: {created.failures}", flush=True)
    return created


# -- reading lateness ---------------------------------------------------------------------


async def read_lateness(
    database_url: str, ids: list[str], last_deadline: datetime, settle: float
) -> tuple[dict[str, float], int]:
    """Wait until none of ``ids`` is pending (or ``settle`` s after the last deadline),
    then return each expired request's lateness in seconds, and how many stayed pending."""
    engine = create_async_engine(normalise_database_url(database_url))
    try:
        giving_up = last_deadline + timedelta(seconds=settle)
        while True:
            rows = await fetch(engine, ids)
            pending = sum(1 for r in rows if r.status == "pending")
            now = datetime.now(UTC)
            if (pending == 0 and now > last_deadline) or now > giving_up:
                break
            await asyncio.sleep(max(0.5, min(5.0, (last_deadline - now).total_seconds())))
    finally:
        await engine.dispose()
    lateness = {
        str(r.id): (r.decided_at - r.expires_at).total_seconds()
        for r in rows if r.status == "expired" and r.decided_at is not None
    }
    return lateness, pending


async def fetch(engine: Any, ids: list[str]) -> list[Any]:
    rows: list[Any] = []
    async with engine.connect() as conn:
        for start in range(0, len(ids), 5000):
            chunk = [uuid.UUID(i) for i in ids[start:start + 5000]]
            result = await conn.execute(
                sa.select(requests.c.id, requests.c.status, requests.c.expires_at,
                          requests.c.decided_at).where(requests.c.id.in_(chunk))
            )
            rows.extend(result.all())
    return rows


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least ``q`` of them at or below."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
    return ordered[rank]


def summary(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": round(quantile(values, 0.50), 4),
        "p99": round(quantile(values, 0.99), 4),
        "max": round(max(values), 4) if values else float("nan"),
    }


# -- main ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    await wait_healthy(server)
    created = await create_requests(server, args)
    ids = created.spread + created.burst
    if not ids or created.last_deadline is None:
        raise SystemExit("no request was created")
    wait = (created.last_deadline - datetime.now(UTC)).total_seconds()
    print(f"waiting {max(wait, 0):.1f} s for the last deadline, then reading the database",
          flush=True)
    lateness, pending = await read_lateness(
        server.database_url, ids, created.last_deadline, args.settle
    )
    spread = [lateness[i] for i in created.spread if i in lateness]
    burst = [lateness[i] for i in created.burst if i in lateness]
    everything = spread + burst
    figures = {"all": summary(everything), "spread": summary(spread), "burst": summary(burst)}
    for name, s in figures.items():
        print(f"{name:6} n={s['n']:>6,}  p50 {s['p50'] * 1000:8.1f} ms  "
              f"p99 {s['p99'] * 1000:8.1f} ms  max {s['max'] * 1000:8.1f} ms")
    if pending:
        print(f"{pending} requests were still pending {args.settle} s after the last deadline")
    database = "postgresql" if server.database_url.startswith("postg") else "sqlite"
    return {
        "database": database, "incidents": args.incidents, "n": len(ids),
        "n_spread": len(spread), "n_burst": len(burst),
        "p50_s": figures["all"]["p50"], "p99_s": figures["all"]["p99"],
        "max_s": figures["all"]["max"], "spread": figures["spread"],
        "burst": figures["burst"], "still_pending": pending,
        "failed_creates": sum(created.failures.values()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.spawn:
        with tempfile.TemporaryDirectory(prefix="signoff-lateness-") as tmp, \
                scratch_database(args.database_url) as url, \
                spawned(url, Path(tmp), Path(args.logs or tmp)) as server:
            return asyncio.run(bench(args, server))
    if not (args.url and args.token and args.database_url):
        raise SystemExit("give --spawn, or --url, --token and --database-url")
    return asyncio.run(bench(args, Server(args.url.rstrip("/"), args.token, args.database_url)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawn", action="store_true",
                        help="start signoff serve here (temporary SQLite unless "
                             "--database-url is given)")
    parser.add_argument("--url", help="a running signoff serve, e.g. http://127.0.0.1:8700")
    parser.add_argument("--token", help="a requester token for --url")
    parser.add_argument("--database-url", help="the server's database, to read lateness from")
    parser.add_argument("--spread", type=int, default=2000,
                        help="requests with deadlines spread over the window")
    parser.add_argument("--window", type=int, default=20, help="seconds the spread covers")
    parser.add_argument("--lead", type=float, default=3,
                        help="seconds between the last create and the window, at least")
    parser.add_argument("--calibrate", type=int, default=200,
                        help="creates (then cancelled) that measure the server's rate")
    parser.add_argument("--burst", type=int, default=10_000,
                        help="requests that fall due at one instant")
    parser.add_argument("--concurrency", type=int, default=32, help="creates in flight")
    parser.add_argument("--incidents", action="store_true",
                        help="give each request an incident of its own, so that every "
                             "expiry also resolves an incident and writes a knowledge entry")
    parser.add_argument("--settle", type=float, default=60,
                        help="seconds after the last deadline to wait for expiry")
    parser.add_argument("--logs", metavar="DIR",
                        help="with --spawn: keep the server's log as DIR/serve.log")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    figures = run(args)
    print(json.dumps(figures))
    if figures["still_pending"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
