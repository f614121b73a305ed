"""Reads for people looking at the whole: pending requests by deadline, a knowledge
search, and the statistics of ended requests hour by hour. Nothing here writes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.lifecycle import RequestStatus
from signoff.queries import Row, decode_cursor, encode_cursor, status_filter
from signoff.tables import incidents, knowledge, requests

PENDING = RequestStatus.PENDING.value


async def pending_by_deadline(
    conn: AsyncConnection, now: datetime, *, limit: int, cursor: str | None = None
) -> tuple[list[Row], str | None, int]:
    """Pending requests whose deadline is still ahead, soonest first (the pending
    deadline index), each with its incident's title (``incident_title``); the cursor of
    the next page and how many there are in all. One query."""
    live = status_filter(RequestStatus.PENDING, now)
    total = sa.select(sa.func.count()).select_from(requests).where(live).correlate(None)
    query = (
        sa.select(requests, incidents.c.title.label("incident_title"),
                  total.scalar_subquery().label("total"))
        .select_from(requests.outerjoin(incidents, incidents.c.id == requests.c.incident_id))
        .where(live)
    )
    if cursor is not None:
        at, last_id = decode_cursor(cursor, [datetime, uuid.UUID])
        query = query.where(sa.or_(requests.c.expires_at > at,
                                   sa.and_(requests.c.expires_at == at, requests.c.id > last_id)))
    query = query.order_by(requests.c.expires_at, requests.c.id).limit(limit + 1)
    rows: list[Row] = list((await conn.execute(query)).mappings().all())
    count = int(rows[0]["total"]) if rows else (await conn.execute(total)).scalar_one()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["expires_at"], rows[-1]["id"]) if more else None, count


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_knowledge(conn: AsyncConnection, text: str, *, limit: int) -> Sequence[Row]:
    """Knowledge entries whose title, actions or summary contain ``text`` (any case),
    newest first."""
    if len(text) > 200:
        raise errors.InvalidInput("the search is longer than 200 characters")
    pattern = _like(text.strip())
    actions = sa.cast(knowledge.c.actions, sa.Text())
    query = sa.select(knowledge).where(sa.or_(
        knowledge.c.title.ilike(pattern, escape="\\"),
        knowledge.c.summary.ilike(pattern, escape="\\"),
        actions.ilike(pattern, escape="\\"),
    )).order_by(knowledge.c.created_at.desc(), knowledge.c.id.desc()).limit(limit)
    return (await conn.execute(query)).mappings().all()


def _hour(conn: AsyncConnection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.func.date_trunc("hour", column)
    return sa.func.strftime("%Y-%m-%d %H:00:00", column)


def _seconds(conn: AsyncConnection, later: Any, earlier: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


async def hourly_endings(conn: AsyncConnection, since: datetime) -> list[dict[str, Any]]:
    """Per UTC hour since ``since``: the count of each disposition, and the summed and
    greatest lateness of expiries (seconds past the deadline)."""
    hour = _hour(conn, requests.c.decided_at).label("hour")
    late = _seconds(conn, requests.c.decided_at, requests.c.expires_at)
    expired = requests.c.status == RequestStatus.EXPIRED.value
    query = (
        sa.select(
            hour, requests.c.disposition, sa.func.count().label("n"),
            sa.func.sum(sa.case((expired, late), else_=0)).label("late_sum"),
            sa.func.max(sa.case((expired, late), else_=None)).label("late_max"),
        )
        .where(requests.c.status != PENDING, requests.c.decided_at.isnot(None),
               requests.c.decided_at >= since)
        .group_by(hour, requests.c.disposition)
    )
    out = []
    for row in (await conn.execute(query)).mappings():
        at = row["hour"]
        if isinstance(at, str):
            at = datetime.fromisoformat(at + "+00:00")
        out.append({"hour": at, "disposition": row["disposition"], "count": row["n"],
                    "late_sum": float(row["late_sum"] or 0),
                    "late_max": None if row["late_max"] is None else float(row["late_max"])})
    return out
