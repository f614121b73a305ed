"""Decisions by the thousand, landing around their requests' deadlines.

Lanes of work each make a request with a deadline a second or two ahead, then send three to
five contenders (approve, reject, its requester's cancel) at random within 0.3 s either
side of that deadline, while real resolvers expire whatever nobody decided in time. Every
answer is then checked against the database: a success is never lost or overwritten,
exactly one call ended each request that a person ended, a refusal names the status that
won, and ``signoff doctor`` finds nothing.

Two fronts, one checker: ten thousand decisions through the store on many connections (two
``signoff resolve`` processes racing them), and a smaller run over HTTP against two
``signoff serve`` replicas, where nothing may answer 5xx. ``SIGNOFF_RELIABILITY_SCALE``
multiplies both; HTTP on a shared 2-core machine manages a few dozen decisions a second.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, store
from signoff.db import Database
from signoff.settings import Settings
from tests.acceptance.conftest import _make_tokens
from tests.reliability.harness import (
    SCALE,
    SEED,
    Fleet,
    assert_exactly_once,
    doctor_cli,
    pending_count,
    scaled,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.reliability]

PRINCIPALS = {"bot": "requester", "bot2": "requester", "alice": "approver",
              "bob": "approver", "carol": "approver"}
APPROVERS = ("alice", "bob", "carol")
JITTER = 0.3  # decisions are sent within this many seconds either side of the deadline
ENDING = {"approve": "approved", "reject": "rejected", "cancel": "cancelled"}


@dataclass
class Decision:
    request_id: str
    verb: str  # approve, reject or cancel
    actor: str
    at: float  # wall-clock time it was sent
    status: int = 0  # 200, or the HTTP status of the refusal
    body: Any = None  # the request as answered, or {"error": {..., "status": winner}}


# A front makes requests and sends decisions: (requester, body) -> request as JSON, and
# (request id, verb, actor) -> (status code, body).
Create = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Decide = Callable[[str, str, str], Awaitable[tuple[int, Any]]]


def plan_decisions(rng: random.Random, requested_by: str) -> list[tuple[str, str]]:
    """Three to five contenders for one request: approvers either way, its requester."""
    contenders = []
    for _ in range(rng.randint(3, 5)):
        verb = rng.choices(("approve", "reject", "cancel"), weights=(5, 3, 1))[0]
        actor = requested_by if verb == "cancel" else rng.choice(APPROVERS)
        contenders.append((verb, actor))
    return contenders


async def run_lanes(
    rng: random.Random, create: Create, decide: Decide, incidents: list[str], *,
    target: int, lanes: int,
) -> tuple[list[dict[str, Any]], list[Decision]]:
    """``lanes`` lanes each make a request and send its contenders around its deadline,
    again and again, until ``target`` decisions are sent. A lane starts its next request
    once the last one's decisions are answered, so the load follows what the system takes."""
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()  # wall clock to loop clock
    made: list[dict[str, Any]] = []
    decisions: list[Decision] = []
    planned = 0

    async def contend(request: dict[str, Any], verb: str, actor: str) -> None:
        deadline = datetime.fromisoformat(request["expires_at"]).timestamp()
        await asyncio.sleep(max(0.0, deadline + rng.uniform(-JITTER, JITTER) - offset
                                - loop.time()))
        decision = Decision(request["id"], verb, actor, time.time())
        decision.status, decision.body = await decide(request["id"], verb, actor)
        decisions.append(decision)

    async def lane() -> None:
        nonlocal planned
        while planned < target:
            requester = rng.choice(("bot", "bot2"))
            body: dict[str, Any] = {
                "action": f"restart worker-{len(made)}",
                "required_approvals": 2 if rng.random() < 0.2 else 1,
            }
            if incidents and rng.random() < 0.4:
                body["incident_id"] = incidents.pop()
            request = await create(requester, body)
            made.append(request)
            contenders = plan_decisions(rng, requester)
            planned += len(contenders)
            await asyncio.gather(*(contend(request, v, a) for v, a in contenders))

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return made, decisions


def check_answers(
    decisions: list[Decision], final: dict[str, asyncpg.Record], votes: dict[str, set[str]]
) -> Counter[str]:
    """Every answer against the end state; returns a tally of what happened."""
    tally: Counter[str] = Counter()
    winners: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        end = final[d.request_id]
        assert d.status < 500, f"a 5xx answered {d.verb}: {d.body}"
        if d.status == 200:
            tally[f"200 {d.verb}"] += 1
            said = d.body["status"]
            if said != "pending":  # this call ended the request
                winners[d.request_id].append(d)
                assert said == ENDING[d.verb], d.body
                assert _instant(d.body["decided_at"]) < _instant(d.body["expires_at"]), d.body
            if d.verb == "approve":  # a vote, counted or deciding, is never lost
                assert d.actor in votes[d.request_id], (d, dict(end))
            continue
        assert d.status == 409, (d.status, d.body)
        won = d.body["error"]["status"]
        tally[f"409 {won}"] += 1
        if won == "pending":  # the same approver again, before the quorum was reached
            assert d.verb == "approve" and d.actor in votes[d.request_id], d
        else:
            assert won == end["status"], (d, dict(end))
    for request_id, end in final.items():
        won = winners.get(request_id, [])
        if end["status"] == "expired":
            assert not won, (request_id, won)
            assert end["decided_by"] == "timeout"
        else:
            # Exactly one call ended it, and the database says what that call was told.
            assert len(won) == 1, (request_id, dict(end), won)
            assert end["status"] == ENDING[won[0].verb]
            assert end["decided_by"] == won[0].actor
            assert end["decided_at"] < end["expires_at"]
    return tally


def _instant(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


async def open_incidents(conn: asyncpg.Connection, n: int) -> list[str]:
    """Open incidents to attach requests to, in one statement: rule 4 comes into play."""
    rows = await conn.fetch(
        """INSERT INTO incidents (id, title, severity, service, labels, status, opened_by,
                                  opened_at)
           SELECT gen_random_uuid(), 'queue stuck ' || i, 'high', 'worker', '{}'::jsonb,
                  'open', 'bot', now()
           FROM generate_series(1, $1::int) AS i RETURNING id""", n)
    return [str(r["id"]) for r in rows]


async def check_and_report(
    conn: asyncpg.Connection, pg: str, requests: list[dict[str, Any]],
    decisions: list[Decision], elapsed: float, fleet: Fleet,
) -> None:
    async def settled() -> bool:  # the resolvers record every expiry within a backstop
        return await pending_count(conn, due_only=False) == 0

    await wait_for(settled, within=60, what="every request to end")
    rows = await conn.fetch(
        "SELECT id::text, status, decided_by, decided_at, expires_at FROM approval_requests")
    final = {r["id"]: r for r in rows}
    assert set(final) == {r["id"] for r in requests}
    votes: dict[str, set[str]] = defaultdict(set)
    for v in await conn.fetch("SELECT request_id::text, approver FROM approvals"):
        votes[v["request_id"]].add(v["approver"])
    tally = check_answers(decisions, final, votes)
    deadlines = {r["id"]: _instant(r["expires_at"]).timestamp() for r in requests}
    early = sum(1 for d in decisions if d.at < deadlines[d.request_id])
    print(f"{len(decisions)} decisions on {len(requests)} requests in {elapsed:.1f} s "
          f"({len(decisions) / elapsed:.0f}/s), {early} sent before the deadline; "
          f"{dict(sorted(tally.items()))}; ends {dict(Counter(r['status'] for r in rows))}")
    # Both sides of the deadline were reached: decisions won, and some came too late.
    assert sum(v for k, v in tally.items() if k.startswith("200")) > 0
    assert tally["409 expired"] > 0
    for proc in fleet.procs:
        assert proc.alive, proc.log_path.read_text()[-3000:]
    await assert_exactly_once(conn)
    await doctor_cli(pg)


# -- through the store ----------------------------------------------------------------


def store_front(db: Database) -> tuple[Create, Decide]:
    """The store's own calls, one transaction each, answered as the API answers."""

    async def create(requester: str, body: dict[str, Any]) -> dict[str, Any]:
        ttl = timedelta(seconds=random.uniform(1.0, 2.0))

        async def work(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
            row, _ = await store.create_request(conn, now, actor=requester, data=body,
                                                expires_at=now + ttl)
            return {"id": str(row["id"]), "expires_at": row["expires_at"].isoformat()}

        return await db.run(work)

    async def decide(request_id: str, verb: str, actor: str) -> tuple[int, Any]:
        rid = uuid.UUID(request_id)

        async def work(conn: AsyncConnection, now: datetime) -> Any:
            if verb == "approve":
                return await store.approve_request(conn, now, rid, actor=actor)
            if verb == "reject":
                return await store.reject_request(conn, now, rid, actor=actor)
            return await store.cancel_request(conn, now, rid, actor=actor)

        try:
            row = await db.run(work)
        except errors.SignoffError as exc:
            status = exc.status
            if isinstance(exc, errors.RequestNotPending) and status == "expired":
                # As the API does: a refusal at the deadline waits for a decision still
                # committing and records the expiry, so that it names the real winner.
                status = await db.run(lambda conn, now: store.settle_request(conn, now, rid))
            return exc.http_status, {"error": {"code": exc.code, "status": status}}
        return 200, dict(row)

    return create, decide


# Generous: on a shared machine the run can take twice its usual two minutes.
@pytest.mark.timeout(900 * max(1.0, SCALE))
async def test_ten_thousand_decisions_through_the_store(
    pg: str, conn: asyncpg.Connection, fleet: Fleet
) -> None:
    """Ten thousand decisions on 32 connections of one process, two resolvers racing."""
    rng = random.Random(SEED)
    print(f"SIGNOFF_RELIABILITY_SEED={SEED}")
    extra = {"SIGNOFF_RESOLVER_BACKSTOP": "1s"}
    resolvers = [await fleet.resolver(pg, **extra) for _ in range(2)]
    for proc in resolvers:
        await fleet.ready(proc)
    target = scaled(10_000)
    incidents = await open_incidents(conn, target // 10)
    db = Database.from_settings(Settings(database_url=pg, db_pool_size=32))
    try:
        create, decide = store_front(db)
        started = time.monotonic()
        requests, decisions = await run_lanes(
            rng, create, decide, incidents, target=target, lanes=120)
        elapsed = time.monotonic() - started
    finally:
        await db.dispose()
    await check_and_report(conn, pg, requests, decisions, elapsed, fleet)


# -- over HTTP ------------------------------------------------------------------------


# Generous: on a shared machine the run can take twice its usual two minutes.
@pytest.mark.timeout(900 * max(1.0, SCALE))
async def test_decisions_over_http_never_answer_5xx(
    pg: str, conn: asyncpg.Connection, fleet: Fleet
) -> None:
    """The same race over HTTP, through two ``signoff serve`` replicas at once."""
    rng = random.Random(SEED + 1)
    print(f"SIGNOFF_RELIABILITY_SEED={SEED}")
    extra = {"SIGNOFF_RESOLVER_BACKSTOP": "1s", "SIGNOFF_DB_POOL_SIZE": "8"}
    servers = [await fleet.server(pg, **extra) for _ in range(2)]
    for server in servers:
        await fleet.ready(server)
    tokens = await _make_tokens(pg, PRINCIPALS)
    target = scaled(1_500)
    incidents = await open_incidents(conn, target // 10)
    # Idle connections are dropped before the server's keep-alive timeout can race a reuse.
    limits = httpx.Limits(max_connections=32, keepalive_expiry=1.0)
    clients = [httpx.AsyncClient(base_url=f"{s.url}/api/v1", timeout=60, limits=limits)
               for s in servers]

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    async def create(requester: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "ttl_seconds": rng.choice((1, 2))}
        response = await rng.choice(clients).post(
            "/approvals", headers=auth(requester), json=body)
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return made

    async def decide(request_id: str, verb: str, actor: str) -> tuple[int, Any]:
        response = await rng.choice(clients).post(
            f"/approvals/{request_id}/{verb}", headers=auth(actor))
        return response.status_code, response.json()

    try:
        started = time.monotonic()
        requests, decisions = await run_lanes(
            rng, create, decide, incidents, target=target, lanes=40)
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            await client.aclose()
    await check_and_report(conn, pg, requests, decisions, elapsed, fleet)
