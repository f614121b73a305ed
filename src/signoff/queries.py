"""Reads: lists with cursors, audit trails, knowledge, statistics. Nothing here writes."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.lifecycle import Disposition, RequestStatus
from signoff.schemas import utc_instant
from signoff.tables import approvals, events, incidents, knowledge, requests

Row = Mapping[Any, Any]
PENDING = RequestStatus.PENDING.value


@dataclass(frozen=True)
class Page:
    rows: Sequence[Row]
    next_cursor: str | None


# -- cursors --------------------------------------------------------------------------


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else str(p) for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    """Undo ``encode_cursor``; anything that does not decode is the client's error (422)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        for kind, part in zip(kinds, parts, strict=True):
            if kind is datetime:
                out.append(utc_instant(datetime.fromisoformat(part)))
            elif kind is uuid.UUID:
                out.append(uuid.UUID(part))
            else:
                number = int(part)
                if not -(2**63) <= number < 2**63:  # what a BIGINT holds
                    raise ValueError("out of range")
                out.append(number)
        return out
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise errors.InvalidInput("the cursor is not one this server gave out") from exc


def _newest_first(
    query: sa.Select[Any], time_col: sa.ColumnElement[Any], id_col: sa.ColumnElement[Any],
    cursor: str | None, limit: int,
) -> sa.Select[Any]:
    if cursor is not None:
        at, last_id = decode_cursor(cursor, [datetime, uuid.UUID])
        query = query.where(
            sa.or_(time_col < at, sa.and_(time_col == at, id_col < last_id))
        )
    return query.order_by(time_col.desc(), id_col.desc()).limit(limit + 1)


def _page(rows: Sequence[Row], limit: int, time_key: str) -> Page:
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1][time_key], items[-1]["id"]) if more else None)


# -- requests -------------------------------------------------------------------------


def status_filter(status: RequestStatus, now: datetime) -> sa.ColumnElement[bool]:
    """What a reader means by a status: overdue pending requests are already expired."""
    if status is RequestStatus.PENDING:
        return sa.and_(requests.c.status == PENDING, requests.c.expires_at > now)
    if status is RequestStatus.EXPIRED:
        return sa.or_(
            requests.c.status == RequestStatus.EXPIRED.value,
            sa.and_(requests.c.status == PENDING, requests.c.expires_at <= now),
        )
    return requests.c.status == status.value


async def list_requests(
    conn: AsyncConnection, now: datetime, *, status: RequestStatus | None = None,
    incident_id: uuid.UUID | None = None, limit: int = 50, cursor: str | None = None,
) -> Page:
    query = sa.select(requests)
    if status is not None:
        query = query.where(status_filter(status, now))
    if incident_id is not None:
        query = query.where(requests.c.incident_id == incident_id)
    query = _newest_first(query, requests.c.created_at, requests.c.id, cursor, limit)
    rows = (await conn.execute(query)).mappings().all()
    return _page(rows, limit, "created_at")


async def requests_by_id(
    conn: AsyncConnection, request_ids: Sequence[uuid.UUID]
) -> list[tuple[Row, list[Row]]]:
    """The requests of these ids that exist, each with its approvals, in no order."""
    query = sa.select(requests).where(requests.c.id.in_(list(request_ids)))
    rows = (await conn.execute(query)).mappings().all()
    votes = await approvals_of(conn, [r["id"] for r in rows if r["approval_count"]])
    return [(r, votes[r["id"]] if r["approval_count"] else []) for r in rows]


async def approvals_of(
    conn: AsyncConnection, request_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Row]]:
    """The approvals of each request, oldest first."""
    found: dict[uuid.UUID, list[Row]] = {rid: [] for rid in request_ids}
    if not request_ids:
        return found
    rows = (
        await conn.execute(
            sa.select(approvals)
            .where(approvals.c.request_id.in_(list(request_ids)))
            .order_by(approvals.c.at, approvals.c.approver)
        )
    ).mappings().all()
    for row in rows:
        found[row["request_id"]].append(row)
    return found


# -- incidents and knowledge ------------------------------------------------------------


async def list_incidents(
    conn: AsyncConnection, *, status: str | None = None, service: str | None = None,
    limit: int = 50, cursor: str | None = None,
) -> Page:
    query = sa.select(incidents)
    if status is not None:
        query = query.where(incidents.c.status == status)
    if service is not None:
        query = query.where(incidents.c.service == service)
    query = _newest_first(query, incidents.c.opened_at, incidents.c.id, cursor, limit)
    rows = (await conn.execute(query)).mappings().all()
    return _page(rows, limit, "opened_at")


async def list_knowledge(
    conn: AsyncConnection, *, incident_id: uuid.UUID | None = None, service: str | None = None,
    fingerprint: str | None = None, limit: int = 50, cursor: str | None = None,
) -> Page:
    query = sa.select(knowledge)
    if incident_id is not None:
        query = query.where(knowledge.c.incident_id == incident_id)
    if service is not None:
        query = query.where(knowledge.c.service == service)
    if fingerprint is not None:
        query = query.where(knowledge.c.fingerprint == fingerprint)
    query = _newest_first(query, knowledge.c.created_at, knowledge.c.id, cursor, limit)
    rows = (await conn.execute(query)).mappings().all()
    return _page(rows, limit, "created_at")


async def list_events(
    conn: AsyncConnection, *, request_id: uuid.UUID | None = None,
    incident_id: uuid.UUID | None = None, limit: int = 50, cursor: str | None = None,
) -> Page:
    """Audit events, oldest first (append order)."""
    query = sa.select(events)
    if request_id is not None:
        query = query.where(events.c.request_id == request_id)
    if incident_id is not None:
        query = query.where(events.c.incident_id == incident_id)
    if cursor is not None:
        (after,) = decode_cursor(cursor, [int])
        query = query.where(events.c.id > after)
    rows = (await conn.execute(query.order_by(events.c.id).limit(limit + 1))).mappings().all()
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1]["id"]) if more else None)


# -- statistics -----------------------------------------------------------------------


def _seconds_between(conn: AsyncConnection, later: Any, earlier: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


async def _percentiles(
    conn: AsyncConnection, value: Any, where: sa.ColumnElement[bool], ranks: Sequence[int]
) -> tuple[list[float | None], float | None]:
    """Nearest-rank percentiles (``ranks`` in percent) and the maximum, in one query."""
    inner = (
        sa.select(
            value.label("v"),
            sa.func.row_number().over(order_by=value).label("rn"),
            sa.func.count().over().label("n"),
        )
        .where(where)
        .subquery()
    )
    columns = [
        sa.func.max(sa.case((inner.c.rn == (k * inner.c.n + 99) // 100, inner.c.v)))
        for k in ranks
    ]
    row = (await conn.execute(sa.select(*columns, sa.func.max(inner.c.v)))).one()
    as_float = [None if v is None else round(float(v), 6) for v in row]
    return as_float[:-1], as_float[-1]


def _rate(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


async def compute_stats(
    conn: AsyncConnection, *, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Dispositions and rates of the requests that ended in ``[since, until)``."""
    ended = sa.and_(requests.c.status != PENDING, requests.c.decided_at.isnot(None))
    if since is not None:
        ended = sa.and_(ended, requests.c.decided_at >= since)
    if until is not None:
        ended = sa.and_(ended, requests.c.decided_at < until)
    counts = {d.value: 0 for d in Disposition}
    rows = await conn.execute(
        sa.select(requests.c.disposition, sa.func.count()).where(ended)
        .group_by(requests.c.disposition)
    )
    for disposition, count in rows:
        if disposition in counts:
            counts[disposition] = count
    total = sum(counts.values())
    approved, rejected = counts["human_approved"], counts["human_rejected"]

    human = sa.and_(ended, requests.c.disposition.in_(["human_approved", "human_rejected"]))
    (p50, p90), _ = await _percentiles(
        conn, _seconds_between(conn, requests.c.decided_at, requests.c.created_at), human, [50, 90]
    )
    timed_out = sa.and_(ended, requests.c.status == RequestStatus.EXPIRED.value)
    (l50, l99), lmax = await _percentiles(
        conn, _seconds_between(conn, requests.c.decided_at, requests.c.expires_at), timed_out,
        [50, 99],
    )
    return {
        "since": None if since is None else since.isoformat(),
        "until": None if until is None else until.isoformat(),
        "dispositions": counts,
        "total": total,
        "human_override_rate": _rate(rejected, approved + rejected),
        "timeout_ignored_rate": _rate(counts["timeout_ignored"], total),
        "decision_seconds": {"p50": p50, "p90": p90},
        "expiry_lateness_seconds": {"p50": l50, "p99": l99, "max": lmax},
    }
