"""How soon are long-poll waiters answered, and what do 10,000 of them cost a server?

    python bench/waiters.py --database-url postgresql://user@host:port/db [--waiters 10000]
                            [--open-seconds 60] [--hold 60] [--rates 50,100,200,300]
                            [--seconds 10] [--burst 1000] [--burst-connections 50]
                            [--cross-waiters 1000] [--cross-rate 100] [--pool-size 10]
                            [--no-again] [--probe] [--logs DIR]

On a scratch database beside the given one (dropped at the end), starts ``signoff serve``
(replica A, ``SIGNOFF_DB_POOL_SIZE`` ``--pool-size``, by default the server's own default)
and creates ``--waiters`` pending requests with an hour to live. Then one waiter per
request: a connection of its own that asks ``GET /api/v1/approvals/{id}?wait=60``, asks
again whenever the answer is still ``pending``, and closes once answered. The waiters are
opened evenly over ``--open-seconds`` (60), so that their waits run out as evenly as they
would in service (10,000 waiters: 167 a second), and no faster than the server registers
them (at most 1,000 ahead of its ``signoff_long_poll_waiters`` gauge), until the gauge
counts them all. Phases:

- **hold**: ``--hold`` seconds with nothing decided: what keeping the waiters costs the
  server's CPU, each wait that runs out (after 60 s) being asked again.
- **steady**, one per rate in ``--rates``: ``rate x --seconds`` of the requests are
  decided (approved and rejected in turn, in random order) at that rate through the API,
  by an approver on 8 keep-alive connections. Meanwhile a viewer sends plain
  ``GET /approvals/{id}`` (no wait) on two connections, about 20 a second: the same-run
  baseline, reported as the ratio of the waiters' p99 to the plain reads' p99.
- **burst**: ``--burst`` requests decided as fast as the server takes them, on
  ``--burst-connections`` (50) connections at once; then **rest**: whatever is left, the
  same way.
- **cross-replica**: a second ``signoff serve`` (replica B) on the same database;
  ``--cross-waiters`` new requests with their waiters on A, decided through B at
  ``--cross-rate`` per second, so that each waiter is woken by ``NOTIFY signoff_changed``.
  A ``LISTEN`` of this process's own times the NOTIFY's delivery apart from A's part.

A waiter's latency runs from its request's ``decided_at`` (the database's clock as the
deciding server keeps it: the instant its transaction read, before the guarded update and
the commit) to the moment this process has read the whole answer (``time.time()``; the
database runs on the same host). It includes the rest of the deciding transaction, the
commit, the wake, the waiter's read of the request and the answer's trip. Also reported:
the time from the decider's own answer (received after the commit) to the waiter's; for a
burst, the span from its first commit to its last answer. For each phase: p50/p99/max,
the decisions per second achieved, the machine's load average before it, the CPU time that
the server and this process spent in it (everything shares the same cores), how many
waits ran out and were asked again meanwhile, and how the server's pooled connections
spent the phase, on average (``pg_stat_activity``, ten times a second: ``active``,
PostgreSQL at work; ``idle in transaction``, waiting for the server's next statement;
``idle``, free in the pool; both servers' in the cross-replica phase). A phase whose
decisions fail 50 times stops there, and the phases after it are not run.

Memory: replica A's resident set (``VmRSS``, and ``Pss`` from ``smaps_rollup``) and its
open file descriptors, read once the resident set stops moving: idle, after the requests
are created and before any waiter; with every waiter registered; and after every waiter is
answered and its connection closed: once the server's first trim after a drain is due (12 s
later), and again once its repeated trims stop giving memory back. Reported: KB per
waiter, ``(with - idle) / waiters``, and ``after / idle`` (after the first trim, and at the
end). Then (``--again``, the default) a second crowd of as many waiters on the same
server, decided all at once: its idle level before it, and its memory after it, read the
same way (``again_after_over_idle``). The first crowd a server serves leaves what it made
for good (the event loop's free lists, statements prepared on each pooled connection,
tables grown to its size); the second shows whether a crowd gives back what it took.
``signoff serve`` runs on glibc's allocator unless ``PYTHONMALLOC`` is set in this
process's environment (``PYTHONMALLOC=pymalloc``: Python's own, the servers' default
before). With ``--probe``, replica A runs under ``bench/memprobe.py`` (see
``bench/soak.py``) and each reading adds its heap: Python's allocated blocks, glibc's heap
in use and free, and, at the end, the resident set after ``malloc_trim(0)``; so memory
not given back can be told apart from objects still alive. A light reading after each
phase (no collection of its own) adds how long the garbage collector's full collections
held the server in it.

This process raises its soft limit on open files to the hard limit (the servers inherit
it): ``--waiters`` connections here and as many in the server. It runs on uvloop when it
is installed. The last line printed is one JSON object; the exit status is 1 if a waiter
was never answered or a call failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from api import (
    LeanClient,
    Serve,
    load_average,
    make_token,
    plain_postgres_url,
    process_cpu,
    quantile,
    scratch_database,
    spawn_serve,
    wait_ready,
)
from soak import spawn_replica

from signoff.collector import RETRIM_MB, SETTLE, TRIMS_PER_DRAIN
from signoff.settings import Settings
from signoff.store import CHANGED_CHANNEL

T = TypeVar("T")
TTL_SECONDS = 3600  # nothing expires while the benchmark runs
WAIT_SECONDS = 60  # the longest wait the API allows
AHEAD_OF_GAUGE = 1000  # waiters opened but not yet registered by the server, at most
DECIDERS = 8  # the approver's keep-alive connections at a steady rate
BURST_CONNECTIONS = 50
PROBES, PROBE_INTERVAL = 2, 0.1  # the baseline's connections, and the pause between reads
ANSWER_WITHIN = 30.0  # seconds after the last decision for every waiter to be answered
GIVE_UP_AFTER = 50  # failed decisions in a phase: the server is failing, stop sending
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
    reissued_at: list[float] = field(default_factory=list)  # perf_counter() of each

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

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
                crowd.reissued_at.append(time.perf_counter())
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
                       http: httpx.AsyncClient, over: float = 0) -> float:
    """A waiter for each of ``ids``, spread evenly over ``over`` seconds at least, and
    opened no faster than the server registers them; returns once the gauge counts them
    all, with the seconds it took."""
    started = time.perf_counter()
    base = serve.url + "/api/v1"
    before = await gauge(http, serve)
    for i, rid in enumerate(ids):
        if i % 200 == 0 and i > AHEAD_OF_GAUGE:
            await gauge_reaches(http, serve, before + i - AHEAD_OF_GAUGE, at_least=True)
        if i % 10 == 0:  # ten at a time: their waits run out ten at a time too
            await asyncio.sleep(max(0.0, started + over * i / len(ids) - time.perf_counter()))
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
    gave_up: bool = False  # the server failed too many: the rest were not sent


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
            if out.gave_up:
                return
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
                if sum(out.failures.values()) >= GIVE_UP_AFTER:
                    out.gave_up = True
                    return

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


class PoolWatch:
    """How the servers' pooled connections spend their time, from ``pg_stat_activity``
    ten times a second: ``active`` (PostgreSQL is working), ``idle in transaction`` (it
    waits for the server's next statement), ``idle`` (in the pool, free)."""

    QUERY = """
    SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'signoff' GROUP BY 1
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, int]]] = []

    async def run(self, dsn: str, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                rows = await conn.fetch(self.QUERY)
                self.samples.append((time.perf_counter(), {r["state"]: r["n"] for r in rows}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
        finally:
            await conn.close()

    def between(self, began: float, ended: float) -> dict[str, float]:
        """The mean number of connections in each state."""
        window = [states for at, states in self.samples if began <= at < ended]
        names = sorted({name for states in window for name in states})
        return {name: round(sum(states.get(name, 0) for states in window) / len(window), 1)
                for name in names}


@dataclass
class Phase:
    """The load average before a phase, the CPU time spent in it, how many waits ran out
    (and were asked again) meanwhile, and the server's pooled connections."""

    name: str
    server_pid: int
    crowd: Crowd
    watch: PoolWatch
    load_average: float = 0.0
    began: float = 0.0
    ended: float = 0.0
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
        self.ended = time.perf_counter()

    def figures(self) -> dict[str, Any]:
        reissued = sum(1 for t in self.crowd.reissued_at if self.began <= t < self.ended)
        seconds = self.ended - self.began
        return {"load_average": self.load_average, "seconds": round(seconds, 1),
                "server_cpu_s": round(self.server_cpu, 2),
                "server_cpu_share": round(self.server_cpu / seconds, 2),
                "client_cpu_s": round(self.client_cpu, 2), "reissued": reissued,
                "pool": self.watch.between(self.began, self.ended)}


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
    if decisions.gave_up:
        out["gave_up"] = True
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


class HeapProbe:
    """Readings of replica A's heap, when it runs under ``bench/memprobe.py``: SIGUSR2 asks
    for one line, SIGUSR1 for one before and one after ``malloc_trim(0)``."""

    KEEP = ("note", "rss_mb", "blocks", "gc_objects", "heap_used_mb", "heap_free_mb",
            "mmap_mb", "pyarenas_mb", "pyblocks_mb", "frozen", "frozen_garbage",
            "frozen_garbage_kinds")
    GC = ("gc2_pauses_ms", "gc01_count", "gc01_ms")

    def __init__(self, path: Path, pid: int) -> None:
        self.path, self.pid = path, pid

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    async def ask(self, signum: int, count: int) -> list[dict[str, Any]]:
        seen = len(self.lines())
        os.kill(self.pid, signum)
        for _ in range(300):
            await asyncio.sleep(0.1)
            got = self.lines()[seen:]
            if len(got) >= count:
                return [{k: line[k] for k in self.KEEP + self.GC if k in line} for line in got]
        raise SystemExit("the memory probe did not answer within 30 s")


# -- the run ------------------------------------------------------------------------------


class ServerFailing(Exception):
    """A phase's decisions failed again and again: the phases after it are not run."""


def say(name: str, figures: dict[str, Any]) -> None:
    print(f"{name}: {figures['n']:,} waiters answered p50 {figures['p50_ms']} ms, "
          f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms after decided_at; "
          f"{figures['decisions_per_s']:,} decisions/s (decide p99 "
          f"{figures['decide']['p99_ms']} ms)", flush=True)
    say_costs(name, figures)


def say_costs(name: str, figures: dict[str, Any]) -> None:
    print(f"{name}: load average {figures['load_average']} before; "
          f"{figures['seconds']} s; server CPU {figures['server_cpu_s']} s "
          f"({figures['server_cpu_share']:.0%} of a core), this process "
          f"{figures['client_cpu_s']} s; {figures['reissued']:,} waits ran out and were "
          f"asked again; the pool's connections on average {figures['pool']}", flush=True)


@dataclass
class Run:
    """One run: the scratch database, replica A (B for the cross-replica phase), the
    tokens, the waiters."""

    args: argparse.Namespace
    url: str
    logs: Path
    a: Serve
    tokens: dict[str, str]
    http: httpx.AsyncClient
    watch: PoolWatch
    crowd: Crowd = field(default_factory=Crowd)
    b: Serve | None = None
    heap: HeapProbe | None = None

    async def memory(self, key: str, mem: dict[str, Any]) -> dict[str, int]:
        """A's memory once settled, into ``mem[key]``; with its heap, when probed."""
        mem[key] = reading = await settled_memory(self.a.pid)
        if self.heap is not None:
            if key == "after":
                (mem["heap_" + key], mem["heap_after_full_collection"],
                 mem["heap_after_trim"]) = await self.heap.ask(signal.SIGUSR1, 3)
            else:
                mem["heap_" + key], = await self.heap.ask(signal.SIGUSR2, 1)
        return reading

    def phase(self, name: str, crowd: Crowd | None = None) -> Phase:
        return Phase(name, self.a.pid, crowd or self.crowd, self.watch)

    async def collections(self, name: str, figures: dict[str, Any]) -> None:
        """When probed: A's garbage collections since the last reading, into ``figures``
        (each full collection's pause, the younger ones' count and time)."""
        if self.heap is None:
            return
        line, = await self.heap.ask(signal.SIGWINCH, 1)
        figures["gc"] = {k: line[k] for k in HeapProbe.GC if k in line}
        print(f"{name}: full collections paused the server {figures['gc']['gc2_pauses_ms']} "
              f"ms; {figures['gc']['gc01_count']:,} younger ones took "
              f"{figures['gc']['gc01_ms']} ms in all", flush=True)

    async def with_plain_reads(self, ids: list[str], work: Awaitable[T]) -> tuple[T, list[float]]:
        """``work``'s result, and the round trips of plain reads of ``ids`` meanwhile."""
        stop = asyncio.Event()
        reads = asyncio.create_task(probe_reads(self.a, self.tokens["viewer"], ids, stop))
        try:
            result = await work
        finally:
            stop.set()
        return result, await reads

    async def hold(self, ids: list[str]) -> dict[str, Any]:
        """Nothing decided: what keeping the waiters costs, their waits running out."""
        with self.phase("hold") as phase:
            _, reads = await self.with_plain_reads(ids, asyncio.sleep(self.args.hold))
        figures = phase.figures() | {"plain_read": {"n": len(reads), **spread(reads)}}
        if figures["reissued"]:
            figures["server_cpu_ms_per_reissue"] = round(
                phase.server_cpu / figures["reissued"] * 1000, 2)
        print(f"hold: nothing decided for {self.args.hold:g} s; plain reads meanwhile p50 "
              f"{figures['plain_read']['p50_ms']} ms, p99 {figures['plain_read']['p99_ms']} "
              f"ms", flush=True)
        say_costs("hold", figures)
        await self.collections("hold", figures)
        return figures

    async def decide(
        self, name: str, ids: list[str], *, rate: float | None, probe: list[str] | None = None,
        decider: Serve | None = None, crowd: Crowd | None = None,
    ) -> dict[str, Any]:
        """Decide ``ids`` (at ``rate``, or at once) through ``decider`` (A by default) and
        wait for their waiters to be answered; with plain reads of ``probe`` meanwhile."""
        crowd = crowd or self.crowd
        connections = DECIDERS if rate is not None else self.args.burst_connections

        async def deciding() -> Decisions:
            decisions = await decide(decider or self.a, self.tokens["approver"], ids,
                                     connections, rate)
            if not decisions.gave_up:
                await crowd.answered(ids, ANSWER_WITHIN)
            return decisions

        with self.phase(name, crowd) as phase:
            if probe:
                decisions, reads = await self.with_plain_reads(probe, deciding())
            else:
                decisions, reads = await deciding(), []
        figures = latencies(crowd, ids, decisions) | phase.figures()
        figures["server_cpu_ms_per_decision"] = round(phase.server_cpu / len(ids) * 1000, 2)
        if rate is not None:
            figures |= {"rate": rate, "late_start_ms": ms(decisions.late_start)}
        say(name, figures)
        if rate is not None and decisions.late_start > 1:
            print(f"{name}: the server did not keep up with {rate:g} decisions/s: some were "
                  f"sent {decisions.late_start:.1f} s after their moment", flush=True)
        if rate is None:
            print(f"{name}: commits spread over {figures.get('commit_span_ms')} ms, the last "
                  f"answer {figures.get('first_commit_to_last_answer_ms')} ms after the "
                  f"first commit", flush=True)
        if reads:
            figures["plain_read"] = {"n": len(reads), **spread(reads)}
            figures["ratio_p99_to_plain_read_p99"] = round(
                figures["p99_ms"] / figures["plain_read"]["p99_ms"], 2)
            print(f"{name}: plain reads meanwhile p50 {figures['plain_read']['p50_ms']} ms, "
                  f"p99 {figures['plain_read']['p99_ms']} ms: the waiters' p99 is "
                  f"{figures['ratio_p99_to_plain_read_p99']}x a plain read's", flush=True)
        if decisions.gave_up:
            print(f"{name}: {GIVE_UP_AFTER} decisions failed ({decisions.failures}); "
                  f"the phases after this one are not run", flush=True)
        await self.collections(name, figures)
        return figures

    async def cross(self) -> dict[str, Any]:
        """Waiters on A, decisions through B: each woken by ``NOTIFY signoff_changed``."""
        self.b = spawn_serve(self.url, self.logs / "serve-b.log",
                             SIGNOFF_DB_POOL_SIZE=str(self.args.pool_size))
        await wait_ready(self.b)
        ids = await create_requests(self.a, self.tokens["requester"], self.args.cross_waiters)
        crowd = Crowd()
        await open_waiters(self.a, self.tokens["viewer"], ids, crowd, self.http)
        await asyncio.sleep(1)  # every waiter has read its request once
        # When each NOTIFY reaches a listener of this process's own: what PostgreSQL's
        # delivery takes, apart from what replica A does with it.
        heard: dict[str, float] = {}

        def hear(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            at = time.time()
            for rid in payload.split(","):
                heard.setdefault(rid, at)

        listener = await asyncpg.connect(plain_postgres_url(self.url))
        try:
            await listener.add_listener(CHANGED_CHANNEL, hear)
            decider_cpu = process_cpu(self.b.pid)
            figures = await self.decide(
                "cross-replica", random.sample(ids, len(ids)), rate=self.args.cross_rate,
                probe=ids, decider=self.b, crowd=crowd)
            figures["decider_cpu_s"] = round(process_cpu(self.b.pid) - decider_cpu, 2)
        finally:
            await listener.close()
        delivery = [heard[w.rid] - w.decided_at for w in crowd.waiters.values()
                    if w.rid in heard and w.decided_at is not None]
        figures["notify_heard_here"] = {"n": len(delivery), **spread(delivery)}
        print(f"cross-replica: NOTIFY heard by a listener here p50 "
              f"{figures['notify_heard_here']['p50_ms']} ms, p99 "
              f"{figures['notify_heard_here']['p99_ms']} ms after decided_at", flush=True)
        if crowd.failures:
            figures["waiter_failures"] = dict(crowd.failures)
        return figures

    async def main_phases(self, phases: dict[str, Any], mem: dict[str, Any]) -> None:
        """Every phase on replica A; figures into ``phases`` and memory readings into
        ``mem`` as they come."""
        args, a = self.args, self.a
        started = time.perf_counter()
        ids = await create_requests(a, self.tokens["requester"], args.waiters)
        print(f"created {len(ids):,} requests in {time.perf_counter() - started:.1f} s",
              flush=True)
        idle = await self.memory("idle", mem)
        with self.phase("open") as opening:
            await open_waiters(a, self.tokens["viewer"], ids, self.crowd, self.http,
                               args.open_seconds)
        phases["open"] = opening.figures()
        await self.collections("open", phases["open"])
        waiting = await self.memory("waiting", mem)
        mem["kb_per_waiter"] = round((waiting["rss_kb"] - idle["rss_kb"]) / args.waiters, 2)
        mem["pss_kb_per_waiter"] = round((waiting["pss_kb"] - idle["pss_kb"]) / args.waiters, 2)
        print(f"{args.waiters:,} waiting after {phases['open']['seconds']} s; server RSS "
              f"{idle['rss_kb']:,} KB idle, {waiting['rss_kb']:,} KB with them "
              f"({waiting['fds']:,} descriptors): {mem['kb_per_waiter']} KB per waiter (Pss "
              f"{mem['pss_kb_per_waiter']})", flush=True)
        say_costs("open", phases["open"])
        if args.hold:
            phases["hold"] = await self.hold(ids)
        order = random.sample(ids, len(ids))
        for rate, n in steps(args):
            name = f"steady_{rate:g}"
            phases[name] = await self.decide(name, order[:n], rate=rate, probe=ids)
            order = order[n:]
            if phases[name].get("gave_up"):
                raise ServerFailing(name)
        phases["burst"] = await self.decide("burst", order[:args.burst], rate=None)
        if phases["burst"].get("gave_up"):
            raise ServerFailing("burst")
        if order[args.burst:]:
            phases["rest"] = await self.decide("rest", order[args.burst:], rate=None)

    async def drained(self, crowd: Crowd, mem: dict[str, Any], key: str) -> dict[str, int]:
        """``crowd``'s waiters answered (or given up) and their connections closed: A's
        memory once it has given back what it will, into ``mem[key]``; after its first
        trim into ``mem[key + "_first_trim"]``."""
        for task in crowd.tasks.values():
            task.cancel()
        await asyncio.gather(*crowd.tasks.values(), return_exceptions=True)
        with contextlib.suppress(SystemExit):
            await gauge_reaches(self.http, self.a, 0, within=30)
        mem["gauge_" + key] = await gauge(self.http, self.a)
        # The server gives memory back once its waiters have stayed drained for
        # signoff.collector.SETTLE seconds, then again every SETTLE seconds while a trim
        # gives back at least RETRIM_MB: one reading after the first trim, the last once
        # a trim has gone by without the resident set falling by that much.
        await asyncio.sleep(SETTLE + 2)
        first = memory(self.a.pid)
        mem[key + "_first_trim"] = first
        last = first
        for _ in range(TRIMS_PER_DRAIN - 1):
            await asyncio.sleep(SETTLE)
            now = memory(self.a.pid)
            fell = (last["rss_kb"] - now["rss_kb"]) / 1024
            last = now
            if fell < RETRIM_MB:
                break
        return await self.memory(key, mem)

    async def after(self, mem: dict[str, Any]) -> None:
        """Every waiter answered (or given up) and its connection closed: memory again."""
        after = await self.drained(self.crowd, mem, "after")
        first = mem["after_first_trim"]
        idle = mem.get("idle")
        if idle is not None:
            mem["after_first_trim_over_idle"] = round(first["rss_kb"] / idle["rss_kb"], 3)
            mem["after_over_idle"] = round(after["rss_kb"] / idle["rss_kb"], 3)
        print(f"memory after the first trim: {first['rss_kb']:,} KB, "
              f"{mem.get('after_first_trim_over_idle')}x idle", flush=True)
        print(f"memory after: {after['rss_kb']:,} KB, {mem.get('after_over_idle')}x idle; "
              f"{after['fds']} descriptors ({idle and idle['fds']} idle); the gauge says "
              f"{mem['gauge_after']}", flush=True)
        if self.heap is not None:
            for key in ("heap_idle", "heap_waiting", "heap_after", "heap_after_full_collection",
                        "heap_after_trim"):
                if key in mem:
                    print(f"{key}: {mem[key]}", flush=True)

    async def again(self, mem: dict[str, Any]) -> None:
        """A second crowd, as many waiters, on the server the first one left: its idle
        level first, then its waiters decided all at once, then the memory read as
        after the first. The first crowd a server serves leaves what it made for good (the
        event loop's free lists, statements prepared on each pooled connection, tables
        grown to its size); the second shows whether a crowd gives back what it took."""
        args = self.args
        ids = await create_requests(self.a, self.tokens["requester"], args.waiters)
        idle = await self.memory("idle_again", mem)
        crowd = Crowd()
        await open_waiters(self.a, self.tokens["viewer"], ids, crowd, self.http,
                           args.open_seconds)
        waiting = await self.memory("waiting_again", mem)
        decisions = await decide(self.a, self.tokens["approver"], ids,
                                 args.burst_connections, None)
        late = await crowd.answered(ids, ANSWER_WITHIN)
        after = await self.drained(crowd, mem, "after_again")
        mem["again_after_over_idle"] = round(after["rss_kb"] / idle["rss_kb"], 3)
        mem["again_after_over_first_idle"] = round(after["rss_kb"] / mem["idle"]["rss_kb"], 3)
        if crowd.failures or decisions.failures or late:
            mem["again_failures"] = {**crowd.failures, **decisions.failures,
                                     **({"not answered": late} if late else {})}
        print(f"again, {args.waiters:,} more waiters: {idle['rss_kb']:,} KB idle before them, "
              f"{waiting['rss_kb']:,} KB with them, {after['rss_kb']:,} KB after: "
              f"{mem['again_after_over_idle']}x the idle level before them "
              f"({mem['again_after_over_first_idle']}x the first idle reading)", flush=True)


def steps(args: argparse.Namespace) -> list[tuple[float, int]]:
    """The steady phases: (rate, decisions) each."""
    return [(rate, round(rate * args.seconds)) for rate in args.rates]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    open_files = raise_open_files(args.waiters + 1000)
    phases: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    async with scratch_database(args.database_url, "signoff_bench_waiters") as url:
        with tempfile.TemporaryDirectory(prefix="signoff-bench-waiters-") as scratch:
            logs = Path(args.logs or scratch)
            tokens = {role: make_token(url, f"bench-{role}", role)
                      for role in ("requester", "approver", "viewer")}
            pool = {"SIGNOFF_DB_POOL_SIZE": str(args.pool_size)}
            probe = logs / "serve-a.memprobe.jsonl" if args.probe else None
            if probe is not None:
                probe.unlink(missing_ok=True)
            a = spawn_replica(url, logs / "serve-a.log", probe, pool)
            await wait_ready(a)
            stop = asyncio.Event()
            watch = PoolWatch()
            watching = asyncio.create_task(watch.run(plain_postgres_url(url), stop))
            run: Run | None = None
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    run = Run(args, url, logs, a, tokens, http, watch,
                              heap=HeapProbe(probe, a.pid) if probe is not None else None)
                    print(f"{args.waiters:,} waiters on one signoff serve (pool of "
                          f"{args.pool_size}), PostgreSQL, {os.cpu_count()} cores, "
                          f"{open_files} open files; load average {load_average()}", flush=True)
                    try:
                        await run.main_phases(phases, mem)
                    except ServerFailing as failing:
                        phases["failed_in"] = str(failing)
                    await run.after(mem)
                    if args.again and "failed_in" not in phases:
                        await run.again(mem)
                    if args.cross_waiters and "failed_in" not in phases:
                        phases["cross_replica"] = await run.cross()
            finally:
                stop.set()
                await watching
                for serve in (a, run.b if run is not None else None):
                    if serve is not None and serve.process.poll() is not None:
                        print(f"signoff serve exited with {serve.process.returncode}: "
                              f"{serve.log.read_text()[-3000:]}", flush=True)
                    if serve is not None:
                        serve.stop()
    crowd = run.crowd
    figures: dict[str, Any] = {
        "database": "postgresql", "cores": os.cpu_count(), "waiters": args.waiters,
        "pool_size": args.pool_size, "wait_seconds": WAIT_SECONDS, **phases, "memory": mem,
        "reissued": len(crowd.reissued_at), "client_cpu_s": round(time.process_time(), 2),
    }
    if crowd.failures:
        figures["waiter_failures"] = dict(crowd.failures)
    print(f"{figures['reissued']:,} waits ran out and were asked again; this process used "
          f"{figures['client_cpu_s']} s of CPU in all; load average {load_average()} at the "
          f"end", flush=True)
    return figures


def failed(figures: dict[str, Any]) -> bool:
    phases = [v for v in figures.values() if isinstance(v, dict) and "decide" in v]
    return bool(figures.get("failed_in") or figures.get("waiter_failures")
                or figures.get("memory", {}).get("again_failures") or any(
        p.get("unanswered") or p.get("failures") or p.get("waiter_failures") for p in phases))


def rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="postgresql://user@host:port/db (a scratch database is made "
                             "beside it and dropped at the end)")
    parser.add_argument("--waiters", type=int, default=10_000,
                        help="pending requests, each with one long-poll waiter")
    parser.add_argument("--rates", type=rates, default=[50.0, 100.0, 200.0, 300.0],
                        help="steady decisions per second, one phase each "
                             "(default 50,100,200,300)")
    parser.add_argument("--seconds", type=float, default=10, help="of each steady phase")
    parser.add_argument("--burst", type=int, default=1000,
                        help="decisions at once after the steady phases (what is left after "
                             "them is decided at once too, as a last phase)")
    parser.add_argument("--burst-connections", type=int, default=BURST_CONNECTIONS,
                        help="the approver's connections in the burst")
    parser.add_argument("--open-seconds", type=float, default=60,
                        help="spread the opening of the waiters over this long at least, so "
                             "that their waits run out as evenly as they would in service")
    parser.add_argument("--hold", type=float, default=60,
                        help="seconds with every waiter waiting and nothing decided, before "
                             "the steady phases (0: none)")
    parser.add_argument("--cross-waiters", type=int, default=1000,
                        help="waiters on replica A for decisions on replica B (0: skip)")
    parser.add_argument("--cross-rate", type=float, default=100,
                        help="decisions per second on replica B")
    parser.add_argument("--again", action=argparse.BooleanOptionalAction, default=True,
                        help="after the first crowd has drained, a second of as many waiters "
                             "decided at once, with memory read before and after it")
    parser.add_argument("--pool-size", type=int, default=10,
                        help="SIGNOFF_DB_POOL_SIZE of each server (default: its own default)")
    parser.add_argument("--probe", action="store_true",
                        help="run replica A under bench/memprobe.py and read its heap with "
                             "each memory reading (and after malloc_trim at the end)")
    parser.add_argument("--logs", metavar="DIR",
                        help="keep the servers' logs as DIR/serve-a.log and DIR/serve-b.log")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not Settings(database_url=args.database_url).is_postgres:
        raise SystemExit("bench/waiters.py measures signoff on PostgreSQL: give a "
                         "postgresql:// URL")
    planned = sum(n for _, n in steps(args)) + args.burst
    if args.burst < 1 or planned > args.waiters:
        raise SystemExit(f"the steady phases and the burst decide {planned:,} requests: give "
                         f"at least as many --waiters, and a --burst of 1 or more")
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
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
