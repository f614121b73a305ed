"""The policy's reads and writes: its kill switch, its lookups (precedent, limits), the
policy's approval of a new request, precedents for answers and the rows of shadow figures.

The precedent and limit reads are range scans of partial indexes on ``approval_requests``
(people's decisions by fingerprint or by service; the policy's approvals by service), which
``tests/integration/test_policy_explain.py`` holds to.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors
from signoff.lifecycle import POLICY_ACTOR_PREFIX, Disposition, EventKind, RequestStatus
from signoff.policy.evaluate import HistoryQuery
from signoff.store.prepared import Prepared
from signoff.store.rows import PENDING, Row, dialect_insert, record_events
from signoff.tables import incidents, knowledge, policy_pauses, requests

PRECEDENTS = 5

_PAUSE = Prepared(sa.select(policy_pauses).where(policy_pauses.c.open.is_(True)))


async def current_pause(conn: AsyncConnection) -> Row | None:
    """The open pause of the policy (every replica reads it here), or None."""
    return await _PAUSE.first(conn, {})


async def pause_policy(conn: AsyncConnection, now: datetime, *, actor: str, reason: str) -> Row:
    """Pause the policy: nothing is auto-approved until it is resumed. Audited."""
    found = await current_pause(conn)
    if found is not None:
        raise errors.PolicyAlreadyPaused(
            f"the policy is already paused by {found['paused_by']}: {found['reason']}",
            status="paused")
    row = (await conn.execute(
        dialect_insert(conn, policy_pauses)
        .values(paused_by=actor, paused_at=now, reason=reason, open=True)
        .on_conflict_do_nothing(index_elements=[policy_pauses.c.open])
        .returning(*policy_pauses.c)
    )).mappings().first()
    if row is None:  # a concurrent pause committed first (the unique ``open``)
        won = await current_pause(conn)
        raise errors.PolicyAlreadyPaused(
            "the policy was just paused by "
            + ("someone else" if won is None else f"{won['paused_by']}: {won['reason']}"),
            status="paused")
    await record_events(conn, [{"at": now, "kind": EventKind.POLICY_PAUSED, "actor": actor,
                                "detail": {"reason": reason}}])
    return row


async def resume_policy(conn: AsyncConnection, now: datetime, *, actor: str) -> Row:
    """End the open pause (it stays, closed, as history). Audited."""
    row = (await conn.execute(
        policy_pauses.update().where(policy_pauses.c.open.is_(True))
        .values(open=None, resumed_by=actor, resumed_at=now).returning(*policy_pauses.c)
    )).mappings().first()
    if row is None:
        raise errors.PolicyNotPaused(status="running")
    await record_events(conn, [{"at": now, "kind": EventKind.POLICY_RESUMED, "actor": actor,
                                "detail": {"paused_by": row["paused_by"],
                                           "reason": row["reason"]}}])
    return row


OPEN_BY_FINGERPRINT = Prepared(sa.select(incidents.c.id).where(
    incidents.c.fingerprint == sa.bindparam("fingerprint", type_=sa.Text()),
    incidents.c.status == sa.literal_column("'open'"),
))


async def open_incident_id(conn: AsyncConnection, fingerprint: str) -> uuid.UUID:
    """The open incident with this fingerprint; ``IncidentNotFound`` when none is open."""
    found = await OPEN_BY_FINGERPRINT.first(conn, {"fingerprint": fingerprint})
    if found is None:
        raise errors.IncidentNotFound("no open incident has that fingerprint")
    iid: uuid.UUID = found["id"]
    return iid


_HUMAN = requests.c.disposition.in_([sa.literal_column("'human_approved'"),
                                     sa.literal_column("'human_rejected'")])


_AUTO = requests.c.disposition == sa.literal_column("'auto_repair'")


def _decisions(column: Any, kind: str, n: int) -> Any:
    """People's decisions on an action for a fingerprint (or service): a range of the
    partial index of people's decisions."""
    approved = sa.and_(requests.c.disposition == sa.literal_column("'human_approved'"),
                       requests.c.outcome_succeeded.is_(True))
    return sa.select(
        sa.literal_column(f"'{kind}'").label("kind"), sa.null().label("name"),
        requests.c.decided_at.label("at"), approved.label("ok"),
    ).where(
        column == sa.bindparam(f"key{n}", type_=sa.Text()), _HUMAN,
        requests.c.decided_at > sa.bindparam(f"since{n}", type_=requests.c.decided_at.type),
        sa.func.lower(requests.c.action) == sa.bindparam("action", type_=sa.Text()),
        sa.or_(requests.c.disposition == sa.literal_column("'human_rejected'"), approved),
    )


def _limited(service: bool) -> Any:
    """The policy's approvals for a service: a range of the policy's approvals index
    (few: each rule's limit bounds them), sorted out by rule here."""
    return sa.select(
        sa.literal_column("'limit'").label("kind"), requests.c.decided_by.label("name"),
        requests.c.decided_at.label("at"), sa.null().label("ok"),
    ).where(
        requests.c.service == sa.bindparam("service", type_=sa.Text()) if service
        else requests.c.service.is_(None),
        _AUTO,
        requests.c.decided_at > sa.bindparam("limited_since", type_=requests.c.decided_at.type),
    )


_OPEN_PAUSE = sa.exists().where(policy_pauses.c.open.is_(True))


def _paused() -> Any:
    """One row of kind ``paused`` while the policy is paused (the kill switch)."""
    return sa.select(
        sa.literal_column("'paused'").label("kind"), sa.null().label("name"),
        sa.null().label("at"), sa.null().label("ok"),
    ).where(_OPEN_PAUSE)


@functools.cache
def history_statement(limited: bool, service: bool, decided: tuple[str, ...]) -> Prepared:
    """The kill switch and all the history one create's policy needs, one statement
    (built once per shape)."""
    column = {"fingerprint": requests.c.fingerprint, "service": requests.c.service}
    parts = [_limited(service)] if limited else []
    parts += [_decisions(column[by], by, n) for n, by in enumerate(decided)]
    # Last: the columns' types are the first part's (a NULL has none to give).
    return Prepared(sa.union_all(*parts, _paused()) if parts else _paused())


# Two creates at once must not both take the last place under a limit: they count one
# after the other, each after taking this lock (SQLite's writers take turns anyway).
LIMITS_LOCK = Prepared(sa.select(sa.func.pg_advisory_xact_lock(
    sa.func.hashtextextended(sa.bindparam("key", type_=sa.Text()), 0)).label("locked")))


class PolicyLookups:
    """The policy's reads, in the create's transaction (``signoff.policy.Lookups``)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def history(
        self, query: HistoryQuery, *, locked: bool = False
    ) -> tuple[bool, list[tuple[str, str, datetime, bool]]]:
        if locked and self.conn.dialect.name == "postgresql":
            await LIMITS_LOCK.first(self.conn, {"key": f"signoff-limit|{query.service!r}"})
        params: dict[str, Any] = {"action": query.action, "service": query.service,
                                  "limited_since": query.limited_since}
        for n, (_, key, since) in enumerate(query.decided):
            params[f"key{n}"], params[f"since{n}"] = key, since
        statement = history_statement(bool(query.limited), query.service is not None,
                                      tuple(by for by, _, _ in query.decided))
        cut = len(POLICY_ACTOR_PREFIX)
        paused, out = False, []
        for row in await statement.rows(self.conn, params):
            kind = row["kind"]
            if kind == "paused":
                paused = True
            elif kind != "limit":
                out.append((kind, kind, row["at"], bool(row["ok"])))
            elif row["name"][cut:] in query.limited:
                out.append(("limit", row["name"][cut:], row["at"], False))
        return paused, out


_AUTO_APPROVE = Prepared(requests.update().where(
    requests.c.id == sa.bindparam("request_id", type_=sa.Uuid()),
    requests.c.status == PENDING,
    requests.c.expires_at > sa.bindparam("now", type_=requests.c.expires_at.type),
    requests.c.needs_analysis.is_(False), requests.c.required_approvals == 1,
).values(
    status=RequestStatus.APPROVED.value, disposition=Disposition.AUTO_REPAIR.value,
    decided_by=sa.bindparam("actor", type_=sa.Text()),
    decided_at=sa.bindparam("now", type_=requests.c.decided_at.type),
).returning(*requests.c))


async def auto_approve_request(
    conn: AsyncConnection, now: datetime, request_id: uuid.UUID, *, rule: str
) -> Row:
    """The policy's approval of a request it has just created: ``policy:<rule>``."""
    actor = POLICY_ACTOR_PREFIX + rule
    row = await _AUTO_APPROVE.first(conn, {"request_id": request_id, "now": now,
                                           "actor": actor})
    if row is None:  # created in this transaction: nothing else can have moved it
        raise RuntimeError(f"request {request_id} could not be approved by {actor}")
    await record_events(conn, [{
        "at": now, "kind": EventKind.REQUEST_APPROVED, "actor": actor,
        "request_id": request_id, "incident_id": row["incident_id"],
        "from_status": PENDING, "to_status": RequestStatus.APPROVED.value,
        "detail": {"rule": rule},
    }], current=[row])
    return row


LATEST_ENTRIES = {
    by: Prepared(sa.select(knowledge).where(
        knowledge.c[by] == sa.bindparam("key", type_=sa.Text()))
        .order_by(knowledge.c.created_at.desc(), knowledge.c.id.desc()).limit(PRECEDENTS))
    for by in ("fingerprint", "service")
}


async def precedents_of(
    conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
) -> dict[uuid.UUID, list[Row]]:
    """Up to ``PRECEDENTS`` knowledge entries for each request: its fingerprint's, newest
    first, else its service's; none for a request with neither. One read per key."""
    found: dict[tuple[str, str], Sequence[Row]] = {}
    out: dict[uuid.UUID, list[Row]] = {}
    for row in rows:
        entries: Sequence[Row] = []
        for by in ("fingerprint", "service"):
            key = row.get(by)
            if key is None:
                continue
            if (by, key) not in found:
                found[(by, key)] = await LATEST_ENTRIES[by].rows(conn, {"key": key})
            entries = found[(by, key)]
            if entries:
                break
        out[row["id"]] = list(entries)
    return out


async def ended_with_policy(
    conn: AsyncConnection, *, since: datetime | None, until: datetime | None
) -> list[Row]:
    """Requests evaluated by a policy that ended in ``[since, until)``, oldest first."""
    where = [requests.c.status != PENDING, requests.c.policy.isnot(None),
             requests.c.decided_at.isnot(None)]
    if since is not None:
        where.append(requests.c.decided_at >= since)
    if until is not None:
        where.append(requests.c.decided_at < until)
    return list((await conn.execute(
        sa.select(requests.c.id, requests.c.action, requests.c.disposition,
                  requests.c.policy).where(*where)
        .order_by(requests.c.decided_at, requests.c.id))).mappings().all())
