"""Requests read many at a time, with their approvals: the readings of long-poll waiters
and of plain reads, batched by ``signoff.waiters.BatchReader``.

On PostgreSQL the ids are one array parameter (``= ANY(:ids)``) of a statement compiled
once and run by asyncpg itself (``signoff.store.prepared``). An expanding ``IN`` is new
SQL for every count of ids: batches come in every size, and each size was prepared again
on each of the pool's connections, its driver's cache of prepared statements churning for
as long as waiters were read, the CPU of the prepares and their descriptions (hundreds of
parameter types for a large batch) left behind in the heap.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.store.prepared import Prepared
from signoff.store.rows import Row
from signoff.tables import approvals, requests

_IDS = sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid()))
_REQUESTS = Prepared(sa.select(requests).where(requests.c.id == sa.any_(_IDS)))
_APPROVALS = Prepared(sa.select(approvals).where(approvals.c.request_id == sa.any_(_IDS))
                      .order_by(approvals.c.at, approvals.c.approver))


async def read_requests(
    conn: AsyncConnection, request_ids: Sequence[uuid.UUID]
) -> list[tuple[Row, list[Row]]]:
    """The requests of these ids that exist, each with its approvals oldest first, in no
    order."""
    ids = list(request_ids)
    if conn.dialect.name != "postgresql":
        rows: Sequence[Row] = (await conn.execute(
            sa.select(requests).where(requests.c.id.in_(ids)))).mappings().all()
    else:
        rows = await _REQUESTS.rows(conn, {"ids": ids})
    voted = [r["id"] for r in rows if r["approval_count"]]
    votes: dict[uuid.UUID, list[Row]] = {rid: [] for rid in voted}
    if voted:
        if conn.dialect.name != "postgresql":
            found: Sequence[Row] = (await conn.execute(
                sa.select(approvals).where(approvals.c.request_id.in_(voted))
                .order_by(approvals.c.at, approvals.c.approver))).mappings().all()
        else:
            found = await _APPROVALS.rows(conn, {"ids": voted})
        for vote in found:
            votes[vote["request_id"]].append(vote)
    return [(r, votes.get(r["id"], [])) for r in rows]
