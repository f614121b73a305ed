"""How many requests per second does ``signoff serve`` create and decide, next to plain SQL?

    python bench/api.py --database-url postgresql://user@host:port/db [--clients 16]
                        [--seconds 20] [--warmup 3] [--client lean|httpx]

Starts ``signoff serve`` on a scratch database created beside the given one (dropped at
the end) and makes a requester and an approver token. ``--clients`` concurrent clients
each loop for ``--seconds``: create a request (``POST /approvals``), then approve it or
reject it (every other one). Then, in the same run and on the same database, as many
plain asyncpg connections do the same writes for as long, each step one transaction:
insert the request and its audit event; then the guarded update (``status = 'pending'
AND expires_at > now()``), the vote for an approval, and the audit event. Reported for
both: calls/s, create-and-decide pairs/s and p50/p99 latency per kind of call; the ratio
is signoff's pairs/s over plain SQL's. The CPU time the server process and the load
generator (this process) spent in the measured window is reported per call, and the
machine's load average before each side: everything shares the same cores. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa

from signoff.settings import Settings, normalise_database_url

TTL_SECONDS = 600  # nothing expires while the benchmark runs


# -- a scratch database and a server ------------------------------------------------------


def plain_postgres_url(url: str) -> str:
    return "postgresql://" + normalise_database_url(url).split("://", 1)[1]


def with_database(url: str, name: str) -> str:
    parsed = sa.make_url(plain_postgres_url(url)).set(database=name)
    return parsed.render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def scratch_database(url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database beside ``url``, dropped when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(plain_postgres_url(url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def signoff_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "signoff", *args]


@dataclass
class Serve:
    """One ``signoff serve`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def make_token(database_url: str, name: str, role: str) -> str:
    """``signoff db upgrade`` (a database is only ever created by it or by ``serve``), then
    ``signoff token create``."""
    env = {**os.environ, "SIGNOFF_DATABASE_URL": database_url}
    for args in (("db", "upgrade"), ("token", "create", name, "--role", role)):
        made = subprocess.run(signoff_command(*args), env=env, capture_output=True,
                              stdin=subprocess.DEVNULL)
        if made.returncode != 0:
            raise SystemExit(f"signoff {' '.join(args[:2])} failed: "
                             f"{made.stderr.decode()[-2000:]}")
    return made.stdout.decode().strip().splitlines()[-1]


def spawn_serve(database_url: str, log: Path, **env: str) -> Serve:
    port = free_port()
    environ = {**os.environ, "SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_PORT": str(port),
               "SIGNOFF_HOST": "127.0.0.1", "SIGNOFF_LOG_FORMAT": "json",
               "SIGNOFF_LOG_LEVEL": "warning", **env}
    with log.open("wb") as out:
        process = subprocess.Popen(signoff_command("serve"), env=environ, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Serve(f"http://127.0.0.1:{port}", process, log)


def exited(serve: Serve) -> SystemExit:
    return SystemExit(f"signoff serve exited: {serve.log.read_text()[-2000:]}")


async def wait_ready(serve: Serve, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            if serve.process.poll() is not None:
                raise exited(serve)
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(serve.url + "/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                serve.stop()
                raise SystemExit(f"signoff serve did not answer within {within:g} s")
            await asyncio.sleep(0.1)


async def start_serve(database_url: str, log: Path, **env: str) -> Serve:
    serve = spawn_serve(database_url, log, **env)
    await wait_ready(serve)
    return serve


# -- measuring ------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least ``q`` of them at or below."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
    return ordered[rank]


@dataclass
class Tally:
    """Latencies (seconds) by kind of call, counted only inside the measured window."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    # CPU seconds spent in the measured window: by the server process, by this process.
    server_cpu: float | None = None
    client_cpu: float = 0.0

    def add(self, kind: str, began: float, took: float) -> None:
        if self.started <= began and began + took <= self.ended:
            self.latencies.setdefault(kind, []).append(took)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def calls(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def figures(self) -> dict[str, Any]:
        every = [x for v in self.latencies.values() for x in v]
        pairs = len(self.latencies.get("create", []))
        out: dict[str, Any] = {
            "calls_per_s": round(self.calls() / self.seconds, 1),
            "pairs_per_s": round(pairs / self.seconds, 1),
            "p50_ms": round(quantile(every, 0.50) * 1000, 2),
            "p99_ms": round(quantile(every, 0.99) * 1000, 2),
        }
        calls = self.calls() or 1
        if self.server_cpu is not None:
            out["server_cpu_ms_per_call"] = round(self.server_cpu / calls * 1000, 2)
            out["server_cpu_share"] = round(self.server_cpu / self.seconds, 2)
        out["client_cpu_ms_per_call"] = round(self.client_cpu / calls * 1000, 2)
        for kind, values in sorted(self.latencies.items()):
            out[f"{kind}_p50_ms"] = round(quantile(values, 0.50) * 1000, 2)
            out[f"{kind}_p99_ms"] = round(quantile(values, 0.99) * 1000, 2)
        if self.failures:
            out["failures"] = dict(self.failures)
        return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    clients: int, warmup: float, seconds: float,
    step: Callable[[int, int, Tally], Awaitable[None]], server_pid: int | None = None,
) -> Tally:
    """Run ``step(client, i, tally)`` in a loop on each client; measure after the warmup."""
    tally = Tally()
    now = time.perf_counter()
    tally.started, tally.ended = now + warmup, now + warmup + seconds

    async def meter() -> None:
        await asyncio.sleep(warmup)
        server = process_cpu(server_pid) if server_pid is not None else 0.0
        client = time.process_time()
        await asyncio.sleep(max(0.0, tally.ended - time.perf_counter()))
        if server_pid is not None:
            tally.server_cpu = process_cpu(server_pid) - server
        tally.client_cpu = time.process_time() - client

    async def loop(client: int) -> None:
        i = 0
        while time.perf_counter() < tally.ended:
            await step(client, i, tally)
            i += 1

    await asyncio.gather(meter(), *(loop(c) for c in range(clients)))
    return tally


async def timed(tally: Tally, kind: str, call: Awaitable[Any]) -> Any:
    began = time.perf_counter()
    result = await call
    tally.add(kind, began, time.perf_counter() - began)
    return result


# -- the two sides --------------------------------------------------------------------------


class Answer:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    def json(self) -> Any:
        return json.loads(self.content)


class LeanClient:
    """A keep-alive HTTP/1.1 client that does only what the benchmark needs, on one
    connection per concurrent caller.

    The load generator shares the machine's cores with the server and PostgreSQL: httpx
    spends as much CPU per call as the server does, which would cap what the server can
    show. This one spends a few percent of that, so the figures are the server's.
    """

    def __init__(self, url: str, token: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port, self.prefix = parsed.host, parsed.port or 80, parsed.path
        self.headers = (f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
                        "Content-Type: application/json\r\n")
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, *, json: Any) -> Answer:
        return await self.send("POST", path, _dumps(json).encode())

    async def get(self, path: str) -> Answer:
        return await self.send("GET", path)

    async def send(self, method: str, path: str, body: bytes = b"") -> Answer:
        """One call; a kept-alive connection the server has closed meanwhile is replaced
        and the call sent again on a new one. A call cancelled midway closes its
        connection: the server then sees the client go."""
        head = (f"{method} {self.prefix}{path} HTTP/1.1\r\n{self.headers}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        while True:
            reused = bool(self.idle)
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(
                self.host, self.port)
            writer.write(head + body)
            try:
                answer = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                if not reused:  # a new connection that fails is the server's failure
                    raise
            except BaseException:
                writer.close()
                raise
        status_line, _, headers = answer.partition(b"\r\n")
        length, close = 0, False
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        try:
            content = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return Answer(int(status_line.split()[1]), content)

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


_dumps = json.dumps


def clients_for(serve: Serve, tokens: dict[str, str], kind: str, clients: int) -> list[Any]:
    base = serve.url + "/api/v1"
    if kind == "lean":
        return [LeanClient(base, tokens[role]) for role in ("requester", "approver")]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    return [httpx.AsyncClient(base_url=base, limits=limits, timeout=60,
                              headers={"Authorization": f"Bearer {tokens[role]}"})
            for role in ("requester", "approver")]


async def bench_signoff(serve: Serve, tokens: dict[str, str], args: argparse.Namespace) -> Tally:
    bot, alice = clients_for(serve, tokens, args.client, args.clients)
    body = {"action": "restart service", "risk": "low", "ttl_seconds": TTL_SECONDS,
            "params": {"host": "web-1"}}

    async def step(_client: int, i: int, tally: Tally) -> None:
        created = await timed(tally, "create", bot.post("/approvals", json=body))
        if created.status_code != 201:
            tally.fail(f"create {created.status_code}")
            return
        verb = "approve" if i % 2 == 0 else "reject"
        rid = created.json()["id"]
        decided = await timed(tally, "decide", alice.post(f"/approvals/{rid}/{verb}",
                                                          json={"comment": "bench"}))
        if decided.status_code != 200:
            tally.fail(f"{verb} {decided.status_code}")

    try:
        return await drive(args.clients, args.warmup, args.seconds, step, serve.pid)
    finally:
        await bot.aclose()
        await alice.aclose()


CREATE = """
INSERT INTO approval_requests (id, action, params, risk, requested_by, status,
                               required_approvals, approval_count, created_at, expires_at)
VALUES ($1, 'restart service', $2::jsonb, 'low', 'raw-bot', 'pending', 1, 0, now(),
        now() + make_interval(secs => $3))
"""
CREATED_EVENT = """
INSERT INTO events (at, kind, actor, request_id, to_status, detail)
VALUES (now(), 'request_created', 'raw-bot', $1, 'pending', $2::jsonb)
"""
APPROVE = """
UPDATE approval_requests
SET approval_count = approval_count + 1,
    status = CASE WHEN approval_count + 1 >= required_approvals THEN 'approved' ELSE status END,
    disposition = CASE WHEN approval_count + 1 >= required_approvals
                       THEN 'human_approved' ELSE disposition END,
    decided_by = CASE WHEN approval_count + 1 >= required_approvals
                      THEN $2 ELSE decided_by END,
    decided_at = CASE WHEN approval_count + 1 >= required_approvals
                      THEN now() ELSE decided_at END,
    decision_comment = 'bench'
WHERE id = $1 AND status = 'pending' AND expires_at > now() AND requested_by <> $2
RETURNING status
"""
VOTE = """
INSERT INTO approvals (request_id, approver, at) VALUES ($1, $2, now())
ON CONFLICT DO NOTHING
"""
REJECT = """
UPDATE approval_requests
SET status = 'rejected', disposition = 'human_rejected', decided_by = $2, decided_at = now(),
    decision_comment = 'bench'
WHERE id = $1 AND status = 'pending' AND expires_at > now() AND requested_by <> $2
RETURNING status
"""
DECIDED_EVENT = """
INSERT INTO events (at, kind, actor, request_id, from_status, to_status, detail)
VALUES (now(), $3, $2, $1, 'pending', $4, '{"comment": "bench"}'::jsonb)
"""


async def bench_raw(database_url: str, args: argparse.Namespace) -> Tally:
    dsn = plain_postgres_url(database_url)
    conns = [await asyncpg.connect(dsn) for _ in range(args.clients)]
    params = json.dumps({"host": "web-1"})

    async def create(conn: Any) -> uuid.UUID:
        rid = uuid.uuid4()
        async with conn.transaction():
            await conn.execute(CREATE, rid, params, float(TTL_SECONDS))
            await conn.execute(CREATED_EVENT, rid, json.dumps({"action": "restart service"}))
        return rid

    async def decide(conn: Any, rid: uuid.UUID, approve: bool) -> str | None:
        async with conn.transaction():
            status: str | None = await conn.fetchval(APPROVE if approve else REJECT, rid, "raw")
            if status is None:
                return None
            if approve:
                await conn.execute(VOTE, rid, "raw")
            await conn.execute(DECIDED_EVENT, rid, "raw",
                               "request_approved" if approve else "request_rejected", status)
        return status

    async def step(client: int, i: int, tally: Tally) -> None:
        conn = conns[client]
        rid = await timed(tally, "create", create(conn))
        if await timed(tally, "decide", decide(conn, rid, i % 2 == 0)) is None:
            tally.fail("decide")

    try:
        return await drive(args.clients, args.warmup, args.seconds, step)
    finally:
        for conn in conns:
            await conn.close()


# -- main -----------------------------------------------------------------------------------


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def report(label: str, tally: Tally) -> dict[str, Any]:
    figures = tally.figures()
    print(f"{label:9} {tally.calls():>7,} calls in {tally.seconds:.0f} s: "
          f"{figures['calls_per_s']:>8,.1f} calls/s, {figures['pairs_per_s']:>7,.1f} "
          f"create+decide/s; create p50 {figures['create_p50_ms']:.1f} ms p99 "
          f"{figures['create_p99_ms']:.1f} ms; decide p50 {figures['decide_p50_ms']:.1f} ms "
          f"p99 {figures['decide_p99_ms']:.1f} ms", flush=True)
    server = (f"server {figures['server_cpu_ms_per_call']:.2f} ms "
              f"({figures['server_cpu_share']:.0%} of a core), "
              if "server_cpu_ms_per_call" in figures else "")
    print(f"{label:9} CPU per call: {server}load generator "
          f"{figures['client_cpu_ms_per_call']:.2f} ms", flush=True)
    if tally.failures:
        print(f"{label:9} failures: {tally.failures}", flush=True)
    return figures


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch_database(args.database_url, "signoff_bench_api") as url:
        with tempfile.TemporaryDirectory(prefix="signoff-bench-api-") as tmp:
            tokens = {role: make_token(url, f"bench-{role}", role)
                      for role in ("requester", "approver")}
            serve = await start_serve(url, Path(tmp) / "serve.log")
            try:
                print(f"{args.clients} {args.client} clients, {args.warmup:g} s warm-up then "
                      f"{args.seconds:g} s measured, on PostgreSQL, {os.cpu_count()} cores; "
                      f"load average {load_average()}", flush=True)
                signoff = report("signoff", await bench_signoff(serve, tokens, args))
            finally:
                serve.stop()
            before_raw = load_average()
            raw = report("plain SQL", await bench_raw(url, args))
    ratio = round(signoff["pairs_per_s"] / raw["pairs_per_s"], 3) if raw["pairs_per_s"] else None
    print(f"signoff does {ratio} of plain SQL's create+decide pairs per second")
    print(f"load average {before_raw} before plain SQL, {load_average()} at the end")
    return {"database": "postgresql", "clients": args.clients, "client": args.client,
            "seconds": args.seconds,
            "cores": os.cpu_count(), "signoff": signoff, "raw": raw, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True,
                        help="postgresql://user@host:port/db (a scratch database is made "
                             "beside it and dropped at the end)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20, help="measured time per side")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first")
    parser.add_argument("--client", choices=("lean", "httpx"), default="lean",
                        help="HTTP client of the load generator: a minimal keep-alive one "
                             "(default), or httpx (as much CPU per call as the server)")
    args = parser.parse_args()
    if not Settings(database_url=args.database_url).is_postgres:
        raise SystemExit("bench/api.py measures signoff on PostgreSQL: give a postgresql:// URL")
    figures = asyncio.run(bench(args))
    print(json.dumps(figures))
    if figures["signoff"].get("failures") or figures["raw"].get("failures"):
        sys.exit(1)


if __name__ == "__main__":
    main()
