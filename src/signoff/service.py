"""The operations every front end calls: one operation, one unit of work.

The HTTP API, Telegram presses and the CLI (and every later front end) parse what they
were sent, call one operation here and shape its answer for their audience. An operation
runs its own transaction (``Database.run``: again if it was a deadlock victim), and once
that transaction has committed it counts what it did from the audit events it wrote,
wakes the delivery worker if it queued a notification and the resolver if it made a
deadline. Refusals are domain errors (``signoff.errors``), never HTTP ones.

Contract order of refusals: who (401/403), what (404), state (409), content (422). A
front end hands over a body it could not validate as the ``InvalidInput`` to raise, so
that the state is checked first.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, queries, store
from signoff.browsing import BrowsingOperations
from signoff.db import Database
from signoff.groups import GroupOperations
from signoff.intake import IntakeOperations
from signoff.lifecycle import (
    IncidentStatus,
    Principal,
    RequestStatus,
    ResolutionType,
    Role,
)
from signoff.links import LinkOperations
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.notify.outbox import ADDED_KEY as OUTBOX_ADDED
from signoff.notify.reminders import first_reminder
from signoff.policy import APPROVED, PolicyHolder
from signoff.policy.record import encode_verdict
from signoff.schemas import (
    DecisionIn,
    IncidentIn,
    OutcomeIn,
    RequestIn,
    ResolveIn,
    canonical_digest,
    request_deadline,
)
from signoff.service_policy import PolicyOperations, T, Work, allow, attach_precedents
from signoff.service_reads import ReadOperations
from signoff.settings import Settings
from signoff.views import event_view, incident_view, request_view
from signoff.waiters import BatchReader, Reading, Waiters, changed_requests
from signoff.watchdog import Thresholds

Id = uuid.UUID | str
Page = dict[str, Any]
log = get_logger("signoff.service")


class Notifier(Protocol):
    def wake(self) -> None: ...


class Resolver(Protocol):
    def wake(self, deadline: datetime | None = None) -> None: ...


def parse_id(value: Id, missing: type[errors.NotFound]) -> uuid.UUID:
    """An id as given (a path segment, a button's data): anything not a UUID names nothing."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        raise missing() from None


def _content(body: T | errors.InvalidInput) -> T:
    if isinstance(body, errors.InvalidInput):
        raise body
    return body


def _page(items: list[dict[str, Any]], next_cursor: str | None) -> Page:
    return {"items": items, "next_cursor": next_cursor}


class Service(BrowsingOperations, GroupOperations, LinkOperations, PolicyOperations,
              IntakeOperations, ReadOperations):
    """signoff's operations over one database. Built at the edge (the app, a CLI command);
    the app's lifespan attaches the delivery worker and the resolver it wakes."""

    def __init__(
        self, db: Database, settings: Settings, metrics: Metrics,
        policy: PolicyHolder | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or PolicyHolder(None)
        self.settings = settings
        self.metrics = metrics
        self.thresholds = Thresholds.from_settings(settings)
        self.callbacks = settings.callback_policy
        self.notifier: Notifier | None = None
        self.resolver: Resolver | None = None
        self.waiters = Waiters()
        self._reads = BatchReader(self._readings)
        self._principals: dict[str, tuple[float, Principal]] = {}

    # -- the unit of work ---------------------------------------------------------------

    async def _write(self, work: Work[T], *, generic_plans: bool = False) -> T:
        """Run ``work`` in one transaction; after it commits, count what it did."""
        written: list[dict[str, Any]] = []
        queued: list[int] = []
        changed: list[uuid.UUID] = []

        async def collecting(conn: AsyncConnection, now: datetime) -> T:
            attempt: list[dict[str, Any]] = []
            outbox: list[int] = []
            # Held here: once the connection is lost, ``conn.info`` raises and would hide
            # the database's error (a 503) behind its own (a 500).
            info = conn.info
            info[store.EVENTS_KEY] = attempt
            info[OUTBOX_ADDED] = outbox
            try:
                result = await work(conn, now)
            finally:
                info.pop(store.EVENTS_KEY, None)
                info.pop(OUTBOX_ADDED, None)
            changed[:] = changed_requests(attempt)
            if changed and self.db.is_postgres:  # other replicas' waiters hear at the commit
                await store.notify_changed(conn, changed)
            written[:] = attempt  # only the attempt that committed counts
            queued[:] = outbox
            return result

        result = await self.db.run(collecting, generic_plans=generic_plans)
        if changed:
            self.waiters.wake(changed)
        self.changes.publish_events(written)  # the console's live pages
        self.metrics.observe_events(written)
        # Only a transaction that queued something gives the worker work: waking it for
        # every write made it read the outbox again and again under load.
        if queued and self.notifier is not None:
            self.notifier.wake()
        return result

    async def _read(self, work: Work[T]) -> T:
        return await self.db.run(work, readonly=True)

    def heard(self, payload: str) -> None:
        """A ``NOTIFY`` on ``CHANGED_CHANNEL``, from any replica: tokens revoked, or
        requests changed (their waiters read again)."""
        if payload == store.TOKENS_CHANGED:
            self.forget_tokens()
        else:
            self.waiters.heard(payload)
            self.changes.publish(payload.split(","))

    def listening_again(self) -> None:
        """The listener is back: what was sent meanwhile was not heard."""
        self.forget_tokens()
        self.waiters.wake_all()

    async def _readings(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Reading]:
        """Requests as answered, with the seconds to their deadlines: one query for all
        (and their approvals and precedents), with no transaction around them (as in one
        at READ COMMITTED, each statement reads what was committed when it began)."""

        async def work(conn: AsyncConnection, now: datetime) -> dict[uuid.UUID, Reading]:
            found = await store.read_requests(conn, ids)
            outs = [request_view(r, votes, now) for r, votes in found]
            await attach_precedents(conn, [r for r, _ in found], outs)
            return {r["id"]: (out, (r["expires_at"] - now).total_seconds())
                    for (r, _), out in zip(found, outs, strict=True)}

        return await self.db.run(work, readonly=True, statements=True)

    # -- incidents ----------------------------------------------------------------------

    async def create_incident(self, who: Principal, body: IncidentIn) -> tuple[Page, bool]:
        """Open an incident; an open one with the same fingerprint is returned instead
        (``created`` false)."""
        allow(who, Role.REQUESTER)
        row, created = await self._write(
            lambda conn, now: store.create_incident(conn, now, actor=who.name,
                                                    data=body.model_dump())
        )
        if created:
            log.info("incident_opened", incident_id=str(row["id"]), by=who.name)
        return incident_view(row), created

    async def resolve_incident(
        self, who: Principal, incident_id: Id, body: ResolveIn | errors.InvalidInput
    ) -> Page:
        """Resolve by hand (resolution type ``manual``); its pending requests are cancelled."""
        allow(who, Role.APPROVER)
        iid = parse_id(incident_id, errors.IncidentNotFound)

        async def work(conn: AsyncConnection, now: datetime) -> Any:
            current = await store.get_incident(conn, iid)
            if current["status"] != IncidentStatus.OPEN:
                raise errors.IncidentResolved(status=current["status"])
            return await store.resolve_incident(
                conn, now, iid, actor=who.name, resolution_type=ResolutionType.MANUAL,
                note=_content(body).note,
            )

        row = await self._write(work)
        log.info("incident_resolved", incident_id=str(iid), by=who.name,
                 resolution_type="manual")
        return incident_view(row)

    async def get_incident(self, who: Principal, incident_id: Id) -> Page:
        allow(who, Role.VIEWER)
        iid = parse_id(incident_id, errors.IncidentNotFound)
        return incident_view(await self._read(lambda conn, now: store.get_incident(conn, iid)))

    async def list_incidents(
        self, who: Principal, *, status: IncidentStatus | None = None,
        service: str | None = None, limit: int = 50, cursor: str | None = None,
    ) -> Page:
        allow(who, Role.VIEWER)
        page = await self._read(lambda conn, now: queries.list_incidents(
            conn, status=None if status is None else status.value, service=service,
            limit=limit, cursor=cursor,
        ))
        return _page([incident_view(r) for r in page.rows], page.next_cursor)

    async def incident_events(
        self, who: Principal, incident_id: Id, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        iid = parse_id(incident_id, errors.IncidentNotFound)
        return await self._events(who, "incident_id", iid, limit=limit, cursor=cursor)

    # -- approval requests --------------------------------------------------------------

    async def create_request(
        self, who: Principal, body: RequestIn, *, idempotency_key: str | None = None
    ) -> tuple[Page, bool]:
        """Ask for sign-off. The same idempotency key and body return the same request
        (``created`` false), even once its deadline has passed."""
        allow(who, Role.REQUESTER)
        settings = self.settings
        digest = canonical_digest(body) if idempotency_key is not None else None

        async def work(conn: AsyncConnection, now: datetime) -> tuple[Page, bool, datetime]:
            if idempotency_key is not None:
                previous = await store.find_idempotent_request(conn, who.name, idempotency_key)
                if previous is not None:
                    if previous["idempotency_digest"] != digest:
                        raise errors.IdempotencyMismatch()
                    return await _request_out(conn, now, previous), False, previous["expires_at"]
            incident = await self.incident_for(conn, body)
            expires_at = request_deadline(
                body, now, default_ttl=settings.default_ttl, max_ttl=settings.max_ttl)
            if body.callback_url is not None:  # by its text: no DNS while creating
                self.callbacks.check_url(body.callback_url)
            unknown = await store.unknown_groups(conn, body.approvers or [])
            if unknown:
                raise errors.InvalidInput(f"approvers: no such group: {', '.join(unknown)}")
            verdict[:] = [await self.judge_request(conn, now, who, body, incident)]
            record = verdict[0] and verdict[0].as_json()
            data = {
                **body.model_dump(), "incident_id": incident and incident["id"],
                "needs_analysis": settings.is_placeholder(body.action),
                "next_reminder_at": first_reminder(now, expires_at, settings.reminders),
                "policy": verdict[0] and encode_verdict(verdict[0]),
            }
            row, created = await store.create_request(
                conn, now, actor=who.name, data=data, expires_at=expires_at,
                idempotency_key=idempotency_key, digest=digest, incident=incident,
            )
            if created and verdict[0] and verdict[0].decision == APPROVED:
                row = await store.auto_approve_request(conn, now, row["id"],
                                                       rule=str(verdict[0].rule))
            verdict[:] = verdict if created else []
            if not created or record is None:
                return await _request_out(conn, now, row), created, expires_at
            # The record in hand: not decoded again from what was just stored.
            out = await _request_out(conn, now, {**row, "policy": None})
            return {**out, "policy": record}, created, expires_at

        verdict: list[Any] = []
        # A create's statements are lookups by key; planning the policy's history read
        # for each request's values cost more than running it.
        out, created, expires_at = await self._write(work, generic_plans=True)
        if created:
            self.count_verdict(verdict[0] if verdict else None, out["id"])
            if self.resolver is not None:
                self.resolver.wake(expires_at)
            log.info("request_created", request_id=out["id"], incident_id=out["incident_id"],
                     by=who.name, expires_at=out["expires_at"])
        return out, created

    async def get_request(
        self, who: Principal, request_id: Id, *, wait: float | errors.InvalidInput = 0
    ) -> Page:
        """The request; with ``wait`` seconds, once it is no longer pending (or its
        deadline or the wait has come), holding no connection meanwhile."""
        allow(who, Role.VIEWER)
        rid = parse_id(request_id, errors.RequestNotFound)
        if not wait or isinstance(wait, errors.InvalidInput):
            out, _ = await self._reads.read(rid)  # a 404 comes before a bad wait's 422
            if isinstance(wait, errors.InvalidInput):
                raise wait
            return out
        self.metrics.waiters.inc()
        try:
            return await self.waiters.wait(rid, wait, lambda: self._reads.read(rid))
        finally:
            self.metrics.waiters.dec()

    async def list_requests(
        self, who: Principal, *, status: RequestStatus | None = None,
        incident_id: uuid.UUID | None = None, limit: int = 50, cursor: str | None = None,
    ) -> Page:
        allow(who, Role.VIEWER)

        async def work(conn: AsyncConnection, now: datetime) -> Page:
            page = await queries.list_requests(
                conn, now, status=status, incident_id=incident_id, limit=limit, cursor=cursor
            )
            found = await queries.approvals_of(
                conn, [r["id"] for r in page.rows if r["approval_count"]]
            )
            items = [request_view(r, found.get(r["id"], []), now) for r in page.rows]
            await attach_precedents(conn, page.rows, items)
            return _page(items, page.next_cursor)

        return await self._read(work)

    async def request_events(
        self, who: Principal, request_id: Id, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        rid = parse_id(request_id, errors.RequestNotFound)
        return await self._events(who, "request_id", rid, limit=limit, cursor=cursor)

    async def _events(
        self, who: Principal, subject: str, subject_id: uuid.UUID, *, limit: int,
        cursor: str | None,
    ) -> Page:
        """The audit trail of an incident or a request (``subject``), oldest first."""
        allow(who, Role.VIEWER)
        exists = store.get_incident if subject == "incident_id" else store.get_request

        async def work(conn: AsyncConnection, now: datetime) -> queries.Page:
            await exists(conn, subject_id)  # 404 for an id that names nothing
            return await queries.list_events(
                conn, limit=limit, cursor=cursor, **{subject: subject_id})

        page = await self._read(work)
        return _page([event_view(r) for r in page.rows], page.next_cursor)

    async def approve(
        self, who: Principal, request_id: Id,
        body: DecisionIn | errors.InvalidInput = DecisionIn(), *, via: str = "api",
    ) -> Page:
        """Add ``who``'s approval; the request is approved once the quorum is reached."""
        return await self._decide(who, request_id, body, approving=True, via=via)

    async def reject(
        self, who: Principal, request_id: Id,
        body: DecisionIn | errors.InvalidInput = DecisionIn(), *, via: str = "api",
    ) -> Page:
        """Reject: one reject ends the request, whatever approvals it already had."""
        return await self._decide(who, request_id, body, approving=False, via=via)

    async def _decide(
        self, who: Principal, request_id: Id, body: DecisionIn | errors.InvalidInput,
        *, approving: bool, via: str, link: uuid.UUID | None = None,
    ) -> Page:
        """A decision; through a single-use ``link``, which it uses up in its transaction."""
        allow(who, Role.APPROVER)
        transition = store.approve_request if approving else store.reject_request

        async def check(conn: AsyncConnection, now: datetime, rid: uuid.UUID) -> None:
            refusal = await store.explain_refusal(
                conn, now, rid, who.name, own=False, approving=approving
            )
            if refusal is not None:
                raise refusal

        async def act(conn: AsyncConnection, now: datetime, rid: uuid.UUID, parsed: Any) -> Any:
            if link is not None and not await store.use_link(conn, now, link):
                raise errors.LinkGone("this link has been used or has run out")
            return await transition(conn, now, rid, actor=who.name, comment=parsed.comment)

        out = await self._transition(request_id, body, check, act,
                                     voter=who.name if approving else None)
        log.info("request_decided", request_id=out["id"], by=who.name,
                 decision="approve" if approving else "reject", status=out["status"], via=via)
        return out

    async def cancel(self, who: Principal, request_id: Id) -> Page:
        """Withdraw a pending request; only its requester (or an admin) may."""
        allow(who, Role.REQUESTER)
        admin = who.role is Role.ADMIN

        async def check(conn: AsyncConnection, now: datetime, rid: uuid.UUID) -> None:
            await store.get_request(conn, rid)

        async def act(conn: AsyncConnection, now: datetime, rid: uuid.UUID, _: Any) -> Any:
            return await store.cancel_request(conn, now, rid, actor=who.name, admin=admin)

        out = await self._transition(request_id, None, check, act)
        log.info("request_cancelled", request_id=out["id"], by=who.name)
        return out

    async def report_outcome(
        self, who: Principal, request_id: Id, body: OutcomeIn | errors.InvalidInput
    ) -> Page:
        """Record how the approved action went; success resolves its incident (``action``)."""
        allow(who, Role.REQUESTER)
        admin = who.role is Role.ADMIN

        async def check(conn: AsyncConnection, now: datetime, rid: uuid.UUID) -> None:
            refusal = await store.explain_outcome_refusal(conn, now, rid, who.name, admin=admin)
            if refusal is not None:
                raise refusal

        async def act(conn: AsyncConnection, now: datetime, rid: uuid.UUID, parsed: Any) -> Any:
            return await store.report_outcome(
                conn, now, rid, actor=who.name, succeeded=parsed.succeeded,
                detail=parsed.detail, admin=admin,
            )

        out = await self._transition(request_id, body, check, act)
        log.info("request_outcome", request_id=out["id"], by=who.name,
                 succeeded=out["outcome"]["succeeded"])
        return out

    async def _transition(
        self,
        request_id: Id,
        body: Any,
        check: Callable[[AsyncConnection, datetime, uuid.UUID], Awaitable[None]],
        act: Callable[[AsyncConnection, datetime, uuid.UUID, Any], Awaitable[Any]],
        *,
        voter: str | None = None,
    ) -> Page:
        """One guarded transition, refused in the contract's order.

        ``voter``: ``act`` adds this approver's vote (see ``_request_out``)."""
        rid = parse_id(request_id, errors.RequestNotFound)

        async def work(conn: AsyncConnection, now: datetime) -> Page:
            if isinstance(body, errors.InvalidInput):
                await check(conn, now, rid)  # raises 404/403/409 before the 422
                raise body
            return await _request_out(conn, now, await act(conn, now, rid, body), voter=voter)

        try:
            return await self._write(work)
        except errors.RequestNotPending as refused:
            if refused.status != RequestStatus.EXPIRED:
                raise
            # Refused at the deadline: record the expiry now, so that the refusal names
            # the status that finally won (a decision committing just before it may).
            status = await self._write(lambda conn, now: store.settle_request(conn, now, rid))
            raise errors.RequestNotPending(
                "the request has expired" if status == "expired"
                else f"the request is already {status}",
                status=status,
            ) from None


async def _request_out(
    conn: AsyncConnection, now: datetime, row: Any, *, voter: str | None = None
) -> Page:
    """The request as answered, with its precedents; ``voter`` has just approved it
    (``store.approve_request`` records the vote at ``now``)."""
    if row["approval_count"] == 0:  # the common case: no votes to read
        out = request_view(row, [], now)
    elif voter is not None and row["approval_count"] == 1:  # that vote is the only one
        out = request_view(row, [{"approver": voter, "at": now.astimezone(UTC)}], now)
    else:
        out = request_view(row, (await queries.approvals_of(conn, [row["id"]]))[row["id"]], now)
    await attach_precedents(conn, [row], [out])
    return out
