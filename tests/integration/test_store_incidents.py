"""Incidents at the store level: expiry closes idle incidents, outcomes and manual
resolution close them, one knowledge entry each (rules 4-7). SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, store
from signoff.db import Database
from signoff.lifecycle import ResolutionType
from signoff.tables import incidents, requests
from tests.integration.store_support import (
    Clock,
    approve,
    cancel,
    expire,
    get_incident,
    get_request,
    incident_events,
    knowledge_of,
    new_incident,
    new_request,
    outcome,
    reject,
    resolve,
    select,
    snapshot,
)


async def assert_open(db: Database, incident_id: uuid.UUID) -> None:
    inc = await get_incident(db, incident_id)
    assert inc["status"] == "open"
    assert inc["resolved_at"] is None and inc["resolution_type"] is None
    assert await knowledge_of(db, incident_id) == []


async def assert_resolved(
    db: Database, incident_id: uuid.UUID, resolution_type: str, disposition: str | None,
    *, at: object, by: str,
) -> None:
    inc = await get_incident(db, incident_id)
    assert inc["status"] == "resolved"
    assert (inc["resolution_type"], inc["disposition"]) == (resolution_type, disposition)
    assert inc["resolved_at"] == at
    assert inc["resolved_by"] == by
    [entry] = await knowledge_of(db, incident_id)
    assert (entry["resolution_type"], entry["disposition"]) == (resolution_type, disposition)
    assert entry["created_at"] == at
    resolved = [e for e in await incident_events(db, incident_id)
                if e["kind"] == "incident_resolved"]
    assert len(resolved) == 1
    assert (resolved[0]["from_status"], resolved[0]["to_status"]) == ("open", "resolved")
    assert resolved[0]["actor"] == by and resolved[0]["at"] == at


# -- incidents themselves ------------------------------------------------------------------


async def test_open_incident_and_its_event(clocked_db: Database, clock: Clock) -> None:
    inc = await new_incident(clocked_db, service="web", fingerprint="fp-1", labels={"a": "1"})
    assert inc["status"] == "open" and inc["opened_at"] == clock.now
    assert inc["labels"] == {"a": "1"}
    [event] = await incident_events(clocked_db, inc["id"])
    assert (event["kind"], event["from_status"], event["to_status"]) == (
        "incident_opened", None, "open"
    )


async def test_fingerprint_dedupes_open_incidents_only(clocked_db: Database) -> None:
    async def create(fingerprint: str | None) -> tuple[uuid.UUID, bool]:
        row, created = await clocked_db.run(lambda c, n: store.create_incident(
            c, n, actor="bot", data={"title": "t", "severity": "low", "fingerprint": fingerprint}
        ))
        return row["id"], created

    first, created = await create("fp")
    assert created
    assert await create("fp") == (first, False)
    other, created = await create("fp-other")
    assert created and other != first
    no_fp_1, _ = await create(None)
    no_fp_2, created = await create(None)
    assert created and no_fp_1 != no_fp_2
    assert len(await incident_events(clocked_db, first)) == 1

    await resolve(clocked_db, first)
    again, created = await create("fp")
    assert created and again != first
    assert await create("fp") == (again, False)


async def test_request_for_a_resolved_or_unknown_incident(clocked_db: Database) -> None:
    inc = await new_incident(clocked_db)
    await resolve(clocked_db, inc["id"])
    before = await snapshot(clocked_db)
    with pytest.raises(errors.IncidentResolved) as caught:
        await new_request(clocked_db, incident_id=inc["id"])
    assert caught.value.status == "resolved"
    with pytest.raises(errors.IncidentNotFound):
        await new_request(clocked_db, incident_id=uuid.uuid4())
    assert await snapshot(clocked_db) == before


# -- rule 4: expiry resolves the incident, unless something can still act -----------------------


async def test_expiry_resolves_its_incident_as_timeout(clocked_db: Database, clock: Clock) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    clock.advance(15)
    batch = await expire(clocked_db)
    assert (batch.count, batch.incidents_resolved) == (1, 1)
    await assert_resolved(clocked_db, inc["id"], "timeout", "timeout_ignored",
                          at=clock.now, by="timeout")
    [entry] = await knowledge_of(clocked_db, inc["id"])
    assert entry["actions"] == [
        {"action": "restart web", "status": "expired", "decided_by": "timeout", "outcome": None}
    ]
    assert "Resolved as timeout" in entry["summary"]
    assert (await get_request(clocked_db, req["id"]))["status"] == "expired"


async def test_another_pending_request_keeps_the_incident_open(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    later = await new_request(clocked_db, incident_id=inc["id"], ttl=100)
    clock.advance(10)
    assert (await expire(clocked_db)).incidents_resolved == 0
    await assert_open(clocked_db, inc["id"])
    clock.now = later["expires_at"]
    assert (await expire(clocked_db)).incidents_resolved == 1
    await assert_resolved(clocked_db, inc["id"], "timeout", "timeout_ignored",
                          at=clock.now, by="timeout")
    [entry] = await knowledge_of(clocked_db, inc["id"])
    assert [a["status"] for a in entry["actions"]] == ["expired", "expired"]


async def test_an_approved_request_awaiting_its_outcome_keeps_the_incident_open(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    approved = await new_request(clocked_db, incident_id=inc["id"], ttl=100)
    await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    await approve(clocked_db, approved["id"])
    clock.advance(200)
    assert (await expire(clocked_db)).incidents_resolved == 0
    await assert_open(clocked_db, inc["id"])
    await outcome(clocked_db, approved["id"], succeeded=True)
    await assert_resolved(clocked_db, inc["id"], "action", "human_approved",
                          at=clock.now, by="bot")


async def test_an_approved_request_whose_outcome_failed_does_not_keep_it_open(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    approved = await new_request(clocked_db, incident_id=inc["id"], ttl=100)
    await approve(clocked_db, approved["id"])
    await outcome(clocked_db, approved["id"], succeeded=False)
    await assert_open(clocked_db, inc["id"])
    await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    clock.advance(10)
    assert (await expire(clocked_db)).incidents_resolved == 1
    await assert_resolved(clocked_db, inc["id"], "timeout", "timeout_ignored",
                          at=clock.now, by="timeout")


@pytest.mark.parametrize("ended", ["rejected", "cancelled"])
async def test_ended_siblings_do_not_keep_the_incident_open(
    clocked_db: Database, clock: Clock, ended: str
) -> None:
    inc = await new_incident(clocked_db)
    sibling = await new_request(clocked_db, incident_id=inc["id"], ttl=100)
    await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    if ended == "rejected":
        await reject(clocked_db, sibling["id"])
    else:
        await cancel(clocked_db, sibling["id"])
    await assert_open(clocked_db, inc["id"])  # a rejection alone does not close it
    clock.advance(10)
    assert (await expire(clocked_db)).incidents_resolved == 1


async def test_two_requests_of_one_incident_expiring_together(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    await new_request(clocked_db, incident_id=inc["id"], ttl=11)
    clock.advance(20)
    batch = await expire(clocked_db)
    assert (batch.count, batch.incidents_resolved) == (2, 1)
    assert len(await knowledge_of(clocked_db, inc["id"])) == 1


async def test_a_batch_boundary_between_two_requests_of_one_incident(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    await new_request(clocked_db, incident_id=inc["id"], ttl=11)
    clock.advance(20)
    assert (await expire(clocked_db, limit=1)).incidents_resolved == 0
    await assert_open(clocked_db, inc["id"])
    assert (await expire(clocked_db, limit=1)).incidents_resolved == 1
    assert len(await knowledge_of(clocked_db, inc["id"])) == 1


async def test_many_incidents_in_one_batch(clocked_db: Database, clock: Clock) -> None:
    incs = [await new_incident(clocked_db, title=f"i{i}") for i in range(5)]
    for inc in incs:
        await new_request(clocked_db, incident_id=inc["id"], ttl=10)
    await new_request(clocked_db, ttl=10)  # no incident
    clock.advance(10)
    batch = await expire(clocked_db)
    assert (batch.count, batch.incidents_resolved) == (6, 5)
    for inc in incs:
        await assert_resolved(clocked_db, inc["id"], "timeout", "timeout_ignored",
                              at=clock.now, by="timeout")


async def test_expiry_leaves_an_already_resolved_incident_untouched(
    clocked_db: Database, clock: Clock
) -> None:
    """A pending request on a resolved incident (none can be made now; older data may hold
    one) expires, and its incident keeps its resolution and its one knowledge entry."""
    inc = await new_incident(clocked_db)
    await resolve(clocked_db, inc["id"], note="by hand")
    req_id = uuid.uuid4()

    async def plant(conn: object, now: object) -> None:
        await conn.execute(requests.insert().values(  # type: ignore[attr-defined]
            id=req_id, incident_id=inc["id"], action="a", params={}, risk="low",
            requested_by="bot", status="pending", required_approvals=1, approval_count=0,
            created_at=now, expires_at=now,
        ))

    await clocked_db.run(plant)
    resolved = await get_incident(clocked_db, inc["id"])
    [entry] = await knowledge_of(clocked_db, inc["id"])
    clock.advance(1)
    batch = await expire(clocked_db)
    assert (batch.count, batch.incidents_resolved) == (1, 0)
    assert await get_incident(clocked_db, inc["id"]) == resolved
    assert await knowledge_of(clocked_db, inc["id"]) == [entry]


# -- rule 5: a succeeded outcome resolves the incident as an action --------------------------


async def test_succeeded_outcome_resolves_with_the_requests_disposition(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(clocked_db, incident_id=inc["id"])
    clock.advance(1)
    other = await new_request(clocked_db, incident_id=inc["id"], ttl=600)
    clock.advance(1)
    overdue = await new_request(clocked_db, incident_id=inc["id"], ttl=30)
    await approve(clocked_db, req["id"])
    clock.advance(45)
    row = await outcome(clocked_db, req["id"], succeeded=True)
    assert row["outcome_succeeded"] is True
    await assert_resolved(clocked_db, inc["id"], "action", "human_approved",
                          at=clock.now, by="bot")
    # Nothing pending may stay on a resolved incident: the others end with it.
    cancelled = await get_request(clocked_db, other["id"])
    assert (cancelled["status"], cancelled["decided_by"]) == ("cancelled", "incident_resolved")
    expired = await get_request(clocked_db, overdue["id"])
    assert (expired["status"], expired["decided_by"]) == ("expired", "timeout")
    [entry] = await knowledge_of(clocked_db, inc["id"])
    assert [a["status"] for a in entry["actions"]] == ["approved", "cancelled", "expired"]
    assert entry["actions"][0]["outcome"]["succeeded"] is True


async def test_failed_outcome_leaves_the_incident_open(clocked_db: Database) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(clocked_db, incident_id=inc["id"])
    await approve(clocked_db, req["id"])
    await outcome(clocked_db, req["id"], succeeded=False)
    await assert_open(clocked_db, inc["id"])


async def test_outcome_after_the_incident_was_resolved_by_hand(
    clocked_db: Database, clock: Clock
) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(clocked_db, incident_id=inc["id"])
    await approve(clocked_db, req["id"])
    clock.advance(1)
    await resolve(clocked_db, inc["id"])
    resolved = await get_incident(clocked_db, inc["id"])
    clock.advance(1)
    await outcome(clocked_db, req["id"], succeeded=True)
    assert await get_incident(clocked_db, inc["id"]) == resolved
    assert len(await knowledge_of(clocked_db, inc["id"])) == 1


async def test_succeeded_outcome_without_an_incident(clocked_db: Database) -> None:
    req = await new_request(clocked_db)
    await approve(clocked_db, req["id"])
    row = await outcome(clocked_db, req["id"], succeeded=True)
    assert row["outcome_succeeded"] is True
    assert await select(clocked_db, sa.select(incidents.c.id)) == []


# -- rule 6: resolving by hand cancels pending requests ----------------------------------------


@pytest.mark.parametrize("how", [ResolutionType.MANUAL, ResolutionType.ALERT_RESOLVED])
async def test_resolving_by_hand_cancels_pending_requests(
    clocked_db: Database, clock: Clock, how: ResolutionType
) -> None:
    inc = await new_incident(clocked_db)
    pending = await new_request(clocked_db, incident_id=inc["id"], ttl=600)
    clock.advance(1)
    overdue = await new_request(clocked_db, incident_id=inc["id"], ttl=30)
    clock.advance(1)
    approved = await new_request(clocked_db, incident_id=inc["id"], ttl=600)
    await approve(clocked_db, approved["id"])
    unrelated = await new_request(clocked_db, ttl=600)
    clock.advance(30)
    row = await resolve(clocked_db, inc["id"], actor="alice", resolution_type=how,
                        note="fixed the disk")
    assert row["status"] == "resolved" and row["resolution_note"] == "fixed the disk"
    await assert_resolved(clocked_db, inc["id"], how.value, None, at=clock.now, by="alice")

    cancelled = await get_request(clocked_db, pending["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["disposition"] == "cancelled"
    assert cancelled["decided_by"] == "incident_resolved"
    assert cancelled["decided_at"] == clock.now
    expired = await get_request(clocked_db, overdue["id"])
    assert (expired["status"], expired["disposition"], expired["decided_by"]) == (
        "expired", "timeout_ignored", "timeout"
    )
    assert (await get_request(clocked_db, approved["id"]))["status"] == "approved"
    assert (await get_request(clocked_db, unrelated["id"]))["status"] == "pending"
    [entry] = await knowledge_of(clocked_db, inc["id"])
    assert "Note: fixed the disk" in entry["summary"]
    assert [a["status"] for a in entry["actions"]] == ["cancelled", "expired", "approved"]


async def test_resolving_twice_and_unknown_incidents(clocked_db: Database) -> None:
    inc = await new_incident(clocked_db)
    await resolve(clocked_db, inc["id"])
    before = await snapshot(clocked_db)
    with pytest.raises(errors.IncidentResolved) as caught:
        await resolve(clocked_db, inc["id"])
    assert caught.value.status == "resolved"
    with pytest.raises(errors.IncidentNotFound):
        await resolve(clocked_db, uuid.uuid4())
    assert await snapshot(clocked_db) == before


async def test_a_cancelled_request_cannot_be_decided(clocked_db: Database) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(clocked_db, incident_id=inc["id"])
    await resolve(clocked_db, inc["id"])
    with pytest.raises(errors.RequestNotPending) as caught:
        await approve(clocked_db, req["id"])
    assert caught.value.status == "cancelled"


async def test_knowledge_entry_carries_the_case(clocked_db: Database, clock: Clock) -> None:
    inc = await new_incident(clocked_db, service="web", fingerprint="fp-9", title="OOM")
    first = await new_request(clocked_db, incident_id=inc["id"], action="scale up")
    await reject(clocked_db, first["id"], "carol")
    clock.advance(1)
    second = await new_request(clocked_db, incident_id=inc["id"], action="restart")
    await approve(clocked_db, second["id"], "alice")
    clock.advance(90)
    await outcome(clocked_db, second["id"], succeeded=True)
    [entry] = await knowledge_of(clocked_db, inc["id"])
    assert (entry["service"], entry["fingerprint"], entry["title"]) == ("web", "fp-9", "OOM")
    assert [(a["action"], a["status"], a["decided_by"]) for a in entry["actions"]] == [
        ("scale up", "rejected", "carol"), ("restart", "approved", "alice")
    ]
    assert entry["summary"].startswith(
        "high incident on web: OOM. Resolved as action after 1.5 min"
    )


async def test_no_pending_request_on_a_resolved_incident_after_any_resolution(
    clocked_db: Database, clock: Clock
) -> None:
    for how in ("manual", "action", "timeout"):
        inc = await new_incident(clocked_db, title=how)
        req = await new_request(clocked_db, incident_id=inc["id"], ttl=5)
        if how == "manual":
            await new_request(clocked_db, incident_id=inc["id"])
            await resolve(clocked_db, inc["id"])
        elif how == "action":
            await new_request(clocked_db, incident_id=inc["id"])
            await approve(clocked_db, req["id"])
            await outcome(clocked_db, req["id"])
        else:
            clock.advance(5)
            await expire(clocked_db)
        assert (await get_incident(clocked_db, inc["id"]))["status"] == "resolved"
    stuck = await select(clocked_db, sa.select(requests.c.id).join(
        incidents, incidents.c.id == requests.c.incident_id
    ).where(incidents.c.status == "resolved", requests.c.status == "pending"))
    assert stuck == []


async def test_fingerprint_dedupe_keeps_working_on_a_reused_connection(
    clocked_db: Database,
) -> None:
    """PostgreSQL switches a prepared statement to a generic plan after five runs; the
    conflict target must still match the partial unique index then."""
    first = await new_incident(clocked_db, fingerprint="fp")
    for _ in range(8):
        async def again(conn: AsyncConnection, now: datetime) -> tuple[Any, bool]:
            return await store.create_incident(
                conn, now, actor="bot",
                data={"title": "t", "severity": "low", "fingerprint": "fp"},
            )

        row, created = await clocked_db.run(again)
        assert (row["id"], created) == (first["id"], False)
