"""Sustained load on two replicas, then a long transaction: does signoff stay on time?

    python bench/soak.py --database-url postgresql://user@host:port/db [--minutes 10]
                         [--rate 20] [--long-tx-seconds 60] [--recovery-seconds 60]
                         [--interval 10] [--history 100000] [--replicas 2]
                         [--max-in-flight 200] [--warmup-minutes 2] [--probe]
                         [--probe-interval 60] [--tracemalloc FRAMES]
                         [--replica-env INDEX:NAME=VALUE ...]

On a scratch database beside the given one (dropped at the end), preloaded with
``--history`` ended requests (a service that has run for a while: the table never
shrinks), starts ``--replicas`` ``signoff serve`` processes and, for ``--minutes``,
starts ``--rate`` request lives per second, spread over the replicas: half are left to
expire (2-8 s deadlines, a third with an incident of their own), a quarter are read and
approved, some rejected, some cancelled, each decision sent to another replica than the
create. Then a transaction that holds its snapshot (``REPEATABLE READ``, idle) is kept open
for ``--long-tx-seconds`` while the load goes on, so that no dead row can be removed;
then it ends and the load runs ``--recovery-seconds`` more.

Every ``--interval`` seconds one line: expiry lateness (``decided_at - expires_at`` of the
requests expired in the interval, from the database) p50/p99/max, the API's p50/p99,
each replica's RSS, and ``approval_requests``' live and dead tuples and autovacuum runs
(``pg_stat_user_tables``). At the end: figures per phase, memory growth per replica, and
how long after the long transaction ended lateness was back under its threshold (twice
the steady p99, at least 250 ms). The last line printed is one JSON object.

Autovacuum must be on for the dead-tuple figures to mean anything; the run says if the
server has it off. No more than ``--max-in-flight`` lives run at once: on a machine too
busy to keep up, lives due past that are skipped and counted rather than queued (a queue
without bound makes the load generator itself the bottleneck).

Memory: after ``--warmup-minutes`` of the steady phase, each replica's RSS is fitted with a
least-squares line, over the rest of the steady phase and over its last half. Memory is
called flat when the last half's slope is at most ``FLAT_MB_PER_MINUTE`` (0.05 MB/min, 3 MB
an hour, about 20 bytes per API call at the default rate): a leak grows as fast at the end
as at the start, while warm-up and allocator fragmentation level off. The verdict needs 10
minutes after the warm-up; shorter runs say ``too short``.

``--probe`` runs each replica under ``bench/memprobe.py``, which is ``signoff serve`` plus
a signal handler: every ``--probe-interval`` seconds after the warm-up the run asks each
replica for Python's allocated blocks, glibc's heap in use and free, and object counts by
type; at the end, RSS before and after ``malloc_trim(0)``. Growth in blocks is Python
objects accumulating (a leak); RSS growing while blocks and heap-in-use stay flat is the
allocator keeping freed memory. ``--tracemalloc FRAMES`` (implies ``--probe``) traces the
first replica only, so the others stay an untraced reference, and prints the allocation
sites that grew most between the first probe and the last. ``--replica-env
INDEX:NAME=VALUE`` sets an environment variable in one replica (``0:MALLOC_ARENA_MAX=2``)
to compare side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from api import (
    Serve,
    free_port,
    make_token,
    plain_postgres_url,
    quantile,
    scratch_database,
    wait_ready,
)
from prometheus_client.parser import text_string_to_metric_families

from signoff.settings import Settings

HISTORY = """
INSERT INTO approval_requests (id, action, params, risk, requested_by, status, disposition,
                               required_approvals, approval_count, decided_by, created_at,
                               expires_at, decided_at)
SELECT gen_random_uuid(), 'restart service', '{}'::jsonb, 'low', 'history', 'expired',
       'timeout_ignored', 1, 0, 'timeout', t, t + interval '15 minutes',
       t + interval '15 minutes'
FROM (SELECT now() - interval '60 days' + i * interval '10 seconds' AS t
      FROM generate_series(1, $1::int) AS i) AS s
"""
LATENESS = """
SELECT count(*) AS n,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY late) AS p50,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY late) AS p99,
       max(late) AS max,
       count(*) FILTER (WHERE late > 0.05) AS over_50ms,
       count(*) FILTER (WHERE late > 0.1) AS over_100ms
FROM (SELECT extract(epoch FROM decided_at - expires_at)::float8 AS late
      FROM approval_requests
      WHERE status = 'expired' AND decided_by = 'timeout'
        AND decided_at > $1 AND decided_at <= $2) AS t
"""
TABLE_STATS = """
SELECT n_live_tup, n_dead_tup, autovacuum_count, vacuum_count,
       pg_total_relation_size('approval_requests') AS bytes
FROM pg_stat_user_tables WHERE relname = 'approval_requests'
"""
FLAT_MB_PER_MINUTE = 0.05
VERDICT_MINUTES = 10  # after the warm-up: less, and the verdict is "too short"
MEMPROBE = Path(__file__).with_name("memprobe.py")
OVERDUE = "SELECT count(*) FROM approval_requests WHERE status = 'pending' AND expires_at <= now()"
WAKE_LAG = "signoff_resolver_wake_lag_seconds"
LATE_AFTER = """
SELECT max(decided_at) FROM approval_requests
WHERE status = 'expired' AND decided_by = 'timeout' AND decided_at > $1
  AND extract(epoch FROM decided_at - expires_at) > $2
"""


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Calls:
    """Every API call: when it started (monotonic), how long it took, and failures."""

    timings: list[tuple[float, float]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    lives: int = 0
    skipped: int = 0  # lives not started: too many still running (see Load.run)

    async def call(self, kind: str, request: Any) -> httpx.Response | None:
        began = time.monotonic()
        try:
            response: httpx.Response = await request
        except httpx.HTTPError as exc:
            self.fail(f"{kind} {type(exc).__name__}")
            return None
        self.timings.append((began, time.monotonic() - began))
        if response.status_code >= 300:
            self.fail(f"{kind} {response.status_code}")
        return response

    def fail(self, key: str) -> None:
        self.failures[key] = self.failures.get(key, 0) + 1

    def between(self, start: float, end: float) -> list[float]:
        return [took for began, took in self.timings if start <= began < end]


class Load:
    """Request lives started at a steady rate, over the replicas, until stopped."""

    def __init__(self, serves: list[Serve], tokens: dict[str, str], rate: float,
                 max_in_flight: int) -> None:
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.calls = Calls()
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        # Idle connections are dropped before the server's keep-alive timeout (5 s) can
        # close them under a request just sent on them (a ReadError that is no failure of
        # signoff's).
        limits = httpx.Limits(max_connections=64, keepalive_expiry=2.0)
        self.clients = [
            {role: httpx.AsyncClient(base_url=s.url + "/api/v1", limits=limits, timeout=60,
                                     headers={"Authorization": f"Bearer {token}"})
             for role, token in tokens.items()}
            for s in serves
        ]

    async def run(self) -> None:
        started, i = time.monotonic(), 0
        while not self.stopping.is_set():
            at = started + i / self.rate
            delay = at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stopping.wait()
                continue
            if len(self.tasks) >= self.max_in_flight:
                # The machine cannot keep up (other work on it, most often): a queue of
                # lives without bound makes httpx's pool, and so this process, ever slower.
                self.calls.skipped += 1
                i += 1
                continue
            task = asyncio.create_task(self.life(i))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            i += 1

    async def finish(self, within: float = 30) -> None:
        self.stopping.set()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=within)
        for replica in self.clients:
            for client in replica.values():
                await client.aclose()

    async def life(self, i: int) -> None:
        """One request: created on one replica, decided (if at all) through another."""
        self.calls.lives += 1
        here = self.clients[i % len(self.clients)]
        there = self.clients[(i + 1) % len(self.clients)]
        fate = i % 20
        body: dict[str, Any] = {"action": "restart service", "risk": "low",
                                "rationale": "soak", "params": {"life": i}}
        if fate < 10:
            body["ttl_seconds"] = random.randint(2, 8)
            if fate % 3 == 0:
                incident = await self.calls.call("incident", here["requester"].post(
                    "/incidents", json={"title": f"soak {i}", "severity": "low",
                                        "service": f"svc-{i % 7}"}))
                if incident is None or incident.status_code not in (200, 201):
                    return
                body["incident_id"] = incident.json()["id"]
        else:
            body["ttl_seconds"] = 60
        created = await self.calls.call("create", here["requester"].post("/approvals", json=body))
        if created is None or created.status_code != 201 or fate < 10:
            return
        rid = created.json()["id"]
        await asyncio.sleep(random.uniform(0.5, 3.0))
        if fate < 15:
            await self.calls.call("read", there["approver"].get(f"/approvals/{rid}"))
            await self.calls.call("approve", there["approver"].post(
                f"/approvals/{rid}/approve", json={"comment": "ok"}))
        elif fate < 18:
            await self.calls.call("reject", there["approver"].post(
                f"/approvals/{rid}/reject", json={"comment": "no"}))
        else:
            await self.calls.call("cancel", there["requester"].post(f"/approvals/{rid}/cancel"))


# -- sampling ---------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Sample:
    phase: str
    t: float  # seconds since the load started
    expired: int
    late_p50: float | None
    late_p99: float | None
    late_max: float | None
    api_p50: float | None
    api_p99: float | None
    calls: int
    rss_mb: list[float]
    live: int
    dead: int
    autovacuums: int
    table_mb: float
    overdue: int


def _ms(value: float | None) -> str:
    return "     -" if value is None else f"{value * 1000:6.0f}"


def show(s: Sample) -> None:
    rss = " ".join(f"{r:5.0f}" for r in s.rss_mb)
    print(f"{s.t:6.0f}s {s.phase:9} expired {s.expired:5}  lateness ms p50 {_ms(s.late_p50)} "
          f"p99 {_ms(s.late_p99)} max {_ms(s.late_max)}  api ms p50 {_ms(s.api_p50)} "
          f"p99 {_ms(s.api_p99)} ({s.calls / max(s.t, 1e-9):.0f}/s avg)  rss MB {rss}  "
          f"live {s.live:>7,} dead {s.dead:>6,} autovacuums {s.autovacuums} "
          f"({s.table_mb:.0f} MB) overdue {s.overdue}", flush=True)


class Sampler:
    def __init__(self, conn: Any, serves: list[Serve], calls: Calls, interval: float) -> None:
        self.conn, self.serves, self.calls, self.interval = conn, serves, calls, interval
        self.samples: list[Sample] = []
        self.phase = "steady"
        self.started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        since_db: datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        since = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, since + self.interval - time.monotonic())):
                    await stop.wait()
            since_db, since = await self.take(since_db, since)

    async def take(self, since_db: datetime, since: float) -> tuple[datetime, float]:
        now_db: datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        now = time.monotonic()
        late = await self.conn.fetchrow(LATENESS, since_db, now_db)
        table = await self.conn.fetchrow(TABLE_STATS)
        api = self.calls.between(since, now)
        sample = Sample(
            phase=self.phase, t=now - self.started, expired=late["n"],
            late_p50=late["p50"], late_p99=late["p99"], late_max=late["max"],
            api_p50=quantile(api, 0.5) if api else None,
            api_p99=quantile(api, 0.99) if api else None,
            calls=len(self.calls.timings),
            rss_mb=[rss_mb(s.pid) for s in self.serves],
            live=table["n_live_tup"], dead=table["n_dead_tup"],
            autovacuums=table["autovacuum_count"], table_mb=table["bytes"] / 2**20,
            overdue=await self.conn.fetchval(OVERDUE),
        )
        self.samples.append(sample)
        show(sample)
        return now_db, now


# -- the resolver's wake lag, from the replicas' /metrics ---------------------------------------

Buckets = dict[str, dict[float, float]]  # stage -> upper bound -> cumulative count


async def wake_buckets(serves: list[Serve]) -> Buckets:
    """``signoff_resolver_wake_lag_seconds``' buckets, summed over the replicas."""
    out: Buckets = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for serve in serves:
            try:
                text = (await client.get(serve.url + "/metrics")).text
            except httpx.HTTPError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name != WAKE_LAG:
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        stage = out.setdefault(sample.labels["stage"], {})
                        bound = float(sample.labels["le"])
                        stage[bound] = stage.get(bound, 0.0) + sample.value
    return out


def wake_lag_between(before: Buckets, after: Buckets) -> dict[str, Any]:
    """Per stage: passes, the bucket bound under which half and 99% of them fell, and how
    many took over 10 and 50 ms (a histogram: the quantiles are bucket bounds)."""
    out: dict[str, Any] = {}
    for stage, buckets in after.items():
        counts = {b: n - before.get(stage, {}).get(b, 0.0) for b, n in sorted(buckets.items())}
        total = counts.get(float("inf"), 0.0)
        if not total:
            continue

        def bound(q: float, counts: dict[float, float] = counts, total: float = total) -> float:
            return next(b for b, n in counts.items() if n >= q * total)

        def over(ms: float, counts: dict[float, float] = counts, total: float = total) -> int:
            return int(total - counts.get(ms / 1000, total))

        out[stage] = {"n": int(total), "p50_le_ms": bound(0.5) * 1000,
                      "p99_le_ms": bound(0.99) * 1000, "over_10_ms": over(10),
                      "over_50_ms": over(50)}
    return out


# -- the run ----------------------------------------------------------------------------------


async def lateness_between(conn: Any, start: datetime, end: datetime) -> dict[str, Any]:
    row = await conn.fetchrow(LATENESS, start, end)
    return {"n": row["n"], "p50_ms": _round_ms(row["p50"]), "p99_ms": _round_ms(row["p99"]),
            "max_ms": _round_ms(row["max"]), "over_50ms": row["over_50ms"],
            "over_100ms": row["over_100ms"]}


def _round_ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def api_between(calls: Calls, start: float, end: float) -> dict[str, Any]:
    took = calls.between(start, end)
    return {"calls": len(took), "p50_ms": _round_ms(quantile(took, 0.5) if took else None),
            "p99_ms": _round_ms(quantile(took, 0.99) if took else None)}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def memory(samples: list[Sample], replicas: int, warmup: float) -> list[dict[str, Any]]:
    """Per replica: RSS at the warm-up's end and the steady phase's, the fitted slope over
    that span and over its last half, and the verdict (see the module's docstring)."""
    steady = [s for s in samples if s.phase == "steady"]
    warm = [s for s in steady if s.t >= warmup] or steady[-1:]
    if not warm:
        return []
    half = warm[0].t + (warm[-1].t - warm[0].t) / 2
    out = []
    for r in range(replicas):
        whole = slope([(s.t, s.rss_mb[r]) for s in warm])
        late = slope([(s.t, s.rss_mb[r]) for s in warm if s.t >= half])
        if (warm[-1].t - warm[0].t) / 60 < VERDICT_MINUTES or late is None:
            verdict = "too short"
        else:
            verdict = "flat" if late <= FLAT_MB_PER_MINUTE else "growing"
        out.append({
            "first_mb": round(samples[0].rss_mb[r], 1), "warm_mb": round(warm[0].rss_mb[r], 1),
            "end_of_steady_mb": round(warm[-1].rss_mb[r], 1),
            "end_mb": round(samples[-1].rss_mb[r], 1),
            "max_mb": round(max(s.rss_mb[r] for s in samples), 1),
            "mb_per_minute": _round(whole), "last_half_mb_per_minute": _round(late),
            "verdict": verdict,
        })
    return out


# -- the memory probe (--probe) ---------------------------------------------------------------


def spawn_replica(database_url: str, log: Path, probe: Path | None, env: dict[str, str]) -> Serve:
    """``signoff serve``, or ``bench/memprobe.py serve`` when probed."""
    port = free_port()
    environ = {**os.environ, "SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_PORT": str(port),
               "SIGNOFF_HOST": "127.0.0.1", "SIGNOFF_LOG_FORMAT": "json",
               "SIGNOFF_LOG_LEVEL": "warning", **env}
    command = [sys.executable, "-m", "signoff", "serve"]
    if probe is not None:
        environ["SIGNOFF_MEMPROBE"] = str(probe)
        command = [sys.executable, str(MEMPROBE), "serve"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    return Serve(f"http://127.0.0.1:{port}", process, log)


def replica_env(args: argparse.Namespace, n: int) -> dict[str, str]:
    env = {}
    for spec in args.replica_env:
        index, _, assignment = spec.partition(":")
        name, _, value = assignment.partition("=")
        if int(index) == n:
            env[name] = value
    if args.tracemalloc and n == 0:
        env["PYTHONTRACEMALLOC"] = str(args.tracemalloc)
    return env


class Prober:
    """Asks each probed replica for a reading (SIGUSR2) every ``interval`` seconds after the
    warm-up; ``trim()`` asks for one before and one after ``malloc_trim`` (SIGUSR1)."""

    def __init__(self, serves: list[Serve], files: list[Path], sampler: Sampler,
                 warmup: float, interval: float) -> None:
        self.serves, self.files, self.sampler = serves, files, sampler
        self.warmup, self.interval = warmup, interval
        self.sent: list[tuple[float, str]] = []  # (t, phase) of each SIGUSR2, in order

    async def run(self, stop: asyncio.Event) -> None:
        at = self.warmup
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.sampler.started + at
                                               - time.monotonic())):
                    await stop.wait()
            if stop.is_set():
                return
            self.signal(signal.SIGUSR2)
            self.sent.append((time.monotonic() - self.sampler.started, self.sampler.phase))
            at += self.interval

    def signal(self, signum: int) -> None:
        for serve in self.serves:
            if serve.process.poll() is None:
                os.kill(serve.pid, signum)

    async def trim(self) -> None:
        self.signal(signal.SIGUSR1)
        await self.settle(extra=2)

    async def settle(self, extra: int = 0) -> None:
        """Until every file has a line per signal sent (a tracemalloc snapshot takes a while)."""
        want = len(self.sent) + extra
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(len(self.lines(f)) >= want for f in self.files):
                return
            await asyncio.sleep(0.5)

    @staticmethod
    def lines(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def figures(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for n, path in enumerate(self.files):
            lines = self.lines(path)
            probes = [(t, phase, line) for (t, phase), line
                      in zip(self.sent, [x for x in lines if x["note"] == "probe"], strict=False)]
            steady = [(t, line) for t, phase, line in probes if phase == "steady"]
            for _, line in steady:  # what RSS would be if the allocator gave back its free heap
                if "heap_free_mb" in line:
                    line["rss_less_free_heap_mb"] = round(line["rss_mb"] - line["heap_free_mb"], 2)
            if not steady:
                out.append({})
                continue
            first, last = steady[0][1], steady[-1][1]
            entry: dict[str, Any] = {"probes": len(probes), "traced": "traced_mb" in first}
            for key in ("rss_mb", "rss_less_free_heap_mb", "blocks", "gc_objects", "pyarenas_mb",
                        "pyblocks_mb", "heap_used_mb", "heap_free_mb", "mmap_mb", "traced_mb"):
                if key in first:
                    entry[key] = [first[key], last[key]]
                    entry[f"{key}_per_minute"] = _round(slope([(t, x[key]) for t, x in steady]))
            grown = {name: last["objects"].get(name, 0) - count
                     for name, count in first["objects"].items()}
            entry["objects_grown"] = dict(sorted(grown.items(), key=lambda kv: -abs(kv[1]))[:8])
            trims = {x["note"]: x for x in lines if x["note"] in ("before_trim", "after_trim")}
            if len(trims) == 2:
                for key in ("rss_mb", "heap_free_mb"):
                    if key in trims["before_trim"]:
                        entry[f"trim_{key}"] = [trims["before_trim"][key],
                                                trims["after_trim"][key]]
            out.append(entry)
            print(f"replica {n} probe (steady, after warm-up): "
                  + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in entry.items()
                              if isinstance(v, list))
                  + f"; per minute: blocks {entry.get('blocks_per_minute')}, RSS less the free "
                  + f"heap {entry.get('rss_less_free_heap_mb_per_minute')} MB; objects grown "
                  + f"{entry['objects_grown']}", flush=True)
        return out


def tracemalloc_growth(probe: Path, top: int = 12) -> list[str]:
    """The allocation sites that grew most between the first and the last snapshot."""
    first, last = probe.with_suffix(".first.snap"), probe.with_suffix(".last.snap")
    if not (first.exists() and last.exists()):
        return []
    ignore = [tracemalloc.Filter(False, "<frozen *"),
              tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, str(MEMPROBE))]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(last)).filter_traces(ignore)
    lines = [str(stat) for stat in new.compare_to(old, "lineno")[:top]]
    print("tracemalloc, replica 0, growth by line between the first and the last probe:")
    for line in lines:
        print("  " + line)
    print("  ... and the three largest by call stack:")
    for stat in new.compare_to(old, "traceback")[:3]:
        print(f"  {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+} blocks")
        for frame in stat.traceback.format()[-10:]:
            print("    " + frame)
    return lines


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_database(args.database_url, "signoff_soak") as url:
        tokens = {role: make_token(url, f"soak-{role}", role)
                  for role in ("requester", "approver")}
        conn = await asyncpg.connect(plain_postgres_url(url))
        holder = await asyncpg.connect(plain_postgres_url(url))
        try:
            autovacuum = await conn.fetchval("SHOW autovacuum")
            if autovacuum != "on":
                print("warning: autovacuum is off on this server: dead tuples are never "
                      "removed, whatever the table's settings", flush=True)
            if args.history:
                started = time.perf_counter()
                await conn.execute(HISTORY, args.history)
                await conn.execute("VACUUM ANALYZE approval_requests")
                print(f"preloaded {args.history:,} ended requests in "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
            options = await conn.fetchval(
                "SELECT reloptions FROM pg_class WHERE relname = 'approval_requests'")
            print(f"approval_requests storage options: {options or 'server defaults'}",
                  flush=True)
            with tempfile.TemporaryDirectory(prefix="signoff-soak-") as scratch:
                tmp = args.logs or scratch
                serves = []
                try:
                    probes = ([Path(tmp) / f"serve{n}.jsonl" for n in range(args.replicas)]
                              if args.probe else [])
                    for n in range(args.replicas):
                        serves.append(spawn_replica(
                            url, Path(tmp) / f"serve{n}.log", probes[n] if probes else None,
                            replica_env(args, n)))
                        await wait_ready(serves[-1])
                    return await phases(args, conn, holder, serves, tokens, autovacuum,
                                        probes)
                finally:
                    for serve in serves:
                        serve.stop()
        finally:
            await holder.close()
            await conn.close()


async def phases(
    args: argparse.Namespace, conn: Any, holder: Any, serves: list[Serve],
    tokens: dict[str, str], autovacuum: str, probes: list[Path],
) -> dict[str, Any]:
    print(f"{args.replicas} replicas (pids {', '.join(str(s.pid) for s in serves)}), "
          f"{args.rate:g} request lives/s: {args.minutes:g} min steady, then a transaction "
          f"held open {args.long_tx_seconds:g} s, then {args.recovery_seconds:g} s more",
          flush=True)
    load = Load(serves, tokens, args.rate, args.max_in_flight)
    sampler = Sampler(conn, serves, load.calls, args.interval)
    stop_sampling = asyncio.Event()
    marks: dict[str, tuple[datetime, float]] = {}
    warmup = args.warmup_minutes * 60
    prober = Prober(serves, probes, sampler, warmup, args.probe_interval) if probes else None

    async def mark(name: str) -> None:
        marks[name] = (await holder.fetchval("SELECT clock_timestamp()"), time.monotonic())

    await mark("start")
    lags_before = await wake_buckets(serves)
    loader = asyncio.create_task(load.run())
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    probing = asyncio.create_task(prober.run(stop_sampling)) if prober else None
    await asyncio.sleep(args.minutes * 60)
    await mark("tx_start")
    wake_lag = wake_lag_between(lags_before, await wake_buckets(serves))
    sampler.phase = "long-tx"
    await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await holder.fetchval("SELECT count(*) FROM approval_requests")  # takes the snapshot
    await asyncio.sleep(args.long_tx_seconds)
    await holder.execute("COMMIT")
    await mark("tx_end")
    sampler.phase = "recovery"
    await asyncio.sleep(args.recovery_seconds)
    await load.finish()
    await loader
    await asyncio.sleep(2)  # the last short deadlines
    await mark("end")
    stop_sampling.set()
    await sampling
    if prober is not None and probing is not None:
        await probing
        await prober.settle()
        await prober.trim()

    steady = await lateness_between(conn, marks["start"][0], marks["tx_start"][0])
    threshold = max(0.25, 2 * (steady["p99_ms"] or 0) / 1000)
    last_late = await conn.fetchval(LATE_AFTER, marks["tx_end"][0], threshold)
    recovered = (0.0 if last_late is None
                 else max(0.0, (last_late - marks["tx_end"][0]).total_seconds()))
    figures = {
        "replicas": args.replicas, "rate": args.rate, "minutes": args.minutes,
        "long_tx_seconds": args.long_tx_seconds, "history": args.history,
        "autovacuum": autovacuum, "lives": load.calls.lives,
        "skipped_lives": load.calls.skipped,
        "lateness": {
            "steady": steady,
            "long_tx": await lateness_between(conn, marks["tx_start"][0], marks["tx_end"][0]),
            "recovery": await lateness_between(conn, marks["tx_end"][0], marks["end"][0]),
        },
        "api": {
            "all": api_between(load.calls, marks["start"][1], marks["end"][1]),
            "steady": api_between(load.calls, marks["start"][1], marks["tx_start"][1]),
            "long_tx": api_between(load.calls, marks["tx_start"][1], marks["tx_end"][1]),
        },
        "rss": memory(sampler.samples, len(serves), warmup),
        "rss_flat_threshold_mb_per_minute": FLAT_MB_PER_MINUTE,
        "warmup_minutes": args.warmup_minutes,
        "replica_env": args.replica_env,
        "dead_tuples": {
            "end_of_steady": None,
            "max_long_tx": max((s.dead for s in sampler.samples if s.phase == "long-tx"),
                               default=None),
            "end": sampler.samples[-1].dead if sampler.samples else None,
            "autovacuums": sampler.samples[-1].autovacuums if sampler.samples else None,
        },
        "resolver_wake_lag_steady": wake_lag,
        "recovery_threshold_ms": round(threshold * 1000, 1),
        "recovery_seconds": round(recovered, 1),
        "failures": load.calls.failures,
    }
    steady_samples = [s for s in sampler.samples if s.phase == "steady"]
    if steady_samples:
        figures["dead_tuples"]["end_of_steady"] = steady_samples[-1].dead
    print(f"lateness p50/p99/max ms: steady {steady['p50_ms']}/{steady['p99_ms']}/"
          f"{steady['max_ms']} ({steady['over_50ms']} of {steady['n']} over 50 ms), "
          f"long transaction {figures['lateness']['long_tx']['p99_ms']} "
          f"p99, after it {figures['lateness']['recovery']['p99_ms']} p99; back under "
          f"{threshold * 1000:.0f} ms {recovered:.1f} s after the transaction ended")
    for stage, lag in wake_lag.items():
        print(f"resolver wake lag, steady, {stage}: {lag['n']:,} planned passes, p50 <= "
              f"{lag['p50_le_ms']:g} ms, p99 <= {lag['p99_le_ms']:g} ms, "
              f"{lag['over_10_ms']} over 10 ms, {lag['over_50_ms']} over 50 ms")
    print(f"API p99 {figures['api']['all']['p99_ms']} ms over "
          f"{figures['api']['all']['calls']:,} calls; failures {load.calls.failures}; "
          f"{load.calls.skipped:,} lives not started (over --max-in-flight)")
    for n, m in enumerate(figures["rss"]):
        print(f"replica {n} RSS: {m['first_mb']} MB at start, {m['warm_mb']} after the "
              f"warm-up, {m['end_of_steady_mb']} at the end of the steady phase; "
              f"{m['mb_per_minute']} MB/min after the warm-up, "
              f"{m['last_half_mb_per_minute']} over its last half: {m['verdict']} "
              f"(flat: at most {FLAT_MB_PER_MINUTE} MB/min)", flush=True)
    if prober is not None:
        figures["probe"] = prober.figures()
        figures["tracemalloc_growth"] = tracemalloc_growth(probes[0]) if args.tracemalloc else []
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="postgresql://user@host:port/db (a scratch database is made "
                             "beside it and dropped at the end)")
    parser.add_argument("--minutes", type=float, default=10, help="steady load before the "
                                                                  "long transaction")
    parser.add_argument("--rate", type=float, default=20, help="request lives started per s")
    parser.add_argument("--long-tx-seconds", type=float, default=60,
                        help="how long the snapshot-holding transaction stays open")
    parser.add_argument("--recovery-seconds", type=float, default=60,
                        help="load after the long transaction ends")
    parser.add_argument("--interval", type=float, default=10, help="seconds per sample line")
    parser.add_argument("--history", type=int, default=100_000,
                        help="ended requests preloaded, as a service that has run a while")
    parser.add_argument("--replicas", type=int, default=2, help="signoff serve processes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-in-flight", type=int, default=200,
                        help="request lives running at once, at most: past it, a life due "
                             "is skipped (and counted) instead of queued")
    parser.add_argument("--warmup-minutes", type=float, default=2,
                        help="steady load before the RSS slope is fitted")
    parser.add_argument("--probe", action="store_true",
                        help="run replicas under bench/memprobe.py and read their heaps")
    parser.add_argument("--probe-interval", type=float, default=60,
                        help="seconds between probe readings (after the warm-up)")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="trace the first replica's allocations (implies --probe)")
    parser.add_argument("--logs", metavar="DIR",
                        help="keep each replica's log (serveN.log) in DIR; with "
                             "--replica-env N:SIGNOFF_LOG_LEVEL=info it has every resolver pass")
    parser.add_argument("--replica-env", action="append", default=[],
                        metavar="INDEX:NAME=VALUE", help="an environment variable for one "
                                                         "replica, e.g. 0:MALLOC_ARENA_MAX=2")
    args = parser.parse_args()
    args.probe = args.probe or args.tracemalloc > 0
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    if not Settings(database_url=args.database_url).is_postgres:
        raise SystemExit("bench/soak.py runs replicas on PostgreSQL: give a postgresql:// URL")
    random.seed(args.seed)
    # Started in the background by a shell, the process would ignore SIGINT: take it back,
    # so that an interrupted run still stops its replicas and drops its database.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    figures = asyncio.run(soak(args))
    print(json.dumps(figures))
    if figures["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
