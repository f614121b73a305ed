"""Competing transitions on PostgreSQL: many connections at once, right at the deadline.

Every contender is its own transaction through ``Database.run``. Each has its own clock:
deciders just before the deadline, resolvers just after, so that every one of them could
win on its own and exactly one must. Then a few interleavings, forced step by step.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from signoff import db as db_module
from signoff import errors, store
from signoff.db import Database, create_engine
from signoff.settings import Settings
from signoff.tables import approvals, events, incidents, requests
from tests.integration.store_support import (
    get_incident,
    get_request,
    knowledge_of,
    request_events,
    select,
    terminal_events,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]

DEADLINE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BEFORE = DEADLINE - timedelta(milliseconds=1)
AFTER = DEADLINE + timedelta(milliseconds=1)
POOL = 24  # several sessions share the server; 24 at once is plenty to collide


def at(instant: datetime) -> Callable[[], datetime]:
    return lambda: instant


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=db_url, db_pool_size=POOL))
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
def no_deadlocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Database.run retries a deadlock victim silently; here one is a failure."""
    retried: list[BaseException] = []
    real = db_module.is_retryable

    def spy(exc: BaseException) -> bool:
        if real(exc):
            retried.append(exc)
        return real(exc)

    monkeypatch.setattr(db_module, "is_retryable", spy)
    yield
    assert retried == [], f"transactions had to be retried: {retried}"


def clocked(engine: AsyncEngine, instant: datetime) -> Database:
    return Database(engine, clock=at(instant))


@dataclass
class Attempt:
    kind: str
    actor: str
    request_id: uuid.UUID
    now: datetime | None = None
    row: Any = None
    error: errors.SignoffError | None = None


async def attempt(db: Database, kind: str, request_id: uuid.UUID, actor: str) -> Attempt:
    result = Attempt(kind, actor, request_id)

    async def work(conn: AsyncConnection, now: datetime) -> Any:
        result.now = now
        if kind == "approve":
            return await store.approve_request(conn, now, request_id, actor=actor)
        if kind == "reject":
            return await store.reject_request(conn, now, request_id, actor=actor)
        assert kind == "cancel"
        return await store.cancel_request(conn, now, request_id, actor=actor)

    try:
        result.row = await db.run(work)
    except errors.SignoffError as exc:
        result.error = exc
    return result


async def drain(db: Database, limit: int) -> list[uuid.UUID]:
    """One resolver: batches until nothing is left for it."""
    expired: list[uuid.UUID] = []
    while True:
        batch = await db.run(lambda c, n: store.expire_due_requests(c, n, limit=limit))
        if not batch.count:
            return expired
        expired.extend(r["id"] for r in batch.expired)


async def together(jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every job at the same moment."""
    gate = asyncio.Event()

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        await gate.wait()
        return await job()

    tasks = [asyncio.create_task(run(job)) for job in jobs]
    await asyncio.sleep(0)
    gate.set()
    return await asyncio.gather(*tasks)


async def create_requests(
    engine: AsyncEngine, n: int, *, with_incidents: bool = True, required: int = 1
) -> list[uuid.UUID]:
    db = clocked(engine, DEADLINE - timedelta(minutes=5))

    async def work(conn: AsyncConnection, now: datetime) -> list[uuid.UUID]:
        ids = []
        for i in range(n):
            incident_id = None
            if with_incidents:
                inc, _ = await store.create_incident(
                    conn, now, actor="bot", data={"title": f"i{i}", "severity": "high"}
                )
                incident_id = inc["id"]
            row, _ = await store.create_request(
                conn, now, actor="bot", expires_at=DEADLINE,
                data={"action": f"a{i}", "incident_id": incident_id,
                      "required_approvals": required},
            )
            ids.append(row["id"])
        return ids

    return await db.run(work)


WINNING_STATUS = {"approve": "approved", "reject": "rejected", "cancel": "cancelled"}


async def check_one_winner(
    db: Database, request_id: uuid.UUID, attempts: list[Attempt], expired_by: Counter[uuid.UUID]
) -> str:
    """Exactly one transition won; every loser was told who; the row and the trail agree."""
    row = await get_request(db, request_id)
    mine = [a for a in attempts if a.request_id == request_id]
    winners = [a for a in mine if a.error is None]
    assert expired_by[request_id] <= 1, "two resolvers expired the same request"
    assert len(winners) + expired_by[request_id] == 1, (row["status"], winners)
    if winners:
        [won] = winners
        assert row["status"] == WINNING_STATUS[won.kind]
        assert row["decided_by"] == won.actor
        assert row["decided_at"] == won.now < row["expires_at"]
    else:
        assert row["status"] == "expired"
        assert row["decided_by"] == "timeout"
        assert row["decided_at"] == AFTER
    for lost in mine:
        if lost.error is not None:
            assert isinstance(lost.error, errors.RequestNotPending), lost.error
            assert lost.error.status == row["status"], (lost.kind, lost.error.status, row)
    [event] = terminal_events(await request_events(db, request_id))
    assert (event["to_status"], event["actor"], event["at"]) == (
        row["status"], row["decided_by"], row["decided_at"]
    )
    voters = await select(db, sa.select(approvals.c.approver)
                          .where(approvals.c.request_id == request_id))
    expected = [row["decided_by"]] if row["status"] == "approved" else []
    assert [v["approver"] for v in voters] == expected
    if row["incident_id"] is not None:
        # Each request here is its incident's only one: only its expiry closes it (rule 4).
        inc = await get_incident(db, row["incident_id"])
        if row["status"] == "expired":
            assert (inc["status"], inc["resolution_type"]) == ("resolved", "timeout")
            assert len(await knowledge_of(db, row["incident_id"])) == 1
        else:
            assert inc["status"] == "open"
    return str(row["status"])


CONTENDERS = {
    "approve_vs_expire": ["approve:alice", "expire", "approve:bob", "expire", "approve:carol"],
    "reject_vs_approve": ["approve:alice", "reject:bob", "approve:carol", "reject:dave"],
    "cancel_vs_approve": ["approve:alice", "cancel:bot", "approve:carol", "cancel:bot"],
    "everything": ["approve:alice", "reject:bob", "expire", "cancel:bot", "approve:carol"],
}


@pytest.mark.parametrize("scenario", list(CONTENDERS))
async def test_exactly_one_winner_per_request(engine: AsyncEngine, scenario: str) -> None:
    seen: Counter[str] = Counter()
    # Until both sides of the race have won somewhere (usually the first round).
    for round_ in range(4):
        seen += await one_round(engine, scenario, seed=round_)
        if len(seen) > 1:
            break


async def one_round(engine: AsyncEngine, scenario: str, seed: int) -> Counter[str]:
    ids = await create_requests(engine, 12)
    deciders = clocked(engine, BEFORE)
    resolver = clocked(engine, AFTER)
    jobs: list[Callable[[], Awaitable[Any]]] = []
    for rid in ids:
        for contender in CONTENDERS[scenario]:
            if contender == "expire":  # a resolver batch that happens to hold just this one
                jobs.append(lambda r=rid: resolver.run(lambda c, n: expire_ids(c, n, r)))
            else:
                kind, actor = contender.split(":")
                jobs.append(lambda d=deciders, k=kind, r=rid, a=actor: attempt(d, k, r, a))
    if "expire" in CONTENDERS[scenario]:
        jobs.extend([lambda: drain(resolver, 3)] * 2)  # and whole batches, sharing the rest
    # Who reaches the database first mostly wins: mix the order, the same way every run.
    random.Random(seed).shuffle(jobs)

    results = await together(jobs)
    attempts = [r for r in results if isinstance(r, Attempt)]
    expired_by = Counter(rid for r in results if isinstance(r, list) for rid in r)
    outcomes = Counter([await check_one_winner(resolver, rid, attempts, expired_by)
                        for rid in ids])
    assert sum(outcomes.values()) == len(ids)
    assert outcomes["pending"] == 0
    return outcomes


async def expire_ids(conn: AsyncConnection, now: datetime, request_id: uuid.UUID) -> list[Any]:
    batch = await store.expire_due_requests(conn, now, limit=1, only=[request_id])
    return [r["id"] for r in batch.expired]


async def test_quorum_under_contention(engine: AsyncEngine) -> None:
    ids = await create_requests(engine, 6, required=3)
    db = clocked(engine, BEFORE)
    people = [f"approver{i}" for i in range(7)]
    results: list[Attempt] = await together([
        lambda r=rid, p=person: attempt(db, "approve", r, p) for rid in ids for person in people
    ])
    for rid in ids:
        mine = [a for a in results if a.request_id == rid]
        won = [a for a in mine if a.error is None]
        assert len(won) == 3
        row = await get_request(db, rid)
        assert (row["status"], row["approval_count"]) == ("approved", 3)
        finals = [a for a in won if a.row["status"] == "approved"]
        assert len(finals) == 1 and row["decided_by"] == finals[0].actor
        for lost in mine:
            if lost.error is not None:
                assert isinstance(lost.error, errors.RequestNotPending)
                assert lost.error.status == "approved"
        voters = await select(db, sa.select(approvals.c.approver)
                              .where(approvals.c.request_id == rid))
        assert sorted(v["approver"] for v in voters) == sorted(a.actor for a in won)
        kinds = Counter(e["kind"] for e in await request_events(db, rid))
        assert kinds == {"request_created": 1, "request_approval_added": 2,
                         "request_approved": 1}


async def test_the_same_approver_clicking_many_times_at_once(engine: AsyncEngine) -> None:
    ids = await create_requests(engine, 4, required=2)
    db = clocked(engine, BEFORE)
    results: list[Attempt] = await together([
        lambda r=rid: attempt(db, "approve", r, "alice") for rid in ids for _ in range(8)
    ])
    for rid in ids:
        mine = [a for a in results if a.request_id == rid]
        assert sum(a.error is None for a in mine) == 1
        for lost in mine:
            if lost.error is not None:
                assert isinstance(lost.error, errors.AlreadyApproved)
                assert lost.error.status == "pending"
        row = await get_request(db, rid)
        assert (row["status"], row["approval_count"]) == ("pending", 1)
        voters = await select(db, sa.select(approvals).where(approvals.c.request_id == rid))
        assert len(voters) == 1


async def test_on_the_database_clock_around_a_short_deadline(engine: AsyncEngine) -> None:
    """No injected clock: PostgreSQL's now(). Deciders arrive just before and just after."""
    db = Database(engine)

    async def create(conn: AsyncConnection, now: datetime) -> list[dict[str, Any]]:
        rows = []
        for i in range(10):
            row, _ = await store.create_request(
                conn, now, actor="bot", data={"action": f"a{i}"},
                expires_at=now + timedelta(milliseconds=400),
            )
            rows.append(dict(row))
        return rows

    rows = await db.run(create)
    deadline = rows[0]["expires_at"]
    skew = datetime.now(UTC) - rows[0]["created_at"]

    async def later(offset_ms: float, job: Callable[[], Awaitable[Any]]) -> Any:
        target = deadline + skew + timedelta(milliseconds=offset_ms)
        await asyncio.sleep(max(0.0, (target - datetime.now(UTC)).total_seconds()))
        return await job()

    jobs = []
    for n, row in enumerate(rows):
        for k, actor in enumerate(["alice", "bob", "carol"]):
            offset = -30 + 10 * ((n + k) % 7)  # from 30 ms before to 30 ms after
            jobs.append(later(offset, lambda r=row["id"], a=actor: attempt(db, "approve", r, a)))
    jobs.extend(later(o, lambda: drain(db, 2)) for o in (-5, 0, 5, 15, 40))
    results = await asyncio.gather(*jobs)
    await drain(db, 100)  # whatever no contender won expires now

    attempts = [r for r in results if isinstance(r, Attempt)]
    for row in rows:
        final = await get_request(db, row["id"])
        assert final["status"] in {"approved", "expired"}
        won = [a for a in attempts if a.request_id == row["id"] and a.error is None]
        if final["status"] == "approved":
            [winner] = won
            assert final["decided_at"] == winner.now < final["expires_at"]
        else:
            assert won == []
            assert final["decided_at"] >= final["expires_at"]
        for lost in (a for a in attempts if a.request_id == row["id"] and a.error):
            assert isinstance(lost.error, errors.RequestNotPending)
            assert lost.now is not None
            # A loser is told who won, or that the deadline had passed at its own instant.
            assert lost.error.status == final["status"] or (
                lost.error.status == "expired" and lost.now >= final["expires_at"]
            )
        assert len(terminal_events(await request_events(db, row["id"]))) == 1


# -- forced interleavings ------------------------------------------------------------------


async def wait_until_blocked(engine: AsyncEngine, count: int = 1) -> None:
    """Until ``count`` other sessions of this database wait on a lock."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    for _ in range(500):
        async with engine.connect() as conn:
            if (await conn.execute(query)).scalar_one() >= count:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("nobody ever waited on the lock")


class Rollback(Exception):
    pass


@pytest.mark.parametrize("ending", ["commit", "rollback"])
async def test_resolver_skips_a_row_held_by_an_uncommitted_approval(
    engine: AsyncEngine, ending: str
) -> None:
    [rid] = await create_requests(engine, 1)
    resolver = clocked(engine, AFTER)
    approver = clocked(engine, BEFORE)
    try:
        async with approver.begin() as conn:
            row = await store.approve_request(conn, BEFORE, rid, actor="alice")
            assert row["status"] == "approved"
            # The resolver neither waits for the row nor touches it.
            batch = await asyncio.wait_for(
                resolver.run(lambda c, n: store.expire_due_requests(c, n, limit=100)), 10
            )
            assert batch.count == 0
            assert (await get_request(resolver, rid))["status"] == "pending"
            if ending == "rollback":
                raise Rollback
    except Rollback:
        pass
    expired = await drain(resolver, 100)
    final = await get_request(resolver, rid)
    inc = await get_incident(resolver, final["incident_id"])
    if ending == "commit":
        assert expired == []
        assert (final["status"], final["decided_by"], final["decided_at"]) == (
            "approved", "alice", BEFORE
        )
        assert inc["status"] == "open"
    else:
        assert expired == [rid]
        assert (final["status"], final["decided_at"]) == ("expired", AFTER)
        assert (inc["status"], inc["resolution_type"]) == ("resolved", "timeout")
    assert len(terminal_events(await request_events(resolver, rid))) == 1


async def test_an_approval_waits_for_a_resolver_batch_and_is_told_expired(
    engine: AsyncEngine,
) -> None:
    [rid] = await create_requests(engine, 1)
    approver = clocked(engine, BEFORE)
    async with clocked(engine, AFTER).begin() as conn:
        batch = await store.expire_due_requests(conn, AFTER, limit=100)
        assert [r["id"] for r in batch.expired] == [rid]
        pending = asyncio.create_task(attempt(approver, "approve", rid, "alice"))
        await wait_until_blocked(engine)
        assert not pending.done()
    lost = await asyncio.wait_for(pending, 10)
    assert isinstance(lost.error, errors.RequestNotPending)
    assert lost.error.status == "expired"
    final = await get_request(approver, rid)
    assert (final["status"], final["decided_at"]) == ("expired", AFTER)
    # Its vote went in before it waited for the row; the refusal took it back.
    assert await select(approver, sa.select(approvals).where(approvals.c.request_id == rid)) == []


async def test_an_uncommitted_approval_of_a_sibling_keeps_the_incident_open(
    engine: AsyncEngine,
) -> None:
    """The resolver expires A while B (same incident) is being approved: rule 4 holds."""
    db = clocked(engine, DEADLINE - timedelta(minutes=5))
    inc = (await db.run(lambda c, n: store.create_incident(
        c, n, actor="bot", data={"title": "t", "severity": "low"})))[0]
    a, b = [
        (await db.run(lambda c, n, ttl=ttl: store.create_request(
            c, n, actor="bot", data={"action": "x", "incident_id": inc["id"]},
            expires_at=DEADLINE + timedelta(minutes=ttl))))[0]["id"]
        for ttl in (0, 10)
    ]
    resolver = clocked(engine, AFTER)
    async with clocked(engine, BEFORE).begin() as conn:
        await store.approve_request(conn, BEFORE, b, actor="alice")
        batch = await asyncio.wait_for(
            resolver.run(lambda c, n: store.expire_due_requests(c, n, limit=100)), 10
        )
        assert [r["id"] for r in batch.expired] == [a]
        assert batch.incidents_resolved == 0
    assert (await get_incident(resolver, inc["id"]))["status"] == "open"
    assert (await get_request(resolver, b))["status"] == "approved"


async def _incident_with_a_request(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    db = clocked(engine, BEFORE)

    async def work(conn: AsyncConnection, now: datetime) -> tuple[uuid.UUID, uuid.UUID]:
        inc, _ = await store.create_incident(conn, now, actor="bot",
                                             data={"title": "t", "severity": "low"})
        req, _ = await store.create_request(
            conn, now, actor="bot", data={"action": "first", "incident_id": inc["id"]},
            expires_at=now + timedelta(minutes=10),
        )
        return inc["id"], req["id"]

    return await db.run(work)


async def no_pending_request_on_a_resolved_incident(db: Database) -> None:
    stuck = await select(db, sa.select(requests.c.id, requests.c.incident_id).join(
        incidents, incidents.c.id == requests.c.incident_id
    ).where(incidents.c.status == "resolved", requests.c.status == "pending"))
    assert stuck == []


async def test_a_request_created_while_its_incident_is_being_resolved(
    engine: AsyncEngine,
) -> None:
    """create_request holds the incident; resolve waits for it and must then cancel the new
    request too, or a pending request is left on a resolved incident."""
    incident_id, first = await _incident_with_a_request(engine)
    db = clocked(engine, BEFORE)
    async with db.begin() as conn:
        created, _ = await store.create_request(
            conn, BEFORE, actor="bot", data={"action": "second", "incident_id": incident_id},
            expires_at=BEFORE + timedelta(minutes=10),
        )
        resolving = asyncio.create_task(db.run(
            lambda c, n: store.resolve_incident(c, n, incident_id, actor="alice")
        ))
        await wait_until_blocked(engine)
    await asyncio.wait_for(resolving, 10)
    assert (await get_incident(db, incident_id))["status"] == "resolved"
    for rid in (first, created["id"]):
        row = await get_request(db, rid)
        assert (row["status"], row["decided_by"]) == ("cancelled", "incident_resolved")
    await no_pending_request_on_a_resolved_incident(db)
    [entry] = await knowledge_of(db, incident_id)
    assert sorted(a["action"] for a in entry["actions"]) == ["first", "second"]


async def test_a_request_for_an_incident_being_resolved_waits_and_is_refused(
    engine: AsyncEngine,
) -> None:
    incident_id, _ = await _incident_with_a_request(engine)
    db = clocked(engine, BEFORE)
    async with db.begin() as conn:
        await store.resolve_incident(conn, BEFORE, incident_id, actor="alice")
        creating = asyncio.create_task(db.run(lambda c, n: store.create_request(
            c, n, actor="bot", data={"action": "late", "incident_id": incident_id},
            expires_at=n + timedelta(minutes=10),
        )))
        await wait_until_blocked(engine)
    with pytest.raises(errors.IncidentResolved):
        await asyncio.wait_for(creating, 10)
    await no_pending_request_on_a_resolved_incident(db)


@pytest.mark.parametrize("closer", ["resolve", "outcome", "expire"])
async def test_creating_requests_while_the_incident_closes(
    engine: AsyncEngine, closer: str
) -> None:
    """Many creates race one closing transition: each create either lands before the close
    (and is ended by it, or keeps the incident open) or is refused."""
    for _round in range(5):
        incident_id, first = await _incident_with_a_request(engine)
        db = clocked(engine, BEFORE)
        if closer == "outcome":
            await db.run(lambda c, n, r=first: store.approve_request(c, n, r, actor="alice"))

        async def create(db: Database = db, incident_id: uuid.UUID = incident_id) -> Any:
            try:
                return await db.run(lambda c, n: store.create_request(
                    c, n, actor="bot", data={"action": "more", "incident_id": incident_id},
                    expires_at=n + timedelta(minutes=10),
                ))
            except errors.IncidentResolved as exc:
                return exc

        async def close(
            db: Database = db, first: uuid.UUID = first, incident_id: uuid.UUID = incident_id
        ) -> Any:
            if closer == "resolve":
                return await db.run(lambda c, n: store.resolve_incident(
                    c, n, incident_id, actor="alice"))
            if closer == "outcome":
                return await db.run(lambda c, n: store.report_outcome(
                    c, n, first, actor="bot", succeeded=True))
            late = clocked(engine, BEFORE + timedelta(minutes=11))
            return await late.run(lambda c, n: store.expire_due_requests(
                c, n, limit=100, only=[first]))

        results = await together([create] * 10 + [close])
        await no_pending_request_on_a_resolved_incident(db)
        inc = await get_incident(db, incident_id)
        made = [r[0] for r in results[:10] if isinstance(r, tuple)]
        refused = [r for r in results[:10] if isinstance(r, errors.IncidentResolved)]
        assert len(made) + len(refused) == 10
        if closer == "expire":
            # Rule 4: a request created in time keeps the incident open.
            assert inc["status"] == ("open" if made else "resolved")
            assert refused == [] or inc["status"] == "resolved"
        else:
            assert inc["status"] == "resolved"
        entries = await knowledge_of(db, incident_id)
        assert len(entries) == (1 if inc["status"] == "resolved" else 0)


async def test_the_same_idempotency_key_at_once(engine: AsyncEngine) -> None:
    db = clocked(engine, BEFORE)

    async def create(digest: str) -> Any:
        try:
            return await db.run(lambda c, n: store.create_request(
                c, n, actor="bot", data={"action": "x"}, expires_at=DEADLINE,
                idempotency_key="key-1", digest=digest,
            ))
        except errors.IdempotencyMismatch as exc:
            return exc

    results = await together([lambda: create("same")] * 10 + [lambda: create("other")] * 4)
    made = [r for r in results if isinstance(r, tuple)]
    assert sum(created for _, created in made) == 1
    [row] = await select(db, sa.select(requests))
    assert {r["id"] for r, _ in made} == {row["id"]}
    same, other = results[:10], results[10:]
    won, lost = (same, other) if row["idempotency_digest"] == "same" else (other, same)
    assert all(isinstance(r, tuple) and r[0]["id"] == row["id"] for r in won)
    assert all(isinstance(r, errors.IdempotencyMismatch) for r in lost)
    assert len(await request_events(db, row["id"])) == 1


async def test_resolving_by_hand_while_the_resolver_expires_its_request(
    engine: AsyncEngine,
) -> None:
    """Each incident is resolved exactly once: by the resolver (timeout) or by hand."""
    ids = await create_requests(engine, 10)
    people = clocked(engine, AFTER)
    rows = [await get_request(people, rid) for rid in ids]

    async def resolve(incident_id: uuid.UUID, actor: str) -> Any:
        try:
            return await people.run(lambda c, n: store.resolve_incident(
                c, n, incident_id, actor=actor))
        except errors.IncidentResolved as exc:
            return exc

    jobs: list[Callable[[], Awaitable[Any]]] = [
        lambda i=row["incident_id"], a=actor: resolve(i, a)
        for row in rows for actor in ("alice", "bob")
    ]
    jobs.extend([lambda: drain(people, 2)] * 3)
    random.Random(3).shuffle(jobs)
    await together(jobs)

    for row in rows:
        inc = await get_incident(people, row["incident_id"])
        req = await get_request(people, row["id"])
        assert inc["status"] == "resolved"
        assert (req["status"], req["decided_by"]) == ("expired", "timeout")
        assert inc["resolution_type"] in {"timeout", "manual"}
        assert inc["resolved_by"] in {"timeout", "alice", "bob"}
        assert len(await knowledge_of(people, row["incident_id"])) == 1
        assert len(terminal_events(await request_events(people, row["id"]))) == 1
        resolved = await select(people, sa.select(events.c.id).where(
            events.c.incident_id == row["incident_id"], events.c.kind == "incident_resolved"))
        assert len(resolved) == 1
