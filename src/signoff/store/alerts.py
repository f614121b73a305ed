"""Incidents opened and resolved by alerts, many in one statement: an Alertmanager
payload of a thousand alerts is a handful of statements, not thousands."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.lifecycle import EventKind, IncidentStatus, ResolutionType
from signoff.store.incidents import close_incidents
from signoff.store.rows import dialect_insert, insert_rows
from signoff.tables import events, incidents

# Rows per INSERT: well under both databases' limits on bound parameters.
CHUNK = 500


async def open_alert_incidents(
    conn: AsyncConnection, now: datetime, *, actor: str, alerts: Sequence[Mapping[str, Any]]
) -> tuple[int, int]:
    """Open an incident for each fingerprint that has no open one; ``(opened, joined)``.

    ``alerts`` hold ``POST /incidents``'s fields, each with a fingerprint; a fingerprint
    seen twice opens (or joins) once and joins again."""
    first: dict[str, Mapping[str, Any]] = {}
    for alert in alerts:
        first.setdefault(alert["fingerprint"], alert)
    opened: list[uuid.UUID] = []
    batch = list(first.values())
    for start in range(0, len(batch), CHUNK):
        rows = [{
            "id": uuid.uuid4(), "fingerprint": a["fingerprint"], "source": a.get("source"),
            "title": a["title"], "severity": a["severity"], "service": a.get("service"),
            "labels": a.get("labels") or {}, "description": a.get("description"),
            "status": IncidentStatus.OPEN.value, "opened_by": actor, "opened_at": now,
        } for a in batch[start:start + CHUNK]]
        stmt = dialect_insert(conn, incidents).values(rows).on_conflict_do_nothing(
            index_elements=[incidents.c.fingerprint],
            index_where=sa.text("status = 'open' AND fingerprint IS NOT NULL"),
        ).returning(incidents.c.id)
        opened += (await conn.execute(stmt)).scalars().all()
    await insert_rows(conn, events, [{"incident_id": iid} for iid in opened], same={
        "at": now, "kind": EventKind.INCIDENT_OPENED.value, "actor": actor, "request_id": None,
        "from_status": None, "to_status": IncidentStatus.OPEN.value, "detail": None,
    })
    return len(opened), len(alerts) - len(opened)


async def resolve_alert_incidents(
    conn: AsyncConnection, now: datetime, *, actor: str, fingerprints: Sequence[str]
) -> tuple[int, int]:
    """Resolve the open incidents with these fingerprints as ``alert_resolved`` (their
    pending requests are cancelled); ``(resolved, ignored)``."""
    ids: list[uuid.UUID] = []
    unique = sorted(set(fingerprints))
    for start in range(0, len(unique), CHUNK):
        ids += (await conn.execute(sa.select(incidents.c.id).where(
            incidents.c.fingerprint.in_(unique[start:start + CHUNK]),
            incidents.c.status == IncidentStatus.OPEN.value,
        ))).scalars().all()
    closed = await close_incidents(
        conn, now, ids, resolution_type=ResolutionType.ALERT_RESOLVED, disposition=None,
        actor=actor, note="the alert resolved") if ids else []
    return len(closed), len(fingerprints) - len(closed)
