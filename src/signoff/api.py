"""HTTP routes under ``/api/v1``: parse, call one operation of the service, answer.

Refusals come in the contract's order: who (401/403), what (404), state (409), content
(422). A route that takes a body or only a path authorizes first thing and reads its body
itself (``read_body``), so the service can check the state before the content; a route
with a query lets FastAPI validate it, after the ``require`` dependency has authorized.
Domain errors become HTTP answers in ``signoff.http``. Nothing here opens a transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from signoff import errors
from signoff.answers import (
    ApprovalRequest,
    EventPage,
    Incident,
    IncidentPage,
    KnowledgePage,
    Link,
    RequestPage,
    Stats,
    TokenList,
    Watchdog,
)
from signoff.http import (
    authorize,
    body_or_raise,
    parse_filter_id,
    read_body,
    require,
    unless_gone,
)
from signoff.lifecycle import IncidentStatus, Principal, RequestStatus, Role
from signoff.openapi import documented
from signoff.schemas import (
    DecisionIn,
    FilterText,
    IncidentIn,
    LinkIn,
    OutcomeIn,
    RequestIn,
    ResolveIn,
    utc_instant,
)
from signoff.service import Service

router = APIRouter(prefix="/api/v1")

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
MAX_IDEMPOTENCY_KEY = 200
Limit = Annotated[int, Query(ge=1, le=500, description="Page size, 1 to 500.")]
Cursor = Annotated[str | None, Query(description="Opaque cursor from next_cursor.")]


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# -- incidents ------------------------------------------------------------------------


@router.post("/incidents", status_code=201, tags=["incidents"], **documented(
    Incident, 401, 403, 409, 413, 422, 503, status=201, said="The incident opened.",
    also={200: (Incident, "The open incident with the same fingerprint, unchanged.")},
    notes={409: "The open incident with this fingerprint was resolved meanwhile; retry."},
    body=IncidentIn))
async def create_incident(request: Request, response: Response) -> dict[str, Any]:
    """Open an incident; an open incident with the same fingerprint is returned (200)."""
    who = await authorize(request, Role.REQUESTER)
    body = body_or_raise(await read_body(request, IncidentIn))
    out, created = await _service(request).create_incident(who, body)
    if not created:
        response.status_code = 200
    return out


@router.get("/incidents", tags=["incidents"],
            **documented(IncidentPage, 401, 422, 503, said="Incidents, newest first."))
async def list_incidents(
    request: Request, who: Viewer, status: IncidentStatus | None = None,
    service: FilterText = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    return await _service(request).list_incidents(
        who, status=status, service=service, limit=limit, cursor=cursor
    )


@router.get("/incidents/{incident_id}", tags=["incidents"],
            **documented(Incident, 401, 404, 503))
async def get_incident(incident_id: str, request: Request) -> dict[str, Any]:
    who = await authorize(request, Role.VIEWER)
    return await _service(request).get_incident(who, incident_id)


@router.post("/incidents/{incident_id}/resolve", tags=["incidents"], **documented(
    Incident, 401, 403, 404, 409, 413, 422, 503, said="The incident, resolved.",
    body=ResolveIn, body_required=False))
async def resolve_incident(incident_id: str, request: Request) -> dict[str, Any]:
    """Resolve by hand (resolution type ``manual``); its pending requests are cancelled."""
    who = await authorize(request, Role.APPROVER)
    service = _service(request)
    body = await read_body(request, ResolveIn)
    return await service.resolve_incident(who, incident_id, body)


@router.get("/incidents/{incident_id}/events", tags=["incidents"], **documented(
    EventPage, 401, 404, 422, 503, said="The audit events of the incident and its requests."))
async def incident_events(
    incident_id: str, request: Request, who: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    return await _service(request).incident_events(who, incident_id, limit=limit, cursor=cursor)


# -- approval requests ------------------------------------------------------------------


@router.post("/approvals", status_code=201, tags=["approvals"], **documented(
    ApprovalRequest, 401, 403, 404, 409, 413, 422, 503, status=201,
    said="The request created.",
    also={200: (ApprovalRequest, "The request made earlier with this Idempotency-Key and "
                               "body, as it is now.")},
    notes={404: "No incident has that incident_id.",
           409: "The incident is already resolved."},
    body=RequestIn, extra={"parameters": [{
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY}}]}))
async def create_request(request: Request, response: Response) -> dict[str, Any]:
    """Ask for sign-off. The same ``Idempotency-Key`` and body return the same request."""
    who = await authorize(request, Role.REQUESTER)
    body = body_or_raise(await read_body(request, RequestIn))
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise errors.InvalidInput(
            f"Idempotency-Key: at most {MAX_IDEMPOTENCY_KEY} characters")
    out, created = await _service(request).create_request(
        who, body, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = 200
    return out


@router.get("/approvals", tags=["approvals"],
            **documented(RequestPage, 401, 422, 503, said="Requests, newest first."))
async def list_requests(
    request: Request, who: Viewer, status: RequestStatus | None = None,
    incident_id: str | None = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    iid = parse_filter_id(incident_id, "incident_id")
    return await _service(request).list_requests(
        who, status=status, incident_id=iid, limit=limit, cursor=cursor
    )


MAX_WAIT = 60.0


def _wait(request: Request) -> float | errors.InvalidInput:
    """``?wait=S``, read here rather than by FastAPI: the hot path of a plain read pays
    nothing for it, and a bad value is refused after who and what (contract order)."""
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        return errors.InvalidInput(f"wait: a number of seconds from 0 to {MAX_WAIT:g}")
    if not 0 <= seconds <= MAX_WAIT:  # NaN fails both
        return errors.InvalidInput(f"wait: a number of seconds from 0 to {MAX_WAIT:g}")
    return seconds


@router.get("/approvals/{request_id}", tags=["approvals"], **documented(
    ApprovalRequest, 401, 404, 422, 503, extra={"parameters": [{
        "name": "wait", "in": "query", "required": False,
        "description": "Long-poll: answer once the request is no longer pending, at its "
                       "deadline, or after this many seconds (0 to 60), whichever is first.",
        "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}}]}))
async def get_request(request_id: str, request: Request) -> dict[str, Any]:
    who = await authorize(request, Role.VIEWER)
    wait = _wait(request)
    answer = _service(request).get_request(who, request_id, wait=wait)
    if not wait:  # the plain read: no watch on the connection
        return await answer
    return await unless_gone(request, answer)


@router.get("/approvals/{request_id}/events", tags=["approvals"], **documented(
    EventPage, 401, 404, 422, 503, said="The audit events of the request, oldest first."))
async def request_events(
    request_id: str, request: Request, who: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    return await _service(request).request_events(who, request_id, limit=limit, cursor=cursor)


@router.post("/approvals/{request_id}/approve", tags=["approvals"], **documented(
    ApprovalRequest, 401, 403, 404, 409, 413, 422, 503, said="The request with the approval.",
    notes={403: "Not an approver, or your own request.",
           422: "A bad body, or a placeholder action (`needs_analysis`)."},
    body=DecisionIn, body_required=False))
async def approve(request_id: str, request: Request) -> dict[str, Any]:
    """Approve; with ``required_approvals`` > 1 the request waits for more approvers."""
    who = await authorize(request, Role.APPROVER)
    service = _service(request)
    return await service.approve(who, request_id, await read_body(request, DecisionIn))


@router.post("/approvals/{request_id}/reject", tags=["approvals"], **documented(
    ApprovalRequest, 401, 403, 404, 409, 413, 422, 503, said="The request, rejected.",
    notes={403: "Not an approver, or your own request."},
    body=DecisionIn, body_required=False))
async def reject(request_id: str, request: Request) -> dict[str, Any]:
    """Reject; one reject ends the request, whatever approvals it already had."""
    who = await authorize(request, Role.APPROVER)
    service = _service(request)
    return await service.reject(who, request_id, await read_body(request, DecisionIn))


@router.post("/approvals/{request_id}/cancel", tags=["approvals"], **documented(
    ApprovalRequest, 401, 403, 404, 409, 413, 503, said="The request, cancelled.",
    notes={403: "Not a requester, or another requester's request."}))
async def cancel(request_id: str, request: Request) -> dict[str, Any]:
    """Withdraw a pending request; only its requester may."""
    who = await authorize(request, Role.REQUESTER)
    return await _service(request).cancel(who, request_id)


@router.post("/approvals/{request_id}/links", status_code=201, tags=["approvals"],
             **documented(Link, 401, 403, 404, 409, 413, 422, 503, status=201,
                          said="The link: give it to that person alone.", body=LinkIn,
                          notes={403: "Not the request's requester, nor an admin.",
                                 422: "Not a person who may decide the request."}))
async def create_link(request_id: str, request: Request) -> dict[str, Any]:
    """A single-use link for one approver to decide this request (the requester or an admin)."""
    who = await authorize(request, Role.REQUESTER)
    body = await read_body(request, LinkIn)
    principal = body if isinstance(body, errors.InvalidInput) else body.for_
    return await _service(request).create_link(who, request_id, principal,
                                               base_url=str(request.base_url))


@router.post("/approvals/{request_id}/outcome", tags=["approvals"], **documented(
    ApprovalRequest, 401, 403, 404, 409, 413, 422, 503, said="The request with its outcome.",
    notes={403: "Not a requester, or another requester's request.",
           409: "The request is not approved, or its outcome was already reported."},
    body=OutcomeIn))
async def report_outcome(request_id: str, request: Request) -> dict[str, Any]:
    """Report how the approved action went; success resolves the incident (``action``)."""
    who = await authorize(request, Role.REQUESTER)
    service = _service(request)
    return await service.report_outcome(who, request_id, await read_body(request, OutcomeIn))


# -- knowledge and statistics ---------------------------------------------------------


@router.get("/knowledge", tags=["knowledge"], **documented(
    KnowledgePage, 401, 422, 503, said="Knowledge entries, newest first."))
async def list_knowledge(
    request: Request, who: Viewer, incident_id: str | None = None, service: FilterText = None,
    fingerprint: FilterText = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    iid = parse_filter_id(incident_id, "incident_id")
    return await _service(request).list_knowledge(
        who, incident_id=iid, service=service, fingerprint=fingerprint, limit=limit,
        cursor=cursor,
    )


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise errors.InvalidInput(f"{name}: not an RFC 3339 time") from None
    try:
        return utc_instant(parsed)
    except ValueError as exc:
        raise errors.InvalidInput(f"{name}: {exc}") from None


@router.get("/stats", tags=["statistics"], **documented(Stats, 401, 422, 503))
async def stats(
    request: Request, who: Viewer, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """Dispositions and rates of the requests that ended in ``[since, until)``."""
    start, end = _instant(since, "since"), _instant(until, "until")
    return await _service(request).stats(who, since=start, until=end)


@router.get("/watchdog", tags=["operations"], **documented(Watchdog, 401, 503))
async def watchdog(request: Request) -> dict[str, Any]:
    """The watchdogs' findings now, computed from the database: ``{"checks": [...]}``."""
    await authorize(request, Role.VIEWER)
    checks = await _service(request).watchdog()
    return {"checks": [c.as_json() for c in checks]}


# -- tokens -----------------------------------------------------------------------------


@router.get("/tokens", tags=["tokens"], **documented(
    TokenList, 401, 403, 503, said="Every token, revoked ones too, oldest first."))
async def list_tokens(request: Request) -> dict[str, Any]:
    """The tokens (admin): name, role, when made, last used and revoked."""
    who = await authorize(request, Role.ADMIN)
    return {"items": await _service(request).list_tokens(who)}
