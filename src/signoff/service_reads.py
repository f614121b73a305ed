"""The service's reads of knowledge, statistics and operations (``Service`` inherits
them): each one read-only transaction."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from signoff import errors, queries
from signoff.doctor import Finding, run_checks
from signoff.lifecycle import Principal, Role
from signoff.report import Report, build_report
from signoff.service_policy import T, Work, allow
from signoff.settings import Settings
from signoff.views import knowledge_view
from signoff.watchdog import CheckResult, Thresholds, run_watchdogs

Page = dict[str, Any]


class ReadOperations:
    """Mixed into ``Service``: the attributes and the unit of work are the service's."""

    settings: Settings
    thresholds: Thresholds

    async def _read(self, work: Work[T]) -> T:
        raise NotImplementedError

    # -- knowledge, statistics and operations -------------------------------------------

    async def list_knowledge(
        self, who: Principal, *, incident_id: uuid.UUID | None = None,
        service: str | None = None, fingerprint: str | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        allow(who, Role.VIEWER)
        page = await self._read(lambda conn, now: queries.list_knowledge(
            conn, incident_id=incident_id, service=service, fingerprint=fingerprint,
            limit=limit, cursor=cursor,
        ))
        return page_of([knowledge_view(r) for r in page.rows], page.next_cursor)

    async def stats(
        self, who: Principal, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, Any]:
        """Dispositions and rates of the requests that ended in ``[since, until)``."""
        allow(who, Role.VIEWER)
        if since is not None and until is not None and since > until:
            raise errors.InvalidInput("since must not be after until")
        return await self._read(
            lambda conn, now: queries.compute_stats(conn, since=since, until=until)
        )

    async def watchdog(self, *, limit: int = 100) -> list[CheckResult]:
        """The watchdogs' findings now, computed from the database."""
        return await self._read(
            lambda conn, now: run_watchdogs(conn, now, self.thresholds, limit=limit)
        )

    async def report(self, day: date | None = None) -> Report:
        """The daily report of a local day (today so far without one)."""
        return await self._read(lambda conn, now: build_report(conn, now, self.settings, day))

    async def doctor(self, grace: timedelta) -> list[Finding]:
        """The lifecycle's invariants checked on the database."""
        return await self._read(lambda conn, now: run_checks(conn, now, grace=grace))


def page_of(items: list[dict[str, Any]], next_cursor: str | None) -> Page:
    return {"items": items, "next_cursor": next_cursor}
