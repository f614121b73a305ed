"""Every state change, as guarded SQL. The caller owns the transaction; nothing here commits.

A transition is one compare-and-set statement (``UPDATE … WHERE status = 'pending' AND
expires_at > :now RETURNING …``). No row back means another transition won: the row is
then read only to say which, never to decide. Locks are always taken requests first,
incidents second, so that two transactions never wait on each other in a circle.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
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
    Role,
)
from signoff.notify.outbox import enqueue_for_events
from signoff.tables import approvals, events, incidents, knowledge, requests, tokens
from signoff.views import action_summary, knowledge_summary

Row = Mapping[Any, Any]
WAKE_CHANNEL = "signoff_deadlines"
EVENTS_KEY = "signoff.events"
PENDING = RequestStatus.PENDING.value


# -- tokens ---------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


async def create_token(conn: AsyncConnection, now: datetime, name: str, role: Role) -> str:
    """Store a new token hashed; return the only copy of its secret."""
    secret = "so_" + secrets.token_urlsafe(32)
    await conn.execute(
        tokens.insert().values(
            id=uuid.uuid4(), name=name, role=role.value, token_hash=hash_token(secret),
            created_at=now,
        )
    )
    return secret


async def authenticate(conn: AsyncConnection, secret: str) -> Principal | None:
    digest = hash_token(secret)
    row = (
        await conn.execute(
            sa.select(tokens.c.name, tokens.c.role, tokens.c.token_hash).where(
                tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(name=row.name, role=Role(row.role))


# -- events ---------------------------------------------------------------------------


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
    await conn.execute(events.insert(), full)
    await enqueue_for_events(conn, full, current=current)
    # A caller that wants to know what its transaction did (metrics) collects them here.
    collected = conn.info.get(EVENTS_KEY)
    if collected is not None:
        collected.extend(full)


# -- incidents ------------------------------------------------------------------------


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _among(conn: AsyncConnection, column: Any, ids: Iterable[uuid.UUID]) -> Any:
    """``column IN ids``; on PostgreSQL ``= ANY(array)``, one parameter however many ids.

    An expanding ``IN`` is rendered again for every execution: for a resolver batch of a
    thousand ids that costs more than the statement itself.
    """
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.literal(list(ids), postgresql.ARRAY(sa.Uuid())))
    return column.in_(list(ids))


async def _insert_rows(
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
        written = [{**same, **row} for row in rows]
        await enqueue_for_events(conn, written)
        collected = conn.info.get(EVENTS_KEY)
        if collected is not None:
            collected.extend(written)
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
    stmt = _insert(conn, incidents).values(**values)
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


def is_live(table: Any) -> sa.ColumnElement[bool]:
    """A request still in play for its incident: pending, or approved and waiting for its
    outcome (``table`` is ``requests`` or an alias of it)."""
    return sa.or_(
        table.c.status == PENDING,
        sa.and_(table.c.status == RequestStatus.APPROVED.value, table.c.outcome_at.is_(None)),
    )


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
            .where(_among(conn, incidents.c.id, ids), incidents.c.status == "open")
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
    guard = sa.and_(_among(conn, incidents.c.id, locked), incidents.c.status == "open")
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
        await _insert_rows(conn, events, [{"incident_id": row["id"]} for row in closed], same={
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
            .where(_among(conn, requests.c.incident_id, by_incident))
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
    await _insert_rows(conn, knowledge, entries, same={"created_at": now})


# -- requests -------------------------------------------------------------------------


async def create_request(
    conn: AsyncConnection,
    now: datetime,
    *,
    actor: str,
    data: Mapping[str, Any],
    expires_at: datetime,
    idempotency_key: str | None = None,
    digest: str | None = None,
) -> tuple[Row, bool]:
    """Create a pending request; with an idempotency key seen before, return that one.

    Returns ``(row, created)``. The incident, if any, is locked so that it cannot be
    resolved while its new request is being written (rule 4 would miss it).
    """
    if idempotency_key is not None:
        previous = await find_idempotent_request(conn, actor, idempotency_key)
        if previous is not None:
            if previous["idempotency_digest"] != digest:
                raise errors.IdempotencyMismatch()
            return previous, False
    incident_id = data.get("incident_id")
    if incident_id is not None:
        status = (
            await conn.execute(
                sa.select(incidents.c.status).where(incidents.c.id == incident_id)
                .with_for_update(key_share=True)
            )
        ).scalar_one_or_none()
        if status is None:
            raise errors.IncidentNotFound()
        if status != IncidentStatus.OPEN:
            raise errors.IncidentResolved(status=status)
    values = {
        "id": uuid.uuid4(), "incident_id": incident_id, "action": data["action"],
        "params": data.get("params") or {}, "risk": data.get("risk") or "medium",
        "rationale": data.get("rationale"), "requested_by": actor, "status": PENDING,
        "required_approvals": data.get("required_approvals") or 1, "approval_count": 0,
        "created_at": now, "expires_at": expires_at, "callback_url": data.get("callback_url"),
        "idempotency_key": idempotency_key, "idempotency_digest": digest,
        "needs_analysis": bool(data.get("needs_analysis")),
        "next_reminder_at": data.get("next_reminder_at"),
    }
    row = await _insert_and_wake(conn, values, idempotent=idempotency_key is not None)
    if row is None:  # a concurrent create with the same key won the insert
        assert idempotency_key is not None
        previous = await find_idempotent_request(conn, actor, idempotency_key)
        assert previous is not None
        if previous["idempotency_digest"] != digest:
            raise errors.IdempotencyMismatch()
        return previous, False
    await record_events(conn, [{
        "at": now, "kind": EventKind.REQUEST_CREATED, "actor": actor, "request_id": row["id"],
        "incident_id": incident_id, "to_status": PENDING,
        "detail": {"expires_at": expires_at.isoformat(), "action": data["action"]},
    }], current=[row])
    return row, True


async def _insert_and_wake(
    conn: AsyncConnection, values: Mapping[str, Any], *, idempotent: bool
) -> Row | None:
    """Insert the request; its row, or None if an earlier one has its idempotency key.

    On PostgreSQL a new row also wakes the resolvers: one NOTIFY per transaction wakes
    every replica's, which re-reads the deadline. It rides on the insert (``WITH ins AS
    (INSERT …) SELECT ins.*, pg_notify(…) FROM ins``): no row inserted, no notification,
    and no round trip of its own. Like every NOTIFY it is delivered only at commit.
    """
    stmt = _request_insert(conn.dialect.name, idempotent, tuple(values))
    if conn.dialect.name != "postgresql":
        return (await conn.execute(stmt, dict(values))).mappings().first()
    params = {**values, "wake": values["expires_at"].isoformat()}
    found = (await conn.execute(stmt, params)).mappings().first()
    if found is None:
        return None
    return {c.name: found[c.name] for c in requests.c}


@functools.cache
def _request_insert(dialect: str, idempotent: bool, names: tuple[str, ...]) -> Any:
    """The statement ``_insert_and_wake`` runs, built once (see ``_approval_statements``);
    a parameter per column in ``names``, and ``wake``."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(requests).values({n: sa.bindparam(n, type_=requests.c[n].type)
                                    for n in names})
    if idempotent:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[requests.c.requested_by, requests.c.idempotency_key],
            index_where=requests.c.idempotency_key.isnot(None),
        )
    returning = stmt.returning(*requests.c)
    if dialect != "postgresql":
        return returning
    ins = returning.cte("ins")
    wake = sa.bindparam("wake", type_=sa.Text())
    return sa.select(*ins.c, sa.func.pg_notify(WAKE_CHANNEL, wake).label("woke"))


async def find_idempotent_request(conn: AsyncConnection, actor: str, key: str) -> Row | None:
    """The request ``actor`` created earlier with this ``Idempotency-Key``, if any."""
    return (
        await conn.execute(
            sa.select(requests).where(
                requests.c.requested_by == actor, requests.c.idempotency_key == key
            )
        )
    ).mappings().first()


async def get_request(conn: AsyncConnection, request_id: uuid.UUID) -> Row:
    row = (
        await conn.execute(sa.select(requests).where(requests.c.id == request_id))
    ).mappings().first()
    if row is None:
        raise errors.RequestNotFound()
    return row


async def explain_refusal(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, actor: str,
    *, own: bool | None, approving: bool = False,
) -> errors.SignoffError | None:
    """Why ``actor`` may not move this request now, in the contract's order (who, what,
    state, content); None if nothing stands in the way."""
    row = await get_request(conn, request_id)
    if own is False and row["requested_by"] == actor:
        return errors.Forbidden("you may not decide your own request")
    if own is True and row["requested_by"] != actor:
        return errors.Forbidden("only the requester may do this")
    if row["status"] != PENDING:
        return errors.RequestNotPending(
            f"the request is already {row['status']}", status=row["status"]
        )
    if row["expires_at"] <= now:
        return errors.RequestNotPending("the request has expired", status="expired")
    if approving:
        votes = await conn.execute(
            sa.select(approvals.c.approver).where(
                approvals.c.request_id == request_id, approvals.c.approver == actor
            )
        )
        if votes.first() is not None:
            return errors.AlreadyApproved(status=row["status"])
        if row["needs_analysis"]:
            return errors.NeedsAnalysis()
    return None


async def _refusal(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, actor: str,
    *, own: bool | None, approving: bool = False,
) -> errors.SignoffError:
    """After a guarded statement matched nothing: the reason, or a retryable conflict."""
    found = await explain_refusal(conn, now, request_id, actor, own=own, approving=approving)
    if found is not None:
        return found
    status = (await get_request(conn, request_id))["status"]
    return errors.Conflict("the request changed; try again", status=status)


def _pending_guard(request_id: uuid.UUID, now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        requests.c.id == request_id, requests.c.status == PENDING, requests.c.expires_at > now
    )


@functools.cache
def _approval_statements(dialect: str) -> tuple[Any, Any, Any]:
    """An approval's vote, its count and (on PostgreSQL) both as one statement, built once:
    the same statement objects every time, so SQLAlchemy neither builds them nor computes
    their cache key again. Parameters: request_id, actor, now, comment."""
    now = sa.bindparam("now", type_=requests.c.expires_at.type)
    actor = sa.bindparam("actor", type_=sa.Text())
    guard = sa.and_(
        requests.c.id == sa.bindparam("request_id", type_=sa.Uuid()),
        requests.c.status == PENDING, requests.c.expires_at > now,
        requests.c.requested_by != actor, requests.c.needs_analysis.is_(False),
    )
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # The guard is read under the row's lock (FOR NO KEY UPDATE, on PostgreSQL; SQLite
    # writers take turns): a transition that commits first is seen, so no vote is written
    # for a request that is no longer pending, and the count below cannot miss it.
    vote = insert(approvals).from_select(
        ["request_id", "approver", "at"],
        sa.select(requests.c.id, actor, now).where(guard).with_for_update(key_share=True),
    ).on_conflict_do_nothing().returning(approvals.c.request_id)
    reached = requests.c.approval_count + 1 >= requests.c.required_approvals

    def when_reached(value: Any, otherwise: Any) -> Any:
        return sa.case((reached, value), else_=otherwise)

    count = requests.update().values(
        approval_count=requests.c.approval_count + 1,
        status=when_reached("approved", requests.c.status),
        disposition=when_reached(Disposition.HUMAN_APPROVED.value, requests.c.disposition),
        decided_by=when_reached(actor, requests.c.decided_by),
        decided_at=when_reached(now, requests.c.decided_at),
        decision_comment=when_reached(sa.bindparam("comment", type_=sa.Text()),
                                      requests.c.decision_comment),
    ).returning(*requests.c)
    if dialect != "postgresql":
        return vote, count.where(guard), None
    voted = vote.cte("vote")
    counted = count.where(guard, requests.c.id == voted.c.request_id).cte("counted")
    votes = sa.select(sa.func.count().label("voted")).select_from(voted).subquery("v")
    both = sa.select(votes.c.voted, *counted.c).select_from(votes.outerjoin(counted, sa.true()))
    return vote, count.where(guard), both


async def approve_request(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    comment: str | None = None,
) -> Row:
    """Add ``actor``'s approval; the request becomes approved when the quorum is reached.

    The vote is written first (at ``now``), and only on a request ``actor`` may approve
    now: ``INSERT … SELECT`` under the pending guard, ``ON CONFLICT DO NOTHING``. A vote
    already there (a concurrent one of the same approver too: the insert waits for it)
    inserts nothing, so nothing is counted and there is nothing to take back. Then the
    guarded update counts the vote. On PostgreSQL both are one statement.
    """
    vote, count, both = _approval_statements(conn.dialect.name)
    params = {"request_id": request_id, "actor": actor, "now": now, "comment": comment}
    row: Row | None
    if both is not None:
        found = (await conn.execute(both, params)).mappings().one()
        voted = bool(found["voted"])
        row = None if found["id"] is None else {c.name: found[c.name] for c in requests.c}
    else:
        voted = (await conn.execute(vote, params)).first() is not None
        row = (await conn.execute(count, params)).mappings().first() if voted else None
    if voted and row is None:  # the vote's lock makes this impossible
        raise RuntimeError(f"a vote on {request_id} was written but not counted")
    if row is None:
        raise await _refusal(conn, now, request_id, actor, own=False, approving=True)
    done = row["status"] == "approved"
    await record_events(conn, [{
        "at": now,
        "kind": EventKind.REQUEST_APPROVED if done else EventKind.REQUEST_APPROVAL_ADDED,
        "actor": actor, "request_id": request_id, "incident_id": row["incident_id"],
        "from_status": PENDING, "to_status": row["status"],
        "detail": {"approvals": row["approval_count"], "required": row["required_approvals"],
                   **({"comment": comment} if comment else {})},
    }], current=[row])
    return row


async def _end_request(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    status: RequestStatus, kind: EventKind, comment: str | None, own: bool,
    admin: bool = False,
) -> Row:
    guard = _pending_guard(request_id, now)
    if own and not admin:
        guard = sa.and_(guard, requests.c.requested_by == actor)
    elif not own:
        guard = sa.and_(guard, requests.c.requested_by != actor)
    row = (
        await conn.execute(
            requests.update().where(guard).values(
                status=status.value, disposition=_disposition(status), decided_by=actor,
                decided_at=now, decision_comment=comment,
            ).returning(*requests.c)
        )
    ).mappings().first()
    if row is None:
        raise await _refusal(conn, now, request_id, actor, own=None if admin else own)
    await record_events(conn, [{
        "at": now, "kind": kind, "actor": actor, "request_id": request_id,
        "incident_id": row["incident_id"], "from_status": PENDING, "to_status": status.value,
        "detail": {"comment": comment} if comment else None,
    }], current=[row])
    return row


def _disposition(status: RequestStatus) -> str:
    return {
        RequestStatus.REJECTED: Disposition.HUMAN_REJECTED,
        RequestStatus.CANCELLED: Disposition.CANCELLED,
    }[status].value


async def reject_request(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    comment: str | None = None,
) -> Row:
    """One reject ends the request, whatever approvals it already had."""
    return await _end_request(
        conn, now, request_id, actor=actor, status=RequestStatus.REJECTED,
        kind=EventKind.REQUEST_REJECTED, comment=comment, own=False,
    )


async def cancel_request(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    admin: bool = False,
) -> Row:
    """Withdraw a pending request; only its requester (or an admin) may."""
    return await _end_request(
        conn, now, request_id, actor=actor, status=RequestStatus.CANCELLED,
        kind=EventKind.REQUEST_CANCELLED, comment=None, own=True, admin=admin,
    )


async def explain_outcome_refusal(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, actor: str, *, admin: bool
) -> errors.SignoffError | None:
    """Why ``actor`` may not report this request's outcome now; None if it may."""
    current = await get_request(conn, request_id)
    if not admin and current["requested_by"] != actor:
        return errors.Forbidden("only the requester may report the outcome")
    if current["status"] != "approved":
        status = "expired" if (
            current["status"] == PENDING and current["expires_at"] <= now
        ) else current["status"]
        return errors.RequestNotPending(
            f"only an approved request has an outcome; this one is {status}", status=status
        )
    if current["outcome_at"] is not None:
        return errors.OutcomeAlreadyReported(status=current["status"])
    return None


async def report_outcome(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    succeeded: bool, detail: str | None = None, admin: bool = False,
) -> Row:
    """Record what happened when an approved action ran; success resolves its incident."""
    guard = sa.and_(
        requests.c.id == request_id, requests.c.status == "approved",
        requests.c.outcome_at.is_(None),
    )
    if not admin:
        guard = sa.and_(guard, requests.c.requested_by == actor)
    row = (
        await conn.execute(
            requests.update().where(guard)
            .values(outcome_succeeded=succeeded, outcome_detail=detail, outcome_at=now)
            .returning(*requests.c)
        )
    ).mappings().first()
    if row is None:
        refusal = await explain_outcome_refusal(conn, now, request_id, actor, admin=admin)
        raise refusal or errors.Conflict("the request changed; try again", status="approved")
    await record_events(conn, [{
        "at": now, "kind": EventKind.REQUEST_OUTCOME, "actor": actor, "request_id": request_id,
        "incident_id": row["incident_id"], "from_status": "approved", "to_status": "approved",
        "detail": {"succeeded": succeeded, **({"detail": detail} if detail else {})},
    }], current=[row])
    if succeeded and row["incident_id"] is not None:
        await close_incidents(
            conn, now, [row["incident_id"]], resolution_type=ResolutionType.ACTION,
            disposition=Disposition(row["disposition"]), actor=actor,
        )
    return row


# -- expiry ---------------------------------------------------------------------------


@dataclass
class ExpiryBatch:
    """What one resolver batch did."""

    expired: list[Row] = field(default_factory=list)
    incidents_resolved: int = 0

    @property
    def count(self) -> int:
        return len(self.expired)


async def expire_due_requests(
    conn: AsyncConnection,
    now: datetime,
    *,
    limit: int,
    only: Sequence[uuid.UUID] | None = None,
    exclude: Sequence[uuid.UUID] = (),
) -> ExpiryBatch:
    """Expire up to ``limit`` due requests and close the incidents left idle: one batch.

    On PostgreSQL the batch is claimed with a materialised CTE ``FOR UPDATE SKIP LOCKED``,
    so replicas take disjoint rows and never wait on a row a human is deciding.
    """
    due = sa.and_(requests.c.status == PENDING, requests.c.expires_at <= now)
    if only is not None:
        due = sa.and_(due, requests.c.id.in_(list(only)))
    if exclude:
        due = sa.and_(due, requests.c.id.notin_(list(exclude)))
    values = {
        "status": RequestStatus.EXPIRED.value,
        "disposition": Disposition.TIMEOUT_IGNORED.value,
        "decided_by": TIMEOUT_ACTOR,
        "decided_at": now,
    }
    returning = (requests.c.id, requests.c.incident_id, requests.c.expires_at)
    claim = sa.select(requests.c.id).where(due).order_by(requests.c.expires_at).limit(limit)
    if conn.dialect.name == "postgresql":
        cte = claim.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        stmt = requests.update().where(requests.c.id == cte.c.id)
    else:  # SQLite: one writer at a time (BEGIN IMMEDIATE), nothing to skip
        stmt = requests.update().where(requests.c.id.in_(claim.scalar_subquery()))
    expired = (await conn.execute(stmt.values(**values).returning(*returning))).mappings().all()
    batch = ExpiryBatch(expired=list(expired))
    if not expired:
        return batch
    await _insert_rows(conn, events, [
        {"request_id": r["id"], "incident_id": r["incident_id"],
         "detail": {"lateness_seconds": round((now - r["expires_at"]).total_seconds(), 6)}}
        for r in expired
    ], same={
        "at": now, "kind": EventKind.REQUEST_EXPIRED.value, "actor": TIMEOUT_ACTOR,
        "from_status": PENDING, "to_status": RequestStatus.EXPIRED.value,
    })
    incident_ids = {r["incident_id"] for r in expired if r["incident_id"] is not None}
    closed = await close_incidents(
        conn, now, incident_ids, resolution_type=ResolutionType.TIMEOUT,
        disposition=Disposition.TIMEOUT_IGNORED, actor=TIMEOUT_ACTOR, only_if_idle=True,
    )
    batch.incidents_resolved = len(closed)
    return batch


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
