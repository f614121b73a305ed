"""Incidents and the knowledge their closing leaves behind.

Closing an incident ends its pending requests first (cancelled, or expired when already
overdue), then resolves it and writes its knowledge entry and events, all in the caller's
transaction. Locks are taken requests first, incidents second.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.lifecycle import (
    INCIDENT_RESOLVED_ACTOR,
    TIMEOUT_ACTOR,
    Disposition,
    EventKind,
    IncidentStatus,
    RequestStatus,
    ResolutionType,
)
from signoff.store.rows import (
    PENDING,
    Row,
    among,
    dialect_insert,
    insert_rows,
    is_live,
    record_events,
)
from signoff.tables import events, incidents, knowledge, requests
from signoff.views import action_summary, knowledge_summary


async def create_incident(
    conn: AsyncConnection, now: datetime, *, actor: str, data: Mapping[str, Any]
) -> tuple[Row, bool]:
    """Open an incident, or return the open one with the same fingerprint (``created=False``)."""
    fingerprint = data.get("fingerprint")
    values = {
        "id": uuid.uuid4(),
        "fingerprint": fingerprint,
        "source": data.get("source"),
        "title": data["title"],
        "severity": data["severity"],
        "service": data.get("service"),
        "labels": data.get("labels") or {},
        "description": data.get("description"),
        "status": IncidentStatus.OPEN.value,
        "opened_by": actor,
        "opened_at": now,
    }
    stmt = dialect_insert(conn, incidents).values(**values)
    if fingerprint is not None:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[incidents.c.fingerprint],
            # Literal SQL, not a bound 'open': once PostgreSQL runs the prepared statement
            # with a generic plan, it cannot match a parameter against the index predicate.
            index_where=sa.text("status = 'open' AND fingerprint IS NOT NULL"),
        )
    created = (await conn.execute(stmt.returning(*incidents.c))).mappings().first()
    if created is None:
        existing = (
            await conn.execute(
                sa.select(incidents).where(
                    incidents.c.fingerprint == fingerprint, incidents.c.status == "open"
                )
            )
        ).mappings().first()
        if existing is None:  # resolved between our insert and this read: rare, retryable
            raise errors.Conflict(
                "the open incident with this fingerprint just changed; retry", status="resolved"
            )
        return existing, False
    await record_events(conn, [{
        "at": now, "kind": EventKind.INCIDENT_OPENED, "actor": actor,
        "incident_id": created["id"], "to_status": IncidentStatus.OPEN.value,
    }])
    return created, True


async def get_incident(conn: AsyncConnection, incident_id: uuid.UUID) -> Row:
    row = (
        await conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))
    ).mappings().first()
    if row is None:
        raise errors.IncidentNotFound()
    return row


async def resolve_incident(
    conn: AsyncConnection,
    now: datetime,
    incident_id: uuid.UUID,
    *,
    actor: str,
    resolution_type: ResolutionType = ResolutionType.MANUAL,
    note: str | None = None,
) -> Row:
    """Resolve one incident by hand (or because its alert resolved): rule 6."""
    await get_incident(conn, incident_id)
    closed = await close_incidents(
        conn, now, [incident_id], resolution_type=resolution_type, disposition=None,
        actor=actor, note=note,
    )
    if not closed:
        raise errors.IncidentResolved(status=IncidentStatus.RESOLVED.value)
    return closed[0]


async def close_incidents(
    conn: AsyncConnection,
    now: datetime,
    incident_ids: Iterable[uuid.UUID],
    *,
    resolution_type: ResolutionType,
    disposition: Disposition | None,
    actor: str,
    note: str | None = None,
    only_if_idle: bool = False,
) -> list[Row]:
    """Resolve open incidents, write their knowledge entries and events; return those closed.

    ``only_if_idle`` (expiry, rule 4) leaves alone an incident that still has a pending
    request or an approved one awaiting its outcome. Otherwise (rules 5 and 6) its pending
    requests end first: cancelled, or expired if already overdue.
    """
    ids = sorted(set(incident_ids))
    if not ids:
        return []
    if not only_if_idle:
        await _end_pending_requests_of(conn, now, ids)
    # Requests are locked; now the incidents, in id order so that resolvers never deadlock.
    # FOR NO KEY UPDATE: every event about an incident's requests holds a foreign-key share
    # lock on the incident until its transaction ends; FOR UPDATE would wait for each of
    # them (a human deciding a sibling request) and deadlock with a reported outcome.
    locked = (
        await conn.execute(
            sa.select(incidents.c.id)
            .where(among(conn, incidents.c.id, ids), incidents.c.status == "open")
            .order_by(incidents.c.id)
            .with_for_update(key_share=True)
        )
    ).scalars().all()
    if not locked:
        return []
    if not only_if_idle:
        # A request created meanwhile held the incident until it committed (create_request
        # locks it), so the first pass could not see it; now it can. End it too.
        await _end_pending_requests_of(conn, now, locked)
    guard = sa.and_(among(conn, incidents.c.id, locked), incidents.c.status == "open")
    if only_if_idle:
        live = sa.select(requests.c.id).where(
            requests.c.incident_id == incidents.c.id, is_live(requests)
        )
        guard = sa.and_(guard, ~sa.exists(live))
    closed = (
        await conn.execute(
            incidents.update()
            .where(guard)
            .values(
                status=IncidentStatus.RESOLVED.value, resolved_at=now,
                resolution_type=resolution_type.value,
                disposition=None if disposition is None else disposition.value,
                resolved_by=actor, resolution_note=note,
            )
            .returning(*incidents.c)
        )
    ).mappings().all()
    if closed:
        await _write_knowledge(conn, now, closed, note=note)
        detail = {"resolution_type": resolution_type.value,
                  "disposition": None if disposition is None else disposition.value,
                  **({"note": note} if note else {})}
        await insert_rows(conn, events, [{"incident_id": row["id"]} for row in closed], same={
            "at": now, "kind": EventKind.INCIDENT_RESOLVED.value, "actor": actor,
            "request_id": None, "from_status": "open", "to_status": "resolved", "detail": detail,
        })
    return list(closed)


async def _end_pending_requests_of(
    conn: AsyncConnection, now: datetime, incident_ids: Sequence[uuid.UUID]
) -> None:
    """The pending requests of incidents being resolved: overdue ones expire, others cancel."""
    for status, disposition, actor, when in (
        (RequestStatus.EXPIRED, Disposition.TIMEOUT_IGNORED, TIMEOUT_ACTOR,
         requests.c.expires_at <= now),
        (RequestStatus.CANCELLED, Disposition.CANCELLED, INCIDENT_RESOLVED_ACTOR,
         requests.c.expires_at > now),
    ):
        ended = (
            await conn.execute(
                requests.update()
                .where(requests.c.incident_id.in_(incident_ids), requests.c.status == PENDING, when)
                .values(status=status.value, disposition=disposition.value, decided_by=actor,
                        decided_at=now)
                .returning(requests.c.id, requests.c.incident_id)
            )
        ).all()
        kind = EventKind.REQUEST_EXPIRED if status is RequestStatus.EXPIRED else (
            EventKind.REQUEST_CANCELLED)
        await record_events(conn, [
            {"at": now, "kind": kind, "actor": actor, "request_id": r.id,
             "incident_id": r.incident_id, "from_status": PENDING, "to_status": status.value,
             "detail": {"reason": "incident_resolved"}}
            for r in ended
        ])


async def _write_knowledge(
    conn: AsyncConnection, now: datetime, closed: Sequence[Row], *, note: str | None
) -> None:
    by_incident: dict[uuid.UUID, list[dict[str, Any]]] = {row["id"]: [] for row in closed}
    rows = (
        await conn.execute(
            sa.select(
                requests.c.incident_id, requests.c.action, requests.c.status,
                requests.c.decided_by, requests.c.outcome_at, requests.c.outcome_succeeded,
                requests.c.outcome_detail,
            )
            .where(among(conn, requests.c.incident_id, by_incident))
            .order_by(requests.c.created_at, requests.c.id)
        )
    ).mappings().all()
    for r in rows:
        by_incident[r["incident_id"]].append(action_summary(r))
    entries = []
    for row in closed:
        actions = by_incident[row["id"]]
        entries.append({
            "id": uuid.uuid4(), "incident_id": row["id"],
            "service": row["service"], "fingerprint": row["fingerprint"], "title": row["title"],
            "resolution_type": row["resolution_type"], "disposition": row["disposition"],
            "actions": actions,
            "summary": knowledge_summary(
                row, actions, resolution_type=row["resolution_type"],
                disposition=row["disposition"], resolved_at=now, note=note,
            ),
        })
    await insert_rows(conn, knowledge, entries, same={"created_at": now})
