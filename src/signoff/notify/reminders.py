"""Reminders before a deadline, at fractions of a request's time to live."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.notify import outbox
from signoff.tables import cards, requests


def reminder_times(
    created_at: datetime, expires_at: datetime, fractions: Sequence[float]
) -> list[tuple[float, datetime]]:
    """Each fraction with the instant it falls due, earliest first."""
    ttl = expires_at - created_at
    return [(f, created_at + ttl * f) for f in sorted(fractions)]


def first_reminder(
    created_at: datetime, expires_at: datetime, fractions: Sequence[float]
) -> datetime | None:
    """When a new request's first reminder falls due (None: no reminders)."""
    times = reminder_times(created_at, expires_at, fractions)
    return times[0][1] if times else None


def reminders_due(
    created_at: datetime, expires_at: datetime, fractions: Sequence[float], now: datetime
) -> tuple[list[float], datetime | None]:
    """The fractions due at ``now``, and when the next one falls due (None: no more)."""
    due, upcoming = [], None
    for fraction, at in reminder_times(created_at, expires_at, fractions):
        if at <= now:
            due.append(fraction)
        elif upcoming is None:
            upcoming = at
    return due, upcoming


async def next_reminder_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending reminder falls due (served by the partial index)."""
    value = (
        await conn.execute(
            sa.select(sa.func.min(requests.c.next_reminder_at)).where(
                requests.c.status == "pending", requests.c.next_reminder_at.isnot(None))
        )
    ).scalar()
    assert value is None or isinstance(value, datetime)
    return value


async def issue_reminders(
    conn: AsyncConnection, now: datetime, fractions: Sequence[float], *, limit: int = 500
) -> int:
    """Write the reminders that have fallen due, once each (a dedupe key per fraction), on
    the channels that carried the card; move each request's ``next_reminder_at`` on."""
    routing = outbox.routing_of(conn)
    due = sa.and_(
        requests.c.status == "pending", requests.c.next_reminder_at.isnot(None),
        requests.c.next_reminder_at <= now, requests.c.expires_at > now,
    )
    stmt = sa.select(requests.c.id, requests.c.incident_id, requests.c.created_at,
                     requests.c.expires_at).where(due).order_by(requests.c.next_reminder_at)
    stmt = stmt.limit(limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = (await conn.execute(stmt)).mappings().all()
    if not rows:
        return 0
    chats = routing.cards if routing is not None else ()
    carded: set[tuple[Any, str]] = set()
    if chats:
        carded = {(c.request_id, c.channel) for c in (
            await conn.execute(sa.select(cards.c.request_id, cards.c.channel).where(
                cards.c.request_id.in_([row["id"] for row in rows]),
                cards.c.channel.in_([chat.value for chat in chats]),
            ))
        ).all()}
    items: list[dict[str, Any]] = []
    for r in rows:
        fired, upcoming = reminders_due(r["created_at"], r["expires_at"], fractions, now)
        await conn.execute(
            requests.update().where(requests.c.id == r["id"], requests.c.status == "pending")
            .values(next_reminder_at=upcoming)
        )
        base = {"event": outbox.REMINDER, "request_id": r["id"], "incident_id": r["incident_id"],
                "created_at": now}
        for fraction in fired:
            payload = {"fraction": fraction, "expires_at": r["expires_at"].isoformat()}
            channels = []
            if routing is not None and routing.webhook:
                channels.append(outbox.Channel.WEBHOOK)
            channels += [chat for chat in chats if (r["id"], chat.value) in carded]
            for channel in channels:
                items.append({**base, "channel": channel.value, "payload": payload,
                              "dedupe_key": f"{channel.value}:reminder:{r['id']}:{fraction}"})
    await outbox.add_items(conn, items)
    return len(items)
