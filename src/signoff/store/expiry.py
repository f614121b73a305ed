"""Expiry: the resolver's claims and the reads that plan its next pass.

On PostgreSQL a batch is claimed with a materialised CTE ``FOR UPDATE SKIP LOCKED``, so
replicas take disjoint rows and never wait on a row a human is deciding.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.lifecycle import TIMEOUT_ACTOR, Disposition, EventKind, RequestStatus, ResolutionType
from signoff.store.incidents import close_incidents
from signoff.store.prepared import Prepared
from signoff.store.rows import PENDING, Row, announce_events, insert_rows, wants_events
from signoff.tables import events, requests


@dataclass
class ExpiryBatch:
    """What one resolver batch did."""

    expired: list[Row] = field(default_factory=list)
    incidents_resolved: int = 0

    @property
    def count(self) -> int:
        return len(self.expired)


_EXPIRED = {
    "status": RequestStatus.EXPIRED.value,
    "disposition": Disposition.TIMEOUT_IGNORED.value,
    "decided_by": TIMEOUT_ACTOR,
}
_EVENT = {
    "kind": EventKind.REQUEST_EXPIRED.value, "actor": TIMEOUT_ACTOR,
    "from_status": PENDING, "to_status": RequestStatus.EXPIRED.value,
}
_RETURNING = (requests.c.id, requests.c.incident_id, requests.c.expires_at,
              requests.c.callback_url)


def _claim_and_record(*, only: bool) -> Prepared:
    """PostgreSQL: claim a batch, expire it and write its audit events, one statement.

    The claim is a materialised CTE ``FOR UPDATE SKIP LOCKED``, so replicas take disjoint
    rows and never wait on a row a human is deciding; each event's detail (the lateness)
    is computed by the database, so a batch of a thousand costs Python one row each to
    read back, not a dictionary and a JSON document each to write.
    """
    now = sa.bindparam("now", type_=requests.c.decided_at.type)
    due = sa.and_(requests.c.status == PENDING, requests.c.expires_at <= now,
                  requests.c.id != sa.all_(sa.bindparam("exclude", type_=_IDS)))
    if only:
        due = sa.and_(due, requests.c.id == sa.any_(sa.bindparam("only", type_=_IDS)))
    claim = (
        sa.select(requests.c.id).where(due).order_by(requests.c.expires_at)
        .limit(sa.bindparam("limit", type_=sa.Integer())).with_for_update(skip_locked=True)
        .cte("due").prefix_with("MATERIALIZED")
    )
    expired = (
        # By the primary key, whatever the planner thinks of the CTE's size (a hash join
        # with it reads the whole table).
        requests.update()
        .where(requests.c.id == sa.any_(sa.func.array(sa.select(claim.c.id).scalar_subquery())))
        .values(**_EXPIRED, decided_at=now).returning(*_RETURNING).cte("expired")
    )
    lateness = sa.func.round(
        sa.cast(sa.extract("epoch", now - expired.c.expires_at), sa.Numeric()), 6)
    detail = sa.func.jsonb_build_object(sa.literal_column("'lateness_seconds'"), lateness)
    recorded = events.insert().from_select(
        ["at", "request_id", "incident_id", "detail", *_EVENT],
        sa.select(now, expired.c.id, expired.c.incident_id, detail,
                  *(sa.literal(v, events.c[k].type) for k, v in _EVENT.items())),
    ).cte("recorded")
    return Prepared(sa.select(*expired.c).add_cte(recorded))


_IDS = postgresql.ARRAY(sa.Uuid())
_CLAIM = _claim_and_record(only=False)
_CLAIM_ONLY = _claim_and_record(only=True)


async def expire_due_requests(
    conn: AsyncConnection,
    now: datetime,
    *,
    limit: int,
    only: Sequence[uuid.UUID] | None = None,
    exclude: Sequence[uuid.UUID] = (),
) -> ExpiryBatch:
    """Expire up to ``limit`` due requests and close the incidents left idle: one batch."""
    if conn.dialect.name == "postgresql":
        statement = _CLAIM if only is None else _CLAIM_ONLY
        params: dict[str, Any] = {"now": now, "limit": limit, "exclude": list(exclude)}
        if only is not None:
            params["only"] = list(only)
        expired: Sequence[Row] = await statement.rows(conn, params)
        if expired and wants_events(conn):
            await announce_events(
                conn, [_event(r, now) for r in expired], current=(),
                no_callback=[r["id"] for r in expired if r["callback_url"] is None])
    else:
        expired = await _expire_on_sqlite(conn, now, limit=limit, only=only, exclude=exclude)
    batch = ExpiryBatch(expired=list(expired))
    if not expired:
        return batch
    incident_ids = {r["incident_id"] for r in expired if r["incident_id"] is not None}
    closed = await close_incidents(
        conn, now, incident_ids, resolution_type=ResolutionType.TIMEOUT,
        disposition=Disposition.TIMEOUT_IGNORED, actor=TIMEOUT_ACTOR, only_if_idle=True,
    )
    batch.incidents_resolved = len(closed)
    return batch


def _event(row: Row, now: datetime) -> dict[str, Any]:
    """The audit event of one expired request, as the statement or SQLite wrote it."""
    return {"at": now, "request_id": row["id"], "incident_id": row["incident_id"],
            "detail": {"lateness_seconds": round((now - row["expires_at"]).total_seconds(), 6)},
            **_EVENT}


async def _expire_on_sqlite(
    conn: AsyncConnection, now: datetime, *, limit: int,
    only: Sequence[uuid.UUID] | None, exclude: Sequence[uuid.UUID],
) -> Sequence[Row]:
    """One writer at a time (``BEGIN IMMEDIATE``): nothing to skip, two statements."""
    due = sa.and_(requests.c.status == PENDING, requests.c.expires_at <= now)
    if only is not None:
        due = sa.and_(due, requests.c.id.in_(list(only)))
    if exclude:
        due = sa.and_(due, requests.c.id.notin_(list(exclude)))
    claim = sa.select(requests.c.id).where(due).order_by(requests.c.expires_at).limit(limit)
    stmt = requests.update().where(requests.c.id.in_(claim.scalar_subquery()))
    result = await conn.execute(stmt.values(**_EXPIRED, decided_at=now).returning(*_RETURNING))
    expired = result.mappings().all()
    if expired:
        await insert_rows(conn, events, [_event(r, now) for r in expired])
    return expired


async def settle_request(conn: AsyncConnection, now: datetime, request_id: uuid.UUID) -> str:
    """Wait for any transition in flight on the request, expire it if overdue; its status.

    A decision refused because the deadline passed must name the status that finally won:
    a decider whose guard passed a moment before the deadline may still be committing.
    Holding the row lock waits for it; expiring the request here makes "expired" final.
    """
    status = (
        await conn.execute(
            sa.select(requests.c.status).where(requests.c.id == request_id).with_for_update()
        )
    ).scalar_one_or_none()
    if status is None:
        raise errors.RequestNotFound()
    if status == PENDING:
        batch = await expire_due_requests(conn, now, limit=1, only=[request_id])
        if batch.count:
            return RequestStatus.EXPIRED.value
    return str(status)


async def next_deadline(
    conn: AsyncConnection, *, exclude: Sequence[uuid.UUID] = ()
) -> datetime | None:
    """The earliest deadline among pending requests (served by the partial index).

    ``exclude`` leaves out rows the resolver has set aside, so that one row it cannot
    expire does not make it wake again and again for a deadline already past.
    """
    where = requests.c.status == PENDING
    if exclude:
        where = sa.and_(where, requests.c.id.notin_(list(exclude)))
    stmt = sa.select(sa.func.min(requests.c.expires_at)).where(where)
    value = (await conn.execute(stmt)).scalar()
    assert value is None or isinstance(value, datetime)
    return value


async def due_request_ids(
    conn: AsyncConnection, now: datetime, *, limit: int, exclude: Sequence[uuid.UUID] = ()
) -> list[uuid.UUID]:
    """The ids a batch of ``expire_due_requests`` would claim, oldest deadline first."""
    where = sa.and_(requests.c.status == PENDING, requests.c.expires_at <= now)
    if exclude:
        where = sa.and_(where, requests.c.id.notin_(list(exclude)))
    stmt = sa.select(requests.c.id).where(where).order_by(requests.c.expires_at).limit(limit)
    return list((await conn.execute(stmt)).scalars().all())


async def count_due_requests(conn: AsyncConnection, now: datetime) -> int:
    """How many pending requests are past their deadline: the backlog a pass will drain."""
    stmt = sa.select(sa.func.count()).select_from(requests).where(
        requests.c.status == PENDING, requests.c.expires_at <= now
    )
    return int((await conn.execute(stmt)).scalar_one())


async def pending_overview(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """How many requests are pending, and the earliest deadline among them (one index scan)."""
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.min(requests.c.expires_at))
            .select_from(requests)
            .where(requests.c.status == PENDING)
        )
    ).one()
    earliest = row[1]
    assert earliest is None or isinstance(earliest, datetime)
    return int(row[0]), earliest
