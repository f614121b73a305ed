"""HTTP routes under ``/api/v1``: parse, call the store in one transaction, answer."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, queries, store
from signoff.db import Database
from signoff.http import body_or_raise, parse_filter_id, parse_id, read_body, require
from signoff.lifecycle import IncidentStatus, RequestStatus, ResolutionType, Role
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.notify.outbox import ADDED_KEY as OUTBOX_ADDED
from signoff.notify.reminders import first_reminder
from signoff.schemas import (
    DecisionIn,
    FilterText,
    IncidentIn,
    OutcomeIn,
    RequestIn,
    ResolveIn,
    as_utc,
    canonical_digest,
)
from signoff.settings import Settings
from signoff.views import event_view, incident_view, knowledge_view, request_view
from signoff.watchdog import Thresholds, run_watchdogs

log = get_logger("signoff.api")
router = APIRouter(prefix="/api/v1")

Viewer = Annotated[store.Principal, Depends(require(Role.VIEWER))]
Requester = Annotated[store.Principal, Depends(require(Role.REQUESTER))]
Approver = Annotated[store.Principal, Depends(require(Role.APPROVER))]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size, 1 to 500.")]
Cursor = Annotated[str | None, Query(description="Opaque cursor from next_cursor.")]
Work = Callable[[AsyncConnection, datetime], Awaitable[Any]]


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _write(request: Request, work: Work) -> Any:
    """Run ``work`` in one transaction; after it commits, count what it did."""
    written: list[dict[str, Any]] = []
    queued: list[int] = []

    async def collecting(conn: AsyncConnection, now: datetime) -> Any:
        attempt: list[dict[str, Any]] = []
        outbox: list[int] = []
        # Held here: once the connection is lost, ``conn.info`` raises and would hide the
        # database's error (a 503) behind its own (a 500).
        info = conn.info
        info[store.EVENTS_KEY] = attempt
        info[OUTBOX_ADDED] = outbox
        try:
            result = await work(conn, now)
        finally:
            info.pop(store.EVENTS_KEY, None)
            info.pop(OUTBOX_ADDED, None)
        written[:] = attempt  # only the attempt that committed counts
        queued[:] = outbox
        return result

    result = await _db(request).run(collecting)
    _metrics(request).observe_events(written)
    notifier = request.app.state.notifier
    # Only a transaction that queued something gives the worker work: waking it for every
    # write made it read the outbox again and again under load.
    if queued and notifier is not None:
        notifier.wake()
    return result


async def _request_out(
    conn: AsyncConnection, now: datetime, row: Any, *, voter: str | None = None
) -> dict[str, Any]:
    """The request as answered; ``voter`` has just approved it (``store.approve_request``
    records the vote at ``now``)."""
    if row["approval_count"] == 0:  # the common case: no votes to read
        return request_view(row, [], now)
    if voter is not None and row["approval_count"] == 1:  # that vote is the only one
        return request_view(row, [{"approver": voter, "at": now.astimezone(UTC)}], now)
    found = await queries.approvals_of(conn, [row["id"]])
    return request_view(row, found[row["id"]], now)


def _page(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def _body_doc(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its body itself (``read_body``,
    so that who/what/state are refused before content): clients and fuzzers see it."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": schema}}}}


# -- incidents ------------------------------------------------------------------------


@router.post("/incidents", status_code=201, tags=["incidents"])
async def create_incident(
    body: IncidentIn, request: Request, response: Response, who: Requester
) -> dict[str, Any]:
    """Open an incident; an open incident with the same fingerprint is returned (200)."""

    async def work(conn: AsyncConnection, now: datetime) -> tuple[Any, bool]:
        return await store.create_incident(conn, now, actor=who.name, data=body.model_dump())

    row, created = await _write(request, work)
    if created:
        log.info("incident_opened", incident_id=str(row["id"]), by=who.name)
    else:
        response.status_code = 200
    return incident_view(row)


@router.get("/incidents", tags=["incidents"])
async def list_incidents(
    request: Request, _: Viewer, status: IncidentStatus | None = None,
    service: FilterText = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    async with _db(request).begin(readonly=True) as conn:
        page = await queries.list_incidents(
            conn, status=None if status is None else status.value, service=service,
            limit=limit, cursor=cursor,
        )
    return _page([incident_view(r) for r in page.rows], page.next_cursor)


@router.get("/incidents/{incident_id}", tags=["incidents"])
async def get_incident(incident_id: str, request: Request, _: Viewer) -> dict[str, Any]:
    iid = parse_id(incident_id, errors.IncidentNotFound)
    async with _db(request).begin(readonly=True) as conn:
        return incident_view(await store.get_incident(conn, iid))


@router.post("/incidents/{incident_id}/resolve", tags=["incidents"],
             openapi_extra=_body_doc(ResolveIn, required=False))
async def resolve_incident(incident_id: str, request: Request, who: Approver) -> dict[str, Any]:
    """Resolve by hand (resolution type ``manual``); its pending requests are cancelled."""
    iid = parse_id(incident_id, errors.IncidentNotFound)
    parsed = await read_body(request, ResolveIn)

    async def work(conn: AsyncConnection, now: datetime) -> Any:
        current = await store.get_incident(conn, iid)
        if current["status"] != IncidentStatus.OPEN:
            raise errors.IncidentResolved(status=current["status"])
        body = body_or_raise(parsed)
        return await store.resolve_incident(
            conn, now, iid, actor=who.name, resolution_type=ResolutionType.MANUAL, note=body.note
        )

    row = await _write(request, work)
    log.info("incident_resolved", incident_id=incident_id, by=who.name, resolution_type="manual")
    return incident_view(row)


@router.get("/incidents/{incident_id}/events", tags=["incidents"])
async def incident_events(
    incident_id: str, request: Request, _: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    iid = parse_id(incident_id, errors.IncidentNotFound)
    async with _db(request).begin(readonly=True) as conn:
        await store.get_incident(conn, iid)
        page = await queries.list_events(conn, incident_id=iid, limit=limit, cursor=cursor)
    return _page([event_view(r) for r in page.rows], page.next_cursor)


# -- approval requests ------------------------------------------------------------------


def _deadline(body: RequestIn, settings: Settings, now: datetime) -> datetime:
    """The request's deadline: never clamped; anything out of range is the client's error."""
    max_seconds = settings.max_ttl.total_seconds()
    if body.ttl_seconds is not None and body.expires_at is not None:
        raise errors.InvalidInput("give ttl_seconds or expires_at, not both")
    if body.ttl_seconds is not None:
        if body.ttl_seconds > max_seconds:
            raise errors.InvalidInput(
                f"ttl_seconds: at most the maximum TTL, {int(max_seconds)} seconds"
            )
        return now + timedelta(seconds=body.ttl_seconds)
    if body.expires_at is not None:
        expires_at = as_utc(body.expires_at)
        if expires_at <= now:
            raise errors.InvalidInput("expires_at: must be in the future")
        if expires_at - now > settings.max_ttl:
            raise errors.InvalidInput(
                f"expires_at: at most the maximum TTL ({int(max_seconds)} s) ahead"
            )
        return expires_at
    return now + settings.default_ttl


@router.post("/approvals", status_code=201, tags=["approvals"])
async def create_request(
    body: RequestIn,
    request: Request,
    response: Response,
    who: Requester,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Ask for sign-off. The same ``Idempotency-Key`` and body return the same request."""
    settings = _settings(request)
    digest = canonical_digest(body) if idempotency_key is not None else None

    async def work(conn: AsyncConnection, now: datetime) -> tuple[dict[str, Any], bool]:
        if idempotency_key is not None:
            # A retry returns the original even if its deadline has since passed.
            previous = await store.find_idempotent_request(conn, who.name, idempotency_key)
            if previous is not None:
                if previous["idempotency_digest"] != digest:
                    raise errors.IdempotencyMismatch()
                return await _request_out(conn, now, previous), False
        expires_at = _deadline(body, settings, now)
        data = {
            **body.model_dump(),
            "needs_analysis": settings.is_placeholder(body.action),
            "next_reminder_at": first_reminder(now, expires_at, settings.reminders),
        }
        row, created = await store.create_request(
            conn, now, actor=who.name, data=data, expires_at=expires_at,
            idempotency_key=idempotency_key, digest=digest,
        )
        return await _request_out(conn, now, row), created

    out: dict[str, Any]
    out, created = await _write(request, work)
    if created:
        resolver = request.app.state.resolver
        if resolver is not None:
            resolver.wake(datetime.fromisoformat(out["expires_at"]))
        log.info("request_created", request_id=out["id"], incident_id=out["incident_id"],
                 by=who.name, expires_at=out["expires_at"])
    else:
        response.status_code = 200
    return out


@router.get("/approvals", tags=["approvals"])
async def list_requests(
    request: Request, _: Viewer, status: RequestStatus | None = None,
    incident_id: str | None = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    iid = parse_filter_id(incident_id, "incident_id")

    async def work(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
        page = await queries.list_requests(
            conn, now, status=status, incident_id=iid, limit=limit, cursor=cursor
        )
        found = await queries.approvals_of(
            conn, [r["id"] for r in page.rows if r["approval_count"]]
        )
        items = [request_view(r, found.get(r["id"], []), now) for r in page.rows]
        return _page(items, page.next_cursor)

    result: dict[str, Any] = await _db(request).run(work, readonly=True)
    return result


@router.get("/approvals/{request_id}", tags=["approvals"])
async def get_request(request_id: str, request: Request, _: Viewer) -> dict[str, Any]:
    rid = parse_id(request_id, errors.RequestNotFound)

    async def work(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
        return await _request_out(conn, now, await store.get_request(conn, rid))

    result: dict[str, Any] = await _db(request).run(work, readonly=True)
    return result


@router.get("/approvals/{request_id}/events", tags=["approvals"])
async def request_events(
    request_id: str, request: Request, _: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    rid = parse_id(request_id, errors.RequestNotFound)
    async with _db(request).begin(readonly=True) as conn:
        await store.get_request(conn, rid)
        page = await queries.list_events(conn, request_id=rid, limit=limit, cursor=cursor)
    return _page([event_view(r) for r in page.rows], page.next_cursor)


async def _transition(
    request: Request,
    request_id: str,
    model: type[BaseModel] | None,
    check: Callable[[AsyncConnection, datetime, uuid.UUID], Awaitable[None]],
    act: Callable[[AsyncConnection, datetime, uuid.UUID, Any], Awaitable[Any]],
    *,
    voter: str | None = None,
) -> dict[str, Any]:
    """Refuse in the contract's order: who (403), what (404), state (409), content (422).

    ``voter``: ``act`` adds this approver's vote (see ``_request_out``)."""
    rid = parse_id(request_id, errors.RequestNotFound)
    parsed = await read_body(request, model) if model is not None else None

    async def work(conn: AsyncConnection, now: datetime) -> dict[str, Any]:
        if isinstance(parsed, errors.InvalidInput):
            await check(conn, now, rid)  # raises 404/403/409 before the 422
            raise parsed
        return await _request_out(conn, now, await act(conn, now, rid, parsed), voter=voter)

    try:
        out: dict[str, Any] = await _write(request, work)
    except errors.RequestNotPending as refused:
        if refused.status != RequestStatus.EXPIRED:
            raise
        # Refused at the deadline: record the expiry now, so that the 409 names the winner.
        status = await _write(request, lambda conn, now: store.settle_request(conn, now, rid))
        raise errors.RequestNotPending(
            "the request has expired" if status == "expired"
            else f"the request is already {status}",
            status=status,
        ) from None
    return out


def _check_decidable(
    actor: str, *, approving: bool
) -> Callable[[AsyncConnection, datetime, uuid.UUID], Any]:
    """Who/what/state refusals of a decision, for a call whose body is also invalid."""

    async def check(conn: AsyncConnection, now: datetime, rid: uuid.UUID) -> None:
        refusal = await store.explain_refusal(
            conn, now, rid, actor, own=False, approving=approving
        )
        if refusal is not None:
            raise refusal

    return check


async def _decide(request: Request, request_id: str, who: store.Principal, verb: str) -> Any:
    transition = store.approve_request if verb == "approve" else store.reject_request

    async def act(conn: AsyncConnection, now: datetime, rid: uuid.UUID, body: Any) -> Any:
        return await transition(conn, now, rid, actor=who.name, comment=body.comment)

    check = _check_decidable(who.name, approving=verb == "approve")
    out = await _transition(request, request_id, DecisionIn, check, act,
                            voter=who.name if verb == "approve" else None)
    log.info("request_decided", request_id=out["id"], by=who.name, decision=verb,
             status=out["status"])
    return out


@router.post("/approvals/{request_id}/approve", tags=["approvals"],
             openapi_extra=_body_doc(DecisionIn, required=False))
async def approve(request_id: str, request: Request, who: Approver) -> dict[str, Any]:
    """Approve; with ``required_approvals`` > 1 the request waits for more approvers."""
    out: dict[str, Any] = await _decide(request, request_id, who, "approve")
    return out


@router.post("/approvals/{request_id}/reject", tags=["approvals"],
             openapi_extra=_body_doc(DecisionIn, required=False))
async def reject(request_id: str, request: Request, who: Approver) -> dict[str, Any]:
    """Reject; one reject ends the request, whatever approvals it already had."""
    out: dict[str, Any] = await _decide(request, request_id, who, "reject")
    return out


@router.post("/approvals/{request_id}/cancel", tags=["approvals"])
async def cancel(request_id: str, request: Request, who: Requester) -> dict[str, Any]:
    """Withdraw a pending request; only its requester may."""
    admin = who.role is Role.ADMIN

    async def act(conn: AsyncConnection, now: datetime, rid: uuid.UUID, body: Any) -> Any:
        return await store.cancel_request(conn, now, rid, actor=who.name, admin=admin)

    async def check(conn: AsyncConnection, now: datetime, rid: uuid.UUID) -> None:
        await store.get_request(conn, rid)

    out = await _transition(request, request_id, None, check, act)
    log.info("request_cancelled", request_id=out["id"], by=who.name)
    return out


@router.post("/approvals/{request_id}/outcome", tags=["approvals"],
             openapi_extra=_body_doc(OutcomeIn, required=True))
async def report_outcome(request_id: str, request: Request, who: Requester) -> dict[str, Any]:
    """Report how the approved action went; success resolves the incident (``action``)."""
    admin = who.role is Role.ADMIN

    async def act(conn: AsyncConnection, now: datetime, rid: uuid.UUID, body: Any) -> Any:
        return await store.report_outcome(
            conn, now, rid, actor=who.name, succeeded=body.succeeded, detail=body.detail,
            admin=admin,
        )

    async def check(conn: AsyncConnection, now: datetime, rid: uuid.UUID) -> None:
        refusal = await store.explain_outcome_refusal(conn, now, rid, who.name, admin=admin)
        if refusal is not None:
            raise refusal

    rid = parse_id(request_id, errors.RequestNotFound)
    out = await _transition(request, request_id, OutcomeIn, check, act)
    log.info("request_outcome", request_id=str(rid), by=who.name,
             succeeded=out["outcome"]["succeeded"])
    return out


# -- knowledge and statistics ---------------------------------------------------------


@router.get("/knowledge", tags=["knowledge"])
async def list_knowledge(
    request: Request, _: Viewer, incident_id: str | None = None, service: FilterText = None,
    fingerprint: FilterText = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    iid = parse_filter_id(incident_id, "incident_id")
    async with _db(request).begin(readonly=True) as conn:
        page = await queries.list_knowledge(
            conn, incident_id=iid, service=service, fingerprint=fingerprint, limit=limit,
            cursor=cursor,
        )
    return _page([knowledge_view(r) for r in page.rows], page.next_cursor)


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise errors.InvalidInput(f"{name}: not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise errors.InvalidInput(f"{name}: give a UTC offset (e.g. 2026-01-01T00:00:00Z)")
    return as_utc(parsed)


@router.get("/stats", tags=["statistics"])
async def stats(
    request: Request, _: Viewer, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """Dispositions and rates of the requests that ended in ``[since, until)``."""
    start, end = _instant(since, "since"), _instant(until, "until")
    if start is not None and end is not None and start > end:
        raise errors.InvalidInput("since must not be after until")
    async with _db(request).begin(readonly=True) as conn:
        return await queries.compute_stats(conn, since=start, until=end)


@router.get("/watchdog", tags=["operations"])
async def watchdog(request: Request, _: Viewer) -> dict[str, Any]:
    """The watchdogs' findings now, computed from the database: ``{"checks": [...]}``."""
    thresholds = Thresholds.from_settings(_settings(request))
    checks = await _db(request).run(
        lambda conn, now: run_watchdogs(conn, now, thresholds), readonly=True
    )
    return {"checks": [c.as_json() for c in checks]}
