"""What every part of the store shares: audit events, batched inserts, ``IN`` lists and
the definition of a live request. The caller owns the transaction; nothing here commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.lifecycle import RequestStatus
from signoff.notify.outbox import enqueue_for_events, routing_of
from signoff.store.prepared import Prepared
from signoff.tables import events

Row = Mapping[Any, Any]
# A caller that wants to know what its transaction did (metrics) puts a list here.
EVENTS_KEY = "signoff.events"
PENDING = RequestStatus.PENDING.value
_EVENT_INSERT = Prepared(events.insert().inline().values(  # inline: no RETURNING id
    {c.name: sa.bindparam(c.name, type_=c.type) for c in events.c if c.name != "id"}))


async def record_events(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], *, current: Sequence[Row] = ()
) -> None:
    """Append audit events; ``rows`` carry at, kind, actor and the rest. ``current`` are
    request rows as the transaction just left them (the outbox need not read them)."""
    if not rows:
        return
    full = [
        {"request_id": None, "incident_id": None, "from_status": None, "to_status": None,
         "detail": None, **r}
        for r in rows
    ]
    if len(full) == 1:  # every transition: one statement, built once
        await _EVENT_INSERT.rows(conn, full[0])
    else:
        await conn.execute(events.insert(), full)
    await announce_events(conn, full, current=current)


async def announce_events(
    conn: AsyncConnection, written: Sequence[dict[str, Any]], *,
    current: Sequence[Row] = (), no_callback: Collection[uuid.UUID] = (),
) -> None:
    """What follows audit events written by a statement of the caller's own: their outbox
    rows, and the caller's collection of them (``EVENTS_KEY``)."""
    await enqueue_for_events(conn, written, current=current, no_callback=no_callback)
    collected = conn.info.get(EVENTS_KEY)
    if collected is not None:
        collected.extend(written)


def wants_events(conn: AsyncConnection) -> bool:
    """Whether ``announce_events`` has anything to do: a channel is on, or events are
    collected. Without either, a statement that writes its own events need not list them."""
    return routing_of(conn) is not None or conn.info.get(EVENTS_KEY) is not None


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def among(conn: AsyncConnection, column: Any, ids: Iterable[uuid.UUID]) -> Any:
    """``column IN ids``; on PostgreSQL ``= ANY(array)``, one parameter however many ids.

    An expanding ``IN`` is rendered again for every execution: for a resolver batch of a
    thousand ids that costs more than the statement itself.
    """
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.literal(list(ids), postgresql.ARRAY(sa.Uuid())))
    return column.in_(list(ids))


async def insert_rows(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    same: Mapping[str, Any] | None = None,
) -> None:
    """Insert many rows in one statement: ``rows`` (all with the same keys) hold what
    differs from row to row, ``same`` what every row shares.

    On PostgreSQL an executemany costs a round of binding and executing per row;
    ``INSERT … SELECT FROM unnest(one array per varying column)`` does a batch in one go.
    """
    if not rows:
        return
    same = same or {}
    if table is events:
        await announce_events(conn, [{**same, **row} for row in rows])
    if conn.dialect.name != "postgresql":
        await conn.execute(table.insert(), [{**same, **row} for row in rows])
        return
    names = list(rows[0])
    arrays = []
    for name in names:
        column_type = table.c[name].type
        values = [row[name] for row in rows]
        if isinstance(column_type, sa.JSON):  # as text, cast back below: no array of jsonb
            arrays.append(sa.literal([json.dumps(v) for v in values], postgresql.ARRAY(sa.Text())))
        else:
            arrays.append(sa.literal(values, postgresql.ARRAY(column_type)))
    source = sa.func.unnest(*arrays).table_valued(*names).render_derived()
    columns = [
        sa.cast(source.c[n], postgresql.JSONB) if isinstance(table.c[n].type, sa.JSON)
        else source.c[n]
        for n in names
    ] + [sa.literal(value, table.c[n].type) for n, value in same.items()]
    await conn.execute(table.insert().from_select([*names, *same], sa.select(*columns)))


def is_live(table: Any) -> sa.ColumnElement[bool]:
    """A request still in play for its incident: pending, or approved and waiting for its
    outcome (``table`` is ``requests`` or an alias of it)."""
    return sa.or_(
        table.c.status == PENDING,
        sa.and_(table.c.status == RequestStatus.APPROVED.value, table.c.outcome_at.is_(None)),
    )
