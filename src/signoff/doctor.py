"""``signoff doctor``: the lifecycle's invariants, checked on a live database.

Each check is one query that returns the offending rows (at most ``sample`` of them, plus
a count), so a healthy database answers fast: every query is an anti-join or a range scan
over an index the schema already has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.lifecycle import TERMINAL, Disposition, IncidentStatus, RequestStatus
from signoff.store import is_live
from signoff.tables import approvals, events, incidents, knowledge, requests

PENDING = RequestStatus.PENDING.value
TERMINAL_VALUES = sorted(s.value for s in TERMINAL)


@dataclass
class Finding:
    """One broken invariant: what it is, how many rows break it, and a few of them."""

    check: str
    description: str
    count: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count == 0


Query = Callable[[datetime, timedelta], sa.Select[Any]]


def _overdue(now: datetime, grace: timedelta) -> sa.Select[Any]:
    return sa.select(requests.c.id.label("request_id"), requests.c.expires_at).where(
        requests.c.status == PENDING, requests.c.expires_at < now - grace
    )


def _terminal_without_event(now: datetime, grace: timedelta) -> sa.Select[Any]:
    ending = sa.select(events.c.id).where(
        events.c.request_id == requests.c.id, events.c.to_status == requests.c.status
    )
    return sa.select(requests.c.id.label("request_id"), requests.c.status).where(
        requests.c.status.in_(TERMINAL_VALUES), ~sa.exists(ending)
    )


def _expired_with_idle_open_incident(now: datetime, grace: timedelta) -> sa.Select[Any]:
    sibling = requests.alias("sibling")
    live = sa.select(sibling.c.id).where(
        sibling.c.incident_id == incidents.c.id, is_live(sibling)
    )
    return (
        sa.select(requests.c.id.label("request_id"), incidents.c.id.label("incident_id"))
        .join(incidents, incidents.c.id == requests.c.incident_id)
        .where(
            requests.c.status == RequestStatus.EXPIRED.value,
            incidents.c.status == IncidentStatus.OPEN.value,
            ~sa.exists(live),
        )
    )


def _resolved_without_one_entry(now: datetime, grace: timedelta) -> sa.Select[Any]:
    # knowledge_entries.incident_id is unique, so "exactly one" is "not none": an anti-join.
    entry = sa.select(knowledge.c.id).where(knowledge.c.incident_id == incidents.c.id)
    return sa.select(incidents.c.id.label("incident_id")).where(
        incidents.c.status == IncidentStatus.RESOLVED.value, ~sa.exists(entry)
    )


def _entry_for_open_incident(now: datetime, grace: timedelta) -> sa.Select[Any]:
    return (
        sa.select(incidents.c.id.label("incident_id"))
        .join(knowledge, knowledge.c.incident_id == incidents.c.id)
        .where(incidents.c.status == IncidentStatus.OPEN.value)
    )


def _approved_short_of_quorum(now: datetime, grace: timedelta) -> sa.Select[Any]:
    votes = (
        sa.select(sa.func.count())
        .where(approvals.c.request_id == requests.c.id)
        .scalar_subquery()
    )
    return sa.select(
        requests.c.id.label("request_id"), votes.label("approvals"),
        requests.c.required_approvals,
    ).where(
        requests.c.status == RequestStatus.APPROVED.value,
        requests.c.disposition == Disposition.HUMAN_APPROVED.value,
        votes < requests.c.required_approvals,
    )


def _decided_after_deadline(now: datetime, grace: timedelta) -> sa.Select[Any]:
    # Cancellation is guarded by the deadline like a decision (expiry is the only ending after it).
    human = [RequestStatus.APPROVED.value, RequestStatus.REJECTED.value,
             RequestStatus.CANCELLED.value]
    return sa.select(
        requests.c.id.label("request_id"), requests.c.status, requests.c.decided_at,
        requests.c.expires_at,
    ).where(requests.c.status.in_(human), requests.c.decided_at >= requests.c.expires_at)


CHECKS: list[tuple[str, str, Query]] = [
    ("overdue_pending", "no request pending past its deadline beyond the backstop", _overdue),
    ("terminal_without_event", "every terminal request has the audit event of its ending",
     _terminal_without_event),
    ("expired_incident_open", "no expired request whose incident is open with nothing live",
     _expired_with_idle_open_incident),
    ("knowledge_per_resolution", "exactly one knowledge entry per resolved incident",
     _resolved_without_one_entry),
    ("knowledge_for_open_incident", "no knowledge entry for an incident still open",
     _entry_for_open_incident),
    ("approved_short_of_quorum", "an approved request has at least its required approvals",
     _approved_short_of_quorum),
    ("decided_after_deadline", "no decision at or after a request's deadline",
     _decided_after_deadline),
]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)


async def run_checks(
    conn: AsyncConnection, now: datetime, *, grace: timedelta, sample: int = 5,
    only: Sequence[str] | None = None,
) -> list[Finding]:
    """Every invariant (or those named in ``only``), each with its count and a few examples."""
    findings = []
    for name, description, build in CHECKS:
        if only is not None and name not in only:
            continue
        query = build(now, grace).subquery()
        count = (await conn.execute(sa.select(sa.func.count()).select_from(query))).scalar_one()
        rows = []
        if count:
            result = await conn.execute(sa.select(query).limit(sample))
            rows = [{k: _plain(v) for k, v in r.items()} for r in result.mappings()]
        findings.append(Finding(name, description, int(count), rows))
    return findings
