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
from pydantic import BaseModel

from signoff import errors
from signoff.http import (
    authorize,
    body_or_raise,
    parse_filter_id,
    read_body,
    require,
    unless_gone,
)
from signoff.lifecycle import IncidentStatus, Principal, RequestStatus, Role
from signoff.schemas import (
    DecisionIn,
    FilterText,
    IncidentIn,
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


def _body_doc(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its body itself (``read_body``,
    so that who/what/state are refused before content): clients and fuzzers see it."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": schema}}}}


# -- incidents ------------------------------------------------------------------------


@router.post("/incidents", status_code=201, tags=["incidents"],
             openapi_extra=_body_doc(IncidentIn, required=True))
async def create_incident(request: Request, response: Response) -> dict[str, Any]:
    """Open an incident; an open incident with the same fingerprint is returned (200)."""
    who = await authorize(request, Role.REQUESTER)
    body = body_or_raise(await read_body(request, IncidentIn))
    out, created = await _service(request).create_incident(who, body)
    if not created:
        response.status_code = 200
    return out


@router.get("/incidents", tags=["incidents"])
async def list_incidents(
    request: Request, who: Viewer, status: IncidentStatus | None = None,
    service: FilterText = None, limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    return await _service(request).list_incidents(
        who, status=status, service=service, limit=limit, cursor=cursor
    )


@router.get("/incidents/{incident_id}", tags=["incidents"])
async def get_incident(incident_id: str, request: Request) -> dict[str, Any]:
    who = await authorize(request, Role.VIEWER)
    return await _service(request).get_incident(who, incident_id)


@router.post("/incidents/{incident_id}/resolve", tags=["incidents"],
             openapi_extra=_body_doc(ResolveIn, required=False))
async def resolve_incident(incident_id: str, request: Request) -> dict[str, Any]:
    """Resolve by hand (resolution type ``manual``); its pending requests are cancelled."""
    who = await authorize(request, Role.APPROVER)
    service = _service(request)
    body = await read_body(request, ResolveIn)
    return await service.resolve_incident(who, incident_id, body)


@router.get("/incidents/{incident_id}/events", tags=["incidents"])
async def incident_events(
    incident_id: str, request: Request, who: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    return await _service(request).incident_events(who, incident_id, limit=limit, cursor=cursor)


# -- approval requests ------------------------------------------------------------------


@router.post("/approvals", status_code=201, tags=["approvals"],
             openapi_extra={**_body_doc(RequestIn, required=True), "parameters": [{
                 "name": "Idempotency-Key", "in": "header", "required": False,
                 "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY}}]})
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


@router.get("/approvals", tags=["approvals"])
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


@router.get("/approvals/{request_id}", tags=["approvals"], openapi_extra={"parameters": [{
    "name": "wait", "in": "query", "required": False,
    "description": "Long-poll: answer once the request is no longer pending, at its "
                   "deadline, or after this many seconds (0 to 60), whichever is first.",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}}]})
async def get_request(request_id: str, request: Request) -> dict[str, Any]:
    who = await authorize(request, Role.VIEWER)
    wait = _wait(request)
    answer = _service(request).get_request(who, request_id, wait=wait)
    if not wait:  # the plain read: no watch on the connection
        return await answer
    return await unless_gone(request, answer)


@router.get("/approvals/{request_id}/events", tags=["approvals"])
async def request_events(
    request_id: str, request: Request, who: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    return await _service(request).request_events(who, request_id, limit=limit, cursor=cursor)


@router.post("/approvals/{request_id}/approve", tags=["approvals"],
             openapi_extra=_body_doc(DecisionIn, required=False))
async def approve(request_id: str, request: Request) -> dict[str, Any]:
    """Approve; with ``required_approvals`` > 1 the request waits for more approvers."""
    who = await authorize(request, Role.APPROVER)
    service = _service(request)
    return await service.approve(who, request_id, await read_body(request, DecisionIn))


@router.post("/approvals/{request_id}/reject", tags=["approvals"],
             openapi_extra=_body_doc(DecisionIn, required=False))
async def reject(request_id: str, request: Request) -> dict[str, Any]:
    """Reject; one reject ends the request, whatever approvals it already had."""
    who = await authorize(request, Role.APPROVER)
    service = _service(request)
    return await service.reject(who, request_id, await read_body(request, DecisionIn))


@router.post("/approvals/{request_id}/cancel", tags=["approvals"])
async def cancel(request_id: str, request: Request) -> dict[str, Any]:
    """Withdraw a pending request; only its requester may."""
    who = await authorize(request, Role.REQUESTER)
    return await _service(request).cancel(who, request_id)


@router.post("/approvals/{request_id}/outcome", tags=["approvals"],
             openapi_extra=_body_doc(OutcomeIn, required=True))
async def report_outcome(request_id: str, request: Request) -> dict[str, Any]:
    """Report how the approved action went; success resolves the incident (``action``)."""
    who = await authorize(request, Role.REQUESTER)
    service = _service(request)
    return await service.report_outcome(who, request_id, await read_body(request, OutcomeIn))


# -- knowledge and statistics ---------------------------------------------------------


@router.get("/knowledge", tags=["knowledge"])
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


@router.get("/stats", tags=["statistics"])
async def stats(
    request: Request, who: Viewer, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """Dispositions and rates of the requests that ended in ``[since, until)``."""
    start, end = _instant(since, "since"), _instant(until, "until")
    return await _service(request).stats(who, since=start, until=end)


@router.get("/watchdog", tags=["operations"])
async def watchdog(request: Request) -> dict[str, Any]:
    """The watchdogs' findings now, computed from the database: ``{"checks": [...]}``."""
    await authorize(request, Role.VIEWER)
    checks = await _service(request).watchdog()
    return {"checks": [c.as_json() for c in checks]}
