"""``signoff doctor`` finds each broken invariant, and nothing on a healthy database."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from signoff import store
from signoff.db import Database
from signoff.doctor import run_checks
from signoff.tables import approvals, events, incidents, knowledge, requests
from tests.conftest import FakeClock

GRACE = timedelta(seconds=2)


async def findings(db: Database) -> dict[str, int]:
    found = await db.run(lambda c, n: run_checks(c, n, grace=GRACE))
    return {f.check: f.count for f in found if f.count}


async def healthy_history(db: Database, clock: FakeClock) -> dict[str, Any]:
    """Every kind of ending, produced by the store itself."""

    async def work(conn: Any, now: Any) -> dict[str, Any]:
        made: dict[str, Any] = {}
        for name in ("timeout", "action", "manual", "rejected"):
            inc, _ = await store.create_incident(
                conn, now, actor="bot", data={"title": name, "severity": "low"}
            )
            req, _ = await store.create_request(
                conn,
                now,
                actor="bot",
                data={"action": name, "incident_id": inc["id"], "required_approvals": 2},
                expires_at=now + timedelta(seconds=10),
            )
            made[name] = (inc["id"], req["id"])
        await store.approve_request(conn, now, made["action"][1], actor="alice")
        await store.approve_request(conn, now, made["action"][1], actor="bob")
        await store.report_outcome(conn, now, made["action"][1], actor="bot", succeeded=True)
        await store.resolve_incident(conn, now, made["manual"][0], actor="alice")
        await store.reject_request(conn, now, made["rejected"][1], actor="carol")
        return made

    made = await db.run(work)
    clock.advance(10)
    await db.run(lambda c, n: store.expire_due_requests(c, n, limit=100))
    return made


async def test_a_healthy_history_has_no_findings(clocked_db: Database, clock: FakeClock) -> None:
    await healthy_history(clocked_db, clock)
    assert await findings(clocked_db) == {}


async def test_an_overdue_request_is_found_only_past_the_grace(
    clocked_db: Database, clock: FakeClock
) -> None:
    await clocked_db.run(
        lambda c, n: store.create_request(
            c, n, actor="bot", data={"action": "a"}, expires_at=n + timedelta(seconds=1)
        )
    )
    clock.advance(1 + GRACE.total_seconds())
    assert await findings(clocked_db) == {}
    clock.advance(0.5)
    assert await findings(clocked_db) == {"overdue_pending": 1}


@pytest.mark.parametrize(
    ("breakage", "check"),
    [
        ("drop_ending_event", "terminal_without_event"),
        ("reopen_timed_out_incident", "expired_incident_open"),
        ("second_knowledge_entry", "knowledge_per_resolution"),
        ("lose_a_vote", "approved_short_of_quorum"),
        ("decide_late", "decided_after_deadline"),
    ],
)
async def test_each_broken_invariant_is_found(
    clocked_db: Database, clock: FakeClock, breakage: str, check: str
) -> None:
    made = await healthy_history(clocked_db, clock)
    timeout_incident, timeout_request = made["timeout"]
    action_incident, action_request = made["action"]

    async def damage(conn: Any, now: Any) -> None:
        # Deliberate corruption, as a bad manual fix or a bug would leave it.
        if breakage == "drop_ending_event":
            await conn.execute(
                events.delete().where(
                    events.c.request_id == timeout_request, events.c.to_status == "expired"
                )
            )
        elif breakage == "reopen_timed_out_incident":
            await conn.execute(
                knowledge.delete().where(knowledge.c.incident_id == timeout_incident)
            )
            await conn.execute(
                incidents.update()
                .where(incidents.c.id == timeout_incident)
                .values(status="open", resolved_at=None)
            )
        elif breakage == "second_knowledge_entry":
            await conn.execute(knowledge.delete().where(knowledge.c.incident_id == action_incident))
        elif breakage == "lose_a_vote":
            await conn.execute(
                approvals.delete().where(
                    approvals.c.request_id == action_request, approvals.c.approver == "bob"
                )
            )
        elif breakage == "decide_late":
            await conn.execute(
                requests.update()
                .where(requests.c.id == action_request)
                .values(decided_at=requests.c.expires_at)
            )

    await clocked_db.run(damage)
    found = await findings(clocked_db)
    assert found == {check: 1}


async def test_a_knowledge_entry_for_an_open_incident_is_found(
    clocked_db: Database, clock: FakeClock
) -> None:
    async def work(conn: Any, now: Any) -> None:
        inc, _ = await store.create_incident(
            conn, now, actor="bot", data={"title": "t", "severity": "low"}
        )
        await conn.execute(
            knowledge.insert().values(
                id=uuid.uuid4(),
                incident_id=inc["id"],
                created_at=now,
                title="t",
                resolution_type="manual",
                actions=[],
                summary="forged",
            )
        )

    await clocked_db.run(work)
    assert await findings(clocked_db) == {"knowledge_for_open_incident": 1}


async def test_counts_are_exact_and_samples_bounded(clocked_db: Database, clock: FakeClock) -> None:
    async def work(conn: Any, now: Any) -> None:
        for _ in range(8):
            await store.create_request(
                conn, now, actor="bot", data={"action": "a"}, expires_at=now + timedelta(seconds=1)
            )

    await clocked_db.run(work)
    clock.advance(60)
    found = await clocked_db.run(lambda c, n: run_checks(c, n, grace=GRACE, sample=3))
    overdue = next(f for f in found if f.check == "overdue_pending")
    assert overdue.count == 8 and len(overdue.samples) == 3
