"""Every transition writes an audit event (rule 8), and nothing is ever deleted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from signoff import errors
from signoff.db import Database
from signoff.lifecycle import TERMINAL
from tests.integration.store_support import (
    Clock,
    approve,
    cancel,
    expire,
    get_request,
    incident_events,
    new_incident,
    new_request,
    outcome,
    reject,
    request_events,
    resolve,
    row_counts,
    terminal_events,
)

TERMINAL_KIND = {
    "approved": "request_approved",
    "rejected": "request_rejected",
    "expired": "request_expired",
    "cancelled": "request_cancelled",
}


async def assert_trail(db: Database, request_id: Any) -> None:
    """Created once, then exactly one terminal event that agrees with the row."""
    row = await get_request(db, request_id)
    trail = await request_events(db, request_id)
    assert trail[0]["kind"] == "request_created"
    assert (trail[0]["from_status"], trail[0]["to_status"]) == (None, "pending")
    assert trail[0]["at"] == row["created_at"]
    assert trail[0]["actor"] == row["requested_by"]
    assert [e["kind"] for e in trail].count("request_created") == 1
    ended = terminal_events(trail)
    if row["status"] == "pending":
        assert ended == []
        return
    assert row["status"] in {s.value for s in TERMINAL}
    [event] = ended
    assert event["kind"] == TERMINAL_KIND[row["status"]]
    assert event["to_status"] == row["status"]
    assert event["actor"] == row["decided_by"]
    assert event["at"] == row["decided_at"]
    assert event["incident_id"] == row["incident_id"]
    # The trail's times never go backwards.
    assert [e["at"] for e in trail] == sorted(e["at"] for e in trail)


async def test_every_transition_leaves_an_event_and_no_row_is_ever_removed(
    clocked_db: Database, clock: Clock
) -> None:
    counts = await row_counts(clocked_db)
    ids = []

    async def step(action: Callable[[], Awaitable[Any]], *, refused: bool = False) -> None:
        nonlocal counts
        clock.advance(1)
        if refused:
            with pytest.raises(errors.SignoffError):
                await action()
        else:
            await action()
        now = await row_counts(clocked_db)
        for table, n in counts.items():
            assert now[table] >= n, (table, counts, now)
        if refused:
            assert now == counts
        counts = now

    inc = await new_incident(clocked_db)
    reqs = [await new_request(clocked_db, incident_id=inc["id"], ttl=t, required=r)
            for t, r in ((30, 1), (30, 2), (30, 1), (5, 1), (300, 1))]
    a, b, c, d, e = (r["id"] for r in reqs)
    ids.extend([a, b, c, d, e])
    free = await new_request(clocked_db, ttl=5)
    ids.append(free["id"])

    await step(lambda: approve(clocked_db, a, "alice"))
    await step(lambda: approve(clocked_db, a, "bob"), refused=True)
    await step(lambda: approve(clocked_db, b, "alice"))
    await step(lambda: approve(clocked_db, b, "alice"), refused=True)
    await step(lambda: approve(clocked_db, b, "bot"), refused=True)
    await step(lambda: reject(clocked_db, b, "bob"))
    await step(lambda: cancel(clocked_db, c, "bot"))
    await step(lambda: cancel(clocked_db, c, "bot"), refused=True)
    await step(lambda: expire(clocked_db))  # d and the free one are due
    await step(lambda: approve(clocked_db, d, "alice"), refused=True)
    await step(lambda: outcome(clocked_db, a, succeeded=True))  # resolves; cancels e
    await step(lambda: outcome(clocked_db, a, succeeded=True), refused=True)
    await step(lambda: resolve(clocked_db, inc["id"]), refused=True)
    await step(lambda: expire(clocked_db))

    statuses = [(await get_request(clocked_db, i))["status"] for i in ids]
    assert statuses == ["approved", "rejected", "cancelled", "expired", "cancelled", "expired"]
    for request_id in ids:
        await assert_trail(clocked_db, request_id)

    kinds = [ev["kind"] for ev in await request_events(clocked_db, a)]
    assert kinds == ["request_created", "request_approved", "request_outcome"]
    kinds = [ev["kind"] for ev in await request_events(clocked_db, b)]
    assert kinds == ["request_created", "request_approval_added", "request_rejected"]
    cancelled_by_resolution = terminal_events(await request_events(clocked_db, e))[0]
    assert cancelled_by_resolution["actor"] == "incident_resolved"
    assert cancelled_by_resolution["detail"] == {"reason": "incident_resolved"}

    incident_trail = [ev for ev in await incident_events(clocked_db, inc["id"])
                      if ev["request_id"] is None]
    assert [ev["kind"] for ev in incident_trail] == ["incident_opened", "incident_resolved"]
    assert incident_trail[1]["detail"] == {
        "resolution_type": "action", "disposition": "human_approved"
    }


async def test_manual_resolution_events(clocked_db: Database, clock: Clock) -> None:
    inc = await new_incident(clocked_db)
    req = await new_request(clocked_db, incident_id=inc["id"])
    clock.advance(3)
    await resolve(clocked_db, inc["id"], actor="alice", note="done")
    await assert_trail(clocked_db, req["id"])
    resolved = [ev for ev in await incident_events(clocked_db, inc["id"])
                if ev["kind"] == "incident_resolved"]
    assert len(resolved) == 1
    assert resolved[0]["actor"] == "alice"
    assert resolved[0]["detail"] == {
        "resolution_type": "manual", "disposition": None, "note": "done"
    }
