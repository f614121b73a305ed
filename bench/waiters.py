"""How soon are long-poll waiters answered, and what do 10,000 of them cost a server?

    python bench/waiters.py --database-url postgresql://user@host:port/db [--waiters 10000]
                            [--burst 1000] [--rate 300] [--cross-waiters 1000]
                            [--cross-rate 200] [--pool-size 10]

On a scratch database beside the given one (dropped at the end), starts ``signoff serve``
(replica A, ``SIGNOFF_DB_POOL_SIZE`` ``--pool-size``) and creates ``--waiters`` pending
requests with an hour to live. Then one waiter per request: a connection of its own that
asks ``GET /api/v1/approvals/{id}?wait=60`` and asks again whenever the answer is still
``pending``; the waiters are opened as fast as the server registers them (at most 1,000
ahead of the ``signoff_long_poll_waiters`` gauge), and each closes its connection once
answered. Phases:

- **steady**: all but ``--burst`` of the requests are decided (approved and rejected in
  turn) at ``--rate`` per second through the API, by an approver on 8 keep-alive
  connections, in random order. Meanwhile a viewer sends plain ``GET /approvals/{id}``
  (no wait) on two connections, 40 a second: the same-run baseline.
- **burst**: the last ``--burst`` requests are decided as fast as the server takes them,
  on 50 connections at once.
- **cross-replica**: a second ``signoff serve`` (replica B) on the same database;
  ``--cross-waiters`` new requests with their waiters on A, decided through B at
  ``--cross-rate`` per second, so that each waiter is woken by ``NOTIFY signoff_ended``.

A waiter's latency is the time from its request's ``decided_at`` (the database's clock, as
the deciding server keeps it: the instant its transaction read, just before the guarded
update and the commit) to the moment this process has read the whole answer
(``time.time()``; the database runs on the same host). It therefore includes the rest of
the deciding transaction, the commit, the wake, the waiter's read of the request and the
answer's trip. Also reported: the time from the decider's own answer (received after the
commit) to the waiter's, and the round trip of the baseline's plain reads. The figures per
phase: p50/p99/max, the machine's load average before the phase, and the CPU time spent in
it by the server and by this process (everything shares the same cores).

Memory: replica A's resident set (``VmRSS``, and ``Pss`` from ``smaps_rollup``) and its
open file descriptors, read once the readings stop moving: idle, after the requests are
created and before any waiter; with every waiter registered (the gauge at ``--waiters``);
and after every waiter is answered and its connection closed. Reported: KB per waiter,
``(with - idle) / waiters``, and ``after / idle``.

This process raises its soft limit on open files to the hard limit (the servers inherit
it): ``--waiters`` connections here and as many in the server. It runs on uvloop when it
is installed. The last line printed is one JSON object; the exit status is 1 if a waiter
was never answered or a call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from api import (
    LeanClient,
    Serve,
    load_average,
    make_token,
    process_cpu,
    quantile,
    scratch_database,
    spawn_serve,
    start_serve,
    wait_ready,
)

from signoff.settings import Settings

TTL_SECONDS = 3600  # nothing expires while the benchmark runs
WAIT_SECONDS = 60  # the longest wait the API allows
AHEAD_OF_GAUGE = 1000  # waiters opened but not yet registered by the server, at most
DECIDERS = 8  # the approver's keep-alive connections at a steady rate
BURST_CONNECTIONS = 50
PROBES, PROBE_INTERVAL = 2, 0.05  # the baseline's connections, and the pause between reads
ANSWER_WITHIN = 30.0  # seconds after the last decision for every waiter to be answered
GAUGE = re.compile(rb"^signoff_long_poll_waiters (\S+)$", re.MULTILINE)


# -- the waiters --------------------------------------------------------------------------


@dataclass
class Waiter:
    rid: str
    received: float | None = None  # time.time() when the final answer was read
    decided_at: float | None = None  # the answer's decided_at, as a POSIX timestamp
    status: str | None = None
    asked: int = 0  # calls made; more than one when a wait ran out


@dataclass
class Crowd:
    """The waiters, by request id, and what went wrong for them."""

    waiters: dict[str, Waiter] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def reissued(self) -> int:
        return sum(max(0, w.asked - 1) for w in self.waiters.values())

    async def answered(self, ids: Iterable[str], within: float) -> int:
        """Wait until the waiters of ``ids`` are answered; how many are not, after
        ``within`` seconds."""
        tasks = [self.tasks[rid] for rid in ids]
        _, late = await asyncio.wait(tasks, timeout=within)
        return len(late)


async def wait_for(base: str, token: str, waiter: Waiter, crowd: Crowd) -> None:
    """One client waiting for one request, on a connection of its own, closed at the end."""
    client = LeanClient(base, token)
    path = f"/approvals/{waiter.rid}?wait={WAIT_SECONDS}"
    failed = 0
    try:
        while failed < 5:
            waiter.asked += 1
            try:
                answer = await client.get(path)
            except (OSError, asyncio.IncompleteReadError) as exc:
                crowd.fail(f"wait {type(exc).__name__}")
                failed += 1
                await asyncio.sleep(0.5)
                continue
            received = time.time()
            if answer.status_code != 200:
                crowd.fail(f"wait {answer.status_code}")
                failed += 1
                await asyncio.sleep(0.5)
                continue
            body = answer.json()
            if body["status"] == "pending":
                continue
            waiter.received, waiter.status = received, body["status"]
            if body["decided_at"] is not None:
                waiter.decided_at = datetime.fromisoformat(body["decided_at"]).timestamp()
            return
    finally:
        await client.aclose()


async def gauge(http: httpx.AsyncClient, serve: Serve) -> int:
    """The server's ``signoff_long_poll_waiters``."""
    found = GAUGE.search((await http.get(serve.url + "/metrics")).content)
    return int(float(found.group(1))) if found else 0


async def gauge_reaches(http: httpx.AsyncClient, serve: Serve, target: int,
                        within: float = 120, *, at_least: bool = False) -> float:
    """Wait until the gauge says ``target`` (or more, ``at_least``); the seconds it took."""
    started = time.perf_counter()
    while (n := await gauge(http, serve)) != target and not (at_least and n > target):
        if serve.process.poll() is not None:
            raise SystemExit(f"signoff serve exited: {serve.log.read_text()[-2000:]}")
        if time.perf_counter() - started > within:
            raise SystemExit(f"the waiters gauge says {n}, not {target}, after {within:g} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def open_waiters(serve: Serve, token: str, ids: list[str], crowd: Crowd,
                       http: httpx.AsyncClient) -> float:
    """A waiter for each of ``ids``, opened no faster than the server registers them;
    returns once the gauge counts them all, with the seconds it took."""
    started = time.perf_counter()
    base = serve.url + "/api/v1"
    before = await gauge(http, serve)
    for i, rid in enumerate(ids):
        if i % 200 == 0 and i > AHEAD_OF_GAUGE:
            await gauge_reaches(http, serve, before + i - AHEAD_OF_GAUGE, at_least=True)
        waiter = crowd.waiters[rid] = Waiter(rid)
        crowd.tasks[rid] = asyncio.create_task(wait_for(base, token, waiter, crowd))
    await gauge_reaches(http, serve, before + len(ids))
    return time.perf_counter() - started


# -- creating and deciding ----------------------------------------------------------------


async def create_requests(serve: Serve, token: str, n: int, connections: int = 16) -> list[str]:
    client = LeanClient(serve.url + "/api/v1", token)
    body = {"action": "restart service", "risk": "low", "ttl_seconds": TTL_SECONDS,
            "rationale": "waiters bench"}
    ids: list[str] = []

    async def worker(count: Iterator[int]) -> None:
        for _ in count:
            created = await client.post("/approvals", json=body)
            if created.status_code != 201:
                raise SystemExit(f"create answered {created.status_code}: {created.content!r}")
            ids.append(created.json()["id"])

    count = iter(range(n))
    try:
        await asyncio.gather(*(worker(count) for _ in range(connections)))
    finally:
        await client.aclose()
    return ids


@dataclass
class Decisions:
    """The decisions of one phase: when each answer came back, and how long each took."""

    answered: dict[str, float] = field(default_factory=dict)  # time.time() at the 200
    took: list[float] = field(default_factory=list)
    late_start: float = 0.0  # the most a decision was sent after its scheduled moment
    failures: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


async def decide(serve: Serve, token: str, ids: list[str], connections: int,
                 rate: float | None) -> Decisions:
    """Approve and reject ``ids`` in turn, at ``rate`` per second (None: as fast as
    ``connections`` connections go)."""
    client = LeanClient(serve.url + "/api/v1", token)
    out = Decisions()
    work = iter(enumerate(ids))
    start = time.perf_counter() + 0.05

    async def worker() -> None:
        for i, rid in work:
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    out.late_start = max(out.late_start, -delay)
            verb = "approve" if i % 2 == 0 else "reject"
            began = time.perf_counter()
            answer = await client.post(f"/approvals/{rid}/{verb}", json={"comment": "bench"})
            out.took.append(time.perf_counter() - began)
            if answer.status_code == 200:
                out.answered[rid] = time.time()
            else:
                key = f"{verb} {answer.status_code}"
                out.failures[key] = out.failures.get(key, 0) + 1

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        await client.aclose()
    out.seconds = time.perf_counter() - start
    return out


async def probe_reads(serve: Serve, token: str, ids: list[str], stop: asyncio.Event) -> list[float]:
    """Plain reads (no wait) until ``stop``: each one's round trip, in seconds."""
    client = LeanClient(serve.url + "/api/v1", token)
    took: list[float] = []

    async def loop() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            answer = await client.get(f"/approvals/{random.choice(ids)}")
            if answer.status_code == 200:
                took.append(time.perf_counter() - began)
            await asyncio.sleep(PROBE_INTERVAL)

    try:
        await asyncio.gather(*(loop() for _ in range(PROBES)))
    finally:
        await client.aclose()
    return took


# -- measuring ----------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def spread(values: list[float]) -> dict[str, float]:
    return {"p50_ms": ms(quantile(values, 0.50)), "p99_ms": ms(quantile(values, 0.99)),
            "max_ms": ms(max(values)) if values else float("nan")}


@dataclass
class Phase:
    """The load average before a phase, and the CPU time spent in it."""

    name: str
    server_pid: int
    load_average: float = 0.0
    began: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def __enter__(self) -> Phase:
        self.load_average = load_average()
        self.began = time.perf_counter()
        self.server_cpu = process_cpu(self.server_pid)
        self.client_cpu = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.server_cpu = process_cpu(self.server_pid) - self.server_cpu
        self.client_cpu = time.process_time() - self.client_cpu
        self.began = time.perf_counter() - self.began

    def figures(self) -> dict[str, float]:
        return {"load_average": self.load_average, "seconds": round(self.began, 1),
                "server_cpu_s": round(self.server_cpu, 2),
                "client_cpu_s": round(self.client_cpu, 2)}


def latencies(crowd: Crowd, ids: list[str], decisions: Decisions) -> dict[str, Any]:
    """Each waiter's latency from its request's ``decided_at``, and from the decider's
    own answer."""
    waiters = [crowd.waiters[rid] for rid in ids]
    from_commit = [w.received - w.decided_at for w in waiters
                   if w.received is not None and w.decided_at is not None]
    from_answer = [w.received - decisions.answered[w.rid] for w in waiters
                   if w.received is not None and w.rid in decisions.answered]
    out: dict[str, Any] = {"n": len(from_commit), **spread(from_commit),
                           "after_decider_answer": spread(from_answer),
                           "decide": spread(decisions.took),
                           "decisions_per_s": round(len(decisions.took) / decisions.seconds, 1)}
    answered = [w for w in waiters if w.received is not None and w.decided_at is not None]
    if answered:
        first_commit = min(w.decided_at for w in answered if w.decided_at is not None)
        last_commit = max(w.decided_at for w in answered if w.decided_at is not None)
        last_answer = max(w.received for w in answered if w.received is not None)
        out["commit_span_ms"] = ms(last_commit - first_commit)
        out["first_commit_to_last_answer_ms"] = ms(last_answer - first_commit)
    unanswered = sum(1 for w in waiters if w.received is None)
    if unanswered:
        out["unanswered"] = unanswered
    if decisions.failures:
        out["failures"] = dict(decisions.failures)
    return out


def memory(pid: int) -> dict[str, int]:
    """A process's resident set and proportional set size (KB) and open descriptors."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return {"rss_kb": rss, "pss_kb": pss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def settled_memory(pid: int, within: float = 20) -> dict[str, int]:
    """``memory(pid)`` once its RSS has moved less than 1% over two seconds (or after
    ``within`` seconds)."""
    started = time.perf_counter()
    readings = [memory(pid)]
    while time.perf_counter() - started < within:
        await asyncio.sleep(1)
        readings.append(memory(pid))
        if len(readings) >= 3:
            window = [r["rss_kb"] for r in readings[-3:]]
            if max(window) - min(window) <= 0.01 * window[-1]:
                break
    return readings[-1]


def raise_open_files(needed: int) -> int:
    """Raise the soft limit on open files towards the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(f"warning: {soft} open files at most, {needed} wanted", flush=True)
    return int(soft)


# -- the run ------------------------------------------------------------------------------


def say_latency(name: str, figures: dict[str, Any]) -> None:
    print(f"{name}: {figures['n']:,} waiters answered p50 {figures['p50_ms']} ms, "
          f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms after decided_at; "
          f"{figures['decisions_per_s']:,} decisions/s (decide p99 "
          f"{figures['decide']['p99_ms']} ms)", flush=True)


async def steady_phase(a: Serve, tokens: dict[str, str], crowd: Crowd, ids: list[str],
                       everyone: list[str], rate: float) -> dict[str, Any]:
    stop = asyncio.Event()
    probes = asyncio.create_task(probe_reads(a, tokens["viewer"], everyone, stop))
    with Phase("steady", a.pid) as phase:
        decisions = await decide(a, tokens["approver"], ids, DECIDERS, rate)
        stop.set()
        await crowd.answered(ids, ANSWER_WITHIN)
    reads = await probes
    figures = latencies(crowd, ids, decisions)
    figures |= {"rate": rate, "late_start_ms": ms(decisions.late_start),
                "plain_read": {"n": len(reads), **spread(reads)}, **phase.figures()}
    figures["ratio_p99_to_plain_read_p99"] = round(
        figures["p99_ms"] / figures["plain_read"]["p99_ms"], 2)
    say_latency("steady", figures)
    print(f"steady: plain reads meanwhile p50 {figures['plain_read']['p50_ms']} ms, "
          f"p99 {figures['plain_read']['p99_ms']} ms: waiters' p99 is "
          f"{figures['ratio_p99_to_plain_read_p99']}x a plain read's; {phase.figures()}",
          flush=True)
    return figures


async def burst_phase(a: Serve, tokens: dict[str, str], crowd: Crowd,
                      ids: list[str]) -> dict[str, Any]:
    with Phase("burst", a.pid) as phase:
        decisions = await decide(a, tokens["approver"], ids, BURST_CONNECTIONS, None)
        await crowd.answered(ids, ANSWER_WITHIN)
    figures = latencies(crowd, ids, decisions) | phase.figures()
    say_latency("burst", figures)
    print(f"burst: commits spread over {figures.get('commit_span_ms')} ms, the last answer "
          f"{figures.get('first_commit_to_last_answer_ms')} ms after the first commit; "
          f"{phase.figures()}", flush=True)
    return figures


async def cross_phase(
    url: str, a: Serve, tmp: Path, tokens: dict[str, str], args: argparse.Namespace,
    http: httpx.AsyncClient,
) -> tuple[dict[str, Any], Serve]:
    b = spawn_serve(url, tmp / "serve-b.log", SIGNOFF_DB_POOL_SIZE=str(args.pool_size))
    await wait_ready(b)
    ids = await create_requests(a, tokens["requester"], args.cross_waiters)
    crowd = Crowd()
    await open_waiters(a, tokens["viewer"], ids, crowd, http)
    await asyncio.sleep(1)  # every waiter has read its request once
    with Phase("cross", a.pid) as phase:
        decisions = await decide(b, tokens["approver"], ids, DECIDERS, args.cross_rate)
        await crowd.answered(ids, ANSWER_WITHIN)
    figures = latencies(crowd, ids, decisions) | phase.figures() | {"rate": args.cross_rate}
    say_latency("cross-replica (waiters on A, decisions on B)", figures)
    if crowd.failures:
        figures["waiter_failures"] = dict(crowd.failures)
    return figures, b


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    open_files = raise_open_files(args.waiters + 1000)
    steady_n = args.waiters - args.burst
    async with scratch_database(args.database_url, "signoff_bench_waiters") as url:
        with tempfile.TemporaryDirectory(prefix="signoff-bench-waiters-") as tmp:
            tokens = {role: make_token(url, f"bench-{role}", role)
                      for role in ("requester", "approver", "viewer")}
            a = await start_serve(url, Path(tmp) / "serve-a.log",
                                  SIGNOFF_DB_POOL_SIZE=str(args.pool_size))
            b: Serve | None = None
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    print(f"{args.waiters:,} waiters on one signoff serve (pool of "
                          f"{args.pool_size}), PostgreSQL, {os.cpu_count()} cores, "
                          f"{open_files} open files; load average {load_average()}", flush=True)
                    started = time.perf_counter()
                    ids = await create_requests(a, tokens["requester"], args.waiters)
                    print(f"created {len(ids):,} requests in "
                          f"{time.perf_counter() - started:.1f} s", flush=True)
                    idle = await settled_memory(a.pid)
                    crowd = Crowd()
                    with Phase("open", a.pid) as opening:
                        took = await open_waiters(a, tokens["viewer"], ids, crowd, http)
                    waiting = await settled_memory(a.pid)
                    print(f"{args.waiters:,} waiting after {took:.1f} s; server RSS "
                          f"{idle['rss_kb']:,} KB idle, {waiting['rss_kb']:,} KB with them "
                          f"({waiting['fds']:,} descriptors); {opening.figures()}", flush=True)
                    order = random.sample(ids, len(ids))
                    steady = await steady_phase(a, tokens, crowd, order[:steady_n], ids,
                                                args.rate)
                    burst = await burst_phase(a, tokens, crowd, order[steady_n:])
                    await gauge_reaches(http, a, 0, within=30)
                    after = await settled_memory(a.pid)
                    mem = {"idle": idle, "waiting": waiting, "after": after,
                           "kb_per_waiter": round(
                               (waiting["rss_kb"] - idle["rss_kb"]) / args.waiters, 2),
                           "pss_kb_per_waiter": round(
                               (waiting["pss_kb"] - idle["pss_kb"]) / args.waiters, 2),
                           "after_over_idle": round(after["rss_kb"] / idle["rss_kb"], 3)}
                    print(f"memory: {mem['kb_per_waiter']} KB per waiter (RSS; Pss "
                          f"{mem['pss_kb_per_waiter']}); after: {after['rss_kb']:,} KB, "
                          f"{mem['after_over_idle']}x idle, {after['fds']} descriptors "
                          f"({idle['fds']} idle)", flush=True)
                    cross: dict[str, Any] | None = None
                    if args.cross_waiters:
                        cross, b = await cross_phase(url, a, Path(tmp), tokens, args, http)
            finally:
                a.stop()
                if b is not None:
                    b.stop()
    figures: dict[str, Any] = {
        "database": "postgresql", "cores": os.cpu_count(), "waiters": args.waiters,
        "pool_size": args.pool_size, "wait_seconds": WAIT_SECONDS,
        "open": {"seconds": round(took, 1), **opening.figures()},
        "steady": steady, "burst": burst, "memory": mem, "cross_replica": cross,
        "reissued": crowd.reissued(),
        "client_cpu_s": round(time.process_time(), 2),
    }
    if crowd.failures:
        figures["waiter_failures"] = dict(crowd.failures)
    print(f"{figures['reissued']:,} waits ran out and were asked again; this process used "
          f"{figures['client_cpu_s']} s of CPU; load average {load_average()} at the end",
          flush=True)
    return figures


def failed(figures: dict[str, Any]) -> bool:
    phases = [figures["steady"], figures["burst"], figures["cross_replica"] or {}]
    return bool(figures.get("waiter_failures") or any(
        p.get("unanswered") or p.get("failures") or p.get("waiter_failures") for p in phases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="postgresql://user@host:port/db (a scratch database is made "
                             "beside it and dropped at the end)")
    parser.add_argument("--waiters", type=int, default=10_000,
                        help="pending requests, each with one long-poll waiter")
    parser.add_argument("--burst", type=int, default=1000,
                        help="of them, decided at once at the end (the rest at --rate)")
    parser.add_argument("--rate", type=float, default=300, help="steady decisions per second")
    parser.add_argument("--cross-waiters", type=int, default=1000,
                        help="waiters on replica A for decisions on replica B (0: skip)")
    parser.add_argument("--cross-rate", type=float, default=200,
                        help="decisions per second on replica B")
    parser.add_argument("--pool-size", type=int, default=10,
                        help="SIGNOFF_DB_POOL_SIZE of each server (default: its own default)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not Settings(database_url=args.database_url).is_postgres:
        raise SystemExit("bench/waiters.py measures signoff on PostgreSQL: give a "
                         "postgresql:// URL")
    if not 0 < args.burst < args.waiters:
        raise SystemExit("--burst must be at least 1 and fewer than --waiters")
    random.seed(args.seed)
    try:
        import uvloop
    except ImportError:
        figures = asyncio.run(bench(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = runner.run(bench(args))
    print(json.dumps(figures))
    if failed(figures):
        sys.exit(1)


if __name__ == "__main__":
    main()
