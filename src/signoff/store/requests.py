"""Approval requests and their transitions, each one guarded statement.

A transition is one compare-and-set (``UPDATE … WHERE status = 'pending' AND expires_at >
:now RETURNING …``). No row back means another transition won: the row is then read only
to say which, never to decide.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.db import notify_at_commit
from signoff.lifecycle import (
    Disposition,
    EventKind,
    IncidentStatus,
    RequestStatus,
    ResolutionType,
)
from signoff.store.groups import approver_guard, may_decide
from signoff.store.incidents import close_incidents
from signoff.store.prepared import Prepared
from signoff.store.rows import PENDING, Row, record_events
from signoff.tables import approvals, incidents, requests

WAKE_CHANNEL = "signoff_deadlines"
CHANGED_CHANNEL = "signoff_changed"


async def create_request(
    conn: AsyncConnection,
    now: datetime,
    *,
    actor: str,
    data: Mapping[str, Any],
    expires_at: datetime,
    idempotency_key: str | None = None,
    digest: str | None = None,
    incident: Row | None = None,
) -> tuple[Row, bool]:
    """Create a pending request; with an idempotency key seen before, return that one.

    Returns ``(row, created)``. The incident, if any, is locked so that it cannot be
    resolved while its new request is being written (rule 4 would miss it); a caller
    that has locked it already (``lock_incident``) passes it as ``incident``.
    """
    if idempotency_key is not None:
        previous = await find_idempotent_request(conn, actor, idempotency_key)
        if previous is not None:
            if previous["idempotency_digest"] != digest:
                raise errors.IdempotencyMismatch()
            return previous, False
    incident_id = data.get("incident_id")
    if incident_id is not None and incident is None:
        incident = await lock_incident(conn, incident_id)
    values = {
        "id": uuid.uuid4(), "incident_id": incident_id, "action": data["action"],
        "params": data.get("params") or {}, "risk": data.get("risk") or "medium",
        "rationale": data.get("rationale"), "requested_by": actor, "status": PENDING,
        "required_approvals": data.get("required_approvals") or 1, "approval_count": 0,
        "created_at": now, "expires_at": expires_at, "callback_url": data.get("callback_url"),
        "idempotency_key": idempotency_key, "idempotency_digest": digest,
        "needs_analysis": bool(data.get("needs_analysis")),
        "next_reminder_at": data.get("next_reminder_at"),
        "approvers": data.get("approvers") or None,
        "fingerprint": None if incident is None else incident["fingerprint"],
        "service": None if incident is None else incident["service"],
    }
    if data.get("policy") is not None:  # the policy's evaluation, as stored
        values["policy"] = data["policy"]
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
        return await stmt.first(conn, values)
    found = await stmt.first(conn, {**values, "wake": values["expires_at"].isoformat()})
    return None if found is None else {c.name: found[c.name] for c in requests.c}


@functools.cache
def _request_insert(dialect: str, idempotent: bool, names: tuple[str, ...]) -> Prepared:
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
        return Prepared(returning)
    ins = returning.cte("ins")
    wake = sa.bindparam("wake", type_=sa.Text())
    return Prepared(sa.select(*ins.c, sa.func.pg_notify(WAKE_CHANNEL, wake).label("woke")))


_IDEMPOTENT = Prepared(sa.select(requests).where(
    requests.c.requested_by == sa.bindparam("actor", type_=sa.Text()),
    requests.c.idempotency_key == sa.bindparam("key", type_=sa.Text()),
))
# FOR KEY SHARE's stronger sibling: the incident cannot be resolved (an update of it)
# until the new request is committed.
_LOCK_INCIDENT = Prepared(
    sa.select(incidents.c.status, incidents.c.severity, incidents.c.service,
              incidents.c.fingerprint)
    .where(incidents.c.id == sa.bindparam("incident_id", type_=sa.Uuid()))
    .with_for_update(key_share=True)
)


async def lock_incident(conn: AsyncConnection, incident_id: uuid.UUID) -> Row:
    """Lock an open incident for a new request (its status, severity, service and
    fingerprint): 404 when there is none, 409 when it is resolved."""
    locked = await _LOCK_INCIDENT.first(conn, {"incident_id": incident_id})
    if locked is None:
        raise errors.IncidentNotFound()
    if locked["status"] != IncidentStatus.OPEN:
        raise errors.IncidentResolved(status=locked["status"])
    return locked


async def find_idempotent_request(conn: AsyncConnection, actor: str, key: str) -> Row | None:
    """The request ``actor`` created earlier with this ``Idempotency-Key``, if any."""
    return await _IDEMPOTENT.first(conn, {"actor": actor, "key": key})


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
    if own is False and not await may_decide(conn, row["approvers"], actor):
        return errors.NotAnApprover(
            "only the request's approvers may decide it: " + ", ".join(row["approvers"]))
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


@functools.cache
def _approval_statements(dialect: str) -> tuple[Prepared, Prepared, Prepared | None]:
    """An approval's vote, its count and (on PostgreSQL) both as one statement, built once:
    the same statement objects every time, so SQLAlchemy neither builds them nor computes
    their cache key again. Parameters: request_id, actor, now, comment."""
    now = sa.bindparam("now", type_=requests.c.expires_at.type)
    actor = sa.bindparam("actor", type_=sa.Text())
    guard = sa.and_(
        requests.c.id == sa.bindparam("request_id", type_=sa.Uuid()),
        requests.c.status == PENDING, requests.c.expires_at > now,
        requests.c.requested_by != actor, requests.c.needs_analysis.is_(False),
        approver_guard(dialect, actor),
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
        return Prepared(vote), Prepared(count.where(guard)), None
    voted = vote.cte("vote")
    counted = count.where(guard, requests.c.id == voted.c.request_id).cte("counted")
    votes = sa.select(sa.func.count().label("voted")).select_from(voted).subquery("v")
    both = sa.select(votes.c.voted, *counted.c).select_from(votes.outerjoin(counted, sa.true()))
    return Prepared(vote), Prepared(count.where(guard)), Prepared(both)


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
        found = await both.first(conn, params)
        assert found is not None  # one row, whatever happened
        voted = bool(found["voted"])
        row = None if found["id"] is None else {c.name: found[c.name] for c in requests.c}
    else:
        voted = await vote.first(conn, params) is not None
        row = await count.first(conn, params) if voted else None
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


@functools.cache
def _end_statement(who: str, dialect: str) -> Prepared:
    """A reject's or a cancel's guarded update, built once (see ``_approval_statements``).

    ``who`` may end it: ``"others"`` (not its requester), ``"requester"``, or ``"anyone"``.
    Parameters: request_id, now, actor, to_status, to_disposition, comment."""
    now = sa.bindparam("now", type_=requests.c.expires_at.type)
    actor = sa.bindparam("actor", type_=sa.Text())
    guard = sa.and_(
        requests.c.id == sa.bindparam("request_id", type_=sa.Uuid()),
        requests.c.status == PENDING, requests.c.expires_at > now,
    )
    if who == "others":  # a decision: by an approver of it, not its requester
        guard = sa.and_(guard, requests.c.requested_by != actor, approver_guard(dialect, actor))
    elif who == "requester":
        guard = sa.and_(guard, requests.c.requested_by == actor)
    return Prepared(requests.update().where(guard).values(
        status=sa.bindparam("to_status", type_=sa.Text()),
        disposition=sa.bindparam("to_disposition", type_=sa.Text()),
        decided_by=actor, decided_at=now,
        decision_comment=sa.bindparam("comment", type_=sa.Text()),
    ).returning(*requests.c))


async def _end_request(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    status: RequestStatus, kind: EventKind, comment: str | None, own: bool,
    admin: bool = False,
) -> Row:
    who = "others" if not own else "anyone" if admin else "requester"
    row = await _end_statement(who, conn.dialect.name).first(conn, {
        "request_id": request_id, "now": now, "actor": actor, "to_status": status.value,
        "to_disposition": _disposition(status), "comment": comment,
    })
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


@functools.cache
def _outcome_statement(admin: bool) -> Prepared:
    """An outcome's guarded update, built once. Parameters: request_id, now, actor,
    succeeded, detail (``actor`` unused by an admin's)."""
    guard = sa.and_(
        requests.c.id == sa.bindparam("request_id", type_=sa.Uuid()),
        requests.c.status == RequestStatus.APPROVED.value, requests.c.outcome_at.is_(None),
    )
    if not admin:
        guard = sa.and_(guard, requests.c.requested_by == sa.bindparam("actor", type_=sa.Text()))
    return Prepared(requests.update().where(guard).values(
        outcome_succeeded=sa.bindparam("succeeded", type_=sa.Boolean()),
        outcome_detail=sa.bindparam("detail", type_=sa.Text()),
        outcome_at=sa.bindparam("now", type_=requests.c.outcome_at.type),
    ).returning(*requests.c))


async def report_outcome(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, actor: str,
    succeeded: bool, detail: str | None = None, admin: bool = False,
) -> Row:
    """Record what happened when an approved action ran; success resolves its incident."""
    row = await _outcome_statement(admin).first(conn, {
        "request_id": request_id, "now": now, "actor": actor, "succeeded": succeeded,
        "detail": detail,
    })
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


async def notify_changed(conn: AsyncConnection, request_ids: Sequence[uuid.UUID]) -> None:
    """PostgreSQL only: tell other replicas' waiters, at the commit, that these changed
    (in the COMMIT's own message)."""
    await notify_at_commit(conn, CHANGED_CHANNEL, ",".join(str(rid) for rid in request_ids))
