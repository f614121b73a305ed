"""Small helpers for the store tests: one call, one transaction, as the API would run it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from signoff import store
from signoff.db import Database
from signoff.lifecycle import TERMINAL, ResolutionType
from signoff.tables import approvals, events, incidents, knowledge, metadata, requests

Row = Mapping[str, Any]


class Clock(Protocol):
    now: datetime

    def __call__(self) -> datetime: ...

    def advance(self, seconds: float) -> datetime: ...

TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


async def new_incident(db: Database, *, actor: str = "bot", **data: Any) -> Row:
    data = {"title": "disk full", "severity": "high", **data}
    row, _ = await db.run(lambda c, n: store.create_incident(c, n, actor=actor, data=data))
    return row


async def new_request(
    db: Database,
    *,
    incident_id: uuid.UUID | None = None,
    ttl: float = 60,
    expires_at: datetime | None = None,
    actor: str = "bot",
    required: int = 1,
    **data: Any,
) -> Row:
    body = {"action": "restart web", "incident_id": incident_id,
            "required_approvals": required, **data}

    async def work(conn: Any, now: datetime) -> Row:
        row, created = await store.create_request(
            conn, now, actor=actor, data=body,
            expires_at=expires_at or now + timedelta(seconds=ttl),
        )
        assert created
        return row

    return await db.run(work)


async def approve(db: Database, request_id: uuid.UUID, actor: str = "alice") -> Row:
    return await db.run(lambda c, n: store.approve_request(c, n, request_id, actor=actor))


async def reject(db: Database, request_id: uuid.UUID, actor: str = "alice") -> Row:
    return await db.run(lambda c, n: store.reject_request(c, n, request_id, actor=actor))


async def cancel(db: Database, request_id: uuid.UUID, actor: str = "bot", **kw: Any) -> Row:
    return await db.run(lambda c, n: store.cancel_request(c, n, request_id, actor=actor, **kw))


async def outcome(
    db: Database, request_id: uuid.UUID, succeeded: bool = True, actor: str = "bot"
) -> Row:
    return await db.run(
        lambda c, n: store.report_outcome(c, n, request_id, actor=actor, succeeded=succeeded)
    )


async def expire(db: Database, limit: int = 1000) -> store.ExpiryBatch:
    return await db.run(lambda c, n: store.expire_due_requests(c, n, limit=limit))


async def expire_all(db: Database, limit: int = 1000) -> int:
    total = 0
    while (batch := await expire(db, limit)).count:
        total += batch.count
    return total


async def resolve(
    db: Database,
    incident_id: uuid.UUID,
    *,
    actor: str = "alice",
    resolution_type: ResolutionType = ResolutionType.MANUAL,
    note: str | None = None,
) -> Row:
    return await db.run(lambda c, n: store.resolve_incident(
        c, n, incident_id, actor=actor, resolution_type=resolution_type, note=note
    ))


async def get_request(db: Database, request_id: uuid.UUID) -> Row:
    return await db.run(lambda c, n: store.get_request(c, request_id), readonly=True)


async def get_incident(db: Database, incident_id: uuid.UUID) -> Row:
    return await db.run(lambda c, n: store.get_incident(c, incident_id), readonly=True)


async def select(db: Database, stmt: sa.Select[Any]) -> Sequence[Row]:
    async def work(conn: Any, _now: datetime) -> Sequence[Row]:
        return (await conn.execute(stmt)).mappings().all()  # type: ignore[no-any-return]

    return await db.run(work, readonly=True)


async def request_events(db: Database, request_id: uuid.UUID) -> Sequence[Row]:
    return await select(
        db, sa.select(events).where(events.c.request_id == request_id).order_by(events.c.id)
    )


async def incident_events(db: Database, incident_id: uuid.UUID) -> Sequence[Row]:
    return await select(
        db, sa.select(events).where(events.c.incident_id == incident_id).order_by(events.c.id)
    )


async def knowledge_of(db: Database, incident_id: uuid.UUID) -> Sequence[Row]:
    return await select(db, sa.select(knowledge).where(knowledge.c.incident_id == incident_id))


async def approvers_of(db: Database, request_id: uuid.UUID) -> list[str]:
    rows = await select(
        db, sa.select(approvals.c.approver).where(approvals.c.request_id == request_id)
        .order_by(approvals.c.at, approvals.c.approver)
    )
    return [r["approver"] for r in rows]


async def row_counts(db: Database) -> dict[str, int]:
    async def work(conn: Any, _now: datetime) -> dict[str, int]:
        return {
            t.name: (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
            for t in metadata.sorted_tables
        }

    return await db.run(work, readonly=True)


def terminal_events(rows: Sequence[Row]) -> list[Row]:
    """The events that moved a request out of pending."""
    return [
        e for e in rows
        if e["request_id"] is not None and e["from_status"] == "pending"
        and e["to_status"] in TERMINAL_VALUES
    ]


async def snapshot(db: Database) -> dict[str, Any]:
    """Everything that could change, to show that a refused transition changed nothing."""
    tables = [incidents, requests, approvals, events, knowledge]
    return {
        t.name: [dict(r) for r in await select(db, sa.select(t).order_by(*t.primary_key))]
        for t in tables
    }
