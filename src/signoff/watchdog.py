"""Watchdogs: the silent failures of a sign-off pipeline, found from database truth.

Each check is a named query with a threshold. It reads only the database (never a
process's memory), so every replica, ``signoff watchdog`` and ``GET /api/v1/watchdog``
see the same findings, and a finding clears itself once the database says it is over.

=====  ===============================================================================
W-1    the resolver is stalled: a request is overdue by more than three backstops
W-2    a pending request older than the grace has no delivered card in a chat (Telegram, Slack)
W-3    an approved request has no outcome reported after the limit
W-4    a notification was given up on (``dead``) within the window
W-5    a placeholder action (``needs_analysis``) older than the grace has no delivered card
W-6    an open incident whose requests have all ended, the last longer ago than the grace
=====  ===============================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import Database
from signoff.lifecycle import IncidentStatus, RequestStatus
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.notify.outbox import CARD, ItemStatus
from signoff.settings import Settings
from signoff.store import is_live
from signoff.tables import cards, incidents, outbox, requests

PENDING = RequestStatus.PENDING.value
APPROVED = RequestStatus.APPROVED.value
# A resolver that is running expires a request within one backstop; three is a stall.
STALL_BACKSTOPS = 3
LIMIT = 100  # findings listed per check (the count is always whole)


@dataclass(frozen=True)
class Thresholds:
    """What each check allows before it reports."""

    stalled_after: timedelta
    notify_grace: timedelta
    outcome_limit: timedelta
    dead_window: timedelta
    orphan_grace: timedelta
    card_channels: tuple[str, ...]  # the chats that show cards (W-2 applies with one)
    zone: ZoneInfo  # times in findings are shown in it

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            stalled_after=settings.resolver_backstop * STALL_BACKSTOPS,
            notify_grace=settings.watchdog_notify_grace,
            outcome_limit=settings.watchdog_outcome_limit,
            dead_window=settings.watchdog_dead_window,
            orphan_grace=settings.watchdog_orphan_grace,
            card_channels=settings.card_channels,
            zone=settings.zone,
        )


@dataclass
class CheckResult:
    """One check as shown: its findings (at most ``LIMIT``) and how many there are."""

    id: str
    name: str
    threshold: str
    count: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    applies: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "threshold": self.threshold,
                "applies": self.applies, "count": self.count, "findings": self.findings}


Row = Mapping[Any, Any]
Query = Callable[[datetime, Thresholds], sa.Select[Any]]
Detail = Callable[[Row, datetime, "Thresholds"], str]


def _ago(now: datetime, then: datetime) -> str:
    return _span(now - then)


def _span(delta: timedelta) -> str:
    seconds = int(max(delta.total_seconds(), 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return "".join(shown) or "0s"


def _stalled(now: datetime, t: Thresholds) -> sa.Select[Any]:
    return (
        sa.select(requests.c.id.label("request_id"), requests.c.expires_at, requests.c.action)
        .where(requests.c.status == PENDING, requests.c.expires_at < now - t.stalled_after)
        .order_by(requests.c.expires_at)
    )


def _stalled_detail(row: Row, now: datetime, t: Thresholds) -> str:
    deadline = row["expires_at"].astimezone(t.zone)
    return (f"still pending {_ago(now, row['expires_at'])} after its deadline "
            f"({deadline:%Y-%m-%d %H:%M:%S %Z}): is any resolver running?")


def _uncarded(
    now: datetime, t: Thresholds, *, placeholders: bool
) -> sa.Select[Any]:
    """Pending requests past the grace with no card: in each chat that shows cards, or,
    with none, anywhere."""
    where = [requests.c.status == PENDING, requests.c.created_at < now - t.notify_grace]
    if placeholders:
        where.append(requests.c.needs_analysis.is_(True))
    if not t.card_channels:
        card = sa.select(cards.c.request_id).where(cards.c.request_id == requests.c.id)
        return (
            sa.select(requests.c.id.label("request_id"), requests.c.created_at,
                      requests.c.action, sa.null().label("channel"),
                      sa.null().label("card_status"), sa.null().label("card_error"))
            .where(*where, ~sa.exists(card))
            .order_by(requests.c.created_at)
        )
    per_chat = [_uncarded_in(channel, where) for channel in t.card_channels]
    if len(per_chat) == 1:
        return per_chat[0].order_by(requests.c.created_at)
    every = sa.union_all(*per_chat).subquery("uncarded")
    return sa.select(every).order_by(every.c.created_at, every.c.channel)


def _uncarded_in(channel: str, where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    card = sa.select(cards.c.request_id).where(cards.c.request_id == requests.c.id,
                                               cards.c.channel == channel)
    # The card's outbox item, if any (its dedupe key makes it one per request and chat):
    # why the card is not delivered.
    item = sa.and_(outbox.c.request_id == requests.c.id, outbox.c.channel == channel,
                   outbox.c.event == CARD)
    return (
        sa.select(requests.c.id.label("request_id"), requests.c.created_at, requests.c.action,
                  sa.literal(channel, sa.String()).label("channel"),
                  outbox.c.status.label("card_status"), outbox.c.last_error.label("card_error"))
        .select_from(requests.outerjoin(outbox, item))
        .where(*where, ~sa.exists(card))
    )


def _uncarded_detail(row: Row, now: datetime, t: Thresholds) -> str:
    if row["card_status"] is None:
        why = "no card was queued (is a card channel configured?)"
    else:
        why = f"its card is {row['card_status']}"
        if row["card_error"]:
            why += f", last error: {row['card_error']}"
    where = f" in {row['channel'].capitalize()}" if row["channel"] else ""
    return f"pending for {_ago(now, row['created_at'])} with no card delivered{where}; {why}"


def _no_outcome(now: datetime, t: Thresholds) -> sa.Select[Any]:
    return (
        sa.select(requests.c.id.label("request_id"), requests.c.decided_at,
                  requests.c.requested_by, requests.c.action)
        .where(requests.c.status == APPROVED, requests.c.outcome_at.is_(None),
               requests.c.decided_at < now - t.outcome_limit)
        .order_by(requests.c.decided_at)
    )


def _no_outcome_detail(row: Row, now: datetime, t: Thresholds) -> str:
    return (f"approved {_ago(now, row['decided_at'])} ago; {row['requested_by']} has not "
            f"reported whether {row['action']!r} worked")


def _dead(now: datetime, t: Thresholds) -> sa.Select[Any]:
    # A dead item's next_attempt_at is the moment it was given up on.
    return (
        sa.select(outbox.c.id.label("outbox_id"), outbox.c.request_id, outbox.c.incident_id,
                  outbox.c.channel, outbox.c.event, outbox.c.attempts, outbox.c.last_error,
                  outbox.c.next_attempt_at)
        .where(outbox.c.status == ItemStatus.DEAD.value,
               outbox.c.next_attempt_at >= now - t.dead_window)
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
    )


def _dead_detail(row: Row, now: datetime, t: Thresholds) -> str:
    return (f"{row['channel']} {row['event']} given up after {row['attempts']} attempts, "
            f"{_ago(now, row['next_attempt_at'])} ago: {row['last_error'] or 'no error text'}")


def _orphaned(now: datetime, t: Thresholds) -> sa.Select[Any]:
    mine = requests.c.incident_id == incidents.c.id
    ended_at = sa.func.coalesce(requests.c.outcome_at, requests.c.decided_at)
    recent_or_live = sa.select(requests.c.id).where(
        mine,
        sa.or_(is_live(requests), ended_at >= now - t.orphan_grace),
    )
    last_ended = sa.select(sa.func.max(ended_at)).where(mine).scalar_subquery()
    return (
        sa.select(incidents.c.id.label("incident_id"), incidents.c.title,
                  last_ended.label("last_ended"))
        .where(incidents.c.status == IncidentStatus.OPEN.value,
               sa.exists(sa.select(requests.c.id).where(mine)), ~sa.exists(recent_or_live))
        .order_by(incidents.c.opened_at)
    )


def _orphaned_detail(row: Row, now: datetime, t: Thresholds) -> str:
    return (f"{row['title']!r} is open, but its last request ended "
            f"{_ago(now, row['last_ended'])} ago and none is live: resolve it or propose "
            "another action")


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    query: Query
    detail: Detail
    threshold: Callable[[Thresholds], str]
    applies: Callable[[Thresholds], bool] = lambda t: True


CHECKS: tuple[Check, ...] = (
    Check("W-1", "resolver stalled", _stalled, _stalled_detail,
          lambda t: f"a request overdue by more than {_span(t.stalled_after)} "
                    f"({STALL_BACKSTOPS} backstops)"),
    Check("W-2", "pending request with no delivered card",
          lambda now, t: _uncarded(now, t, placeholders=False), _uncarded_detail,
          lambda t: f"pending longer than {_span(t.notify_grace)} without a card",
          applies=lambda t: bool(t.card_channels)),
    Check("W-3", "approved request with no outcome", _no_outcome, _no_outcome_detail,
          lambda t: f"approved longer than {_span(t.outcome_limit)} ago"),
    Check("W-4", "dead notifications", _dead, _dead_detail,
          lambda t: f"given up on within the last {_span(t.dead_window)}"),
    Check("W-5", "placeholder action with no delivered card",
          lambda now, t: _uncarded(now, t, placeholders=True), _uncarded_detail,
          lambda t: f"pending longer than {_span(t.notify_grace)} without a card"),
    Check("W-6", "open incident with every request ended", _orphaned, _orphaned_detail,
          lambda t: f"last request ended more than {_span(t.orphan_grace)} ago"),
)
IDS = tuple(c.id for c in CHECKS)


def _finding(check: Check, row: Row, now: datetime, thresholds: Thresholds) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("request_id", "incident_id", "outbox_id", "channel"):
        if row.get(key) is not None:
            found[key] = row[key] if isinstance(row[key], int) else str(row[key])
    found["detail"] = check.detail(row, now, thresholds)
    return found


async def run_watchdogs(
    conn: AsyncConnection, now: datetime, thresholds: Thresholds, *, limit: int = LIMIT,
) -> list[CheckResult]:
    """Every check at ``now``: its count and its first ``limit`` findings, oldest first."""
    results = []
    for check in CHECKS:
        result = CheckResult(check.id, check.name, check.threshold(thresholds),
                             applies=check.applies(thresholds))
        if result.applies:
            query = check.query(now, thresholds)
            count = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(query.order_by(None).subquery())
                )
            ).scalar_one()
            result.count = int(count)
            if count:
                rows = (await conn.execute(query.limit(limit))).mappings().all()
                result.findings = [_finding(check, r, now, thresholds) for r in rows]
        results.append(result)
    return results


class Watchman:
    """One pass of the checks, run on a schedule inside ``signoff serve`` (see
    ``signoff.scheduler``): gauges, and a log line whenever a check's count changes. The
    findings themselves are always recomputed from the database when read; this is what
    makes them alert."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        self.db = db
        self.thresholds = Thresholds.from_settings(settings)
        self.metrics = metrics
        self.last: dict[str, int] = {}
        self._log = get_logger("signoff.watchdog")

    async def check(self) -> list[CheckResult]:
        """One pass: every check, its gauge set and its change logged."""
        results = await self.db.run(
            lambda conn, now: run_watchdogs(conn, now, self.thresholds, limit=3),
            readonly=True,
        )
        for result in results:
            self.metrics.watchdog_findings.labels(result.id, result.name).set(result.count)
            before = self.last.get(result.id, 0)
            if result.count != before:
                if result.count:
                    self._log.warning(
                        "watchdog_findings", check=result.id, name=result.name,
                        count=result.count, threshold=result.threshold,
                        first=result.findings[0] if result.findings else None,
                    )
                else:
                    self._log.info("watchdog_clear", check=result.id, name=result.name)
            self.last[result.id] = result.count
        self.metrics.watchdog_last_run.set(time.time())
        return results
