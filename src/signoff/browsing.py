"""The service's operations for people at a browser: sign-in sessions, the pending
requests by deadline, a knowledge search, statistics by day, and the watch for changes
that keeps open pages live.

A part of ``Service`` (which inherits it), kept apart to keep each file short.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import overview, queries, store
from signoff.changes import ANYTHING, Changes
from signoff.errors import Forbidden
from signoff.lifecycle import Disposition, Principal, Role, role_allows
from signoff.settings import Settings
from signoff.tables import events, incidents, requests, tokens
from signoff.tokens import CACHE_SECONDS, CACHE_SIZE, TokenOperations
from signoff.views import event_view, incident_view, knowledge_view, request_view

T = TypeVar("T")
Work = Callable[[AsyncConnection, datetime], Awaitable[T]]
Found = tuple[Principal, str, datetime]  # a session's principal, CSRF token and end
# How often a server reads the newest audit event id while pages watch (see ``changes``).
WATCH_SECONDS = 5.0


class BrowsingOperations(TokenOperations):
    """Sessions, and the reads only the console needs.

    Like tokens, sessions seen recently are remembered for a few seconds on PostgreSQL;
    a revoked token or a session signed out makes every server forget them at the commit
    (``NOTIFY``, as ``revoke_tokens`` sends), so either ends at once on every replica."""

    settings: Settings

    @functools.cached_property
    def changes(self) -> Changes:
        """Who watches for changes in this process: the console's live pages."""
        return Changes()

    @functools.cached_property
    def _sessions(self) -> dict[str, tuple[float, Found]]:
        return {}

    # -- sessions -------------------------------------------------------------------------

    async def sign_in(self, secret: str, ttl: timedelta) -> tuple[str, str, Principal] | None:
        """A new session for a live token: its secret, CSRF token and principal; None for
        a token unknown or revoked."""

        async def work(conn: AsyncConnection, now: datetime) -> Any:
            found = await store.token_id_of(conn, now, secret)
            if found is None:
                return None
            principal, token_id = found
            session, csrf = await store.create_session(conn, now, token_id, ttl)
            return session, csrf, principal

        result: tuple[str, str, Principal] | None = await self._write(work)
        return result

    async def session(self, secret: str) -> Found | None:
        """Who a session is (with its CSRF token and end), if it and its token are live."""
        key = store.hash_token(secret)
        remember = self.db.is_postgres
        hit = self._sessions.get(key) if remember else None
        if (hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS
                and hit[1][2] > datetime.now(hit[1][2].tzinfo)):
            return hit[1]
        found = await self._read(lambda conn, now: store.find_session(conn, now, secret))
        if found is not None and remember:
            if len(self._sessions) >= CACHE_SIZE:
                self._sessions.clear()
            self._sessions[key] = (time.monotonic(), found)
        return found

    async def sign_out(self, secret: str) -> None:
        """End the session, on every server at the commit."""
        await self._write(lambda conn, now: store.end_session(conn, now, secret))
        self.forget_tokens()

    def forget_tokens(self) -> None:
        """Tokens were revoked or a session ended: look each one up again, and open pages
        read their sessions again."""
        self._sessions.clear()
        super().forget_tokens()
        self.changes.publish([])

    # -- reads ----------------------------------------------------------------------------

    async def pending_by_deadline(
        self, who: Principal, *, limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        """Pending requests, soonest deadline first, with the count of all of them."""
        _allow_viewer(who)

        async def work(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
            rows, next_cursor, total = await overview.pending_by_deadline(
                conn, now, limit=limit, cursor=cursor)
            votes = await queries.approvals_of(
                conn, [r["id"] for r in rows if r["approval_count"]])
            items = []
            for r in rows:
                item = request_view(r, votes.get(r["id"], []), now)
                item["incident_title"] = r["incident_title"]
                items.append(item)
            return {"items": items, "next_cursor": next_cursor, "total": total,
                    "now": now}

        return await self._read(work)

    async def request_surroundings(
        self, who: Principal, request: dict[str, Any], *, limit: int = 200
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
        """A request's incident, its first ``limit`` audit events and whether there are
        more: one read, for the request's page."""
        _allow_viewer(who)
        rid = uuid.UUID(request["id"])
        iid = None if request["incident_id"] is None else uuid.UUID(request["incident_id"])

        async def work(conn: AsyncConnection, now: datetime) -> Any:
            incident = None if iid is None else await store.get_incident(conn, iid)
            page = await queries.list_events(conn, request_id=rid, limit=limit)
            return incident, page

        incident, page = await self._read(work)
        return (None if incident is None else incident_view(incident),
                [event_view(r) for r in page.rows], page.next_cursor is not None)

    async def search_knowledge(
        self, who: Principal, text: str, *, limit: int = 50
    ) -> list[dict[str, Any]]:
        _allow_viewer(who)
        rows = await self._read(
            lambda conn, now: overview.search_knowledge(conn, text, limit=limit))
        return [knowledge_view(r) for r in rows]

    async def daily_endings(self, who: Principal, days: int, zone: ZoneInfo) -> dict[str, Any]:
        """Per local day of the last ``days``: dispositions, override and timeout rates,
        mean and greatest expiry lateness."""
        _allow_viewer(who)

        async def work(conn: AsyncConnection, now: datetime) -> tuple[datetime, Any]:
            since = now - timedelta(days=days)
            return now, await overview.hourly_endings(conn, since)

        now, hours = await self._read(work)
        return summarise_days(hours, now, days, zone)

    async def is_empty(self) -> bool:
        """Whether nothing was ever stored: no token, incident or request."""

        async def work(conn: AsyncConnection, now: datetime) -> bool:
            for table in (tokens, incidents, requests):
                if (await conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1))
                        ).first() is not None:
                    return False
            return True

        return await self._read(work)

    async def newest_event(self) -> int:
        """The id of the newest audit event (0 for none)."""
        return await self._read(lambda conn, now: _newest_event(conn))

    async def watch_changes(self, stop: asyncio.Event) -> None:
        """While pages watch, tell them of audit events this server did not write or hear
        of (requests created on another replica, a token revoked from the command line):
        one read every ``WATCH_SECONDS``, compared with the last one or with the newest
        event a stream saw when it opened (``Changes.opened_at``), whichever is older."""
        newest: int | None = None
        while not stop.is_set():
            if len(self.changes):
                latest = await self.newest_event()
                since = self.changes.take_opened(newest)
                if since is not None and latest != since:
                    self.changes.publish([ANYTHING])
                newest = latest
            else:
                newest = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_SECONDS)


def _allow_viewer(who: Principal) -> None:
    if not role_allows(who.role, Role.VIEWER):
        raise Forbidden(f"this needs the viewer role; the token is {who.role}")


async def _newest_event(conn: AsyncConnection) -> int:
    value = (await conn.execute(sa.select(sa.func.max(events.c.id)))).scalar()
    return int(value or 0)


def summarise_days(
    hours: list[dict[str, Any]], now: datetime, days: int, zone: ZoneInfo
) -> dict[str, Any]:
    """Hourly counts (UTC) gathered into local days, oldest first."""
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    names = [d.value for d in Disposition]
    counts: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(names, 0))
    late_sum: dict[date, float] = defaultdict(float)
    late_max: dict[date, float] = {}
    for h in hours:
        day = h["hour"].astimezone(zone).date()
        if day < first:
            continue
        if h["disposition"] in names:
            counts[day][h["disposition"]] += h["count"]
        late_sum[day] += h["late_sum"]
        if h["late_max"] is not None:
            late_max[day] = max(late_max.get(day, 0.0), h["late_max"])
    out = []
    for i in range(days):
        day = first + timedelta(days=i)
        c = counts[day]
        total = sum(c.values())
        decided = c["human_approved"] + c["human_rejected"]
        expired = c["timeout_ignored"]
        out.append({
            "day": day, "counts": dict(c), "total": total,
            "override_rate": c["human_rejected"] / decided if decided else None,
            "timeout_rate": expired / total if total else None,
            "late_mean": late_sum[day] / expired if expired else None,
            "late_max": late_max.get(day),
        })
    return {"days": out, "dispositions": names}
