"""Crashes mid-drain: ``kill -9``, connections terminated, PostgreSQL crashed, answers lost.

After every fault a resolver (a fresh one, or the survivor) expires everything due, each
request exactly once, and ``signoff doctor`` finds nothing. ``SIGNOFF_RELIABILITY_SCALE``
multiplies the kill trials (each on a backlog of 4,000), the termination rounds, the lost
answers and the backlogs of the other tests; ``SIGNOFF_RELIABILITY_SEED`` replays one run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from signoff.db import Database
from signoff.migrate import upgrade
from signoff.settings import Settings
from tests.acceptance.conftest import _make_tokens
from tests.conftest import _truncate
from tests.reliability.faults import AnswerDropper, PrivatePostgres, postgres_bin
from tests.reliability.harness import (
    SCALE,
    SEED,
    Fleet,
    Proc,
    assert_all_expired,
    assert_exactly_once,
    connect,
    doctor_cli,
    doctor_except_overdue,
    pending_count,
    port_and_database,
    preload,
    scaled,
    wait_drained,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.reliability]

BACKSTOP = 1.0
FAST = {"SIGNOFF_RESOLVER_BACKSTOP": f"{BACKSTOP}s", "SIGNOFF_RESOLVER_BATCH_SIZE": "100"}


@pytest.fixture
def rng() -> random.Random:
    print(f"SIGNOFF_RELIABILITY_SEED={SEED}")
    return random.Random(SEED)


async def expired_count(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT count(*) FROM approval_requests WHERE status = 'expired'")
    return int(value)


async def restart_drains_everything(pg: str, conn: asyncpg.Connection, fleet: Fleet) -> float:
    """A fresh resolver's first pass expires every due request; the seconds it took from
    the moment its loop started. Then everything is checked, and ``signoff doctor`` too."""
    remaining = await pending_count(conn)
    proc = await fleet.resolver(pg, **FAST)
    await proc.wait_event("resolver_started")
    started = time.monotonic()
    if remaining:  # a pass that expires nothing logs only at debug level
        await proc.wait_event("resolver_pass")
        assert proc.events("resolver_pass")[0]["expired"] == remaining
    took = time.monotonic() - started
    await wait_drained(conn, within=60)
    await assert_all_expired(conn)
    await doctor_cli(pg)
    await proc.stop()
    return took


@pytest.mark.timeout(900 * max(1.0, SCALE))
async def test_kill_9_at_random_moments_during_a_drain(
    pg: str, conn: asyncpg.Connection, fleet: Fleet, rng: random.Random
) -> None:
    """Each trial adds a backlog, starts ``resolve`` or ``serve`` and kills it with SIGKILL:
    while it starts, right after a batch committed (a random few ms later: before, inside
    or after the next batch's commit), or once it is idle. Nothing is done twice or half.
    Every ten trials, the last kill having left a half-drained backlog, a fresh resolver
    drains it in its first pass; then the database starts empty again, so that a long run
    checks each trial as quickly as the first."""
    moments = ["idle", "starting", "mid-drain", "mid-drain", "mid-drain"]
    tally: dict[str, int] = {}
    partial = 0
    restarts: list[float] = []
    trials = scaled(10)
    for trial in range(trials):
        await preload(conn, 4000, tag=f"trial{trial}")
        closes_block = trial % 10 == 9 or trial == trials - 1
        moment = "mid-drain" if closes_block else moments[trial % len(moments)]
        proc: Proc = await (fleet.server(pg, **FAST) if trial % 3 == 2
                            else fleet.resolver(pg, **FAST))
        before = await expired_count(conn)
        if moment == "starting":
            await asyncio.sleep(rng.uniform(0.0, 1.5))
        elif moment == "mid-drain":
            await proc.wait_event("resolver_started")

            async def progressed(before: int = before) -> bool:
                return await expired_count(conn) > before

            await wait_for(progressed, within=60, every=0.005, what="a first batch")
            await asyncio.sleep(rng.uniform(0.0, 0.15))
        else:
            await proc.wait_event("resolver_pass")
            await asyncio.sleep(rng.uniform(0.0, BACKSTOP))
        await proc.kill()
        after, left = await expired_count(conn), await pending_count(conn)
        if after > before and left:
            partial += 1
        tally[moment] = tally.get(moment, 0) + 1
        # What must hold at every instant holds right after the crash.
        await assert_exactly_once(conn)
        await doctor_except_overdue(pg)
        if closes_block:
            restarts.append(await restart_drains_everything(pg, conn, fleet))
            await _truncate(pg)
    print(f"kills: {tally}; {partial} left a backlog half drained; fresh resolvers drained "
          f"the rest in at most {max(restarts):.2f} s")
    assert partial >= 1, "no kill landed in the middle of a drain"


async def terminate_signoff_backends(conn: asyncpg.Connection) -> int:
    """``pg_terminate_backend`` every connection signoff holds to this database."""
    value = await conn.fetchval(
        """
        SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND application_name LIKE 'signoff%'
        """
    )
    return int(value)


async def test_connections_terminated_mid_drain(
    pg: str, conn: asyncpg.Connection, fleet: Fleet, rng: random.Random
) -> None:
    """Two ``resolve`` and a ``serve`` drain a backlog while every one of their connections
    (pool and LISTEN) is terminated again and again: they reconnect, finish the drain, and
    the server answers HTTP again."""
    procs = [await fleet.resolver(pg, **FAST) for _ in range(2)]
    procs.append(await fleet.server(pg, **FAST))
    for proc in procs:
        await fleet.ready(proc)
    tokens = await _make_tokens(pg, {"viewer": "viewer"})
    await preload(conn, scaled(12_000))
    terminated = rounds = 0
    while await pending_count(conn) and rounds < scaled(25):
        await asyncio.sleep(rng.uniform(0.02, 0.3))
        terminated += await terminate_signoff_backends(conn)
        rounds += 1
    assert terminated > 0
    await wait_drained(conn, within=120)
    print(f"terminated {terminated} connections in {rounds} rounds")
    for proc in procs:
        assert proc.alive, proc.log_path.read_text()[-3000:]
    server = procs[-1]
    assert server.url is not None
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=30
    ) as client:
        for _ in range(3):  # the pool hands out connections that died: each is replaced
            response = await client.get("/api/v1/approvals", params={"limit": 1})
            assert response.status_code == 200, response.text
    await assert_all_expired(conn)
    await doctor_cli(pg)


async def test_http_while_connections_are_terminated_answers_503_never_500(
    pg: str, conn: asyncpg.Connection, fleet: Fleet, rng: random.Random
) -> None:
    """Clients create, approve and list through two servers while every signoff connection
    is terminated again and again: a call that loses its connection answers 503 (retry),
    never 500, and the HTTP connection stays usable."""
    servers = [await fleet.server(pg, **FAST) for _ in range(2)]
    for server in servers:
        await fleet.ready(server)
    tokens = await _make_tokens(pg, {"bot": "requester", "alice": "approver", "viewer": "viewer"})
    answers: Counter[str] = Counter()
    stop = time.monotonic() + 10 * SCALE

    async def call(client: httpx.AsyncClient, method: str, path: str, who: str,
                   **kwargs: Any) -> httpx.Response:
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {tokens[who]}"}, **kwargs)
        answers[f"{method} {path.rsplit('/', 1)[-1]} {response.status_code}"] += 1
        assert response.status_code < 500 or response.status_code == 503, response.text
        return response

    async def traffic(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            made = await call(client, "POST", "/approvals", "bot",
                              json={"action": "restart web", "ttl_seconds": 1})
            if made.status_code == 201:
                await call(client, "POST", f"/approvals/{made.json()['id']}/approve", "alice")
            await call(client, "GET", "/approvals", "viewer")

    async def terminate() -> int:
        terminated = 0
        while time.monotonic() < stop:
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            terminated += await terminate_signoff_backends(conn)
        return terminated

    clients = [httpx.AsyncClient(base_url=f"{s.url}/api/v1", timeout=30)
               for s in servers for _ in range(3)]
    try:
        terminated, *_ = await asyncio.gather(terminate(), *(traffic(c) for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    print(f"terminated {terminated} connections; answers {dict(sorted(answers.items()))}")
    assert terminated > 0
    assert any(k.endswith(" 503") for k in answers), "no call met a terminated connection"
    # Once the terminations stop, no connection left in a pool is broken: every call works.
    async with httpx.AsyncClient(timeout=30) as client:
        for server in servers:
            for _ in range(20):
                made = await call(client, "POST", f"{server.url}/api/v1/approvals", "bot",
                                  json={"action": "restart web", "ttl_seconds": 1})
                assert made.status_code == 201, made.text
    await wait_drained(conn, within=60)
    await assert_exactly_once(conn)
    await doctor_cli(pg)


async def test_lost_commit_answers_do_not_double_anything(
    pg: str, conn: asyncpg.Connection, fleet: Fleet
) -> None:
    """The resolver's connection dies after its batch's COMMIT reached the server and before
    the answer came back: an ambiguous commit, again and again. The resolver runs the batch
    again; the rows already expired are no longer pending, so nothing happens twice."""
    n = await preload(conn, scaled(6000))
    port, database = port_and_database(pg)
    drops = scaled(5)
    async with AnswerDropper(port, b"SKIP LOCKED", drops=drops, every=2) as proxy:
        proc = await fleet.resolver(proxy.url(database), **FAST)
        await wait_drained(conn, within=120)
        await proc.stop()
    assert proxy.dropped == [b"COMMIT"] * drops, proxy.dropped
    assert await expired_count(conn) == n
    await assert_all_expired(conn)
    await doctor_cli(pg)


async def test_a_create_and_a_decision_whose_answers_were_lost_happen_once(
    pg: str, fleet: Fleet
) -> None:
    """A request is created with an ``Idempotency-Key`` and its answer is lost: the client
    sees a 503, sends the same call again and gets the request that was made (200), not a
    second one. Then an approval commits and its answer is lost: the retry is told the
    request is already approved. One request, one approval, one event each."""
    port, database = port_and_database(pg)
    tokens = await _make_tokens(pg, {"bot": "requester", "alice": "approver"})
    async with AnswerDropper(port, b"INSERT INTO approval_requests", drops=1) as proxy:
        server = await fleet.server(proxy.url(database))
        await fleet.ready(server)
        assert server.url is not None
        async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:

            def auth(who: str, **extra: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {tokens[who]}", **extra}

            body = {"action": "restart web", "ttl_seconds": 600}
            key = auth("bot", **{"Idempotency-Key": "restart-web-1"})
            lost = await client.post("/approvals", headers=key, json=body)
            assert lost.status_code == 503, lost.text
            made = await client.post("/approvals", headers=key, json=body)
            assert made.status_code == 200, made.text  # the one the lost answer was about
            rid = made.json()["id"]

            proxy.marker, proxy.remaining = b"approval_count + ", 1
            lost = await client.post(f"/approvals/{rid}/approve", headers=auth("alice"))
            assert lost.status_code == 503, lost.text
            again = await client.post(f"/approvals/{rid}/approve", headers=auth("alice"))
            assert again.status_code == 409, again.text
            assert again.json()["error"]["status"] == "approved"
            events = (await client.get(f"/approvals/{rid}/events", headers=auth("bot"))).json()
            listed = (await client.get("/approvals", headers=auth("bot"))).json()
        await server.stop()
    assert proxy.dropped == [b"COMMIT", b"COMMIT"]
    assert [r["id"] for r in listed["items"]] == [rid]
    assert [e["to_status"] for e in events["items"]] == ["pending", "approved"]
    await doctor_cli(pg)


# -- PostgreSQL itself crashes ------------------------------------------------------------


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own: it is the one that gets crashed."""
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("SIGNOFF_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are required")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to run a private cluster")
    cluster = PrivatePostgres(bindir)
    try:
        await cluster.init()
        await cluster.start()
        yield cluster
    finally:
        await cluster.destroy()


async def _migrate(url: str) -> None:
    db = Database.from_settings(Settings(database_url=url))
    try:
        await upgrade(db)
    finally:
        await db.dispose()


async def test_postgres_stopped_immediately_and_started_again(
    private_postgres: PrivatePostgres, fleet: Fleet, rng: random.Random
) -> None:
    """Mid-drain, PostgreSQL stops with ``-m immediate`` (a crash: no checkpoint, recovery
    from the WAL at start). ``resolve`` and ``serve`` ride out the outage; once the server is
    back, everything due is expired within a backstop or so, exactly once."""
    url = private_postgres.url
    await _migrate(url)
    conn = await connect(url)
    try:
        n = await preload(conn, scaled(20_000))
    finally:
        await conn.close()
    tokens = await _make_tokens(url, {"viewer": "viewer"})
    procs = [await fleet.resolver(url, **FAST), await fleet.server(url, **FAST)]
    server = procs[1]
    assert server.url is not None

    for proc in procs:
        await fleet.ready(proc)
    await asyncio.sleep(rng.uniform(0.0, 0.5))
    await private_postgres.stop("immediate")
    outage = rng.uniform(3.0, 6.0)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=30
    ) as client:
        await asyncio.sleep(outage)
        # Down: the API says so with a 503 and stays alive.
        down = await client.get("/api/v1/approvals", params={"limit": 1})
        assert down.status_code == 503, down.text
        for proc in procs:
            assert proc.alive, proc.log_path.read_text()[-3000:]
        await private_postgres.start()
        restarted = time.monotonic()
        conn = await connect(url)
        try:
            before = await expired_count(conn)

            async def resumed() -> bool:
                return await expired_count(conn) > before

            resumed_in = await wait_for(resumed, within=60, every=0.01, what="expiries")
            await wait_drained(conn, within=120)
            drained_in = time.monotonic() - restarted
            await assert_all_expired(conn)
            assert await conn.fetchval("SELECT count(*) FROM approval_requests") == n
        finally:
            await conn.close()
        up = await client.get("/api/v1/approvals", params={"limit": 1})
        assert up.status_code == 200, up.text
    print(f"outage {outage:.1f} s; after the restart expiries resumed in {resumed_in:.2f} s, "
          f"the backlog ({n - before} left) was drained in {drained_in:.2f} s")
    # A loose bound for a loaded machine; the exact promise is the retry interval below.
    assert resumed_in < BACKSTOP + 10
    for proc in procs:
        assert proc.alive, proc.log_path.read_text()[-3000:]
        # While the database is away the loop retries at least once per backstop, so it
        # is back at work within one backstop of the restart.
        retries: list[Any] = [e["retry_in_seconds"] for e in proc.events("resolver_db_unavailable")]
        assert retries, "the outage went unnoticed"
        assert all(r <= BACKSTOP for r in retries), retries
    await doctor_cli(url)


def test_an_unhandled_error_logged_by_a_library_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """uvicorn logs "Exception in ASGI application" through the standard library: in JSON
    the record must carry the traceback, or a crash in production cannot be diagnosed."""
    import json
    import logging

    import structlog

    from signoff.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level, structlog.get_config()
    try:
        configure_logging("info", "json")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        root.handlers[:], level, config = saved
        root.setLevel(level)
        structlog.configure(**config)
    assert record["event"] == "Exception in ASGI application"
    assert "Traceback" in record["exception"] and "RuntimeError: boom" in record["exception"]
