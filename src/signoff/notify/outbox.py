"""The outbox: every notification is a row written in the transaction of its change.

``enqueue_for_events`` is called wherever audit events are written (``store``), so a
change and the notifications it causes commit together or not at all. Which channels
are on travels with the database engine (an execution option set by ``Database``), so
the store needs no settings. A worker (``notify.worker``) claims due rows, delivers them
and records the result; nothing here talks to the network.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import queries
from signoff.lifecycle import EventKind
from signoff.tables import cards, incidents, outbox, requests
from signoff.views import incident_view, request_view

Row = Mapping[Any, Any]
OPTION = "signoff_outbox"
# A caller that wants to know whether its transaction gave the worker anything to deliver
# puts a list here: each insert appends its number of rows.
ADDED_KEY = "signoff.outbox_added"
_CHUNK = 500  # rows per INSERT: well under PostgreSQL's limit of bind parameters


class Channel(StrEnum):
    TELEGRAM = "telegram"
    SLACK = "slack"
    WEBHOOK = "webhook"
    CALLBACK = "callback"


# The chats that show a card per request (``notify.cards``), in the order they are served.
CARD_CHANNELS = (Channel.TELEGRAM, Channel.SLACK)


class ItemStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


# Audit event kinds → the event names notifications carry.
EVENT_NAMES: dict[str, str] = {
    EventKind.REQUEST_CREATED: "request.created",
    EventKind.REQUEST_APPROVED: "request.approved",
    EventKind.REQUEST_REJECTED: "request.rejected",
    EventKind.REQUEST_EXPIRED: "request.expired",
    EventKind.REQUEST_CANCELLED: "request.cancelled",
    EventKind.REQUEST_OUTCOME: "request.outcome",
    EventKind.INCIDENT_OPENED: "incident.opened",
    EventKind.INCIDENT_RESOLVED: "incident.resolved",
}
REMINDER = "request.reminder"
DAILY_REPORT = "report.daily"  # the heartbeat (notify.heartbeat), on every channel
CARD = "card"
FINAL = "final"
ENDINGS = frozenset({
    EventKind.REQUEST_APPROVED, EventKind.REQUEST_REJECTED, EventKind.REQUEST_EXPIRED,
    EventKind.REQUEST_CANCELLED,
})
# What a request's events do to its card in each chat: post it, then edit it once.
CARD_EVENTS: dict[str, str] = {
    EventKind.REQUEST_CREATED: CARD, **{kind: FINAL for kind in ENDINGS},
}


def card_key(channel: Channel, step: str, request_id: uuid.UUID) -> str:
    """The dedupe key of a request's card (or its final edit) in one chat."""
    return f"{channel.value}:{step}:{request_id}"


@dataclass(frozen=True)
class Routing:
    """Which channels are on: what outbox rows an audit event turns into. ``cards``: the
    chats that get a card per request (any of ``CARD_CHANNELS``)."""

    webhook: bool = False
    cards: tuple[Channel, ...] = ()
    callbacks: bool = True


def routing_of(conn: AsyncConnection) -> Routing | None:
    sync = conn.sync_connection
    routing = None if sync is None else sync.get_execution_options().get(OPTION)
    return routing if isinstance(routing, Routing) else None


def among(conn: AsyncConnection, column: Any, ids: Iterable[uuid.UUID]) -> Any:
    """``column IN ids``; on PostgreSQL ``= ANY(array)``: one parameter for a whole
    resolver batch, so the statement is not rendered again for every size."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.literal(sorted(ids), postgresql.ARRAY(sa.Uuid())))
    return column.in_(sorted(ids))


def _insert(conn: AsyncConnection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(outbox)


async def add_items(conn: AsyncConnection, items: Sequence[dict[str, Any]]) -> None:
    """Insert outbox rows; one whose ``dedupe_key`` exists already is left out."""
    added = conn.info.get(ADDED_KEY)
    if added is not None and items:
        added.append(len(items))
    for start in range(0, len(items), _CHUNK):
        chunk = [
            {"request_id": None, "incident_id": None, "dedupe_key": None, "payload": {},
             "status": ItemStatus.PENDING.value, "attempts": 0, **item}
            for item in items[start:start + _CHUNK]
        ]
        for item in chunk:
            item.setdefault("next_attempt_at", item["created_at"])
        await conn.execute(
            _insert(conn).values(chunk).on_conflict_do_nothing(index_elements=["dedupe_key"])
        )


async def enqueue_for_events(
    conn: AsyncConnection, events: Iterable[Row], *, current: Iterable[Row] = (),
    no_callback: Collection[uuid.UUID] = (),
) -> None:
    """The outbox rows of a transaction's audit events, for the channels that are on.

    ``current`` are request rows as this transaction left them (what the transition's
    ``UPDATE … RETURNING`` gave back): those are not read again. ``no_callback`` are
    requests the caller knows to have no callback URL: without webhooks, nothing to read.
    """
    routing = routing_of(conn)
    if routing is None:
        return
    wanted = [e for e in events if e["kind"] in EVENT_NAMES]
    if not wanted:
        return
    snapshots = routing.webhook
    request_ids = {e["request_id"] for e in wanted if e.get("request_id") is not None}
    if not snapshots:  # callbacks only need the requests that ended and have a URL
        request_ids = {e["request_id"] for e in wanted
                       if e["kind"] in ENDINGS and e.get("request_id") is not None}
        request_ids.difference_update(no_callback)
    at_hand = {r["id"]: r for r in current if r["id"] in request_ids}
    found = {rid: r for rid, r in at_hand.items() if snapshots or r["callback_url"] is not None}
    found.update(
        await _read_requests(conn, request_ids - at_hand.keys(), with_url_only=not snapshots)
    )
    incident_rows: dict[uuid.UUID, Row] = {}
    if snapshots:
        ids = {e["incident_id"] for e in wanted if e.get("incident_id") is not None}
        incident_rows = await _read_incidents(conn, ids)
    votes = await queries.approvals_of(
        conn, [r["id"] for r in found.values() if r["approval_count"]]
    ) if found else {}
    items: list[dict[str, Any]] = []
    for e in wanted:
        name, at = EVENT_NAMES[e["kind"]], e["at"]
        rid, iid = e.get("request_id"), e.get("incident_id")
        subject = rid if rid is not None else iid
        base = {"event": name, "request_id": rid, "incident_id": iid, "created_at": at}
        row = found.get(rid) if rid is not None else None
        if routing.webhook:
            body = event_body(name, at, row, votes.get(row["id"], []) if row else [],
                              incident_rows.get(iid) if iid else None)
            items.append({**base, "channel": Channel.WEBHOOK.value, "payload": body,
                          "dedupe_key": f"webhook:{name}:{subject}"})
        if routing.callbacks and e["kind"] in ENDINGS and row is not None and row["callback_url"]:
            body = event_body(name, at, row, votes.get(row["id"], []), None)
            items.append({**base, "channel": Channel.CALLBACK.value,
                          "payload": {**body, "url": row["callback_url"]},
                          "dedupe_key": f"callback:{rid}"})
        if rid is not None and e["kind"] in CARD_EVENTS:
            step = CARD_EVENTS[e["kind"]]
            items += [{**base, "channel": chat.value, "event": step,
                       "dedupe_key": card_key(chat, step, rid)} for chat in routing.cards]
    await add_items(conn, items)


def event_body(
    name: str, at: datetime, request: Row | None, votes: Sequence[Row], incident: Row | None
) -> dict[str, Any]:
    """What a webhook receiver gets: ``{"event", "at", "request", "incident"}``."""
    return {
        "event": name,
        "at": at.isoformat(),
        "request": None if request is None else request_view(request, votes, at),
        "incident": None if incident is None else incident_view(incident),
    }


async def _read_requests(
    conn: AsyncConnection, ids: set[uuid.UUID], *, with_url_only: bool
) -> dict[uuid.UUID, Row]:
    if not ids:
        return {}
    where: sa.ColumnElement[bool] = among(conn, requests.c.id, ids)
    if with_url_only:
        where = sa.and_(where, requests.c.callback_url.isnot(None))
    rows = (await conn.execute(sa.select(requests).where(where))).mappings().all()
    return {r["id"]: r for r in rows}


async def _read_incidents(conn: AsyncConnection, ids: set[uuid.UUID]) -> dict[uuid.UUID, Row]:
    if not ids:
        return {}
    rows = (
        await conn.execute(sa.select(incidents).where(among(conn, incidents.c.id, ids)))
    ).mappings().all()
    return {r["id"]: r for r in rows}


# -- the worker's side ----------------------------------------------------------------


async def next_due_at(conn: AsyncConnection) -> datetime | None:
    """When the earliest pending item is due (served by the partial index)."""
    value = (
        await conn.execute(
            sa.select(sa.func.min(outbox.c.next_attempt_at))
            .where(outbox.c.status == ItemStatus.PENDING.value)
        )
    ).scalar()
    assert value is None or isinstance(value, datetime)
    return value


async def claim_due(
    conn: AsyncConnection, now: datetime, *, limit: int, lease: timedelta
) -> list[Row]:
    """Take up to ``limit`` due items: count the attempt and move them out of reach for
    ``lease`` (a worker that dies mid-delivery leaves them to be tried again then).

    On PostgreSQL the claim is a materialised CTE ``FOR UPDATE SKIP LOCKED``, so that
    replicas take disjoint items.
    """
    due = sa.and_(outbox.c.status == ItemStatus.PENDING.value, outbox.c.next_attempt_at <= now)
    claim = sa.select(outbox.c.id).where(due).order_by(outbox.c.next_attempt_at, outbox.c.id)
    claim = claim.limit(limit)
    if conn.dialect.name == "postgresql":
        cte = claim.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        stmt = outbox.update().where(outbox.c.id == cte.c.id)
    else:
        stmt = outbox.update().where(outbox.c.id.in_(claim.scalar_subquery()))
    rows = (
        await conn.execute(
            stmt.values(attempts=outbox.c.attempts + 1, next_attempt_at=now + lease)
            .returning(*outbox.c)
        )
    ).mappings().all()
    return sorted(rows, key=lambda r: r["id"])


def _claimed(item: Row) -> sa.ColumnElement[bool]:
    """Still ours: nobody has claimed it again since (after our lease ran out)."""
    return sa.and_(
        outbox.c.id == item["id"], outbox.c.status == ItemStatus.PENDING.value,
        outbox.c.attempts == item["attempts"],
    )


async def mark_delivered(
    conn: AsyncConnection, now: datetime, item: Row, note: str | None = None
) -> bool:
    result = await conn.execute(
        outbox.update().where(_claimed(item)).values(
            status=ItemStatus.DELIVERED.value, delivered_at=now, last_error=note,
        )
    )
    return bool(result.rowcount)


async def mark_failed(
    conn: AsyncConnection, now: datetime, item: Row, error: str, *, retry_at: datetime | None
) -> bool:
    """Record a failed attempt: try again at ``retry_at``, or give up (``dead``) if None.

    A dead item's ``next_attempt_at`` is the moment it was given up on (the watchdog's
    window of dead items counts from it)."""
    values: dict[str, Any] = {"last_error": error[:2000]}
    if retry_at is None:
        values["status"] = ItemStatus.DEAD.value
        values["next_attempt_at"] = now
    else:
        values["next_attempt_at"] = retry_at
    result = await conn.execute(outbox.update().where(_claimed(item)).values(**values))
    return bool(result.rowcount)


async def list_items(
    conn: AsyncConnection, *, request_id: uuid.UUID | None = None, status: str | None = None
) -> list[Row]:
    """Outbox rows, oldest first (tests and operators)."""
    stmt = sa.select(outbox).order_by(outbox.c.id)
    if request_id is not None:
        stmt = stmt.where(outbox.c.request_id == request_id)
    if status is not None:
        stmt = stmt.where(outbox.c.status == status)
    return list((await conn.execute(stmt)).mappings().all())


# -- cards ----------------------------------------------------------------------------


async def get_card(conn: AsyncConnection, request_id: uuid.UUID, channel: Channel) -> Row | None:
    return (
        await conn.execute(
            sa.select(cards).where(cards.c.request_id == request_id,
                                   cards.c.channel == channel.value)
        )
    ).mappings().first()


async def save_card(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, channel: Channel, *,
    chat_id: str, message_id: int,
) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(
        dialect.insert(cards).values(
            request_id=request_id, channel=channel.value, chat_id=chat_id,
            message_id=message_id, sent_at=now,
        ).on_conflict_do_nothing()
    )


async def mark_card_final(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, channel: Channel
) -> None:
    await conn.execute(
        cards.update().where(cards.c.request_id == request_id, cards.c.channel == channel.value)
        .values(final_at=now)
    )


async def card_still_coming(
    conn: AsyncConnection, request_id: uuid.UUID, channel: Channel
) -> bool:
    """Whether the request's card in ``channel`` is still waiting in the outbox (not sent,
    not dead)."""
    found = (
        await conn.execute(
            sa.select(outbox.c.id).where(
                outbox.c.dedupe_key == card_key(channel, CARD, request_id),
                outbox.c.status == ItemStatus.PENDING.value,
            )
        )
    ).first()
    return found is not None
