"""Requests at the store level: deadlines, compare-and-set, quorum, who may decide (rules 1-3).

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from signoff import errors, store
from signoff.db import Database
from signoff.tables import requests
from tests.integration.store_support import (
    Clock,
    approve,
    approvers_of,
    cancel,
    expire,
    get_request,
    new_incident,
    new_request,
    outcome,
    reject,
    request_events,
    select,
    snapshot,
)

Decide = Callable[[Database, uuid.UUID], Awaitable[object]]
TICK = timedelta(microseconds=1)


async def _approve(db: Database, rid: uuid.UUID) -> object:
    return await approve(db, rid, "alice")


async def _reject(db: Database, rid: uuid.UUID) -> object:
    return await reject(db, rid, "alice")


async def _cancel(db: Database, rid: uuid.UUID) -> object:
    return await cancel(db, rid, "bot")


async def _expire(db: Database, rid: uuid.UUID) -> object:
    batch = await expire(db)
    return batch.expired


DECISIONS: dict[str, tuple[Decide, str]] = {
    "approve": (_approve, "approved"),
    "reject": (_reject, "rejected"),
    "cancel": (_cancel, "cancelled"),
}


# -- rule 1: due at expires_at <= now -------------------------------------------------------


@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_no_decision_at_the_deadline_instant(
    clocked_db: Database, clock: Clock, decision: str
) -> None:
    req = await new_request(clocked_db, ttl=10)
    clock.advance(10)  # now == expires_at exactly; the resolver has not run
    before = await snapshot(clocked_db)
    decide, _ = DECISIONS[decision]
    with pytest.raises(errors.RequestNotPending) as caught:
        await decide(clocked_db, req["id"])
    assert caught.value.status == "expired"
    assert await snapshot(clocked_db) == before
    assert (await get_request(clocked_db, req["id"]))["status"] == "pending"


@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_decision_one_microsecond_before_the_deadline(
    clocked_db: Database, clock: Clock, decision: str
) -> None:
    req = await new_request(clocked_db, ttl=10)
    clock.now = req["expires_at"] - TICK
    decide, status = DECISIONS[decision]
    await decide(clocked_db, req["id"])
    stored = await get_request(clocked_db, req["id"])
    assert stored["status"] == status
    assert stored["decided_at"] == clock.now
    assert stored["decided_at"] < stored["expires_at"]


async def test_expiry_happens_at_the_deadline_and_not_a_microsecond_before(
    clocked_db: Database, clock: Clock
) -> None:
    req = await new_request(clocked_db, ttl=10)
    clock.now = req["expires_at"] - TICK
    assert (await expire(clocked_db)).count == 0
    clock.now = req["expires_at"]
    batch = await expire(clocked_db)
    assert [r["id"] for r in batch.expired] == [req["id"]]
    stored = await get_request(clocked_db, req["id"])
    assert stored["status"] == "expired"
    assert stored["disposition"] == "timeout_ignored"
    assert stored["decided_by"] == "timeout"
    assert stored["decided_at"] == req["expires_at"]


async def test_expiry_records_when_it_happened(clocked_db: Database, clock: Clock) -> None:
    req = await new_request(clocked_db, ttl=10)
    clock.advance(12.5)
    await expire(clocked_db)
    stored = await get_request(clocked_db, req["id"])
    assert stored["decided_at"] == clock.now
    [event] = [e for e in await request_events(clocked_db, req["id"])
               if e["kind"] == "request_expired"]
    assert event["detail"] == {"lateness_seconds": 2.5}


async def test_expiry_takes_the_oldest_deadlines_first_and_respects_the_limit(
    clocked_db: Database, clock: Clock
) -> None:
    late = await new_request(clocked_db, ttl=30)
    early = await new_request(clocked_db, ttl=10)
    middle = await new_request(clocked_db, ttl=20)
    future = await new_request(clocked_db, ttl=100)
    clock.advance(30)
    first = await expire(clocked_db, limit=2)
    assert [r["id"] for r in first.expired] in (
        [early["id"], middle["id"]], [middle["id"], early["id"]]
    )
    second = await expire(clocked_db, limit=2)
    assert [r["id"] for r in second.expired] == [late["id"]]
    assert (await expire(clocked_db, limit=2)).count == 0
    assert (await get_request(clocked_db, future["id"]))["status"] == "pending"


# -- rule 2: compare-and-set -------------------------------------------------------------


@pytest.mark.parametrize("first", [*DECISIONS, "expire"])
@pytest.mark.parametrize("second", list(DECISIONS))
async def test_second_transition_gets_the_winning_status(
    clocked_db: Database, clock: Clock, first: str, second: str
) -> None:
    req = await new_request(clocked_db, ttl=10)
    if first == "expire":
        clock.advance(10)
        await expire(clocked_db)
        winner = "expired"
    else:
        decide, winner = DECISIONS[first]
        await decide(clocked_db, req["id"])
    won = await get_request(clocked_db, req["id"])
    assert won["status"] == winner
    before = await snapshot(clocked_db)
    second_decide, _ = DECISIONS[second]
    with pytest.raises(errors.RequestNotPending) as caught:
        await second_decide(clocked_db, req["id"])
    assert caught.value.status == winner
    assert await snapshot(clocked_db) == before


@pytest.mark.parametrize("first", list(DECISIONS))
async def test_expiry_leaves_a_decided_request_alone(
    clocked_db: Database, clock: Clock, first: str
) -> None:
    req = await new_request(clocked_db, ttl=10)
    decide, status = DECISIONS[first]
    await decide(clocked_db, req["id"])
    decided = await get_request(clocked_db, req["id"])
    clock.advance(3600)
    assert (await expire(clocked_db)).count == 0
    assert await get_request(clocked_db, req["id"]) == decided
    assert decided["status"] == status


async def test_cancel_after_the_deadline_is_refused_as_expired(
    clocked_db: Database, clock: Clock
) -> None:
    req = await new_request(clocked_db, ttl=10)
    clock.advance(11)
    with pytest.raises(errors.RequestNotPending) as caught:
        await cancel(clocked_db, req["id"], "bot", admin=True)
    assert caught.value.status == "expired"


async def test_unknown_request(clocked_db: Database) -> None:
    with pytest.raises(errors.RequestNotFound):
        await approve(clocked_db, uuid.uuid4())
    with pytest.raises(errors.RequestNotFound):
        await outcome(clocked_db, uuid.uuid4())


# -- rule 3: quorum, distinct approvers, one reject, no self-decision ---------------------------


async def test_quorum_needs_distinct_approvers(clocked_db: Database, clock: Clock) -> None:
    req = await new_request(clocked_db, required=2)
    clock.advance(1)
    first = await approve(clocked_db, req["id"], "alice")
    assert first["status"] == "pending"
    assert first["approval_count"] == 1
    assert first["decided_at"] is None and first["decided_by"] is None
    assert first["disposition"] is None

    clock.advance(1)
    before = await snapshot(clocked_db)
    with pytest.raises(errors.AlreadyApproved) as caught:
        await approve(clocked_db, req["id"], "alice")
    assert caught.value.status == "pending"
    assert await snapshot(clocked_db) == before

    clock.advance(1)
    done = await approve(clocked_db, req["id"], "bob")
    assert done["status"] == "approved"
    assert done["disposition"] == "human_approved"
    assert done["approval_count"] == 2
    assert done["decided_by"] == "bob"
    assert done["decided_at"] == clock.now
    assert await approvers_of(clocked_db, req["id"]) == ["alice", "bob"]
    kinds = [e["kind"] for e in await request_events(clocked_db, req["id"])]
    assert kinds == ["request_created", "request_approval_added", "request_approved"]


async def test_same_approver_twice_on_a_single_approval_request(clocked_db: Database) -> None:
    req = await new_request(clocked_db, required=1)
    await approve(clocked_db, req["id"], "alice")
    with pytest.raises(errors.RequestNotPending) as caught:
        await approve(clocked_db, req["id"], "alice")
    assert caught.value.status == "approved"


async def test_the_repeated_approval_is_refused_even_at_the_quorum(
    clocked_db: Database,
) -> None:
    """With 1 of 2 approvals, the same approver again must not complete the quorum."""
    req = await new_request(clocked_db, required=2)
    await approve(clocked_db, req["id"], "alice")
    with pytest.raises(errors.AlreadyApproved):
        await approve(clocked_db, req["id"], "alice")
    stored = await get_request(clocked_db, req["id"])
    assert (stored["status"], stored["approval_count"]) == ("pending", 1)


async def test_already_approved_changes_nothing_inside_a_larger_transaction(
    clocked_db: Database,
) -> None:
    """The store never commits, but its refusals must not leave half a write behind."""
    req = await new_request(clocked_db, required=2)
    await approve(clocked_db, req["id"], "alice")

    async def work(conn: object, now: datetime) -> dict[str, object]:
        with pytest.raises(errors.AlreadyApproved):
            await store.approve_request(conn, now, req["id"], actor="alice")  # type: ignore[arg-type]
        return dict(await store.get_request(conn, req["id"]))  # type: ignore[arg-type]

    seen = await clocked_db.run(work)
    assert (seen["status"], seen["approval_count"]) == ("pending", 1)
    stored = await get_request(clocked_db, req["id"])
    assert (stored["status"], stored["approval_count"]) == ("pending", 1)


async def test_one_reject_ends_it_whatever_approvals_it_had(
    clocked_db: Database, clock: Clock
) -> None:
    req = await new_request(clocked_db, required=3)
    await approve(clocked_db, req["id"], "alice")
    await approve(clocked_db, req["id"], "bob")
    clock.advance(2)
    row = await db_reject(clocked_db, req["id"], "carol", "too risky")
    assert row["status"] == "rejected"
    assert row["disposition"] == "human_rejected"
    assert row["decided_by"] == "carol"
    assert row["decision_comment"] == "too risky"
    assert row["decided_at"] == clock.now
    with pytest.raises(errors.RequestNotPending) as caught:
        await approve(clocked_db, req["id"], "dave")
    assert caught.value.status == "rejected"


async def db_reject(db: Database, rid: uuid.UUID, actor: str, comment: str) -> dict[str, object]:
    row = await db.run(
        lambda c, n: store.reject_request(c, n, rid, actor=actor, comment=comment)
    )
    return dict(row)


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("required", [1, 2])
async def test_the_requester_may_not_decide_its_own_request(
    clocked_db: Database, decision: str, required: int
) -> None:
    req = await new_request(clocked_db, actor="bot", required=required)
    before = await snapshot(clocked_db)
    with pytest.raises(errors.Forbidden):
        if decision == "approve":
            await approve(clocked_db, req["id"], "bot")
        else:
            await reject(clocked_db, req["id"], "bot")
    assert await snapshot(clocked_db) == before


async def test_own_request_is_forbidden_even_when_no_longer_pending(
    clocked_db: Database,
) -> None:
    """Who before what state: 403 comes before 409."""
    req = await new_request(clocked_db, actor="bot")
    await approve(clocked_db, req["id"], "alice")
    with pytest.raises(errors.Forbidden):
        await reject(clocked_db, req["id"], "bot")


async def test_only_the_requester_or_an_admin_may_cancel(clocked_db: Database) -> None:
    req = await new_request(clocked_db, actor="bot")
    with pytest.raises(errors.Forbidden):
        await cancel(clocked_db, req["id"], "mallory")
    assert (await get_request(clocked_db, req["id"]))["status"] == "pending"
    row = await cancel(clocked_db, req["id"], "root", admin=True)
    assert row["status"] == "cancelled"
    assert row["decided_by"] == "root"
    assert row["disposition"] == "cancelled"


# -- outcomes ------------------------------------------------------------------------------


async def test_outcome_only_on_an_approved_request_and_only_once(
    clocked_db: Database, clock: Clock
) -> None:
    req = await new_request(clocked_db, ttl=10)
    with pytest.raises(errors.RequestNotPending) as caught:
        await outcome(clocked_db, req["id"])
    assert caught.value.status == "pending"
    clock.advance(10)
    with pytest.raises(errors.RequestNotPending) as caught:
        await outcome(clocked_db, req["id"])
    assert caught.value.status == "expired"

    other = await new_request(clocked_db, ttl=10)
    await approve(clocked_db, other["id"])
    with pytest.raises(errors.Forbidden):
        await outcome(clocked_db, other["id"], actor="mallory")
    row = await outcome(clocked_db, other["id"], succeeded=False)
    assert row["outcome_succeeded"] is False
    assert row["outcome_at"] == clock.now
    assert row["status"] == "approved"
    with pytest.raises(errors.OutcomeAlreadyReported) as caught2:
        await outcome(clocked_db, other["id"], succeeded=True)
    assert caught2.value.status == "approved"
    assert (await get_request(clocked_db, other["id"]))["outcome_succeeded"] is False


# -- idempotency ---------------------------------------------------------------------------


async def _create_with_key(
    db: Database, key: str, digest: str, actor: str = "bot"
) -> tuple[dict[str, object], bool]:
    async def work(conn: object, now: datetime) -> tuple[dict[str, object], bool]:
        row, created = await store.create_request(
            conn, now, actor=actor, data={"action": "restart web"},  # type: ignore[arg-type]
            expires_at=now + timedelta(minutes=5), idempotency_key=key, digest=digest,
        )
        return dict(row), created

    return await db.run(work)


async def test_idempotency_key(clocked_db: Database, clock: Clock) -> None:
    first, created = await _create_with_key(clocked_db, "k1", "d1")
    assert created
    clock.advance(5)
    again, created_again = await _create_with_key(clocked_db, "k1", "d1")
    assert not created_again
    assert again == first
    with pytest.raises(errors.IdempotencyMismatch):
        await _create_with_key(clocked_db, "k1", "d2")
    # The key belongs to its requester: another one may use the same key.
    theirs, created_theirs = await _create_with_key(clocked_db, "k1", "d2", actor="other")
    assert created_theirs and theirs["id"] != first["id"]
    rows = await select(clocked_db, sa.select(requests.c.id))
    assert len(rows) == 2
    assert len(await request_events(clocked_db, first["id"])) == 1  # one creation event


async def test_idempotent_replay_after_the_request_ended(
    clocked_db: Database, clock: Clock
) -> None:
    first, _ = await _create_with_key(clocked_db, "k1", "d1")
    await approve(clocked_db, first["id"])  # type: ignore[arg-type]
    again, created = await _create_with_key(clocked_db, "k1", "d1")
    assert not created and again["id"] == first["id"] and again["status"] == "approved"


# -- creation and time ---------------------------------------------------------------------


async def test_creation(clocked_db: Database, clock: Clock) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(
        clocked_db, incident_id=inc["id"], ttl=90, params={"host": "web-1"}, risk="high",
        rationale="disk at 99%", required=2,
    )
    assert req["status"] == "pending"
    assert req["created_at"] == clock.now
    assert req["expires_at"] == clock.now + timedelta(seconds=90)
    assert req["params"] == {"host": "web-1"}
    assert (req["risk"], req["required_approvals"], req["approval_count"]) == ("high", 2, 0)
    assert req["decided_at"] is None and req["disposition"] is None
    [event] = await request_events(clocked_db, req["id"])
    assert event["kind"] == "request_created"
    assert (event["from_status"], event["to_status"]) == (None, "pending")
    assert event["incident_id"] == inc["id"]
    assert event["at"] == clock.now


async def test_risk_defaults_to_medium(clocked_db: Database) -> None:
    req = await new_request(clocked_db)
    assert req["risk"] == "medium"
    assert req["required_approvals"] == 1


async def test_microseconds_and_utc_survive_the_round_trip(
    clocked_db: Database, clock: Clock
) -> None:
    taipei = timezone(timedelta(hours=8))
    clock.now = datetime(2026, 3, 1, 8, 59, 59, 999_999, tzinfo=UTC)
    expires_local = datetime(2026, 3, 1, 17, 0, 0, 1, tzinfo=taipei)  # 09:00:00.000001Z
    req = await new_request(clocked_db, expires_at=expires_local)
    stored = await get_request(clocked_db, req["id"])
    for key in ("created_at", "expires_at"):
        assert stored[key].tzinfo is not None
        assert stored[key].utcoffset() == timedelta(0)
    assert stored["created_at"] == clock.now
    assert stored["created_at"].microsecond == 999_999
    assert stored["expires_at"] == expires_local
    assert stored["expires_at"].hour == 9 and stored["expires_at"].microsecond == 1
    # SQL comparisons see the microseconds too.
    clock.now = expires_local - TICK
    assert (await expire(clocked_db)).count == 0
    clock.now = expires_local
    assert (await expire(clocked_db)).count == 1
    assert (await get_request(clocked_db, req["id"]))["decided_at"] == expires_local


async def test_a_naive_datetime_is_refused(clocked_db: Database) -> None:
    with pytest.raises(Exception, match="naive datetime refused"):
        await new_request(clocked_db, expires_at=datetime(2030, 1, 1))
    assert await select(clocked_db, sa.select(requests.c.id)) == []


async def test_the_database_clock_is_utc(db: Database) -> None:
    req = await new_request(db, ttl=60)
    stored = await get_request(db, req["id"])
    assert stored["created_at"].utcoffset() == timedelta(0)
    wall = datetime.now(UTC)
    assert abs(stored["created_at"] - wall) < timedelta(seconds=30)
    assert stored["expires_at"] - stored["created_at"] == timedelta(seconds=60)


async def test_idempotency_keeps_working_on_a_reused_connection(clocked_db: Database) -> None:
    """As with fingerprints: past five runs PostgreSQL plans the insert generically."""
    first, _ = await _create_with_key(clocked_db, "k", "d")
    for i in range(8):
        again, created = await _create_with_key(clocked_db, "k", "d")
        assert (again["id"], created) == (first["id"], False)
        _, created = await _create_with_key(clocked_db, f"k{i}", "d")
        assert created
